//! Issue 7: request ids on every response and log line, metrics of requests, items, providers
//! and the queue, JSON logs without secrets.

use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let id_of = |r: &Resp| {
        r.headers
            .get("x-request-id")
            .unwrap_or_else(|| panic!("X-Request-Id on {}: {:?}", r.status, r.headers))
            .to_str()
            .unwrap()
            .to_string()
    };
    // Fresh ids on answers of every kind: success, 401, 404, 405.
    let ok = app.get("/api/account").await;
    let unauthorized = app.raw(app.client.get(app.url("/api/account"))).await;
    let missing = app.get("/api/nothing-here").await;
    let wrong_method = app.raw(app.client.put(app.url("/api/leads"))).await;
    let ids: Vec<String> = [&ok, &unauthorized, &missing, &wrong_method]
        .into_iter()
        .map(id_of)
        .collect();
    for id in &ids {
        assert_id(&json!(id));
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");

    // A sane incoming id is kept; one that could forge log fields is replaced.
    let r = app
        .raw(
            app.client
                .get(app.url("/api/account"))
                .bearer_auth(&app.key)
                .header("x-request-id", "trace-abc_123"),
        )
        .await;
    assert_eq!(id_of(&r), "trace-abc_123");
    let r = app
        .raw(
            app.client
                .get(app.url("/api/account"))
                .bearer_auth(&app.key)
                .header("x-request-id", "a\" level=\"error"),
        )
        .await;
    assert_id(&json!(id_of(&r)));
}

#[tokio::test]
async fn metrics_show_latency_items_providers_and_the_queue() {
    let provider = Provider::start(|req| {
        if req.path().contains("bad") {
            Reply::status(400)
        } else {
            Reply::json(json!({"ok": true}))
        }
    })
    .await;
    let app = TestApp::spawn_for_providers().await;
    let ids = app.companies("obs", 3, None).await;
    let run = app
        .start_run(json!({"enrichmentId": "company_domain",
                          "scope": {"type": "explicit_leads", "leadIds": ids}}))
        .await;
    app.wait_run(&run).await;
    let good = app
        .start_run(json!({"enrichmentId": "custom_http",
            "scope": {"type": "explicit_leads", "leadIds": &ids[..1]},
            "input": {"url": provider.url("/good/{{lead.domain}}")}}))
        .await;
    let bad = app
        .start_run(json!({"enrichmentId": "custom_http",
            "scope": {"type": "explicit_leads", "leadIds": &ids[1..2]},
            "input": {"url": provider.url("/bad/{{lead.domain}}")}}))
        .await;
    app.wait_run(&good).await;
    app.wait_run(&bad).await;

    let r = app.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = &r.text;
    let route = r#"method="GET",route="/api/enrichment/{id}""#;
    let count = sample(
        m,
        &format!("puffle_http_request_duration_seconds_count{{{route}}}"),
    )
    .unwrap_or_else(|| panic!("latency of the status route:\n{m}"));
    assert!(count >= 3.0, "{m}");
    let inf = sample(
        m,
        &format!("puffle_http_request_duration_seconds_bucket{{{route},le=\"+Inf\"}}"),
    );
    assert_eq!(inf, Some(count), "+Inf bucket is the count");
    assert!(
        sample(m, r#"puffle_items_total{outcome="completed"}"#) >= Some(4.0),
        "{m}"
    );
    assert!(
        sample(m, r#"puffle_items_total{outcome="failed"}"#) >= Some(1.0),
        "{m}"
    );
    assert!(
        sample(
            m,
            r#"puffle_provider_duration_seconds_count{provider="custom_http"}"#
        ) >= Some(2.0),
        "{m}"
    );
    assert!(
        sample(
            m,
            r#"puffle_provider_duration_seconds_count{provider="company_domain"}"#
        ) >= Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(
            m,
            r#"puffle_provider_errors_total{provider="custom_http",kind="failed"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(m, r#"puffle_queue_items{status="pending"}"#),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(m, "puffle_queue_oldest_pending_age_seconds"),
        Some(0.0),
        "{m}"
    );
    // Only the /metrics request itself is being answered: every other one was counted out.
    assert_eq!(
        sample(m, "puffle_http_requests_in_flight"),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn the_queue_gauges_count_waiting_items() {
    let app = TestApp::spawn_with(|c| c.run_worker = false).await;
    let ids = app.companies("q", 4, None).await;
    app.start_run(json!({"enrichmentId": "company_domain",
                         "scope": {"type": "explicit_leads", "leadIds": ids}}))
        .await;
    let m = app.get("/metrics").await.text;
    assert_eq!(
        sample(&m, r#"puffle_queue_items{status="pending"}"#),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"puffle_queue_items{status="running"}"#),
        Some(0.0),
        "{m}"
    );
    let age = sample(&m, "puffle_queue_oldest_pending_age_seconds").expect("age");
    assert!(age >= 0.0, "{m}");
}

/// `puffle serve --log-format json`: every log line is a JSON object, a request's lines carry
/// its id, and no key ever appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_no_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = format!("pk_live_{}", "ab".repeat(32));
    let mut command = LoggedServe::command(dir.path(), &key);
    command.args(["--log-format", "json"]);
    let serve = LoggedServe::start(command);
    let base = serve.base.clone();
    let operator_lines = serve.startup.clone();
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/api/user/api-key"))
        .bearer_auth(&key)
        .header("x-request-id", "log-test-1")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let second_key = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = client
        .get(format!("{base}/api/leads?limit=abc"))
        .bearer_auth(&second_key)
        .header("x-request-id", "log-test-2")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    let (exit, lines) = serve.stop().await;
    assert!(exit.success(), "{exit:?}");

    let logs: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    assert!(!logs.is_empty(), "JSON log lines: {lines:?}");
    for (id, status) in [("log-test-1", 200), ("log-test-2", 400)] {
        let answered = logs
            .iter()
            .find(|l| l["span"]["request_id"] == id && l["message"] == "answered")
            .unwrap_or_else(|| panic!("a line of request {id}: {lines:#?}"));
        assert_eq!(answered["status"], status, "{answered}");
        assert!(answered["span"]["route"].is_string(), "{answered}");
    }
    // The only lines that are not JSON are the operator's (listening, shutting down).
    for line in lines
        .iter()
        .filter(|l| serde_json::from_str::<Value>(l).is_err())
    {
        assert!(!line.contains("pk_live_"), "{line}");
    }
    // A key the operator supplied is not echoed either (stderr often ends in a journal).
    for key in [&key, &second_key] {
        let secret = &key["pk_live_".len()..];
        assert!(
            !lines
                .iter()
                .chain(&operator_lines)
                .any(|l| l.contains(secret)),
            "a key in the logs: {operator_lines:#?} {lines:#?}"
        );
    }
}
