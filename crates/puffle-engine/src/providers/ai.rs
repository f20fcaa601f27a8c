//! `custom_ai`: ask an OpenAI-compatible chat-completions endpoint for a JSON answer about a lead
//! (spec §5).
//!
//! Input: `{prompt, outputSchema?, model?}`. The prompt is rendered with
//! [`template::render_text`]; the request is `POST {base_url}/chat/completions` with a system
//! message asking for JSON only (matching `outputSchema` when given) and
//! `response_format: {"type": "json_object"}`. The answer's `choices[0].message.content` is parsed
//! as JSON (a ```` ```json ```` fenced block is tolerated) and checked against `outputSchema`:
//! valid → hit; not JSON, or not matching → failed at once (asking again would cost again for
//! likely the same answer). 429, 5xx, timeouts and transport failures are retried; other 4xx
//! fail.
//!
//! The endpoint is operator configuration, trusted: the `custom_http` destination check does not
//! apply to it. Its key is sent as `Authorization: Bearer …` and appears nowhere else: not in
//! snapshots, messages, or `Debug` output.

use std::{fmt, time::Duration};

use puffle_domain::lead::Lead;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{json, Value};

use super::{
    is_retryable_status, raw_answer, read_body, retry_after, status_sentence, transport_failure,
    Execution, MAX_BODY_BYTES, REDACTED,
};
use crate::{
    template::{self, Context, TemplateError},
    EngineConfig, Outcome,
};

pub const PROVIDER: &str = "custom_ai";
/// How long a completion may take by default: models are slow.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const WHO: &str = "the AI provider";
/// How many schema violations a failure message lists.
const MAX_LISTED_ERRORS: usize = 3;

/// Where `custom_ai` sends its requests. `Debug` never shows the key.
#[derive(Clone)]
pub struct AiConfig {
    /// OpenAI-compatible base URL, e.g. `http://localhost:11434/v1` (no trailing `/chat/…`).
    pub base_url: String,
    pub api_key: Option<String>,
    /// The model used when the input names none.
    pub model: String,
    /// How long one completion may take.
    pub timeout: Duration,
}

impl fmt::Debug for AiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| REDACTED))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl AiConfig {
    /// The configuration from the engine's, or `None` when the base URL or the model is missing
    /// (the catalog then marks `custom_ai` disabled). A blank key counts as none.
    pub fn from_engine(config: &EngineConfig) -> Option<AiConfig> {
        let non_blank = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Some(AiConfig {
            base_url: non_blank(&config.ai_base_url)?
                .trim_end_matches('/')
                .to_string(),
            api_key: non_blank(&config.ai_api_key),
            model: non_blank(&config.ai_model)?,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// The input, checked.
struct AiInput {
    prompt: String,
    output_schema: Option<(Value, jsonschema::Validator)>,
    model: Option<String>,
}

/// Check a run's `input` for `custom_ai` at run creation. The message names the field.
pub fn validate_input(input: &Value) -> Result<(), String> {
    parse_input(input).map(|_| ())
}

/// The JSON Schema of the input, for the catalog.
pub fn input_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "minLength": 1, "description": "{{lead.<path>}} placeholders are inserted as text"},
            "outputSchema": {"type": ["object", "boolean"], "description": "JSON Schema the answer must match"},
            "model": {"type": "string", "minLength": 1}
        },
        "required": ["prompt"]
    })
}

fn parse_input(input: &Value) -> Result<AiInput, String> {
    let obj = input
        .as_object()
        .ok_or_else(|| "input: must be an object".to_string())?;
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err("input.prompt: is required".into())
        }
        Some(_) => return Err("input.prompt: must be a string".into()),
    };
    template::validate(&prompt).map_err(|e| format!("input.prompt: {e}"))?;
    let output_schema = match obj.get("outputSchema") {
        None | Some(Value::Null) => None,
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
            let validator = jsonschema::validator_for(schema)
                .map_err(|e| format!("input.outputSchema: not a usable JSON Schema ({e})"))?;
            Some((schema.clone(), validator))
        }
        Some(_) => return Err("input.outputSchema: must be a JSON Schema object".into()),
    };
    let model = match obj.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if !m.trim().is_empty() => Some(m.trim().to_string()),
        Some(_) => return Err("input.model: must be a non-empty string".into()),
    };
    Ok(AiInput {
        prompt,
        output_schema,
        model,
    })
}

/// The system message: answer with JSON only, matching the schema when there is one.
fn instructions(schema: Option<&Value>) -> String {
    let mut s = String::from(
        "You enrich data about business leads. Answer with a single JSON object and nothing \
         else: no prose, no explanations, no code fences.",
    );
    if let Some(schema) = schema {
        s.push_str(" The JSON must be valid against this JSON Schema:\n");
        s.push_str(&schema.to_string());
    }
    s
}

/// Execute `custom_ai` for one lead with the shared `client`.
pub async fn execute(
    client: &reqwest::Client,
    config: &AiConfig,
    lead: &Lead,
    input: &Value,
) -> Execution {
    let done = |outcome, input_snapshot, raw| Execution {
        outcome,
        input_snapshot,
        raw,
        provider: PROVIDER.to_string(),
        details: None,
    };
    let req = match parse_input(input) {
        Ok(r) => r,
        Err(message) => return done(Outcome::Fail(message), Value::Null, None),
    };
    let prompt = match template::render_text(&req.prompt, &Context::new(lead, input)) {
        Ok(p) => p,
        Err(TemplateError::Missing(paths)) => {
            return done(Outcome::MissingInput, json!({ "missing": paths }), None)
        }
        Err(e) => return done(Outcome::Fail(e.to_string()), Value::Null, None),
    };
    let schema = req.output_schema.as_ref().map(|(s, _)| s);
    let body = json!({
        "model": req.model.as_deref().unwrap_or(&config.model),
        "messages": [
            {"role": "system", "content": instructions(schema)},
            {"role": "user", "content": prompt},
        ],
        "response_format": {"type": "json_object"},
    });
    let url = config.endpoint();
    let mut shown_headers = serde_json::Map::new();
    shown_headers.insert("content-type".into(), json!("application/json"));
    if config.api_key.is_some() {
        shown_headers.insert("authorization".into(), json!(REDACTED));
    }
    let snapshot = json!({"method": "POST", "url": url, "headers": shown_headers, "body": body});

    let mut request = client
        .post(&url)
        .timeout(config.timeout)
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default());
    if let Some(key) = &config.api_key {
        request = request.bearer_auth(key);
    }
    let call = async {
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return (transport_failure(WHO, e, config.timeout), None),
        };
        let status = response.status();
        let body = match read_body(&mut response, MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(e) => return (transport_failure(WHO, e, config.timeout), None),
        };
        let raw = Some(raw_answer(status, &body.bytes));
        let outcome = if status.is_success() {
            if body.truncated {
                Outcome::Fail(format!(
                    "{WHO}'s answer is larger than {} MiB",
                    MAX_BODY_BYTES / (1024 * 1024)
                ))
            } else {
                answer_outcome(&body.bytes, req.output_schema.as_ref().map(|(_, v)| v))
            }
        } else if is_retryable_status(status) {
            Outcome::Retry {
                after: retry_after(response.headers()),
                message: status_sentence(WHO, status),
            }
        } else {
            Outcome::Fail(status_sentence(WHO, status))
        };
        (outcome, raw)
    };
    // reqwest's own timeout covers the body too; this one is a backstop.
    let (outcome, raw) = match tokio::time::timeout(config.timeout, call).await {
        Ok(answer) => answer,
        Err(_) => (
            Outcome::Retry {
                after: None,
                message: format!(
                    "{WHO} did not answer within {} ms",
                    config.timeout.as_millis()
                ),
            },
            None,
        ),
    };
    done(outcome, snapshot, raw)
}

/// A 2xx chat-completions answer → hit or failure.
fn answer_outcome(body: &[u8], validator: Option<&jsonschema::Validator>) -> Outcome {
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return Outcome::Fail(format!("{WHO}'s answer is not JSON"));
    };
    let Some(content) = answer
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
    else {
        return Outcome::Fail(format!(
            "{WHO}'s answer has no choices[0].message.content text"
        ));
    };
    let Some(value) = parse_model_json(content) else {
        return Outcome::Fail("the model's answer is not valid JSON".to_string());
    };
    if let Some(validator) = validator {
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .take(MAX_LISTED_ERRORS + 1)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                format!("at {at}: {e}")
            })
            .collect();
        if !errors.is_empty() {
            let shown = errors
                .iter()
                .take(MAX_LISTED_ERRORS)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            let more = if errors.len() > MAX_LISTED_ERRORS {
                "; …"
            } else {
                ""
            };
            return Outcome::Fail(format!(
                "the model's answer does not match outputSchema: {shown}{more}"
            ));
        }
    }
    if value.is_null() {
        Outcome::Miss
    } else {
        Outcome::Hit(value)
    }
}

/// The JSON in a model's message: the whole text, or the content of its first fenced code block
/// (```` ```json … ``` ````).
fn parse_model_json(content: &str) -> Option<Value> {
    let text = content.trim();
    if let Ok(v) = serde_json::from_str(text) {
        return Some(v);
    }
    let start = text.find("```")?;
    let after = &text[start + 3..];
    // The info string (`json`, `JSON` or nothing) runs to the end of the fence's line, unless the
    // JSON starts right there (```{"a": 1}```).
    let (info, body) = match after.split_once('\n') {
        Some((info, body)) if !info.trim_start().starts_with(['{', '[']) => (info.trim(), body),
        _ => ("", after),
    };
    if !info.is_empty() && !info.eq_ignore_ascii_case("json") {
        return None;
    }
    let (inner, _) = body.split_once("```")?;
    serde_json::from_str(inner.trim()).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::{extract::State, http::HeaderMap as AxHeaders, routing::post, Json, Router};

    use super::*;
    use crate::providers::test_support::{closed_port, lead, serve};

    const KEY: &str = "sk-test-d0n0tl3ak";

    /// A request the fake server received: its Authorization header and its JSON body.
    type Received = (Option<String>, Value);

    #[derive(Clone, Default)]
    struct Seen {
        requests: Arc<Mutex<Vec<Received>>>,
    }

    /// A fake OpenAI-compatible server: the scenario is the last word of the user's message.
    async fn fake(
        State(seen): State<Seen>,
        headers: AxHeaders,
        Json(body): Json<Value>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        seen.requests.lock().unwrap().push((auth, body.clone()));
        let user = body["messages"][1]["content"].as_str().unwrap_or_default();
        let content = match user.rsplit(' ').next().unwrap_or_default() {
            "json" => r#"{"industry": "Software", "employees": 250}"#.to_string(),
            "fenced" => "Here you go:\n```json\n{\"industry\": \"Software\", \"employees\": 250}\n```\nAnything else?".to_string(),
            "invalid" => "The company makes software.".to_string(),
            "mismatch" => r#"{"industry": 7}"#.to_string(),
            "null" => "null".to_string(),
            "error500" => {
                return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
            }
            "error429" => {
                return (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "3")],
                    Json(json!({"error": {"message": "slow down"}})),
                )
                    .into_response()
            }
            "error400" => {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    Json(json!({"error": {"message": "unknown model"}})),
                )
                    .into_response()
            }
            "nochoices" => return Json(json!({"choices": []})).into_response(),
            other => format!("unexpected scenario {other}"),
        };
        Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        }))
        .into_response()
    }

    async fn server() -> (AiConfig, Seen) {
        let seen = Seen::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(fake))
            .with_state(seen.clone());
        let addr = serve(app).await;
        let config = AiConfig {
            base_url: format!("http://{addr}/v1/"),
            api_key: Some(KEY.into()),
            model: "tiny-model".into(),
            timeout: Duration::from_secs(10),
        };
        (config, seen)
    }

    fn acme() -> Lead {
        lead(
            json!({"name": {"full": "Ann Lee"}, "company": {"name": "Acme", "domain": "acme.com"}}),
            json!({}),
        )
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {"industry": {"type": "string"}, "employees": {"type": "integer"}},
            "required": ["industry"]
        })
    }

    async fn ask(config: &AiConfig, scenario: &str, with_schema: bool) -> Execution {
        let mut input = json!({"prompt": format!("Describe {{{{lead.company.name}}}} ({{{{ lead.company.domain }}}}), answer {scenario}")});
        if with_schema {
            input["outputSchema"] = schema();
        }
        execute(&reqwest::Client::new(), config, &acme(), &input).await
    }

    fn assert_no_key(ex: &Execution) {
        let everything = format!("{ex:?} {}", ex.input_snapshot);
        assert!(!everything.contains(KEY), "the key leaked: {everything}");
    }

    #[tokio::test]
    async fn a_json_answer_matching_the_schema_is_a_hit() {
        let (config, seen) = server().await;
        let ex = ask(&config, "json", true).await;
        assert_eq!(
            ex.outcome,
            Outcome::Hit(json!({"industry": "Software", "employees": 250}))
        );
        assert_eq!(ex.provider, "custom_ai");
        assert_eq!(ex.raw.as_ref().unwrap()["usage"]["total_tokens"], 15);
        assert_no_key(&ex);

        let requests = seen.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        let (auth, body) = &requests[0];
        assert_eq!(auth.as_deref(), Some(format!("Bearer {KEY}").as_str()));
        assert_eq!(body["model"], "tiny-model");
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        assert_eq!(body["messages"][0]["role"], "system");
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(
            system.contains("JSON") && system.contains(r#""required":["industry"]"#),
            "{system}"
        );
        assert_eq!(body["messages"][1]["role"], "user");
        assert_eq!(
            body["messages"][1]["content"],
            "Describe Acme (acme.com), answer json"
        );
        // The snapshot is the request as sent, the key replaced.
        assert_eq!(ex.input_snapshot["body"], *body);
        assert_eq!(ex.input_snapshot["headers"]["authorization"], REDACTED);
        assert_eq!(
            ex.input_snapshot["url"],
            format!("{}chat/completions", config.base_url)
        );
    }

    #[tokio::test]
    async fn a_fenced_answer_is_accepted_and_the_input_model_wins() {
        let (config, seen) = server().await;
        let input = json!({"prompt": "About {{lead.company.name}}: fenced", "model": "big-model"});
        let ex = execute(&reqwest::Client::new(), &config, &acme(), &input).await;
        assert_eq!(
            ex.outcome,
            Outcome::Hit(json!({"industry": "Software", "employees": 250}))
        );
        let requests = seen.requests.lock().unwrap().clone();
        assert_eq!(requests[0].1["model"], "big-model");
        // Without a schema the system message asks for JSON, and shows no schema.
        let system = requests[0].1["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            system.contains("JSON") && !system.contains("Schema:"),
            "{system}"
        );
    }

    #[tokio::test]
    async fn bad_answers_fail_without_retry() {
        let (config, _) = server().await;
        let ex = ask(&config, "invalid", true).await;
        assert_eq!(
            ex.outcome,
            Outcome::Fail("the model's answer is not valid JSON".into())
        );
        let ex = ask(&config, "mismatch", true).await;
        match &ex.outcome {
            Outcome::Fail(m) => {
                assert!(
                    m.starts_with("the model's answer does not match outputSchema: "),
                    "{m}"
                );
                assert!(m.contains("/industry"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // The same answer without a schema is a hit.
        let ex = ask(&config, "mismatch", false).await;
        assert_eq!(ex.outcome, Outcome::Hit(json!({"industry": 7})));
        let ex = ask(&config, "nochoices", false).await;
        assert_eq!(
            ex.outcome,
            Outcome::Fail("the AI provider's answer has no choices[0].message.content text".into())
        );
        let ex = ask(&config, "null", false).await;
        assert_eq!(ex.outcome, Outcome::Miss);
        let ex = ask(&config, "error400", false).await;
        assert_eq!(
            ex.outcome,
            Outcome::Fail("the AI provider answered HTTP 400 Bad Request".into())
        );
        assert_no_key(&ex);
    }

    #[tokio::test]
    async fn server_errors_and_rate_limits_are_retried() {
        let (config, _) = server().await;
        let ex = ask(&config, "error500", true).await;
        assert_eq!(
            ex.outcome,
            Outcome::Retry {
                after: None,
                message: "the AI provider answered HTTP 500 Internal Server Error".into()
            }
        );
        assert_eq!(ex.raw, Some(json!({"status": 500, "text": "boom"})));
        let ex = ask(&config, "error429", true).await;
        assert_eq!(
            ex.outcome,
            Outcome::Retry {
                after: Some(Duration::from_secs(3)),
                message: "the AI provider answered HTTP 429 Too Many Requests".into()
            }
        );
        let down = AiConfig {
            base_url: format!("http://127.0.0.1:{}/v1", closed_port().await),
            ..config
        };
        let ex = ask(&down, "json", true).await;
        assert!(
            matches!(&ex.outcome, Outcome::Retry { message, .. } if message.starts_with("could not connect")),
            "{:?}",
            ex.outcome
        );
        assert_no_key(&ex);
    }

    #[tokio::test]
    async fn a_missing_placeholder_skips_without_a_request() {
        let (config, seen) = server().await;
        let input = json!({"prompt": "Industry of {{lead.industry}}? json"});
        let ex = execute(&reqwest::Client::new(), &config, &acme(), &input).await;
        assert_eq!(ex.outcome, Outcome::MissingInput);
        assert_eq!(ex.input_snapshot, json!({"missing": ["lead.industry"]}));
        assert!(seen.requests.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn no_key_configured_sends_no_authorization() {
        let (mut config, seen) = server().await;
        config.api_key = None;
        let ex = ask(&config, "json", false).await;
        assert!(matches!(ex.outcome, Outcome::Hit(_)));
        assert_eq!(seen.requests.lock().unwrap()[0].0, None);
        assert!(ex.input_snapshot["headers"].get("authorization").is_none());
    }

    #[test]
    fn config_comes_from_the_engine_and_hides_its_key() {
        let mut engine = EngineConfig {
            ai_base_url: Some("http://localhost:11434/v1/".into()),
            ai_api_key: Some(KEY.into()),
            ai_model: Some(" llama3 ".into()),
            ..EngineConfig::default()
        };
        let config = AiConfig::from_engine(&engine).expect("configured");
        assert_eq!(config.base_url, "http://localhost:11434/v1");
        assert_eq!(
            config.endpoint(),
            "http://localhost:11434/v1/chat/completions"
        );
        assert_eq!(config.model, "llama3");
        assert_eq!(config.api_key.as_deref(), Some(KEY));
        let debug = format!("{config:?} {config:#?}");
        assert!(!debug.contains(KEY) && debug.contains(REDACTED), "{debug}");

        engine.ai_api_key = Some("  ".into());
        assert_eq!(AiConfig::from_engine(&engine).unwrap().api_key, None);
        engine.ai_model = None;
        assert!(AiConfig::from_engine(&engine).is_none());
        engine.ai_model = Some("m".into());
        engine.ai_base_url = Some("".into());
        assert!(AiConfig::from_engine(&engine).is_none());
        assert!(AiConfig::from_engine(&EngineConfig::default()).is_none());
    }

    #[test]
    fn inputs_are_checked_field_by_field() {
        for ok in [
            json!({"prompt": "Hi {{lead.name.full}}"}),
            json!({"prompt": "x", "outputSchema": {"type": "object"}, "model": "m"}),
            json!({"prompt": "x", "outputSchema": true, "model": null}),
        ] {
            assert_eq!(validate_input(&ok), Ok(()), "{ok}");
        }
        for (bad, field) in [
            (json!(null), "input:"),
            (json!({}), "input.prompt:"),
            (json!({"prompt": " "}), "input.prompt:"),
            (json!({"prompt": 3}), "input.prompt:"),
            (json!({"prompt": "{{name}}"}), "input.prompt:"),
            (
                json!({"prompt": "x", "outputSchema": "object"}),
                "input.outputSchema:",
            ),
            (
                json!({"prompt": "x", "outputSchema": {"type": "objekt"}}),
                "input.outputSchema:",
            ),
            (
                json!({"prompt": "x", "outputSchema": {"$ref": "https://example.com/s.json"}}),
                "input.outputSchema:",
            ),
            (json!({"prompt": "x", "model": ""}), "input.model:"),
            (json!({"prompt": "x", "model": 4}), "input.model:"),
        ] {
            let err = validate_input(&bad).expect_err(&bad.to_string());
            assert!(err.starts_with(field), "{bad}: {err}");
        }
    }

    #[test]
    fn model_json_is_found_bare_or_fenced() {
        let v = json!({"a": 1});
        for text in [
            r#"{"a": 1}"#,
            " \n{\"a\": 1}\n",
            "```json\n{\"a\": 1}\n```",
            "```JSON\n{\"a\": 1}\n```",
            "```\n{\"a\": 1}\n```",
            "Sure! Here it is:\n```json\n{\"a\": 1}\n```\nHope this helps.",
            "```{\"a\": 1}```",
        ] {
            assert_eq!(parse_model_json(text), Some(v.clone()), "{text:?}");
        }
        for text in [
            "",
            "no json here",
            "```json\n{\"a\": 1}",
            "```python\nprint(1)\n```",
            "```json\nnot json\n```",
            "{\"a\": 1",
        ] {
            assert_eq!(parse_model_json(text), None, "{text:?}");
        }
    }
}
