//! `puffle.toml`: configured providers and the enrichments bound to them (`docs/providers.md`
//! is the reference). Reading it checks everything a run would otherwise trip on later, and a
//! mistake is one error naming the file, the line and the field.
//!
//! `${VAR}` in header values is taken from the environment. A variable that is not set is not
//! an error: the provider is kept, and the enrichments that use it are disabled, saying which
//! variable is missing (an operator may run a server without every vendor's key).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use puffle_domain::credits::Prices;
use puffle_domain::run::Subject;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{json, Value};
use toml::Spanned;

use crate::providers::configured::{
    AsyncSpec, CallbackConfig, ConfiguredHeader, EnrichmentConfig, ProviderConfig, ProvidersConfig,
    Step, StepKind, SUBMISSION_ID,
};
use crate::providers::http::{is_json_pointer, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS};
use crate::providers::miss::RawMissRule;
use crate::template;
use crate::throttle::ProviderLimits;

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
/// Slugs a configured enrichment may not take (the hosted slugs it may: it gives them a provider).
const RESERVED_SLUGS: &[&str] = &["custom_http", "custom_ai"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    providers: BTreeMap<String, Spanned<RawProvider>>,
    #[serde(default)]
    enrichments: Vec<Spanned<RawEnrichment>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    base_url: Spanned<String>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    timeout_ms: Option<Spanned<u64>>,
    rate_limit: Option<RawRate>,
    max_in_flight: Option<Spanned<u32>>,
    cache_ttl_seconds: Option<u64>,
    callback_secret: Option<Spanned<String>>,
    callback_id_pointer: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: Option<Spanned<u32>>,
    per_minute: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnrichment {
    slug: Spanned<String>,
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    subject: Spanned<String>,
    credit_action: Spanned<String>,
    attribute_key: Option<Spanned<String>>,
    input_schema: Option<Spanned<Value>>,
    output_schema: Option<Value>,
    steps: Spanned<Vec<Spanned<RawStep>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    kind: Option<Spanned<String>>,
    provider: Spanned<String>,
    method: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    #[serde(default)]
    query: BTreeMap<String, Spanned<String>>,
    body: Option<Spanned<Value>>,
    result_pointer: Option<Spanned<String>>,
    #[serde(default)]
    miss_when: Vec<Spanned<RawMissRule>>,
    // Async steps (kind = "async") only.
    submit: Option<Spanned<RawSubmit>>,
    poll: Option<Spanned<RawPoll>>,
    #[serde(default)]
    pending_when: Vec<Spanned<RawMissRule>>,
    poll_interval_ms: Option<Spanned<u64>>,
    max_wait_seconds: Option<Spanned<u64>>,
}

/// An async step's submit request: a request like a sync step's, and where the job id is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubmit {
    method: Option<Spanned<String>>,
    path: Spanned<String>,
    #[serde(default)]
    query: BTreeMap<String, Spanned<String>>,
    body: Option<Spanned<Value>>,
    submission_id_pointer: Spanned<String>,
}

/// An async step's poll request; its path may use `{{submission.id}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    method: Option<Spanned<String>>,
    path: Spanned<String>,
}

/// Default `poll_interval_ms` of an async step.
const DEFAULT_POLL_INTERVAL_MS: u64 = 5000;
/// Default `max_wait_seconds` of an async step (a day).
const DEFAULT_MAX_WAIT_SECONDS: u64 = 86_400;

/// A mistake in the file: where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: line {line}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Read and check `path`, taking `${VAR}`s from the process environment.
pub fn load(path: &Path) -> Result<ProvidersConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        message: format!("cannot be read ({e})"),
    })?;
    parse(&file, &text, &|var| std::env::var(var).ok())
}

/// Check the text of a configuration file named `file`; `env` answers `${VAR}`s.
pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProvidersConfig, ConfigError> {
    let at = |span: std::ops::Range<usize>, message: String| ConfigError {
        file: file.to_string(),
        line: text[..span.start.min(text.len())].matches('\n').count() + 1,
        message,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        at(span, e.message().trim().to_string())
    })?;

    let mut providers = BTreeMap::new();
    for (name, raw) in raw.providers {
        let span = raw.span();
        let provider = provider(&name, raw.into_inner(), env).map_err(|(s, m)| {
            at(
                s.unwrap_or_else(|| span.clone()),
                format!("providers.{name}.{m}"),
            )
        })?;
        providers.insert(name, Arc::new(provider));
    }

    let prices = Prices::default();
    let mut enrichments: Vec<Arc<EnrichmentConfig>> = Vec::new();
    let mut slugs = HashSet::new();
    for (i, raw) in raw.enrichments.into_iter().enumerate() {
        let span = raw.span();
        let e = enrichment(raw.into_inner(), &providers, &prices).map_err(|(s, m)| {
            at(
                s.unwrap_or_else(|| span.clone()),
                format!("enrichments[{i}].{m}"),
            )
        })?;
        if !slugs.insert(e.slug.clone()) {
            return Err(at(
                span,
                format!("enrichments[{i}].slug: {} is configured twice", e.slug),
            ));
        }
        enrichments.push(Arc::new(e));
    }
    Ok(ProvidersConfig {
        providers,
        enrichments,
    })
}

/// A field's error: its span (when known) and `field: message`.
type FieldError = (Option<std::ops::Range<usize>>, String);

fn err<T>(span: std::ops::Range<usize>, message: String) -> Result<T, FieldError> {
    Err((Some(span), message))
}

fn provider(
    name: &str,
    raw: RawProvider,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProviderConfig, FieldError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err((
            None,
            "name: a provider name has letters, digits, `_` and `-` only".into(),
        ));
    }
    let base_span = raw.base_url.span();
    let base_url = raw.base_url.into_inner().trim().to_string();
    match Url::parse(&base_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => {
            return err(
                base_span,
                format!("base_url: {base_url:?} is not an http(s) URL"),
            )
        }
    }
    if base_url.contains('?') || base_url.contains('#') {
        return err(
            base_span,
            "base_url: has no query or fragment (steps add them)".into(),
        );
    }

    let mut headers = Vec::new();
    let mut missing_env = Vec::new();
    for (header, written) in raw.headers {
        let span = written.span();
        let written = written.into_inner();
        let field = format!("headers.{header}");
        let name = match HeaderName::from_bytes(header.trim().as_bytes()) {
            Ok(n) if !crate::providers::http::RESERVED_HEADERS.contains(&n.as_str()) => n,
            Ok(_) => return err(span, format!("{field}: this header is set by Puffle")),
            Err(_) => return err(span, format!("{field}: not a valid header name")),
        };
        let (value, secrets, missing) =
            substitute(&written, env).map_err(|m| (Some(span.clone()), format!("{field}: {m}")))?;
        for var in missing {
            if !missing_env.contains(&var) {
                missing_env.push(var);
            }
        }
        if let Some(v) = &value {
            // The value may hold a secret: the message must not show it.
            if HeaderValue::from_str(v).is_err() {
                return err(
                    span,
                    format!("{field}: not a valid header value once its ${{VAR}}s are substituted"),
                );
            }
        }
        headers.push(ConfiguredHeader {
            name,
            written,
            value,
            secrets,
        });
    }

    let timeout_ms = match raw.timeout_ms {
        None => DEFAULT_TIMEOUT_MS,
        Some(t) if (1..=MAX_TIMEOUT_MS).contains(t.get_ref()) => t.into_inner(),
        Some(t) => {
            return err(
                t.span(),
                format!("timeout_ms: must be from 1 to {MAX_TIMEOUT_MS}"),
            )
        }
    };
    let positive = |v: Option<Spanned<u32>>, field: &str| -> Result<Option<u32>, FieldError> {
        match v {
            None => Ok(None),
            Some(v) if *v.get_ref() >= 1 => Ok(Some(v.into_inner())),
            Some(v) => err(v.span(), format!("{field}: must be at least 1")),
        }
    };
    let (per_second, per_minute) = match raw.rate_limit {
        None => (None, None),
        Some(r) => (
            positive(r.per_second, "rate_limit.per_second")?,
            positive(r.per_minute, "rate_limit.per_minute")?,
        ),
    };
    let callback = match (raw.callback_secret, raw.callback_id_pointer) {
        (None, None) => None,
        (Some(secret), Some(pointer)) => {
            let span = secret.span();
            let (value, _, missing) = substitute(secret.get_ref(), env)
                .map_err(|m| (Some(span.clone()), format!("callback_secret: {m}")))?;
            for var in missing {
                if !missing_env.contains(&var) {
                    missing_env.push(var);
                }
            }
            if !is_json_pointer(pointer.get_ref()) || pointer.get_ref().is_empty() {
                return err(
                    pointer.span(),
                    "callback_id_pointer: must be a JSON Pointer (RFC 6901), e.g. \"/job_id\""
                        .into(),
                );
            }
            Some(CallbackConfig {
                secret: value,
                id_pointer: pointer.into_inner(),
            })
        }
        (Some(s), None) => {
            return err(
                s.span(),
                "callback_secret: needs callback_id_pointer too".into(),
            )
        }
        (None, Some(p)) => {
            return err(
                p.span(),
                "callback_id_pointer: needs callback_secret too".into(),
            )
        }
    };
    Ok(ProviderConfig {
        callback,
        name: name.to_string(),
        base_url: base_url.trim_end_matches('/').to_string(),
        headers,
        timeout: Duration::from_millis(timeout_ms),
        limits: ProviderLimits {
            per_second,
            per_minute,
            max_in_flight: positive(raw.max_in_flight, "max_in_flight")?,
        },
        cache_ttl: raw
            .cache_ttl_seconds
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
        missing_env,
    })
}

/// A header value with its `${VAR}`s replaced: the value (`None` if a variable is not set), the
/// substituted values, and the variables that were not set.
type Substituted = (Option<String>, Vec<String>, Vec<String>);

/// Replace every `${VAR}` in `written`.
fn substitute(written: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Substituted, String> {
    let mut out = String::new();
    let mut secrets = Vec::new();
    let mut missing = Vec::new();
    let mut rest = written;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            return Err("`${` without a closing `}`".into());
        };
        let var = &rest[start + 2..start + len];
        let valid = var
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("${{{var}}} is not an environment variable name"));
        }
        out.push_str(&rest[..start]);
        match env(var).filter(|v| !v.is_empty()) {
            Some(v) => {
                out.push_str(&v);
                secrets.push(v);
            }
            None => missing.push(var.to_string()),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(((missing.is_empty()).then_some(out), secrets, missing))
}

fn enrichment(
    raw: RawEnrichment,
    providers: &BTreeMap<String, Arc<ProviderConfig>>,
    prices: &Prices,
) -> Result<EnrichmentConfig, FieldError> {
    let slug_span = raw.slug.span();
    let slug = raw.slug.into_inner();
    if slug.is_empty()
        || !slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return err(
            slug_span,
            "slug: lowercase letters, digits and `_` only".into(),
        );
    }
    if RESERVED_SLUGS.contains(&slug.as_str())
        || crate::builtins::BUILTIN_SLUGS.contains(&slug.as_str())
    {
        return err(
            slug_span,
            format!("slug: {slug} is a built-in enrichment of Puffle"),
        );
    }
    let name_span = raw.name.span();
    let name = raw.name.into_inner();
    if name.trim().is_empty() {
        return err(name_span, "name: must not be empty".into());
    }
    let subject = Subject::parse(raw.subject.get_ref()).ok_or_else(|| {
        (
            Some(raw.subject.span()),
            "subject: must be person, company or any".to_string(),
        )
    })?;
    let action = raw.credit_action.get_ref().clone();
    if prices.price(&action).is_none() {
        let known: Vec<&str> = puffle_domain::credits::OPERATIONS
            .iter()
            .map(|o| o.id)
            .chain(puffle_domain::credits::LEGACY_COSTS.iter().map(|(n, _)| *n))
            .collect();
        return err(
            raw.credit_action.span(),
            format!(
                "credit_action: {action:?} has no price; use one of {}",
                known.join(", ")
            ),
        );
    }
    let attribute_key = match raw.attribute_key {
        None => slug.clone(),
        Some(k) if !k.get_ref().trim().is_empty() => k.into_inner(),
        Some(k) => return err(k.span(), "attribute_key: must not be empty".into()),
    };
    let input_schema = match raw.input_schema {
        None => json!({"type": "object"}),
        Some(s) => {
            let span = s.span();
            let schema = s.into_inner();
            if let Err(e) = jsonschema::validator_for(&schema) {
                return err(
                    span,
                    format!("input_schema: not a usable JSON Schema ({e})"),
                );
            }
            schema
        }
    };
    let steps_span = raw.steps.span();
    let raw_steps = raw.steps.into_inner();
    if raw_steps.is_empty() {
        return err(steps_span, "steps: at least one step is needed".into());
    }
    let mut steps = Vec::new();
    for (i, s) in raw_steps.into_iter().enumerate() {
        let span = s.span();
        let step = step(s.into_inner(), providers)
            .map_err(|(sp, m)| (Some(sp.unwrap_or(span)), format!("steps[{i}].{m}")))?;
        steps.push(step);
    }
    // A waiting item resumes its one step: an async step is not part of a waterfall.
    if steps.len() > 1 && steps.iter().any(|s| s.kind == StepKind::Async) {
        return err(
            steps_span,
            "steps: an async step must be the enrichment's only step".into(),
        );
    }
    Ok(EnrichmentConfig {
        slug,
        name: name.clone(),
        // The catalog shows a description for every entry.
        description: if raw.description.trim().is_empty() {
            name.clone()
        } else {
            raw.description
        },
        subject,
        credit_action: action,
        attribute_key,
        input_schema,
        output_schema: raw.output_schema.unwrap_or_else(|| json!({})),
        steps,
    })
}

fn step(
    mut raw: RawStep,
    providers: &BTreeMap<String, Arc<ProviderConfig>>,
) -> Result<Step, FieldError> {
    let kind = match raw.kind.take() {
        None => StepKind::Http,
        Some(k) if k.get_ref() == "http" => StepKind::Http,
        Some(k) if k.get_ref() == "async" => StepKind::Async,
        Some(k) => return err(k.span(), "kind: must be \"http\" or \"async\"".into()),
    };
    if kind == StepKind::Http {
        let async_only = [
            raw.submit.as_ref().map(|s| ("submit", s.span())),
            raw.poll.as_ref().map(|s| ("poll", s.span())),
            raw.pending_when.first().map(|s| ("pending_when", s.span())),
            raw.poll_interval_ms
                .as_ref()
                .map(|s| ("poll_interval_ms", s.span())),
            raw.max_wait_seconds
                .as_ref()
                .map(|s| ("max_wait_seconds", s.span())),
        ];
        if let Some((field, span)) = async_only.into_iter().flatten().next() {
            return err(span, format!("{field}: only for kind = \"async\""));
        }
    }
    let provider_name = raw.provider.get_ref().clone();
    let Some(provider) = providers.get(&provider_name) else {
        let known: Vec<&str> = providers.keys().map(String::as_str).collect();
        return err(
            raw.provider.span(),
            format!(
                "provider: no [providers.{provider_name}] table (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
    };
    let (request, asynchronous) = match kind {
        StepKind::Http => {
            let Some(path) = raw.path else {
                return Err((None, "path: required".into()));
            };
            let parts = (raw.method, path, raw.query, raw.body);
            (request(parts, provider, "")?, None)
        }
        StepKind::Async => {
            let pending_when = std::mem::take(&mut raw.pending_when);
            let poll_interval_ms = raw.poll_interval_ms.take();
            let max_wait_seconds = raw.max_wait_seconds.take();
            let (submit, poll) = async_parts(&raw)?;
            let (spec, submit) = async_spec(
                submit,
                poll,
                pending_when,
                poll_interval_ms,
                max_wait_seconds,
                provider,
            )?;
            (submit, Some(spec))
        }
    };
    let (method, path, query, body) = request;
    let result_pointer = match raw.result_pointer {
        None => None,
        Some(p) if is_json_pointer(p.get_ref()) => Some(p.into_inner()),
        Some(p) => {
            return err(
                p.span(),
                "result_pointer: must be a JSON Pointer (RFC 6901), e.g. \"/data/email\"".into(),
            )
        }
    };
    let mut miss_when = Vec::new();
    for (i, rule) in raw.miss_when.into_iter().enumerate() {
        let span = rule.span();
        let rule = rule
            .into_inner()
            .check()
            .map_err(|m| (Some(span), format!("miss_when[{i}].{m}")))?;
        miss_when.push(rule);
    }
    Ok(Step {
        kind,
        provider: provider_name,
        method,
        path,
        query,
        body,
        result_pointer,
        miss_when,
        asynchronous,
    })
}

/// A request's parts as written: method, path, query, body.
type RawRequest = (
    Option<Spanned<String>>,
    Spanned<String>,
    BTreeMap<String, Spanned<String>>,
    Option<Spanned<Value>>,
);

/// A request's parts, checked.
type Request = (Method, String, Vec<(String, String)>, Option<Value>);

/// Check a request of a step; `prefix` names its table in messages (`submit.`).
fn request(
    (method, path, raw_query, raw_body): RawRequest,
    provider: &ProviderConfig,
    prefix: &str,
) -> Result<Request, FieldError> {
    let method = match method {
        None => Method::GET,
        Some(m) => {
            let upper = m.get_ref().trim().to_ascii_uppercase();
            if !METHODS.contains(&upper.as_str()) {
                return err(
                    m.span(),
                    format!("{prefix}method: must be one of {}", METHODS.join(", ")),
                );
            }
            Method::from_bytes(upper.as_bytes())
                .map_err(|_| (Some(m.span()), format!("{prefix}method: invalid")))?
        }
    };
    let path_span = path.span();
    let path = path.into_inner();
    if !path.starts_with('/') {
        return err(path_span, format!("{prefix}path: must start with `/`"));
    }
    // The job id is only known when polling: check the path with a stand-in.
    let checked = path.replace(SUBMISSION_ID, "0");
    let shape = template::render_placeholders_as(&checked, "0")
        .map_err(|e| (Some(path_span.clone()), format!("{prefix}path: {e}")))?;
    if Url::parse(&format!("{}{shape}", provider.base_url)).is_err() {
        return err(
            path_span,
            format!("{prefix}path: does not make a valid URL"),
        );
    }
    let mut query = Vec::new();
    for (name, value) in raw_query {
        template::validate(value.get_ref())
            .map_err(|e| (Some(value.span()), format!("{prefix}query.{name}: {e}")))?;
        query.push((name, value.into_inner()));
    }
    let body = match raw_body {
        None => None,
        Some(b) => {
            template::validate_json(b.get_ref())
                .map_err(|e| (Some(b.span()), format!("{prefix}body: {e}")))?;
            Some(b.into_inner())
        }
    };
    Ok((method, path, query, body))
}

/// The `submit` and `poll` tables of an async step, which has no request of its own.
fn async_parts(raw: &RawStep) -> Result<(&Spanned<RawSubmit>, &Spanned<RawPoll>), FieldError> {
    let own = [
        raw.method.as_ref().map(|m| ("method", m.span())),
        raw.path.as_ref().map(|p| ("path", p.span())),
        raw.body.as_ref().map(|b| ("body", b.span())),
    ];
    if let Some((field, span)) = own.into_iter().flatten().next() {
        return err(
            span,
            format!("{field}: an async step's requests are in `submit` and `poll`"),
        );
    }
    if !raw.query.is_empty() {
        return Err((
            None,
            "query: an async step's requests are in `submit` and `poll`".into(),
        ));
    }
    match (&raw.submit, &raw.poll) {
        (Some(s), Some(p)) => Ok((s, p)),
        (None, _) => Err((None, "submit: required for kind = \"async\"".into())),
        (_, None) => Err((None, "poll: required for kind = \"async\"".into())),
    }
}

/// Check an async step's parts: its spec, and the submit request.
fn async_spec(
    submit: &Spanned<RawSubmit>,
    poll: &Spanned<RawPoll>,
    pending_when: Vec<Spanned<RawMissRule>>,
    poll_interval_ms: Option<Spanned<u64>>,
    max_wait_seconds: Option<Spanned<u64>>,
    provider: &ProviderConfig,
) -> Result<(AsyncSpec, Request), FieldError> {
    let s = submit.get_ref();
    let submit_request = request(
        (
            s.method.clone(),
            s.path.clone(),
            s.query.clone(),
            s.body.clone(),
        ),
        provider,
        "submit.",
    )?;
    let pointer = &s.submission_id_pointer;
    if !is_json_pointer(pointer.get_ref()) || pointer.get_ref().is_empty() {
        return err(
            pointer.span(),
            "submit.submission_id_pointer: must be a JSON Pointer (RFC 6901), e.g. \"/id\"".into(),
        );
    }
    let p = poll.get_ref();
    let (poll_method, poll_path, _, _) = request(
        (p.method.clone(), p.path.clone(), BTreeMap::new(), None),
        provider,
        "poll.",
    )?;
    let mut rules = Vec::new();
    for (i, rule) in pending_when.into_iter().enumerate() {
        let span = rule.span();
        let rule = rule
            .into_inner()
            .check()
            .map_err(|m| (Some(span), format!("pending_when[{i}].{m}")))?;
        rules.push(rule);
    }
    let poll_interval = match poll_interval_ms {
        None => DEFAULT_POLL_INTERVAL_MS,
        Some(v) if (10..=3_600_000).contains(v.get_ref()) => v.into_inner(),
        Some(v) => {
            return err(
                v.span(),
                "poll_interval_ms: must be from 10 to 3600000".into(),
            )
        }
    };
    let max_wait = match max_wait_seconds {
        None => DEFAULT_MAX_WAIT_SECONDS,
        Some(v) if (1..=30 * 86_400).contains(v.get_ref()) => v.into_inner(),
        Some(v) => {
            return err(
                v.span(),
                "max_wait_seconds: must be from 1 to 2592000 (30 days)".into(),
            )
        }
    };
    Ok((
        AsyncSpec {
            submission_id_pointer: pointer.get_ref().clone(),
            poll_method,
            poll_path,
            pending_when: rules,
            poll_interval: Duration::from_millis(poll_interval),
            max_wait: Duration::from_secs(max_wait),
        },
        submit_request,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        (var == "VENDOR_KEY").then(|| "s3cr3t-key".to_string())
    }

    const GOOD: &str = r#"
[providers.vendor]
base_url = "https://api.vendor.test/v1/"
headers = { Authorization = "Bearer ${VENDOR_KEY}", "X-Client" = "puffle" }
timeout_ms = 5000
rate_limit = { per_second = 5, per_minute = 100 }
max_in_flight = 2
cache_ttl_seconds = 3600

[providers.backup]
base_url = "http://127.0.0.1:9000"
headers = { "X-Api-Key" = "${BACKUP_KEY}" }

[[enrichments]]
slug = "work_email"
name = "Work email"
subject = "person"
credit_action = "work_email_lookup"

[[enrichments.steps]]
provider = "vendor"
path = "/find/{{lead.company.domain}}"
query = { first = "{{lead.name.first}}" }
result_pointer = "/data/email"
miss_when = [{ pointer = "/data/score", below = 50 }, { pointer = "/status", equals = "not_found" }]

[[enrichments.steps]]
provider = "backup"
method = "post"
path = "/match"
body = { name = "{{lead.name.full}}" }
"#;

    #[test]
    fn a_good_file_resolves_secrets_limits_and_steps() {
        let config = parse("puffle.toml", GOOD, &env).expect("valid");
        let vendor = &config.providers["vendor"];
        assert_eq!(vendor.base_url, "https://api.vendor.test/v1");
        assert_eq!(vendor.timeout, Duration::from_millis(5000));
        assert_eq!(
            vendor.limits,
            ProviderLimits {
                per_second: Some(5),
                per_minute: Some(100),
                max_in_flight: Some(2)
            }
        );
        assert_eq!(vendor.cache_ttl, Some(Duration::from_secs(3600)));
        let auth = vendor
            .headers
            .iter()
            .find(|h| h.name == "authorization")
            .unwrap();
        assert_eq!(auth.value.as_deref(), Some("Bearer s3cr3t-key"));
        assert_eq!(auth.shown(), "Bearer [redacted]");
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let backup = &config.providers["backup"];
        assert_eq!(backup.missing_env, ["BACKUP_KEY"]);
        assert_eq!(backup.cache_ttl, None);

        let e = config.enrichment("work_email").expect("configured");
        assert_eq!(e.attribute_key, "work_email");
        assert_eq!(e.steps.len(), 2);
        assert_eq!(e.steps[0].miss_when.len(), 2);
        assert_eq!(e.steps[1].method, Method::POST);
        let reason = config.disabled_reason(e).expect("backup has no key");
        assert!(reason.contains("BACKUP_KEY"), "{reason}");
    }

    fn error_of(text: &str) -> ConfigError {
        parse("puffle.toml", text, &env).expect_err("invalid")
    }

    #[test]
    fn mistakes_name_the_file_line_and_field() {
        let e = error_of(&GOOD.replace("provider = \"backup\"", "provider = \"bakup\""));
        assert_eq!(e.line, 28, "{e}");
        assert!(
            e.to_string().starts_with(
                "puffle.toml: line 28: enrichments[0].steps[1].provider: no [providers.bakup]"
            ),
            "{e}"
        );
        let e = error_of(&GOOD.replace("per_second = 5", "per_second = 0"));
        assert_eq!(e.line, 6, "{e}");
        assert!(
            e.message
                .starts_with("providers.vendor.rate_limit.per_second"),
            "{e}"
        );
        let e = error_of(&GOOD.replace("below = 50", "under = 50"));
        assert_eq!(e.line, 25, "{e}");
        assert!(e.message.contains("under"), "{e}");
        let e = error_of(&GOOD.replace("\"work_email_lookup\"", "\"gold_plated\""));
        assert_eq!(e.line, 18, "{e}");
        assert!(e.message.starts_with("enrichments[0].credit_action"), "{e}");
        let e = error_of(&GOOD.replace("timeout_ms = 5000", "timeout_ms = \"5s\""));
        assert_eq!(e.line, 5, "{e}");
        let e = error_of(&GOOD.replace("\"/data/email\"", "\"data.email\""));
        assert!(e.message.contains("result_pointer"), "{e}");
        let e = error_of(&GOOD.replace("slug = \"work_email\"", "slug = \"name_parse\""));
        assert!(e.message.contains("built-in"), "{e}");
        let e = error_of(&GOOD.replace("{{lead.name.first}}", "{{vendor.key}}"));
        assert!(
            e.message.starts_with("enrichments[0].steps[0].query.first"),
            "{e}"
        );
        let e = error_of(&GOOD.replace("${VENDOR_KEY}", "${VENDOR KEY}"));
        assert!(
            e.message
                .starts_with("providers.vendor.headers.Authorization"),
            "{e}"
        );
        let e = error_of("[providers.x]\nbase_url = \"ftp://x\"\n");
        assert_eq!(
            (e.line, e.message.starts_with("providers.x.base_url")),
            (2, true),
            "{e}"
        );
    }

    #[test]
    fn an_invalid_resolved_header_does_not_print_the_secret() {
        let env = |_: &str| Some("line\nbreak-secret".to_string());
        let text = "[providers.x]\nbase_url = \"http://x\"\nheaders = { A = \"${K}\" }\n";
        let e = parse("f", text, &env).expect_err("invalid value");
        assert!(!e.to_string().contains("break-secret"), "{e}");
    }

    #[test]
    fn the_recipes_in_the_docs_parse() {
        let text = include_str!("../../../docs/providers.example.toml");
        let config = parse("docs/providers.example.toml", text, &|_| {
            Some("test-key".into())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        for slug in [
            "work_email",
            "apollo_person",
            "pdl_person",
            "local_ai_summary",
        ] {
            assert!(config.enrichment(slug).is_some(), "{slug}");
        }
        for e in &config.enrichments {
            assert_eq!(config.disabled_reason(e), None, "{}", e.slug);
        }
    }
}

#[cfg(test)]
mod async_tests {
    use super::*;

    const ASYNC: &str = r#"
[providers.slow]
base_url = "https://slow.test"
callback_secret = "${HOOK}"
callback_id_pointer = "/job_id"

[[enrichments]]
slug = "slow_email"
name = "Slow"
subject = "any"
credit_action = "FIND_PERSON"

[[enrichments.steps]]
provider = "slow"
kind = "async"
submit = { method = "POST", path = "/jobs", body = { d = "{{lead.domain}}" }, submission_id_pointer = "/id" }
poll = { path = "/jobs/{{submission.id}}" }
pending_when = [{ pointer = "/status", equals = "pending" }]
result_pointer = "/email"
poll_interval_ms = 250
"#;

    fn parse_with(text: &str) -> Result<ProvidersConfig, ConfigError> {
        parse("p.toml", text, &|v| {
            (v == "HOOK").then(|| "hook-secret".into())
        })
    }

    #[test]
    fn an_async_step_resolves_submit_poll_and_callback() {
        let config = parse_with(ASYNC).expect("valid");
        let step = &config.enrichments[0].steps[0];
        assert_eq!(step.kind, StepKind::Async);
        assert_eq!(
            (step.method.as_str(), step.path.as_str()),
            ("POST", "/jobs")
        );
        let spec = step.asynchronous.as_ref().expect("async spec");
        assert_eq!(spec.poll_path, "/jobs/{{submission.id}}");
        assert_eq!(spec.poll_method, Method::GET);
        assert_eq!(spec.poll_interval, Duration::from_millis(250));
        assert_eq!(spec.max_wait, Duration::from_secs(DEFAULT_MAX_WAIT_SECONDS));
        assert_eq!(spec.pending_when.len(), 1);
        let callback = config.providers["slow"].callback.clone().expect("callback");
        assert_eq!(callback.secret.as_deref(), Some("hook-secret"));
        assert!(!format!("{callback:?}").contains("hook-secret"));
    }

    #[test]
    fn async_mistakes_are_named() {
        let in_waterfall =
            format!("{ASYNC}\n[[enrichments.steps]]\nprovider = \"slow\"\npath = \"/x\"\n");
        let e = parse_with(&in_waterfall).unwrap_err();
        assert!(e.message.contains("only step"), "{e}");
        let no_poll = ASYNC.replace("poll = { path = \"/jobs/{{submission.id}}\" }\n", "");
        let e = parse_with(&no_poll).unwrap_err();
        assert!(e.message.contains("poll: required"), "{e}");
        let sync_with_poll = ASYNC.replace("kind = \"async\"\n", "path = \"/x\"\n");
        let e = parse_with(&sync_with_poll).unwrap_err();
        assert!(e.message.contains("only for kind = \"async\""), "{e}");
        let bad_interval = ASYNC.replace("poll_interval_ms = 250", "poll_interval_ms = 1");
        let e = parse_with(&bad_interval).unwrap_err();
        assert!(e.message.contains("poll_interval_ms"), "{e}");
        let half_callback = ASYNC.replace("callback_id_pointer = \"/job_id\"\n", "");
        let e = parse_with(&half_callback).unwrap_err();
        assert!(
            e.message
                .contains("callback_secret: needs callback_id_pointer"),
            "{e}"
        );
    }
}
