//! Providers and enrichments an operator configures in `puffle.toml` (see `docs/providers.md`),
//! and one step of such an enrichment: one templated request to one provider.
//!
//! A configured provider's base URL is the operator's, not a user's: requests go out on a plain
//! client (no destination guard, no redirects followed), like `custom_ai`'s. Lead data reaches
//! the URL only through percent-encoded placeholders and query values, so it cannot change the
//! host.
//!
//! Secrets: header values may contain `${VAR}`, resolved from the environment at startup. The
//! resolved values are sent and never shown: snapshots show the header as written with each
//! `${VAR}` replaced by `[redacted]`, and every text a provider answers (or an error carries) has
//! the secret values replaced before it is stored (see [`Secrets::scrub`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use puffle_domain::run::Subject;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

use super::miss::{self, MissRule};
use super::{
    is_retryable_status, raw_answer, read_body, retry_after, status_sentence, transport_failure,
    MAX_BODY_BYTES, REDACTED,
};
use crate::template::{self, Context, TemplateError};
use crate::throttle::{ProviderLimits, Throttles};
use crate::Outcome;

/// Everything `puffle.toml` configures (empty without a file).
#[derive(Debug, Clone, Default)]
pub struct ProvidersConfig {
    pub providers: BTreeMap<String, Arc<ProviderConfig>>,
    pub enrichments: Vec<Arc<EnrichmentConfig>>,
}

impl ProvidersConfig {
    pub fn enrichment(&self, slug: &str) -> Option<&Arc<EnrichmentConfig>> {
        self.enrichments.iter().find(|e| e.slug == slug)
    }

    /// Why `enrichment` cannot run on this server (a provider's secret is not set), if so.
    pub fn disabled_reason(&self, enrichment: &EnrichmentConfig) -> Option<String> {
        let mut reasons = Vec::new();
        for step in &enrichment.steps {
            if let Some(p) = self.providers.get(&step.provider) {
                if !p.missing_env.is_empty() {
                    let reason = format!(
                        "its provider {} needs the environment variable{} {}, which {} not set",
                        p.name,
                        if p.missing_env.len() > 1 { "s" } else { "" },
                        p.missing_env.join(", "),
                        if p.missing_env.len() > 1 { "are" } else { "is" },
                    );
                    if !reasons.contains(&reason) {
                        reasons.push(reason);
                    }
                }
            }
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

/// A `[providers.<name>]` table, resolved.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    /// Without a trailing `/`; a step's `path` is appended to it.
    pub base_url: String,
    pub headers: Vec<ConfiguredHeader>,
    pub timeout: Duration,
    pub limits: ProviderLimits,
    /// `None`: answers are not cached.
    pub cache_ttl: Option<Duration>,
    /// `${VAR}`s of the headers that the environment does not set: the provider is unusable.
    pub missing_env: Vec<String>,
    /// How this provider's callbacks are checked and matched (async steps), if it sends any.
    pub callback: Option<CallbackConfig>,
}

/// `callback_secret` and `callback_id_pointer` of a provider: a callback at
/// `POST /api/webhooks/providers/{name}` is signed with the secret, and its body holds the job
/// id at the pointer.
#[derive(Clone)]
pub struct CallbackConfig {
    /// `None` when its `${VAR}` is not set: every callback is refused.
    pub secret: Option<String>,
    pub id_pointer: String,
}

impl fmt::Debug for CallbackConfig {
    // The secret is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackConfig")
            .field("id_pointer", &self.id_pointer)
            .finish_non_exhaustive()
    }
}

impl ProviderConfig {
    /// The resolved secret values of this provider's headers.
    pub fn secrets(&self) -> Secrets {
        Secrets(
            self.headers
                .iter()
                .flat_map(|h| h.secrets.iter().cloned())
                .collect(),
        )
    }
}

/// A provider header: as written (`Bearer ${KEY}`) and as sent.
#[derive(Clone)]
pub struct ConfiguredHeader {
    pub name: HeaderName,
    /// As written in the file, `${VAR}` included: what snapshots show (redacted).
    pub written: String,
    /// With every `${VAR}` replaced by its value; `None` when a variable is not set.
    pub value: Option<String>,
    /// The values substituted for `${VAR}`s.
    pub secrets: Vec<String>,
}

impl ConfiguredHeader {
    /// The value as a snapshot shows it: each `${VAR}` replaced by `[redacted]`.
    pub fn shown(&self) -> String {
        let mut out = String::new();
        let mut rest = self.written.as_str();
        while let Some(start) = rest.find("${") {
            match rest[start..].find('}') {
                Some(len) => {
                    out.push_str(&rest[..start]);
                    out.push_str(REDACTED);
                    rest = &rest[start + len + 1..];
                }
                None => break,
            }
        }
        out.push_str(rest);
        out
    }
}

impl fmt::Debug for ConfiguredHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredHeader")
            .field("name", &self.name)
            .field("value", &self.shown())
            .finish()
    }
}

/// Secret values to keep out of anything stored or shown.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// Secrets shorter than this are not searched for: replacing every "ab" in an answer would
    /// mangle it, and such a value protects nothing anyway.
    const MIN_LEN: usize = 4;

    /// `text` with every secret value replaced by `[redacted]`.
    pub fn scrub_text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.0 {
            if s.len() >= Self::MIN_LEN && out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }

    /// A step's outcome with every secret value replaced in its result and messages.
    pub fn scrub_outcome(&self, outcome: StepOutcome) -> StepOutcome {
        match outcome {
            StepOutcome::Hit(v) => StepOutcome::Hit(self.scrub(v)),
            StepOutcome::Retry { after, message } => StepOutcome::Retry {
                after,
                message: self.scrub_text(&message),
            },
            StepOutcome::Fail(m) => StepOutcome::Fail(self.scrub_text(&m)),
            other => other,
        }
    }

    /// `value` with every secret value replaced in its strings and keys.
    pub fn scrub(&self, value: Value) -> Value {
        if self.0.iter().all(|s| s.len() < Self::MIN_LEN) {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.scrub_text(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|v| self.scrub(v)).collect()),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, v)| (self.scrub_text(&k), self.scrub(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// An `[[enrichments]]` entry, resolved.
#[derive(Debug, Clone)]
pub struct EnrichmentConfig {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub subject: Subject,
    pub credit_action: String,
    pub attribute_key: String,
    pub input_schema: Value,
    pub output_schema: Value,
    /// Tried in order; the first hit wins (a waterfall when there are several).
    pub steps: Vec<Step>,
}

/// How a step talks to its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepKind {
    /// One request per item.
    #[default]
    Http,
    /// Submit a job, then poll it (or receive a callback) until it is ready; see [`AsyncSpec`].
    Async,
}

/// The placeholder of the job id in an async step's poll path.
pub const SUBMISSION_ID: &str = "{{submission.id}}";

/// What an async step adds to a step. The step's `method`/`path`/`query`/`body` are the submit
/// request; its `result_pointer`/`miss_when` judge the final answer (poll or callback).
#[derive(Debug, Clone)]
pub struct AsyncSpec {
    /// Where the submit answer holds the job id.
    pub submission_id_pointer: String,
    pub poll_method: Method,
    /// May contain [`SUBMISSION_ID`] (percent-encoded when substituted).
    pub poll_path: String,
    /// An answer matching any rule means "not ready yet".
    pub pending_when: Vec<MissRule>,
    pub poll_interval: Duration,
    /// Still pending this long after the submit: the item fails.
    pub max_wait: Duration,
}

/// One request of an enrichment to one provider.
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: StepKind,
    pub provider: String,
    pub method: Method,
    /// Appended to the provider's base URL; `{{…}}` values are percent-encoded.
    pub path: String,
    /// Query parameters: name and templated value.
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub result_pointer: Option<String>,
    pub miss_when: Vec<MissRule>,
    /// `Some` exactly for [`StepKind::Async`].
    pub asynchronous: Option<AsyncSpec>,
}

/// What one step produced.
#[derive(Debug, Clone)]
pub enum StepOutcome {
    Hit(Value),
    Miss,
    /// The lead lacks what this step's request needs (the placeholders).
    MissingInput(Vec<String>),
    Retry {
        after: Option<Duration>,
        message: String,
    },
    Fail(String),
    /// An async step's job is submitted or still pending: this job id.
    Waiting(String),
}

/// One step as the item's metadata shows it.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub provider: String,
    pub outcome: StepOutcome,
    /// `{method, url, headers, body}`, secrets redacted; `None` when it could not be built.
    pub request: Option<Value>,
    /// The provider's answer (secrets scrubbed).
    pub answer: Option<Value>,
    /// The answer came from the result cache, not from the provider.
    pub cached: bool,
}

impl StepReport {
    /// `{provider, outcome, message?, missing?, request, answer, cached}`.
    pub fn to_json(&self) -> Value {
        let (outcome, message) = match &self.outcome {
            StepOutcome::Hit(_) => ("hit", None),
            StepOutcome::Miss => ("miss", None),
            StepOutcome::MissingInput(_) => ("missing_input", None),
            StepOutcome::Retry { message, .. } => ("retryable", Some(message.clone())),
            StepOutcome::Fail(message) => ("failed", Some(message.clone())),
            StepOutcome::Waiting(id) => ("waiting", Some(format!("waiting for job {id}"))),
        };
        let mut out = json!({
            "provider": self.provider,
            "outcome": outcome,
            "request": self.request,
            "answer": self.answer,
            "cached": self.cached,
        });
        if let Some(m) = message {
            out["message"] = Value::String(m);
        }
        if let StepOutcome::MissingInput(paths) = &self.outcome {
            out["missing"] = json!(paths);
        }
        out
    }
}

/// A request built from a step and a lead, ready to send.
pub struct BuiltRequest {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    /// What the snapshot shows.
    pub shown: Value,
}

/// Render `step` for a lead; `Err` is the step's outcome when it cannot be built.
pub fn build_request(
    provider: &ProviderConfig,
    step: &Step,
    ctx: &Context,
) -> Result<BuiltRequest, StepOutcome> {
    let mut errors = Vec::new();
    let path = template::render_url(&step.path, ctx)
        .map_err(|e| errors.push(e))
        .ok();
    let mut query = Vec::new();
    for (name, value) in &step.query {
        match template::render_text(value, ctx) {
            Ok(v) => query.push((name.clone(), v)),
            Err(e) => errors.push(e),
        }
    }
    let body = match &step.body {
        None => None,
        Some(b) => template::render_json(b, ctx)
            .map_err(|e| errors.push(e))
            .ok(),
    };
    match TemplateError::merge(errors) {
        Some(TemplateError::Missing(paths)) => return Err(StepOutcome::MissingInput(paths)),
        Some(e) => return Err(StepOutcome::Fail(e.to_string())),
        None => {}
    }
    let joined = format!("{}{}", provider.base_url, path.unwrap_or_default());
    let mut url = Url::parse(&joined).map_err(|e| {
        StepOutcome::Fail(format!(
            "the URL built for provider {} is not valid ({e})",
            provider.name
        ))
    })?;
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in &query {
            pairs.append_pair(name, value);
        }
    }

    let mut headers = HeaderMap::new();
    let mut shown_headers = serde_json::Map::new();
    for h in &provider.headers {
        let Some(value) = &h.value else {
            return Err(StepOutcome::Fail(format!(
                "provider {} has a header whose environment variable is not set",
                provider.name
            )));
        };
        let value = HeaderValue::from_str(value).map_err(|_| {
            StepOutcome::Fail(format!(
                "provider {}'s header {} is not a valid header value",
                provider.name, h.name
            ))
        })?;
        headers.append(h.name.clone(), value);
        shown_headers.insert(h.name.to_string(), Value::String(h.shown()));
    }
    let body_bytes = match &body {
        None => None,
        Some(Value::String(text)) => {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
            }
            Some(text.clone().into_bytes())
        }
        Some(json) => {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Some(serde_json::to_vec(json).unwrap_or_default())
        }
    };
    if !headers.contains_key(ACCEPT) {
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    }
    let shown = json!({
        "method": step.method.as_str(),
        "url": url.as_str(),
        "headers": shown_headers,
        "body": body,
    });
    Ok(BuiltRequest {
        method: step.method.clone(),
        url,
        headers,
        body: body_bytes,
        shown,
    })
}

/// Send a built request under the provider's throttle and turn the answer into an outcome and
/// the raw answer (not yet scrubbed). A 429 or 503 with `Retry-After` pauses the provider for
/// every item.
pub async fn send(
    client: &reqwest::Client,
    throttles: &Arc<Throttles>,
    provider: &ProviderConfig,
    step: &Step,
    request: BuiltRequest,
) -> (StepOutcome, Option<Value>) {
    let who = format!("provider {}", provider.name);
    let mut builder = client
        .request(request.method, request.url)
        .headers(request.headers)
        .timeout(provider.timeout);
    if let Some(body) = request.body {
        builder = builder.body(body);
    }
    // The permit is held until the answer is read: max_in_flight counts whole calls.
    let permit = throttles.acquire(&provider.name, &provider.limits).await;
    let mut response = match builder.send().await {
        Ok(r) => r,
        Err(e) => return (retry_of(transport_failure(&who, e, provider.timeout)), None),
    };
    let status = response.status();
    let asked = retry_after(response.headers());
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        if let Some(delay) = asked {
            throttles.pause(&provider.name, delay).await;
        }
    }
    let claims_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|ct| ct.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    let body = match read_body(&mut response, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => return (retry_of(transport_failure(&who, e, provider.timeout)), None),
    };
    drop(permit);
    let raw = Some(raw_answer(status, &body.bytes));
    let outcome = if status.is_success() {
        if body.truncated {
            StepOutcome::Fail(format!(
                "{who}'s answer is larger than {} MiB",
                MAX_BODY_BYTES / (1024 * 1024)
            ))
        } else {
            evaluate(&who, step, &body.bytes, claims_json)
        }
    } else if status == StatusCode::NOT_FOUND {
        StepOutcome::Miss
    } else if is_retryable_status(status) {
        StepOutcome::Retry {
            after: asked,
            message: status_sentence(&who, status),
        }
    } else {
        StepOutcome::Fail(status_sentence(&who, status))
    };
    (outcome, raw)
}

fn retry_of(outcome: Outcome) -> StepOutcome {
    match outcome {
        Outcome::Retry { after, message } => StepOutcome::Retry { after, message },
        Outcome::Fail(m) => StepOutcome::Fail(m),
        _ => StepOutcome::Fail("unexpected outcome".into()),
    }
}

/// A 2xx body → hit or miss: `miss_when` first (on the whole answer), then the value at
/// `result_pointer` (null or absent: miss).
pub fn evaluate(who: &str, step: &Step, body: &[u8], claims_json: bool) -> StepOutcome {
    match serde_json::from_slice::<Value>(body) {
        Ok(json) => judge(step, &json),
        Err(_) if body.iter().all(u8::is_ascii_whitespace) => StepOutcome::Miss,
        Err(e) if claims_json || step.result_pointer.is_some() || !step.miss_when.is_empty() => {
            StepOutcome::Fail(format!("{who}'s answer is not valid JSON ({e})"))
        }
        Err(_) => match std::str::from_utf8(body) {
            Ok(text) => StepOutcome::Hit(Value::String(text.trim().to_string())),
            Err(_) => StepOutcome::Fail(format!("{who}'s answer is neither JSON nor UTF-8 text")),
        },
    }
}

/// A JSON answer → hit or miss by `miss_when`, then `result_pointer`.
pub fn judge(step: &Step, json: &Value) -> StepOutcome {
    if miss::is_miss(&step.miss_when, json) {
        return StepOutcome::Miss;
    }
    let found = match &step.result_pointer {
        Some(p) => json.pointer(p),
        None => Some(json),
    };
    match found {
        Some(v) if !v.is_null() => StepOutcome::Hit(v.clone()),
        _ => StepOutcome::Miss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(written: &str, secrets: &[&str]) -> ConfiguredHeader {
        ConfiguredHeader {
            name: HeaderName::from_static("authorization"),
            written: written.into(),
            value: Some("x".into()),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn headers_show_variables_redacted_and_debug_never_prints_values() {
        let h = header("Bearer ${KEY} and ${OTHER}!", &["s3cr3t-value"]);
        assert_eq!(h.shown(), "Bearer [redacted] and [redacted]!");
        assert_eq!(header("plain", &[]).shown(), "plain");
        assert_eq!(header("broken ${KEY", &[]).shown(), "broken ${KEY");
        assert!(!format!("{h:?}").contains("s3cr3t"));
    }

    #[test]
    fn scrubbing_replaces_secrets_in_strings_and_keys() {
        let s = Secrets(vec!["s3cr3t-value".into(), "ab".into()]);
        let v = json!({"echo": "Bearer s3cr3t-value", "s3cr3t-value": [1, "xs3cr3t-valuex"], "ab": "ab"});
        assert_eq!(
            s.scrub(v),
            json!({"echo": "Bearer [redacted]", "[redacted]": [1, "x[redacted]x"], "ab": "ab"})
        );
    }

    fn step(pointer: Option<&str>, miss_when: Vec<MissRule>) -> Step {
        Step {
            kind: StepKind::Http,
            provider: "p".into(),
            method: Method::GET,
            path: "/".into(),
            query: vec![],
            body: None,
            result_pointer: pointer.map(str::to_string),
            miss_when,
            asynchronous: None,
        }
    }

    #[test]
    fn answers_are_judged_by_miss_when_then_the_pointer() {
        let rule = MissRule {
            pointer: "/score".into(),
            condition: miss::Condition::Below(50.0),
        };
        let s = step(Some("/data/email"), vec![rule]);
        let judge = |body: &str| evaluate("p", &s, body.as_bytes(), true);
        assert!(
            matches!(judge(r#"{"score": 90, "data": {"email": "a@b.c"}}"#),
            StepOutcome::Hit(v) if v == "a@b.c")
        );
        assert!(matches!(
            judge(r#"{"score": 10, "data": {"email": "a@b.c"}}"#),
            StepOutcome::Miss
        ));
        assert!(matches!(
            judge(r#"{"score": 90, "data": {"email": null}}"#),
            StepOutcome::Miss
        ));
        assert!(matches!(judge("  "), StepOutcome::Miss));
        assert!(matches!(judge("<html>"), StepOutcome::Fail(_)));
        let plain = step(None, vec![]);
        assert!(matches!(evaluate("p", &plain, b" text ", false),
            StepOutcome::Hit(v) if v == "text"));
    }
}
