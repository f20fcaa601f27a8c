//! Issue 7: graceful shutdown. Stopping the server (what SIGTERM and Ctrl-C do in `puffle
//! serve`) lets in-flight items finish or hands them back, never leaving one `running`, and
//! answers a request that is in flight completely.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// Start a slow `custom_http` run over `n` companies and wait until items are in flight.
async fn run_in_flight(app: &TestApp, provider: &Provider, n: usize) -> String {
    let ids = app.companies("sd", n, None).await;
    let run = app
        .start_run(json!({"enrichmentId": "custom_http",
            "scope": {"type": "explicit_leads", "leadIds": ids},
            "input": {"url": provider.url("/slow/{{lead.domain}}")}}))
        .await;
    app.wait_run_until(&run, Duration::from_secs(30), "running items", |r| {
        r["scope"]["counts"]["running"].as_i64() > Some(0)
    })
    .await;
    run
}

/// After a restart without workers: no item is `running`, counts agree with the items.
async fn assert_nothing_running(app: &mut TestApp, run: &str, n: usize) -> Vec<Value> {
    app.restart_with(|c| c.run_worker = false).await;
    let status = app.run_status(run).await;
    let items = app.all_items(run).await;
    assert_eq!(items.len(), n);
    assert_counts_match(&status, &items);
    let by_status = count_by_status(&items);
    assert_eq!(
        by_status.get("running").copied().unwrap_or(0),
        0,
        "{by_status:?}"
    );
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_items_finish_and_answers_a_request_in_flight() {
    let provider =
        Provider::start(|_| Reply::json(json!({"ok": 1})).after(Duration::from_millis(300))).await;
    let mut app = TestApp::spawn_for_providers_with(|c| {
        c.engine.concurrency = 4;
        c.engine.shutdown_grace = Duration::from_secs(20);
    })
    .await;
    let list = app
        .list(json!({"name": "Slow import", "leadType": "company"}))
        .await;
    let n = 40;
    let run = run_in_flight(&app, &provider, n).await;

    // A CSV import whose body arrives slowly: it is in flight when the server is told to stop.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let chunks: Vec<String> = std::iter::once("type,name,domain\n".to_string())
        .chain((0..4).map(|i| format!("company,Late {i},late{i}.example\n")))
        .collect();
    let body = futures::stream::unfold(
        (chunks.into_iter(), Some(started_tx)),
        |(mut chunks, mut started)| async move {
            let chunk = chunks.next()?;
            match started.take() {
                Some(tx) => {
                    let _ = tx.send(());
                }
                None => tokio::time::sleep(Duration::from_millis(150)).await,
            }
            Some((Ok::<_, std::io::Error>(chunk), (chunks, started)))
        },
    );
    let request = app
        .client
        .post(app.url(&format!(
            "/api/lists/{}/import.csv",
            list["id"].as_str().unwrap()
        )))
        .bearer_auth(&app.key)
        .header("content-type", "text/csv")
        .body(reqwest::Body::wrap_stream(body));
    let in_flight = tokio::spawn(async move {
        let r = request.send().await.expect("the answer arrives");
        let status = r.status().as_u16();
        (status, r.text().await.expect("the whole body"))
    });
    started_rx.await.expect("the body started");
    // Stop only once the server is answering it (the import and this probe are in flight): a
    // connection still waiting in the listen queue when the server stops is refused, as it must.
    app.wait_for_metric("puffle_http_requests_in_flight", |n| n >= 2.0)
        .await;
    app.stop().await;

    let (status, text) = in_flight.await.expect("join");
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("complete JSON");
    assert_eq!(answer["created"], 4, "{answer}");

    let items = assert_nothing_running(&mut app, &run, n).await;
    let by_status = count_by_status(&items);
    // The grace period covers a 300 ms call: what was in flight finished.
    assert!(by_status.get("completed") > Some(&0), "{by_status:?}");
    for item in items.iter().filter(|i| i["status"] == "pending") {
        assert_eq!(item["attempts"], 0, "a pending item never ran: {item}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_items_that_outlive_the_grace_period() {
    let provider =
        Provider::start(|_| Reply::json(json!({"ok": 1})).after(Duration::from_secs(30))).await;
    let mut app = TestApp::spawn_for_providers_with(|c| {
        c.engine.concurrency = 3;
        c.engine.shutdown_grace = Duration::from_millis(100);
    })
    .await;
    let n = 6;
    let run = run_in_flight(&app, &provider, n).await;
    app.stop().await;
    let items = assert_nothing_running(&mut app, &run, n).await;
    // Every item is pending again, without a spent attempt.
    for item in &items {
        assert_eq!(item["status"], "pending", "{item}");
        assert_eq!(item["attempts"], 0, "{item}");
    }
}
