//! Per-request observability: a request id on every response (`X-Request-Id`) and on every log
//! line of the request (a span), one log line per answered request, and the HTTP metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::app::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest incoming request id we keep; longer ones are replaced rather than truncated (a
/// truncated id would no longer match the caller's logs).
const MAX_REQUEST_ID_LEN: usize = 128;

/// The caller's id when it is safe to echo and log (printable, no spaces or quotes that could
/// forge log fields), else a fresh one.
pub fn request_id(incoming: Option<&HeaderValue>) -> String {
    incoming
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane_request_id(id))
        .map_or_else(puffle_domain::new_id, str::to_string)
}

fn is_sane_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

/// Outermost middleware: everything the request logs carries its id, method and route (never
/// its headers, so keys cannot reach the logs).
pub async fn request_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers().get(REQUEST_ID_HEADER));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let span = tracing::info_span!("request", request_id = %id, %method, %route);
    async move {
        let in_flight = state.metrics.in_flight();
        let mut response = next.run(req).await;
        drop(in_flight);
        let status = response.status().as_u16();
        let seconds = started.elapsed().as_secs_f64();
        state
            .metrics
            .record(method.as_str(), &route, status, seconds);
        log_answer(&method, status, seconds);
        // A sane id is visible ASCII, a fresh one a UUID: both are valid header values.
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }
    .instrument(span)
    .await
}

fn log_answer(method: &Method, status: u16, seconds: f64) {
    let latency_ms = (seconds * 1000.0 * 1000.0).round() / 1000.0;
    if status >= 500 {
        tracing::error!(status, latency_ms, "answered");
    } else if *method == Method::GET && status < 400 {
        // Reads are the bulk of the traffic (polling, paging): debug, not info.
        tracing::debug!(status, latency_ms, "answered");
    } else {
        tracing::info!(status, latency_ms, "answered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_others_replaced() {
        let keep = HeaderValue::from_static("req-42_abc.def:1");
        assert_eq!(request_id(Some(&keep)), "req-42_abc.def:1");
        for bad in ["", "has space", "quote\"d", "x\tb"] {
            let v = HeaderValue::from_str(bad).unwrap_or(HeaderValue::from_static("has space"));
            let id = request_id(Some(&v));
            assert!(puffle_domain::is_id(&id), "{bad:?} replaced by {id}");
        }
        let long = HeaderValue::from_str(&"a".repeat(MAX_REQUEST_ID_LEN + 1)).unwrap();
        assert!(puffle_domain::is_id(&request_id(Some(&long))));
        assert!(puffle_domain::is_id(&request_id(None)));
    }
}
