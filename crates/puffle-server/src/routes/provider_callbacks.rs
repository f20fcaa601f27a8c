//! `POST /api/webhooks/providers/{provider}`: a vendor tells Puffle that an async job is done
//! (see `docs/providers.md` "Async steps"). No API key: the request is authenticated by its
//! `Puffle-Signature` header, an HMAC-SHA256 with the provider's `callback_secret`.
//!
//! The body is kept for the item waiting on the job (found by `callback_id_pointer`) and the
//! item becomes due at once; a worker then judges the body as the poll's answer.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::error::ApiError;

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "puffle-signature";
/// How far the signature's time may be from now, either way (replay window).
const TOLERANCE_SECS: i64 = 300;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/webhooks/providers/{provider}", post(receive))
}

async fn receive(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let unknown =
        || ApiError::NotFound(format!("No provider named {provider} receives callbacks."));
    let config = state.config.engine.providers.clone();
    let callback = config
        .providers
        .get(&provider)
        .and_then(|p| p.callback.clone())
        .ok_or_else(unknown)?;
    let secret = callback.secret.as_deref().ok_or_else(|| {
        ApiError::Unauthorized("This provider's callback secret is not set on this server.".into())
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !verify(secret, signature, &body, now) {
        return Err(ApiError::Unauthorized(
            "The Puffle-Signature header is missing, malformed, too old or does not match.".into(),
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::Invalid("The body is not UTF-8 text.".into()))?;
    let json: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::Invalid(format!("The body is not valid JSON ({e}).")))?;
    let job = match json.pointer(&callback.id_pointer) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ApiError::Invalid(format!(
                "The body has no job id at {}.",
                callback.id_pointer
            )))
        }
    };
    let now_ms = now.saturating_mul(1000);
    let found = state
        .store
        .record_provider_callback(&provider, &job, text, now_ms)
        .await?;
    if !found {
        return Err(ApiError::NotFound(format!(
            "No item is waiting for job {job} of provider {provider}."
        )));
    }
    // An idle worker claims the item at once instead of at its next poll.
    state.wake.notify_waiters();
    Ok((StatusCode::OK, Json(json!({"accepted": true}))).into_response())
}

/// `signature` (`t=…,v1=…`) signs `body` with `secret`, at most [`TOLERANCE_SECS`] from `now`.
fn verify(secret: &str, signature: &str, body: &[u8], now: i64) -> bool {
    puffle_engine::webhooks::verify_signature(secret, signature, body, now, TOLERANCE_SECS)
}

/// The header value that signs `body` with `secret` at unix time `t`.
#[cfg(test)]
fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    puffle_engine::webhooks::signature(secret, t, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_secret_body_and_a_recent_time() {
        let header = sign("whsec", 1_000_000, b"{\"id\":1}");
        assert!(verify("whsec", &header, b"{\"id\":1}", 1_000_100));
        assert!(!verify("other", &header, b"{\"id\":1}", 1_000_100));
        assert!(!verify("whsec", &header, b"{\"id\":2}", 1_000_100));
        assert!(!verify("whsec", &header, b"{\"id\":1}", 1_000_301));
        assert!(!verify("whsec", "", b"{\"id\":1}", 1_000_000));
        assert!(!verify(
            "whsec",
            "t=1000000,v1=zz",
            b"{\"id\":1}",
            1_000_000
        ));
    }
}
