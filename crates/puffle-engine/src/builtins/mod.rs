//! The built-in enrichments that work offline and deterministically (spec §5): pure functions from
//! a lead and the run's `input` object to an [`Outcome`]. No IO, no clock, no randomness.
//!
//! Both the lead and the input are user-controlled: nothing here may panic, and an input field of
//! the wrong JSON type counts as absent (the run's `inputSchema` check rejects it earlier anyway).

pub mod company_domain;
pub mod email_check;
pub mod name_parse;
pub mod phone_normalize;
pub mod work_email_patterns;

use puffle_domain::lead::Lead;
use serde_json::{json, Value};

use crate::Outcome;

/// The slugs of the built-in enrichments, in catalog order.
pub const BUILTIN_SLUGS: &[&str] = &[
    "company_domain",
    "name_parse",
    "email_check",
    "work_email_patterns",
    "phone_normalize",
];

/// Run the built-in named `slug`; `None` when no built-in has that slug.
pub fn run_builtin(slug: &str, lead: &Lead, input: &Value) -> Option<Outcome> {
    let run: fn(&Lead, &Value) -> Outcome = match slug {
        "company_domain" => company_domain::run,
        "name_parse" => name_parse::run,
        "email_check" => email_check::run,
        "work_email_patterns" => work_email_patterns::run,
        "phone_normalize" => phone_normalize::run,
        _ => return None,
    };
    Some(run(lead, input))
}

/// A non-blank string at `input[key]`, trimmed. Any other type (or a non-object input) is absent.
fn input_str<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    let s = input.get(key)?.as_str()?.trim();
    (!s.is_empty()).then_some(s)
}

/// The lead's email addresses in contact order. A contact without a type counts when its value
/// has an `@`, the same rule the lead API uses to recognise emails.
fn lead_emails(lead: &Lead) -> impl Iterator<Item = &str> {
    lead.fields
        .contacts
        .iter()
        .filter(|c| c.is_email() || (c.kind.is_none() && c.value.contains('@')))
        .map(|c| c.value.trim())
        .filter(|v| !v.is_empty())
}

/// A draft 2020-12 object schema. Outputs are closed (`strict`): every key is always present and no
/// other appears. Inputs stay open, so that a client sending a shared `input` to several
/// enrichments is not refused for keys one of them ignores.
fn object_schema(properties: Value, required: &[&str], strict: bool) -> Value {
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
    });
    if strict {
        schema["additionalProperties"] = Value::Bool(false);
    }
    schema
}

/// A nullable string property.
fn nullable_string() -> Value {
    json!({"type": ["string", "null"]})
}

#[cfg(test)]
pub(crate) mod test_support {
    use puffle_domain::{lead::Lead, LeadType};
    use serde_json::{Map, Value};

    /// A stored lead with the given base fields, deserialized as-is (no cleaning), so tests can
    /// also feed the messy data a store could hold.
    pub fn lead(kind: LeadType, fields: Value) -> Lead {
        Lead {
            id: "lead-1".into(),
            kind,
            fields: serde_json::from_value(fields).expect("test lead fields"),
            attributes: Map::new(),
            lists: vec![],
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    pub fn person(fields: Value) -> Lead {
        lead(LeadType::Person, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::person;
    use super::*;

    #[test]
    fn every_slug_runs_and_unknown_slugs_do_not() {
        let lead = person(json!({
            "name": {"full": "Ann Lee"}, "domain": "acme.com",
            "contacts": [{"type": "email", "value": "ann@acme.com"},
                         {"type": "phone", "value": "+1 650 253 0000"}]
        }));
        for slug in BUILTIN_SLUGS {
            let outcome = run_builtin(slug, &lead, &json!({}));
            assert!(
                matches!(outcome, Some(Outcome::Hit(_))),
                "{slug}: {outcome:?}"
            );
        }
        assert_eq!(run_builtin("custom_http", &lead, &json!({})), None);
        assert_eq!(run_builtin("", &lead, &json!({})), None);
    }

    #[test]
    fn a_lead_with_nothing_is_missing_input_everywhere() {
        let lead = person(json!({}));
        for slug in BUILTIN_SLUGS {
            assert_eq!(
                run_builtin(slug, &lead, &json!({})),
                Some(Outcome::MissingInput),
                "{slug}"
            );
        }
    }

    #[test]
    fn input_strings_of_the_wrong_type_are_absent() {
        assert_eq!(
            input_str(&json!({"email": " a@b.co "}), "email"),
            Some("a@b.co")
        );
        for input in [
            json!({"email": 5}),
            json!({"email": ["a@b.co"]}),
            json!({"email": null}),
            json!({"email": "   "}),
            json!("a@b.co"),
            json!(null),
            json!([1, 2]),
        ] {
            assert_eq!(input_str(&input, "email"), None, "{input}");
        }
    }

    #[test]
    fn schemas_are_draft_2020_12_objects_and_outputs_are_closed() {
        let schemas = [
            (
                company_domain::input_schema(),
                company_domain::output_schema(),
            ),
            (name_parse::input_schema(), name_parse::output_schema()),
            (email_check::input_schema(), email_check::output_schema()),
            (
                work_email_patterns::input_schema(),
                work_email_patterns::output_schema(),
            ),
            (
                phone_normalize::input_schema(),
                phone_normalize::output_schema(),
            ),
        ];
        for (input, output) in schemas {
            for s in [&input, &output] {
                assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
                assert_eq!(s["type"], "object");
            }
            assert_eq!(output["additionalProperties"], false);
            // Every output key is required: the API never drops a documented key.
            let props = output["properties"].as_object().expect("properties");
            let required = output["required"].as_array().expect("required");
            assert_eq!(props.len(), required.len());
            assert!(required
                .iter()
                .all(|k| props.contains_key(k.as_str().unwrap_or(""))));
        }
    }
}
