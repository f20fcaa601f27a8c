//! Enrichments that call out over the network: `custom_http` ([`http`]) and `custom_ai`
//! ([`ai`]). Each turns a lead and the run's `input` into an [`Execution`]: the [`Outcome`] plus
//! what the item's metadata shows (spec §6, `metadata.inputSnapshot`, `metadata.result`,
//! `metadata.provider`).
//!
//! Everything a provider answers is untrusted: bodies are read up to [`MAX_BODY_BYTES`], never
//! assumed to be JSON or UTF-8, and nothing here panics on them.

pub mod ai;
pub mod async_step;
pub mod cache;
pub mod configured;
pub mod http;
pub mod miss;
pub mod waterfall;

use std::time::{Duration, SystemTime};

use reqwest::{header::HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::Outcome;

/// What executing a provider for one item produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub outcome: Outcome,
    /// The resolved request (`{method, url, headers, body}`), secrets redacted; for an item that
    /// lacks input, `{"missing": ["lead.company.domain", …]}`.
    pub input_snapshot: Value,
    /// The provider's answer: its JSON body, or `{"status", "text"}` (the first 4 KiB) when it
    /// is not JSON; `None` when no answer came.
    pub raw: Option<Value>,
    /// The provider that produced this (`custom_http`, `custom_ai`, a configured provider).
    pub provider: String,
    /// What a failed item's `error.details` shows (a waterfall's steps); `None` for most.
    pub details: Option<Value>,
}

/// The most of a response body that is read (5 MiB); a 2xx answer larger than this fails.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// How much of a non-JSON answer `raw` keeps.
const RAW_TEXT_BYTES: usize = 4 * 1024;

/// What replaces a secret in snapshots.
pub const REDACTED: &str = "[redacted]";

/// A body read up to a cap.
struct Body {
    bytes: Vec<u8>,
    /// The answer had more than the cap; `bytes` holds the first `cap` bytes.
    truncated: bool,
}

/// Read `response`'s body, keeping at most `cap` bytes and reading no further than that.
async fn read_body(response: &mut reqwest::Response, cap: usize) -> Result<Body, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Body {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body {
        bytes,
        truncated: false,
    })
}

/// `raw` for an answer: its JSON, or its status and the start of its text.
fn raw_answer(status: StatusCode, body: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        Err(_) => json!({"status": status.as_u16(), "text": text_preview(body)}),
    }
}

/// The first [`RAW_TEXT_BYTES`] of a body as text (invalid UTF-8 replaced, never cut inside a
/// character).
fn text_preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(RAW_TEXT_BYTES)]);
    let mut end = text.len().min(RAW_TEXT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// "the provider answered HTTP 422 Unprocessable Entity".
fn status_sentence(who: &str, status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{who} answered HTTP {} {reason}", status.as_u16()),
        None => format!("{who} answered HTTP {}", status.as_u16()),
    }
}

/// 429 and 5xx: the provider may answer later.
fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` as delay-seconds or an HTTP date (a date in the past: no delay asked).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    at.duration_since(SystemTime::now()).ok()
}

/// A reqwest error with its causes ("error sending request: connection refused"), without the
/// URL (which the snapshot shows, redacted).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !message.contains(&s_text) {
            message.push_str(": ");
            message.push_str(&s_text);
        }
        source = s.source();
    }
    message
}

/// The outcome of a transport failure (no HTTP answer): always retryable, the provider may be
/// reachable later.
fn transport_failure(who: &str, e: reqwest::Error, timeout: Duration) -> Outcome {
    let message = if e.is_timeout() {
        format!("{who} did not answer within {} ms", timeout.as_millis())
    } else if e.is_connect() {
        format!("could not connect to {who}: {}", error_chain(e))
    } else {
        format!("the request to {who} failed: {}", error_chain(e))
    };
    Outcome::Retry {
        after: None,
        message,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Loopback servers for the provider tests.

    use std::net::SocketAddr;

    use puffle_domain::{lead::Lead, LeadType};
    use serde_json::{Map, Value};
    use tokio::{io::AsyncWriteExt, net::TcpListener};

    /// Serve `app` on 127.0.0.1 at a free port, for the rest of the test.
    pub async fn serve(app: axum::Router) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// A server that answers every connection with `bytes` and closes it: for answers no
    /// well-behaved HTTP server would give.
    pub async fn serve_raw(bytes: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    // Read (part of) the request first so the client is not reset mid-send.
                    let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
                    let _ = socket.write_all(bytes).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        addr
    }

    /// A port on 127.0.0.1 where nothing listens.
    pub async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").port()
    }

    pub fn lead(fields: Value, attributes: Value) -> Lead {
        Lead {
            id: "lead-1".into(),
            kind: LeadType::Person,
            fields: serde_json::from_value(fields).expect("test lead fields"),
            attributes: match attributes {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            lists: vec![],
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }
}

/// The worker spawns executions on a multi-threaded runtime: they must be `Send`.
#[cfg(test)]
#[allow(dead_code)]
fn executions_are_send(
    client: &reqwest::Client,
    http_client: &http::GuardedClient,
    lead: &puffle_domain::lead::Lead,
    ai: &ai::AiConfig,
) {
    fn send<T: Send>(_: T) {}
    let input = Value::Null;
    send(http::execute(http_client, lead, &input));
    send(ai::execute(client, ai, lead, &input));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", " 7 ".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            "retry-after",
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let d = retry_after(&h).expect("a date");
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn raw_answers_keep_json_or_the_start_of_the_text() {
        assert_eq!(raw_answer(StatusCode::OK, br#"{"a":1}"#), json!({"a": 1}));
        let long = "é".repeat(3000); // 6000 bytes
        let raw = raw_answer(StatusCode::BAD_GATEWAY, long.as_bytes());
        assert_eq!(raw["status"], 502);
        let text = raw["text"].as_str().unwrap();
        assert!(text.len() <= RAW_TEXT_BYTES && text.len() >= RAW_TEXT_BYTES - 4);
        assert!(text.chars().all(|c| c == 'é'));
        let raw = raw_answer(StatusCode::OK, b"\xff\xfe\x00garbage");
        assert_eq!(raw["text"], "\u{fffd}\u{fffd}\u{0}garbage");
    }

    #[test]
    fn status_sentences_name_the_status() {
        assert_eq!(
            status_sentence("the provider", StatusCode::UNPROCESSABLE_ENTITY),
            "the provider answered HTTP 422 Unprocessable Entity"
        );
        assert_eq!(
            status_sentence("the provider", StatusCode::from_u16(499).unwrap()),
            "the provider answered HTTP 499"
        );
        assert!(is_retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_retryable_status(StatusCode::BAD_GATEWAY));
        assert!(!is_retryable_status(StatusCode::NOT_FOUND));
        assert!(!is_retryable_status(StatusCode::UNPROCESSABLE_ENTITY));
    }
}
