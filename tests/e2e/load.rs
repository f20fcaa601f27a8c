//! Issue 7: a bounded load test on loopback. Many clients page items, read status and create
//! small runs while the workers execute a large run; every answer must be a success. The latency
//! distribution is printed (run with `--nocapture` to see it), never asserted: timings depend on
//! the machine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const CLIENTS: usize = 12;
const ROUNDS: usize = 25;
const LARGE_RUN: usize = 1500;

type Latencies = Arc<Mutex<BTreeMap<&'static str, Vec<Duration>>>>;

/// Send one request, record its latency under `op`, return its body; any non-200 fails the test.
async fn timed(
    app: &TestApp,
    latencies: &Latencies,
    op: &'static str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let started = Instant::now();
    let method = if body.is_some() {
        reqwest::Method::POST
    } else {
        reqwest::Method::GET
    };
    let r = app.call(method, path, body).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{op} {path}: {}", r.text);
    latencies.lock().unwrap().entry(op).or_default().push(took);
    r.body
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_during_a_large_run_see_no_errors() {
    let provider =
        Provider::start(|_| Reply::json(json!({"ok": true})).after(Duration::from_millis(2))).await;
    let app = Arc::new(
        TestApp::spawn_for_providers_with(|c| {
            c.engine.concurrency = 32;
        })
        .await,
    );
    app.grant(LARGE_RUN as i64).await;
    let ids = app.companies("load", LARGE_RUN, None).await;
    let small: Vec<String> = ids[..3].to_vec();
    let large = app
        .start_run(json!({"enrichmentId": "custom_http",
            "scope": {"type": "explicit_leads", "leadIds": ids},
            "input": {"url": provider.url("/firmo/{{lead.domain}}")}}))
        .await;

    let latencies: Latencies = Arc::default();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (app, latencies, large, small) =
            (app.clone(), latencies.clone(), large.clone(), small.clone());
        clients.push(tokio::spawn(async move {
            let mut cursor: Option<String> = None;
            for round in 0..ROUNDS {
                let mut path = format!("/api/enrichment/{large}/items?limit=100");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let page = timed(&app, &latencies, "items page", &path, None).await;
                cursor = page["page"]["nextCursor"].as_str().map(str::to_string);
                timed(
                    &app,
                    &latencies,
                    "run status",
                    &format!("/api/enrichment/{large}"),
                    None,
                )
                .await;
                if round % 5 == client % 5 {
                    let created = timed(
                        &app,
                        &latencies,
                        "create run",
                        "/api/enrichment",
                        Some(json!({"enrichmentId": "company_domain",
                                    "scope": {"type": "explicit_leads", "leadIds": small}})),
                    )
                    .await;
                    let run = created["runId"].as_str().expect("runId").to_string();
                    timed(
                        &app,
                        &latencies,
                        "small run items",
                        &format!("/api/enrichment/{run}/items"),
                        None,
                    )
                    .await;
                }
            }
        }));
    }
    for c in clients {
        c.await
            .expect("a client panicked: an error answer or a lost request");
    }

    let done = app.wait_run_for(&large, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["scope"]["counts"]["completed"], LARGE_RUN as i64,
        "{done}"
    );

    let latencies = latencies.lock().unwrap();
    println!("load: {CLIENTS} clients × {ROUNDS} rounds during a {LARGE_RUN}-item run");
    println!(
        "{:<16} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "op", "n", "p50", "p90", "p99", "max"
    );
    for (op, samples) in latencies.iter() {
        let mut sorted = samples.clone();
        sorted.sort();
        println!(
            "{op:<16} {:>6} {:>9.2?} {:>9.2?} {:>9.2?} {:>9.2?}",
            sorted.len(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.9),
            percentile(&sorted, 0.99),
            sorted[sorted.len() - 1]
        );
    }
}
