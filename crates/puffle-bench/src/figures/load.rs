//! `load`: many clients at once — paging items, reading a run's status, creating small runs, with
//! a short pause between rounds — first while the engine is idle (the baseline), then while it
//! executes a large run. The figure
//! is the count of failed requests (bar: none); its `details` hold the latency distribution of
//! every operation in both phases, which is what an operator sizing a deployment wants to see.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use super::{instant_run_body, Ctx};
use crate::api::Api;
use crate::report::{num, Bar, Figure};
use crate::stats::Latency;

/// Clients sending at once.
pub const CLIENTS: usize = 12;
/// Rounds per client in the idle phase; the busy phase lasts as long as the large run does.
const IDLE_ROUNDS: usize = 20;
/// Leads in each small run a client creates.
const SMALL_RUN: usize = 3;
/// A client creates a small run every this many rounds (reads are far more common than writes).
const CREATE_EVERY: usize = 4;
/// A client's pause between rounds: people and scripts, not a flood (12 clients send about 200
/// requests a second).
const THINK: Duration = Duration::from_millis(50);
/// The busy phase ends when the large run does, or after this long.
const BUSY_AT_MOST: Duration = Duration::from_secs(120);

/// Latencies by operation, and the failures seen.
#[derive(Default)]
struct Samples {
    by_op: BTreeMap<&'static str, Vec<Duration>>,
    requests: usize,
    failures: Vec<String>,
}

impl Samples {
    fn summary(&self) -> Value {
        let ops: serde_json::Map<String, Value> = self
            .by_op
            .iter()
            .filter_map(|(op, d)| Some(((*op).to_string(), json!(Latency::of(d)?))))
            .collect();
        let all: Vec<Duration> = self.by_op.values().flatten().copied().collect();
        json!({"requests": self.requests, "failures": self.failures.len(),
               "all": Latency::of(&all), "byOperation": ops})
    }
}

type Shared = Arc<Mutex<Samples>>;

/// The latency distribution of both phases, one row per operation.
fn distribution(idle: &Samples, busy: &Samples) -> String {
    let mut out = format!(
        "`load` latency ({CLIENTS} clients; idle engine vs. during the large run):\n\n\
         | operation | idle p50 | idle p99 | busy p50 | busy p99 | busy max | busy samples |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for (op, busy_samples) in &busy.by_op {
        let (Some(b), i) = (
            Latency::of(busy_samples),
            idle.by_op.get(op).and_then(|d| Latency::of(d)),
        ) else {
            continue;
        };
        let ms = |x: Option<f64>| x.map_or("n/a".to_string(), |x| format!("{} ms", num(x)));
        out.push_str(&format!(
            "| {op} | {} | {} | {} | {} | {} | {} |\n",
            ms(i.map(|l| l.p50_ms)),
            ms(i.map(|l| l.p99_ms)),
            ms(Some(b.p50_ms)),
            ms(Some(b.p99_ms)),
            ms(Some(b.max_ms)),
            b.samples
        ));
    }
    out
}

fn record(samples: &Shared, op: &'static str, result: Result<Duration>) {
    let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
    s.requests += 1;
    match result {
        Ok(took) => s.by_op.entry(op).or_default().push(took),
        // Keep the first few messages; the count is what the bar reads.
        Err(e) if s.failures.len() < 20 => s.failures.push(format!("{op}: {e:#}")),
        Err(_) => s.failures.push(String::new()),
    }
}

/// One client's round: the next page of `run_id`'s items, its status, and (when `create`, every
/// [`CREATE_EVERY`] rounds) a small run.
async fn round(
    api: &Api,
    samples: &Shared,
    run_id: &str,
    cursor: &mut Option<String>,
    leads: &[String],
    create: bool,
) {
    let path = match cursor.as_deref() {
        Some(c) => format!("/api/enrichment/{run_id}/items?limit=100&cursor={c}"),
        None => format!("/api/enrichment/{run_id}/items?limit=100"),
    };
    let page = api.timed_get_json(&path).await.map(|(took, page)| {
        // Follow the cursor; start over at the end.
        *cursor = page["page"]["nextCursor"].as_str().map(str::to_string);
        took
    });
    record(samples, "items_page", page);
    let status = api.run_status_timed(run_id).await.map(|(took, _)| took);
    record(samples, "run_status", status);
    if !create {
        return;
    }
    let body = json!({"enrichmentId": "company_domain",
                      "scope": {"type": "explicit_leads", "leadIds": leads}});
    let started = Instant::now();
    let created = api
        .post("/api/enrichment", &body)
        .await
        .map(|_| started.elapsed());
    record(samples, "run_create_small", created);
}

/// Run [`CLIENTS`] clients against `run_id` until `until` says stop (checked between rounds).
async fn phase(
    api: &Api,
    run_id: &str,
    leads: &[String],
    until: impl Fn(usize) -> bool + Clone + Send + Sync + 'static,
) -> Result<Samples> {
    let samples: Shared = Arc::default();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (api, samples, until) = (api.clone(), samples.clone(), until.clone());
        let run_id = run_id.to_string();
        // Each client enriches its own few leads, as separate users' small jobs would.
        let start = (client * SMALL_RUN) % leads.len().max(1);
        let mine: Vec<String> = leads
            .iter()
            .cycle()
            .skip(start)
            .take(SMALL_RUN)
            .cloned()
            .collect();
        clients.spawn(async move {
            let mut cursor = None;
            let mut rounds = 0;
            while !until(rounds) {
                let create = rounds % CREATE_EVERY == client % CREATE_EVERY;
                round(&api, &samples, &run_id, &mut cursor, &mine, create).await;
                rounds += 1;
                tokio::time::sleep(THINK).await;
            }
        });
    }
    while let Some(joined) = clients.join_next().await {
        joined.context("a load client panicked")?;
    }
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(samples)
}

/// Measure `load`: the idle phase pages `idle_run` (a finished run); the busy phase starts a run
/// over `list_id` and pages it while it executes.
pub async fn figure(ctx: &Ctx, idle_run: &str, list_id: &str) -> Result<Figure> {
    let leads_page = ctx
        .api
        .get(&format!("/api/leads?limit={}", CLIENTS * SMALL_RUN))
        .await?;
    let leads: Vec<String> = leads_page["leads"]
        .as_array()
        .ok_or_else(|| anyhow!("GET /api/leads without leads: {leads_page}"))?
        .iter()
        .filter_map(|l| l["id"].as_str().map(str::to_string))
        .collect();
    anyhow::ensure!(!leads.is_empty(), "no leads to create small runs over");

    let idle = phase(&ctx.api, idle_run, &leads, |rounds| rounds >= IDLE_ROUNDS).await?;

    let (large, _) = ctx.api.create_run(&instant_run_body(list_id)).await?;
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (api, large, done) = (ctx.api.clone(), large.clone(), done.clone());
        tokio::spawn(async move {
            let finished = api.wait_run(&large, Duration::from_secs(3600)).await;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            finished
        })
    };
    let stop = done.clone();
    let busy = phase(&ctx.api, &large, &leads, move |_| {
        stop.load(std::sync::atomic::Ordering::Relaxed) || started.elapsed() >= BUSY_AT_MOST
    })
    .await?;
    let busy_seconds = started.elapsed().as_secs_f64();
    let large_status = watcher.await.context("the run watcher panicked")??;

    let all: Vec<Duration> = busy.by_op.values().flatten().copied().collect();
    let p99 = Latency::of(&all).map_or(f64::NAN, |l| l.p99_ms);
    eprintln!(
        "  load: {} requests during a {}-item run ({busy_seconds:.1} s), {} failed, p99 {p99:.1} ms",
        busy.requests,
        large_status.total,
        busy.failures.len()
    );
    let failures: Vec<&String> = busy
        .failures
        .iter()
        .chain(&idle.failures)
        .filter(|f| !f.is_empty())
        .collect();
    let appendix = distribution(&idle, &busy);
    Ok(Figure::new(
        "load",
        &format!(
            "failed requests of {CLIENTS} clients (page items, status, small runs) during a {}-item run",
            large_status.total
        ),
        "requests",
        busy.failures.len() as f64,
        busy.requests as f64,
        "requests sent",
        vec![Bar::ValueAtMost(0.0)],
        json!({"busy": busy.summary(), "idle": idle.summary(),
               "largeRun": {"status": large_status.status, "items": large_status.total,
                            "seconds": busy_seconds},
               "firstFailures": failures}),
    )
    .with_appendix(appendix))
}
