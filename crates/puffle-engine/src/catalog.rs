//! The enrichment catalog (spec §5): every enrichment a run may name, as the contract shows it.

use puffle_domain::run::Subject;
use serde::Serialize;
use serde_json::{json, Value};

use crate::builtins;
use crate::providers::configured::{EnrichmentConfig, ProvidersConfig};
use crate::EngineConfig;

/// How an enrichment executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Builtin,
    Http,
    Ai,
    /// A hosted-service slug bound to a provider this server has not configured.
    Unconfigured,
    /// An `[[enrichments]]` entry of `puffle.toml`: one or more steps (a waterfall) calling
    /// configured providers.
    Configured,
}

/// A catalog entry, serialized exactly as `GET /api/enrichments` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrichment {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub subject: Subject,
    pub version: &'static str,
    pub enabled: bool,
    pub visibility: &'static str,
    pub input_schema: Value,
    pub output_schema: Value,
    pub default_output: Value,
    pub default_output_attribute_key: String,
    pub output_override_policy: Value,
    pub cost_model: Value,
    pub tool_binding: Value,
    #[serde(skip)]
    pub binding: Binding,
    #[serde(skip)]
    pub credit_action: String,
    /// Why a disabled entry is disabled (for the 400 that names it).
    #[serde(skip)]
    pub disabled_reason: Option<String>,
}

struct Entry {
    slug: &'static str,
    name: &'static str,
    description: &'static str,
    subject: Subject,
    binding: Binding,
    credit_action: &'static str,
    input: Value,
    output: Value,
}

impl Entry {
    fn build(self, disabled_reason: Option<String>) -> Enrichment {
        let binding = match self.binding {
            Binding::Builtin => "builtin",
            Binding::Http => "http",
            Binding::Ai => "ai",
            Binding::Unconfigured | Binding::Configured => "provider",
        };
        Enrichment {
            id: self.slug.to_string(),
            slug: self.slug.to_string(),
            name: self.name.to_string(),
            description: self.description.to_string(),
            subject: self.subject,
            version: "1",
            enabled: disabled_reason.is_none(),
            visibility: "public",
            input_schema: self.input,
            output_schema: self.output,
            default_output: json!({"target": "lead", "attributeKey": self.slug}),
            default_output_attribute_key: self.slug.to_string(),
            output_override_policy: json!({"allowTarget": true, "allowAttributeKey": true}),
            cost_model: json!({"creditAction": self.credit_action}),
            tool_binding: json!({
                "type": binding,
                "payloadMapper": {"id": self.slug, "version": "1"},
                "taskId": format!("puffle.enrichment.{}", self.slug),
            }),
            binding: self.binding,
            credit_action: self.credit_action.to_string(),
            disabled_reason,
        }
    }
}

impl Enrichment {
    /// Check a run's `input` against `inputSchema`, then against its provider's own rules.
    /// The error starts with the offending field (`input.url: …`).
    pub fn validate_input(&self, input: &Value) -> Result<(), String> {
        let validator = jsonschema::validator_for(&self.input_schema)
            .map_err(|e| format!("input: the inputSchema of {} is unusable ({e})", self.slug))?;
        if let Some(error) = validator.iter_errors(input).next() {
            let path = error.instance_path().to_string().replace('/', ".");
            return Err(format!("input{path}: {error}"));
        }
        match self.binding {
            Binding::Http => crate::providers::http::validate_input(input),
            Binding::Ai => crate::providers::ai::validate_input(input),
            Binding::Builtin | Binding::Unconfigured | Binding::Configured => Ok(()),
        }
    }
}

/// The catalog entry of an `[[enrichments]]` entry: disabled while one of its providers lacks
/// a secret.
fn configured_entry(c: &EnrichmentConfig, providers: &ProvidersConfig) -> Enrichment {
    let disabled_reason = providers.disabled_reason(c);
    Enrichment {
        id: c.slug.clone(),
        slug: c.slug.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        subject: c.subject,
        version: "1",
        enabled: disabled_reason.is_none(),
        visibility: "public",
        input_schema: c.input_schema.clone(),
        output_schema: c.output_schema.clone(),
        default_output: json!({"target": "lead", "attributeKey": c.attribute_key}),
        default_output_attribute_key: c.attribute_key.clone(),
        output_override_policy: json!({"allowTarget": true, "allowAttributeKey": true}),
        cost_model: json!({"creditAction": c.credit_action}),
        tool_binding: json!({
            "type": "provider",
            "payloadMapper": {"id": c.slug, "version": "1"},
            "taskId": format!("puffle.enrichment.{}", c.slug),
        }),
        binding: Binding::Configured,
        credit_action: c.credit_action.clone(),
        disabled_reason,
    }
}

fn any_object() -> Value {
    json!({"type": "object"})
}

/// The catalog: the built-ins, the two custom enrichments, and the hosted slugs.
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Vec<Enrichment>,
}

impl Catalog {
    pub fn new(config: &EngineConfig) -> Catalog {
        let builtin = |slug, name, description, subject, input, output| Entry {
            slug,
            name,
            description,
            subject,
            binding: Binding::Builtin,
            credit_action: "builtin",
            input,
            output,
        };
        let mut entries = vec![
            builtin(
                "company_domain",
                "Company domain",
                "The company's web domain from the lead's domain, company domain, work emails or website.",
                Subject::Any,
                builtins::company_domain::input_schema(),
                builtins::company_domain::output_schema(),
            )
            .build(None),
            builtin(
                "name_parse",
                "Name parse",
                "Splits a person's full name into prefix, first, middle, last and suffix.",
                Subject::Person,
                builtins::name_parse::input_schema(),
                builtins::name_parse::output_schema(),
            )
            .build(None),
            builtin(
                "email_check",
                "Email check",
                "Checks an email's syntax and whether it is free-mail, disposable or a role account.",
                Subject::Person,
                builtins::email_check::input_schema(),
                builtins::email_check::output_schema(),
            )
            .build(None),
            builtin(
                "work_email_patterns",
                "Work email patterns",
                "Likely work email addresses from the person's name and company domain, most common pattern first.",
                Subject::Person,
                builtins::work_email_patterns::input_schema(),
                builtins::work_email_patterns::output_schema(),
            )
            .build(None),
            builtin(
                "phone_normalize",
                "Phone normalize",
                "Normalizes a phone number to E.164, with its country and validity.",
                Subject::Any,
                builtins::phone_normalize::input_schema(),
                builtins::phone_normalize::output_schema(),
            )
            .build(None),
            Entry {
                slug: "custom_http",
                name: "Custom HTTP",
                description: "Calls any HTTP API with the lead's fields templated into the request, and keeps the JSON at resultPointer.",
                subject: Subject::Any,
                binding: Binding::Http,
                credit_action: "custom_http",
                input: crate::providers::http::input_schema(),
                output: json!({}),
            }
            .build(None),
        ];
        let ai_ready = config.ai_base_url.is_some() && config.ai_model.is_some();
        entries.push(
            Entry {
                slug: "custom_ai",
                name: "Custom AI",
                description:
                    "Asks an OpenAI-compatible model a templated prompt and keeps its JSON answer.",
                subject: Subject::Any,
                binding: Binding::Ai,
                credit_action: "custom_ai",
                input: crate::providers::ai::input_schema(),
                output: json!({}),
            }
            .build((!ai_ready).then(|| {
                "no AI endpoint is configured (set PUFFLE_AI_BASE_URL and PUFFLE_AI_MODEL)".into()
            })),
        );
        for (slug, name, description, subject, action) in [
            (
                "work_email",
                "Work email",
                "Finds a person's verified work email through a configured provider.",
                Subject::Person,
                "work_email_lookup",
            ),
            (
                "website_overview",
                "Website overview",
                "Summarizes a company's website through a configured provider.",
                Subject::Company,
                "WEBSITE_ENRICHMENT",
            ),
            (
                "hiring_status",
                "Hiring status",
                "Whether a company is hiring, through a configured provider.",
                Subject::Company,
                "HIRING_STATUS",
            ),
        ] {
            entries.push(
                Entry {
                    slug,
                    name,
                    description,
                    subject,
                    binding: Binding::Unconfigured,
                    credit_action: action,
                    input: any_object(),
                    output: any_object(),
                }
                .build(Some(format!(
                    "{slug} needs a provider, and none is configured on this server"
                ))),
            );
        }
        for configured in &config.providers.enrichments {
            let entry = configured_entry(configured, &config.providers);
            // A configured entry gives a hosted slug its provider: it takes the slug's place.
            match entries.iter_mut().find(|e| e.slug == entry.slug) {
                Some(existing) => *existing = entry,
                None => entries.push(entry),
            }
        }
        Catalog { entries }
    }

    pub fn get(&self, slug: &str) -> Option<&Enrichment> {
        self.entries.iter().find(|e| e.slug == slug)
    }

    /// Public entries whose slug, name or description contains `q` (case-insensitive).
    pub fn search(&self, q: Option<&str>) -> Vec<&Enrichment> {
        let q = q.map(str::to_lowercase);
        self.entries
            .iter()
            .filter(|e| e.visibility == "public")
            .filter(|e| match &q {
                None => true,
                Some(q) => [&e.slug, &e.name, &e.description]
                    .iter()
                    .any(|t| t.to_lowercase().contains(q)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_enabled_and_hosted_slugs_wait_for_providers() {
        let catalog = Catalog::new(&EngineConfig::default());
        for slug in builtins::BUILTIN_SLUGS.iter().chain(&["custom_http"]) {
            assert!(catalog.get(slug).is_some_and(|e| e.enabled), "{slug}");
        }
        for slug in [
            "custom_ai",
            "work_email",
            "website_overview",
            "hiring_status",
        ] {
            assert!(catalog.get(slug).is_some_and(|e| !e.enabled), "{slug}");
        }
        let configured = EngineConfig {
            ai_base_url: Some("http://127.0.0.1:1/v1".into()),
            ai_model: Some("m".into()),
            ..EngineConfig::default()
        };
        assert!(Catalog::new(&configured)
            .get("custom_ai")
            .is_some_and(|e| e.enabled));
    }

    #[test]
    fn search_matches_slug_name_and_description() {
        let catalog = Catalog::new(&EngineConfig::default());
        let slugs = |q| {
            catalog
                .search(Some(q))
                .iter()
                .map(|e| e.slug.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(slugs("PHONE"), ["phone_normalize"]);
        assert!(slugs("e.164").contains(&"phone_normalize".to_string()));
        assert_eq!(catalog.search(None).len(), 10);
        let entry = serde_json::to_value(catalog.get("name_parse").unwrap()).unwrap();
        assert_eq!(
            entry["defaultOutput"],
            json!({"target": "lead", "attributeKey": "name_parse"})
        );
        assert_eq!(entry["costModel"]["creditAction"], "builtin");
        assert!(entry.get("binding").is_none());
    }

    #[test]
    fn configured_entries_replace_hosted_slugs_and_wait_for_their_secrets() {
        let text = r#"
[providers.vendor]
base_url = "http://127.0.0.1:9"
headers = { "X-Key" = "${KEY}" }

[[enrichments]]
slug = "work_email"
name = "Work email (vendor)"
subject = "person"
credit_action = "work_email_lookup"
attribute_key = "email"
steps = [{ provider = "vendor", path = "/find" }]

[[enrichments]]
slug = "vendor_profile"
name = "Vendor profile"
subject = "any"
credit_action = "FIND_PERSON"
steps = [{ provider = "vendor", path = "/profile" }]
"#;
        let with = |key: Option<&str>| {
            let key = key.map(str::to_string);
            let providers =
                crate::config_file::parse("t.toml", text, &move |_| key.clone()).unwrap();
            Catalog::new(&EngineConfig {
                providers: std::sync::Arc::new(providers),
                ..EngineConfig::default()
            })
        };
        let catalog = with(Some("k3y-value"));
        assert_eq!(catalog.search(None).len(), 11);
        let entry = catalog.get("work_email").unwrap();
        assert!(entry.enabled);
        assert_eq!(entry.binding, Binding::Configured);
        assert_eq!(entry.name, "Work email (vendor)");
        let shown = serde_json::to_value(entry).unwrap();
        assert_eq!(shown["defaultOutput"]["attributeKey"], "email");
        assert_eq!(shown["toolBinding"]["type"], "provider");
        assert!(catalog.get("vendor_profile").is_some_and(|e| e.enabled));

        let catalog = with(None);
        let entry = catalog.get("vendor_profile").unwrap();
        assert!(!entry.enabled);
        let reason = entry.disabled_reason.as_deref().unwrap();
        assert!(
            reason.contains("KEY") && reason.contains("vendor"),
            "{reason}"
        );
    }
}
