//! Service endpoints (spec §8): health, Prometheus metrics, the OpenAPI document.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use puffle_domain::timestamp_unix_ms;
use puffle_engine::metrics::{label, Histogram};
use puffle_engine::EngineMetrics;
use puffle_store::QueueStats;
use serde_json::json;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
}

async fn health(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
        .into_response()
}

/// (method, route template, status) → requests answered.
type RequestCounts = BTreeMap<(String, String, u16), u64>;
/// (method, route template) → latency histogram.
type RequestLatency = BTreeMap<(String, String), Histogram>;

/// What `/metrics` shows: requests by route and status with their latency, the worker pool's
/// counters (shared with the pool of this process), and the queue read from the database.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<RequestCounts>,
    latency: Mutex<RequestLatency>,
    in_flight: AtomicI64,
    pub engine: Arc<EngineMetrics>,
}

/// One request being answered; counted in `puffle_http_requests_in_flight` until dropped (also
/// when the client goes away and its request future is dropped unfinished).
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Count a request as in flight until the returned guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// Count one answered request. `route` is the route template, never the raw path: ids would
    /// make every path its own series.
    pub fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut counts = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *counts
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        drop(counts);
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        latency
            .entry((method.to_string(), route.to_string()))
            .or_default()
            .observe(seconds);
    }

    fn render_http(&self, out: &mut String) {
        let _ = write!(
            out,
            "# HELP puffle_http_requests_in_flight Requests being answered right now.\n\
             # TYPE puffle_http_requests_in_flight gauge\n\
             puffle_http_requests_in_flight {}\n",
            self.in_flight.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP puffle_http_requests_total HTTP requests answered.\n\
             # TYPE puffle_http_requests_total counter\n",
        );
        let counts = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route, status), count) in counts.iter() {
            let _ = writeln!(
                out,
                "puffle_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {count}",
                label(route)
            );
        }
        drop(counts);
        out.push_str(
            "# HELP puffle_http_request_duration_seconds Time spent answering, by route.\n\
             # TYPE puffle_http_request_duration_seconds histogram\n",
        );
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route), histogram) in latency.iter() {
            histogram.render(
                out,
                "puffle_http_request_duration_seconds",
                &format!("method=\"{method}\",route=\"{}\"", label(route)),
            );
        }
    }
}

/// The queue gauges; omitted (with a log line) when the database cannot say.
fn render_queue(out: &mut String, stats: &QueueStats) {
    let oldest_age = stats
        .oldest_pending_created_at
        .as_deref()
        .and_then(timestamp_unix_ms)
        .map_or(0.0, |created| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(created, |d| {
                    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
                });
            (now - created).max(0) as f64 / 1000.0
        });
    let _ = write!(
        out,
        "# HELP puffle_queue_items Items of active runs by state (the work queue's depth).\n\
         # TYPE puffle_queue_items gauge\n\
         puffle_queue_items{{status=\"pending\"}} {}\n\
         puffle_queue_items{{status=\"running\"}} {}\n\
         # HELP puffle_queue_oldest_pending_age_seconds Age of the oldest pending item (0 when none).\n\
         # TYPE puffle_queue_oldest_pending_age_seconds gauge\n\
         puffle_queue_oldest_pending_age_seconds {oldest_age:.3}\n",
        stats.pending, stats.running
    );
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    state.metrics.render_http(&mut out);
    state.metrics.engine.render(&mut out);
    match state.store.queue_stats().await {
        Ok(stats) => render_queue(&mut out, &stats),
        Err(e) => tracing::warn!(error = %e, "metrics: queue stats unavailable"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
