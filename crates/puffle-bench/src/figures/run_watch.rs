//! `memory` and `status`, both watched on one big run while it executes: the peak resident set
//! of the server process(es) and the latency of `GET /api/enrichment/{id}`, each beside its
//! baseline (the peak at a tenth of the run; `GET /healthz` timed in the same loop).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::{instant_run_body, Ctx};
use crate::api::{Api, RunStatus};
use crate::process::Fleet;
use crate::report::{Bar, Figure};
use crate::stats::Latency;

/// Pause between two status reads: a client watching a run closely, not a load test.
const POLL_GAP: Duration = Duration::from_millis(20);
/// Memory is read every this many polls.
const MEMORY_EVERY: usize = 5;
/// Bar on flatness: the peak may grow this much from a tenth of the run to its end.
pub const FLAT: f64 = 1.2;
pub const PEAK_MIB: f64 = 200.0;
pub const STATUS_P99_MS: f64 = 5.0;

/// The peak of all processes of the fleet (the server, and any worker processes).
fn peak_mib(fleet: &Fleet) -> Result<(f64, serde_json::Value)> {
    let all = fleet.memory()?;
    let peak = all.iter().map(|(_, m)| m.peak_mib).fold(0.0, f64::max);
    let by_name: serde_json::Map<String, serde_json::Value> = all
        .into_iter()
        .map(|(n, m)| (n, json!({"peakMiB": m.peak_mib, "rssMiB": m.now_mib})))
        .collect();
    Ok((peak, by_name.into()))
}

/// What watching one run saw.
struct Watch {
    last: RunStatus,
    status_lat: Vec<Duration>,
    health_lat: Vec<Duration>,
    /// (items done, peak MiB), every [`MEMORY_EVERY`] polls.
    series: Vec<(i64, f64)>,
    /// The first point of `series` at or past a tenth of the run.
    checkpoint: Option<(i64, f64)>,
}

/// Poll the run until it ends. This runs on a thread of its own with a single-threaded runtime
/// and its own HTTP client: the client sends, waits and reads on one thread, so a sample holds
/// one wake-up of the client, as a remote client's would, not the hops between the threads of
/// a shared runtime (on 2 busy cores, each hop is one more wake-up that may wait for a core).
fn watch(api: &Api, fleet: &Fleet, run_id: &str) -> Result<Watch> {
    let api = api.with_new_client()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the watcher's runtime")?;
    runtime.block_on(async {
        let started = Instant::now();
        let mut status_lat = Vec::new();
        let mut health_lat = Vec::new();
        let mut series = Vec::new();
        let mut checkpoint = None;
        let mut polls = 0usize;
        loop {
            let (health, _) = api.timed_get_json("/healthz").await?;
            let (took, status) = api.run_status_timed(run_id).await?;
            health_lat.push(health);
            status_lat.push(took);
            if polls.is_multiple_of(MEMORY_EVERY) || status.finished() {
                let (peak, _) = peak_mib(fleet)?;
                series.push((status.done, peak));
                if checkpoint.is_none() && status.done * 10 >= status.total {
                    checkpoint = Some((status.done, peak));
                }
            }
            polls += 1;
            if status.finished() {
                return Ok(Watch {
                    last: status,
                    status_lat,
                    health_lat,
                    series,
                    checkpoint,
                });
            }
            if started.elapsed() > Duration::from_secs(3600) {
                anyhow::bail!(
                    "run {run_id} still running after an hour: {}/{}",
                    status.done,
                    status.total
                );
            }
            tokio::time::sleep(POLL_GAP).await;
        }
    })
}

/// Start a company_domain run over `list_id` (on a freshly started fleet) and watch it.
/// Returns the two figures and the run's id (its items serve `items_page`).
pub async fn figures(ctx: &Ctx, fleet: &Fleet, list_id: &str) -> Result<(Vec<Figure>, String)> {
    let (idle_peak, idle) = peak_mib(fleet)?;
    let (run_id, _) = ctx.api.create_run(&instant_run_body(list_id)).await?;
    let started = Instant::now();
    let Watch {
        last,
        status_lat,
        health_lat,
        series,
        checkpoint,
    } = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            s.spawn(|| watch(&ctx.api, fleet, &run_id))
                .join()
                .map_err(|_| anyhow::anyhow!("the run watcher panicked"))?
        })
    })?;
    ensure!(
        last.status == "completed",
        "run {run_id} ended {}",
        last.status
    );
    let (final_peak, processes) = peak_mib(fleet)?;
    let (checkpoint_done, checkpoint_peak) =
        checkpoint.context("the run ended before a tenth of it was seen")?;
    eprintln!(
        "  big run: {} items in {:.1} s; peak {final_peak:.1} MiB (at {checkpoint_done} items: {checkpoint_peak:.1} MiB)",
        last.total,
        started.elapsed().as_secs_f64()
    );

    // Every 1/40 of the series is enough to see a slope.
    let step = (series.len() / 40).max(1);
    let curve: Vec<_> = series
        .iter()
        .step_by(step)
        .chain(series.last())
        .map(|(done, peak)| json!({"itemsDone": done, "peakMiB": peak}))
        .collect();
    let memory = Figure::new(
        "memory",
        &format!(
            "peak RSS (VmHWM) of the server across a {}-item run",
            last.total
        ),
        "MiB",
        final_peak,
        checkpoint_peak,
        &format!("peak at {checkpoint_done} items"),
        vec![Bar::ValueAtMost(PEAK_MIB), Bar::RatioAtMost(FLAT)],
        json!({"idlePeakMiB": idle_peak, "idle": idle, "end": processes, "curve": curve}),
    );

    let status = Latency::of(&status_lat).context("no status sample")?;
    let health = Latency::of(&health_lat).context("no health sample")?;
    let status_fig = Figure::new(
        "status",
        &format!(
            "GET /api/enrichment/{{id}} p99 during a {}-item run",
            last.total
        ),
        "ms",
        status.p99_ms,
        health.p99_ms,
        "GET /healthz p99, same loop",
        vec![Bar::ValueAtMost(STATUS_P99_MS)],
        json!({"status": status, "healthz": health,
               "runSeconds": started.elapsed().as_secs_f64()}),
    );
    Ok((vec![memory, status_fig], run_id))
}
