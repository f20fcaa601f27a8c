//! `engine_latency`: a `custom_http` run against a loopback provider that answers in 20 ms, with
//! worker concurrency 64: achieved items/s beside the ideal 64 / 0.020 s = 3,200/s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::Ctx;
use crate::api::seconds_between;
use crate::report::{Bar, Figure};
use crate::seed;

pub const CONCURRENCY: usize = 64;
const PROVIDER_LATENCY: Duration = Duration::from_millis(20);

/// What the provider saw: requests answered, and the time they took in total.
#[derive(Default)]
struct ProviderStats {
    requests: AtomicU64,
    busy_us: AtomicU64,
}

impl ProviderStats {
    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The mean time from a request's arrival to its answer, in ms.
    fn mean_ms(&self) -> f64 {
        self.busy_us.load(Ordering::Relaxed) as f64 / 1000.0 / self.requests().max(1) as f64
    }
}

/// The provider: every request waits 20 ms, then answers a small JSON body. It counts requests so
/// the figure can say that every item really made one, and times them so it can say the provider
/// kept to its 20 ms.
async fn start_provider() -> Result<(String, Arc<ProviderStats>)> {
    let stats = Arc::new(ProviderStats::default());
    let seen = stats.clone();
    let app = Router::new().route(
        "/lookup",
        get(move || {
            let seen = seen.clone();
            async move {
                let arrived = Instant::now();
                let answer_at = arrived + PROVIDER_LATENCY;
                // tokio's timer ticks in whole milliseconds and rounds up (its 20 ms sleep
                // answered in 21.1 ms on average), which would charge the provider's slowness to
                // the engine; a thread's sleep keeps to the deadline within tens of microseconds.
                let _ = tokio::task::spawn_blocking(move || {
                    std::thread::sleep(answer_at.saturating_duration_since(Instant::now()))
                })
                .await;
                seen.requests.fetch_add(1, Ordering::Relaxed);
                let took = arrived.elapsed().as_micros() as u64;
                seen.busy_us.fetch_add(took, Ordering::Relaxed);
                Json(json!({"data": {"employees": 42}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the loopback provider")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("loopback provider stopped: {e}");
        }
    });
    Ok((format!("http://{addr}"), stats))
}

pub async fn figure(ctx: &Ctx) -> Result<Figure> {
    let n = ctx.scale.latency_run;
    let (list, _) = seed::company_list(&ctx.api, "bench latency", "l", n).await?;
    // custom_http costs a credit per item; the bootstrap workspace starts with 1000.
    ctx.api.grant_credits(n as i64).await?;
    let (provider, stats) = start_provider().await?;
    let body = json!({
        "enrichmentId": "custom_http",
        "scope": {"type": "list", "listId": list},
        "input": {"url": format!("{provider}/lookup?lead={{{{lead.id}}}}"), "resultPointer": "/data"},
        "output": {"attributeKey": "bench_latency"},
    });
    let (run_id, _) = ctx.api.create_run(&body).await?;
    let done = ctx.api.wait_run(&run_id, Duration::from_secs(1800)).await?;
    ensure!(
        done.status == "completed",
        "run {run_id} ended {}",
        done.status
    );
    let (Some(started), Some(completed)) = (&done.started_at, &done.completed_at) else {
        anyhow::bail!("run {run_id} completed without startedAt/completedAt");
    };
    let seconds = seconds_between(started, completed)?;
    let failed = ctx.api.get(&format!("/api/enrichment/{run_id}")).await?["run"]["scope"]["counts"]
        ["failed"]
        .as_i64()
        .unwrap_or(-1);
    let ideal = CONCURRENCY as f64 / PROVIDER_LATENCY.as_secs_f64();
    let value = done.total as f64 / seconds.max(1e-3);
    eprintln!(
        "  custom_http: {} items in {seconds:.2} s = {value:.0} items/s (provider answered in {:.2} ms on average)",
        done.total,
        stats.mean_ms()
    );
    Ok(Figure::new(
        "engine_latency",
        &format!(
            "custom_http over {n} leads, provider answers in 20 ms, concurrency {CONCURRENCY}"
        ),
        "items/s",
        value,
        ideal,
        "ideal: 64 / 0.020 s",
        vec![Bar::RatioAtLeast(0.9)],
        json!({"items": done.total, "seconds": seconds, "providerRequests": stats.requests(),
               "providerMeanMs": stats.mean_ms(),
               "failedItems": failed}),
    ))
}
