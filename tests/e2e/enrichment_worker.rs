//! Spec §5 `custom_http` and §6 "Items lifecycle and execution": outcomes against real loopback
//! providers (hits, misses, retries, failures, timeouts, garbage), skips, the SSRF guard,
//! `custom_ai`, restarts, and fairness between runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

fn explicit(lead_ids: &[String]) -> Value {
    json!({"type": "explicit_leads", "leadIds": lead_ids})
}

async fn company(app: &TestApp, name: &str, domain: &str) -> String {
    app.lead(json!({"type": "company", "name": name, "domain": domain}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Run `custom_http` with `input` over `leads` and return the finished run and its items by lead.
async fn run_http(
    app: &TestApp,
    input: Value,
    leads: &[String],
) -> (Value, BTreeMap<String, Value>) {
    let id = app
        .start_run(json!({"enrichmentId": "custom_http", "input": input, "scope": explicit(leads)}))
        .await;
    let run = app.wait_run_for(&id, Duration::from_secs(60)).await;
    let items = app.all_items(&id).await;
    assert_counts_match(&run, &items);
    let by_lead = items
        .into_iter()
        .map(|i| (i["leadId"].as_str().unwrap().to_string(), i))
        .collect();
    (run, by_lead)
}

/// `{url: <p>/co/{{lead.domain}}, resultPointer: /data/employees}`.
fn employees_input(p: &Provider) -> Value {
    json!({"url": p.url("/co/") + "{{lead.domain}}", "resultPointer": "/data/employees"})
}

async fn attributes(app: &TestApp, lead: &str) -> Value {
    app.get_lead(lead).await.unwrap()["attributes"].clone()
}

// --- hits and misses --------------------------------------------------------------------------

#[tokio::test]
async fn a_hit_completes_and_writes_the_result_to_the_lead() {
    let app = TestApp::spawn_for_providers().await;
    let p = Provider::start(|r| Reply::json(json!({"data": {"employees": 42, "seen": r.path()}})))
        .await;
    let a = company(&app, "Acme", "acme.com").await;
    let (run, items) = run_http(&app, employees_input(&p), std::slice::from_ref(&a)).await;
    assert_eq!(run["status"], "completed", "{run}");
    let item = &items[&a];
    assert_eq!(item["status"], "completed", "{item}");
    assert_eq!(item["result"], 42);
    assert_eq!(item["attempts"], 1);
    assert_eq!(item["error"], Value::Null);
    let m = &item["metadata"];
    assert_eq!(
        m["result"],
        json!({"data": {"employees": 42, "seen": "/co/acme.com"}}),
        "metadata.result is the raw provider answer: {item}"
    );
    assert_eq!(
        m["inputSnapshot"]["url"],
        p.url("/co/acme.com"),
        "the resolved input: {item}"
    );
    assert!(
        m["provider"].as_str().is_some_and(|s| !s.is_empty()),
        "{item}"
    );
    assert_eq!(m["leadSnapshot"]["domain"], "acme.com", "{item}");
    assert_eq!(attributes(&app, &a).await["custom_http"], 42);

    let reqs = p.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET", "method defaults to GET");
    assert_eq!(reqs[0].target, "/co/acme.com");
}

#[tokio::test]
async fn without_a_result_pointer_the_whole_body_is_the_result() {
    let app = TestApp::spawn_for_providers().await;
    let p = Provider::always(json!({"a": [1, 2], "b": null})).await;
    let a = company(&app, "Acme", "acme.com").await;
    let (_, items) = run_http(
        &app,
        json!({"url": p.url("/whole?d=") + "{{lead.domain}}"}),
        std::slice::from_ref(&a),
    )
    .await;
    assert_eq!(items[&a]["status"], "completed", "{}", items[&a]);
    assert_eq!(items[&a]["result"], json!({"a": [1, 2], "b": null}));
    assert_eq!(
        attributes(&app, &a).await["custom_http"],
        json!({"a": [1, 2], "b": null})
    );
    assert_eq!(p.requests()[0].target, "/whole?d=acme.com");
}

#[tokio::test]
async fn placeholders_are_percent_encoded_in_the_url_and_verbatim_in_headers_and_body() {
    let app = TestApp::spawn_for_providers().await;
    let p = Provider::always(json!({"ok": true})).await;
    let lead = app
        .lead(
            json!({"type": "company", "name": "A&B/C?D#E", "domain": "ab.com",
                     "attributes": {"segment": "smb"}}),
        )
        .await;
    let lead_id = lead["id"].as_str().unwrap().to_string();
    let input = json!({
        "url": p.url("/q?name=") + "{{lead.name.full}}&seg={{lead.attributes.segment}}",
        "method": "POST",
        "headers": {"X-Domain": "{{lead.domain}}", "X-Fixed": "yes"},
        "body": {"company": "{{lead.name.full}}", "n": 5, "nested": {"d": "{{lead.domain}}"}},
        "resultPointer": "/ok"
    });
    let (_, items) = run_http(&app, input, std::slice::from_ref(&lead_id)).await;
    assert_eq!(
        items[&lead_id]["status"], "completed",
        "{}",
        items[&lead_id]
    );
    let reqs = p.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/q?name=A%26B%2FC%3FD%23E&seg=smb");
    assert_eq!(r.header("x-domain"), Some("ab.com"));
    assert_eq!(r.header("x-fixed"), Some("yes"));
    let body = r.json();
    assert_eq!(body["company"], "A&B/C?D#E", "{body}");
    assert_eq!(body["n"], 5, "non-string values are kept: {body}");
    assert_eq!(body["nested"]["d"], "ab.com", "{body}");
}

#[tokio::test]
async fn misses_complete_with_a_null_result_and_write_nothing() {
    let app = TestApp::spawn_for_providers().await;
    let p = Provider::start(|r| match r.path() {
        "/co/empty.com" => Reply::json(json!({"data": {}})),
        "/co/null.com" => Reply::json(json!({"data": {"employees": null}})),
        "/co/gone.com" => Reply::status(404),
        _ => Reply::json(json!({"data": {"employees": 7}})),
    })
    .await;
    let empty = company(&app, "Empty", "empty.com").await;
    let null = company(&app, "Null", "null.com").await;
    let gone = company(&app, "Gone", "gone.com").await;
    // An earlier value is not erased by a miss.
    let r = app
        .patch(
            "/api/leads",
            json!({"id": gone, "attributes": {"custom_http": "before"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let leads = [empty.clone(), null.clone(), gone.clone()];
    let (run, items) = run_http(&app, employees_input(&p), &leads).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["scope"]["counts"]["completed"], 3);
    for lead in &leads {
        let item = &items[lead];
        assert_eq!(item["status"], "completed", "{item}");
        assert_eq!(item["result"], Value::Null, "a miss: {item}");
        assert_eq!(item["attempts"], 1, "{item}");
        assert_eq!(item["error"], Value::Null, "{item}");
    }
    assert!(attributes(&app, &empty).await.get("custom_http").is_none());
    assert!(attributes(&app, &null).await.get("custom_http").is_none());
    assert_eq!(attributes(&app, &gone).await["custom_http"], "before");
    assert_eq!(p.count(), 3, "a miss is not retried");
}

// --- failures and retries ---------------------------------------------------------------------

#[tokio::test]
async fn other_4xx_fail_at_once_naming_the_status() {
    let app = TestApp::spawn_for_providers().await;
    let p = Provider::start(|r| match r.path() {
        "/co/bad.com" => Reply::status(400),
        "/co/auth.com" => Reply::status(403),
        _ => Reply::status(422),
    })
    .await;
    let leads = vec![
        company(&app, "Unprocessable", "unprocessable.com").await,
        company(&app, "Bad", "bad.com").await,
        company(&app, "Auth", "auth.com").await,
    ];
    let (run, items) = run_http(&app, employees_input(&p), &leads).await;
    assert_eq!(run["status"], "completed", "every item is terminal: {run}");
    assert_eq!(run["scope"]["counts"]["failed"], 3);
    for (lead, status) in leads.iter().zip(["422", "400", "403"]) {
        let item = &items[lead];
        assert_eq!(item["status"], "failed", "{item}");
        assert_eq!(item["attempts"], 1, "not retried: {item}");
        assert_eq!(item["result"], Value::Null);
        let message = item["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(status),
            "error.message names {status}: {item}"
        );
        assert!(attributes(&app, lead).await.get("custom_http").is_none());
    }
    assert_eq!(p.count(), 3, "one request each");
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_retry_after() {
    let app = TestApp::spawn_for_providers().await;
    let p = Provider::start(|r| {
        if r.target_index == 0 {
            Reply::retry_after(1)
        } else {
            Reply::json(json!({"data": {"employees": 9}}))
        }
    })
    .await;
    let a = company(&app, "Acme", "acme.com").await;
    let (_, items) = run_http(&app, employees_input(&p), std::slice::from_ref(&a)).await;
    let item = &items[&a];
    assert_eq!(item["status"], "completed", "{item}");
    assert_eq!(item["attempts"], 2, "{item}");
    assert_eq!(item["result"], 9);
    assert_eq!(
        item["error"],
        Value::Null,
        "a completed item has no error: {item}"
    );
    let reqs = p.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "the retry waited for Retry-After (1 s): {gap:?}"
    );
    assert_eq!(attributes(&app, &a).await["custom_http"], 9);
}

#[tokio::test]
async fn a_5xx_is_retried_until_it_succeeds() {
    let app = TestApp::spawn_for_providers().await;
    let p = Provider::start(|r| {
        if r.target_index < 2 {
            Reply::status(if r.target_index == 0 { 500 } else { 503 })
        } else {
            Reply::json(json!({"data": {"employees": 3}}))
        }
    })
    .await;
    let a = company(&app, "Acme", "acme.com").await;
    let (_, items) = run_http(&app, employees_input(&p), std::slice::from_ref(&a)).await;
    let item = &items[&a];
    assert_eq!(item["status"], "completed", "{item}");
    assert_eq!(item["attempts"], 3, "{item}");
    assert_eq!(item["result"], 3);
    assert_eq!(p.count(), 3);
}

#[tokio::test]
async fn a_5xx_forever_fails_after_max_attempts() {
    for max in [3u32, 5] {
        let app = TestApp::spawn_for_providers_with(|c| c.engine.max_attempts = max).await;
        let p = Provider::start(|_| Reply::status(500)).await;
        let leads = vec![
            company(&app, "Acme", "acme.com").await,
            company(&app, "Globex", "globex.com").await,
        ];
        let (run, items) = run_http(&app, employees_input(&p), &leads).await;
        assert_eq!(run["status"], "completed", "{run}");
        for lead in &leads {
            let item = &items[lead];
            assert_eq!(item["status"], "failed", "{item}");
            assert_eq!(item["attempts"], max, "max_attempts {max}: {item}");
            let message = item["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("500"),
                "error.message names the status: {item}"
            );
        }
        assert_eq!(p.count(), 2 * max as usize);
        assert_eq!(p.requests_to("/co/acme.com").len(), max as usize);
    }
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let app = TestApp::spawn_for_providers().await;
    let p = Provider::start(|r| {
        let reply = Reply::json(json!({"data": {"employees": 1}}));
        match (r.path(), r.target_index) {
            ("/co/slow.com", _) => reply.after(Duration::from_secs(3)),
            (_, 0) => reply.after(Duration::from_secs(3)),
            _ => reply,
        }
    })
    .await;
    let once = company(&app, "Once", "once.com").await;
    let slow = company(&app, "Slow", "slow.com").await;
    let mut input = employees_input(&p);
    input["timeoutMs"] = json!(300);
    let (run, items) = run_http(&app, input, &[once.clone(), slow.clone()]).await;
    let i = &items[&once];
    assert_eq!(i["status"], "completed", "slow once, then fast: {i}");
    assert_eq!(i["attempts"], 2, "{i}");
    let i = &items[&slow];
    assert_eq!(i["status"], "failed", "always slow: {i}");
    assert_eq!(i["attempts"], 3, "{i}");
    assert!(!i["error"]["message"].as_str().unwrap().is_empty());
    assert_eq!(run["status"], "completed");
}

#[tokio::test]
async fn a_connection_failure_is_retried_then_fails() {
    let app = TestApp::spawn_for_providers().await;
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let a = company(&app, "Acme", "acme.com").await;
    let (_, items) = run_http(
        &app,
        json!({"url": format!("http://127.0.0.1:{port}/co/") + "{{lead.domain}}"}),
        std::slice::from_ref(&a),
    )
    .await;
    let item = &items[&a];
    assert_eq!(item["status"], "failed", "{item}");
    assert_eq!(item["attempts"], 3, "retryable until max_attempts: {item}");
}

/// A bad provider answer fails at once (spec §6): bytes that are not text, and a body that says
/// it is JSON (`content-type: application/json`) but does not parse, with or without
/// `resultPointer`.
#[tokio::test]
async fn a_garbage_answer_fails_at_once() {
    let app = TestApp::spawn_for_providers().await;
    let p = Provider::start(|r| {
        if r.path() == "/co/binary.com" {
            Reply::binary()
        } else {
            Reply::garbage()
        }
    })
    .await;
    let binary = company(&app, "Binary", "binary.com").await;
    let garbage = company(&app, "Garbage", "garbage.com").await;
    let leads = [
        (binary.clone(), "binary"),
        (garbage.clone(), "invalid JSON"),
    ];
    let ids: Vec<String> = leads.iter().map(|(l, _)| l.clone()).collect();
    let mut wrong = Vec::new();
    for input in [
        employees_input(&p),
        json!({"url": p.url("/co/") + "{{lead.domain}}"}),
    ] {
        let calls = p.count();
        let (_, items) = run_http(&app, input.clone(), &ids).await;
        for (lead, what) in &leads {
            let item = &items[lead];
            if item["status"] != "failed" || item["attempts"] != 1 {
                wrong.push(format!(
                    "{what} answer, input {input}: status {}, attempts {}, result {}, error {}",
                    item["status"], item["attempts"], item["result"], item["error"]
                ));
            } else {
                assert!(!item["error"]["message"].as_str().unwrap().is_empty());
                assert!(attributes(&app, lead).await.get("custom_http").is_none());
            }
        }
        assert_eq!(p.count() - calls, 2, "one call each");
    }
    assert!(
        wrong.is_empty(),
        "a bad provider answer fails at once (attempts 1):\n{}",
        wrong.join("\n")
    );
}

// --- skips ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_placeholder_value_skips_without_a_request() {
    let app = TestApp::spawn_for_providers().await;
    let p = Provider::always(json!({"data": {"employees": 1}})).await;
    let with = company(&app, "Acme", "acme.com").await;
    let without = app
        .lead(json!({"type": "company", "name": "No Domain"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (run, items) = run_http(&app, employees_input(&p), &[with.clone(), without.clone()]).await;
    assert_eq!(run["status"], "completed");
    let item = &items[&without];
    assert_eq!(item["status"], "skipped", "{item}");
    assert_eq!(item["skippedReason"], "missing_input");
    assert_eq!(item["attempts"], 0);
    assert_eq!(item["result"], Value::Null);
    assert_eq!(item["error"], Value::Null, "a skip is not an error: {item}");
    assert_eq!(items[&with]["status"], "completed");
    assert_eq!(p.count(), 1, "no request for the lead without a domain");

    // A missing attribute placeholder, in the body this time.
    let (_, items) = run_http(
        &app,
        json!({"url": p.url("/post"), "method": "POST",
               "body": {"seg": "{{lead.attributes.segment}}"}}),
        std::slice::from_ref(&with),
    )
    .await;
    assert_eq!(items[&with]["status"], "skipped", "{}", items[&with]);
    assert_eq!(items[&with]["skippedReason"], "missing_input");
    assert_eq!(p.count(), 1);
}

#[tokio::test]
async fn a_lead_of_the_wrong_subject_is_skipped() {
    let app = TestApp::spawn().await;
    let firm = company(&app, "Acme Inc", "acme.com").await;
    let ann = app
        .lead(json!({"type": "person", "name": "Ann Lee",
                     "company": {"name": "Acme", "domain": "acme.com"},
                     "contacts": [{"type": "email", "value": "ann@acme.com"}]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for slug in ["name_parse", "email_check", "work_email_patterns"] {
        let id = app
            .start_run(
                json!({"enrichmentId": slug, "scope": explicit(&[firm.clone(), ann.clone()])}),
            )
            .await;
        let run = app.wait_run(&id).await;
        assert_eq!(run["status"], "completed", "{run}");
        let items = app.all_items(&id).await;
        let f = items.iter().find(|i| i["leadId"] == firm.as_str()).unwrap();
        assert_eq!(f["status"], "skipped", "{slug}: {f}");
        assert_eq!(f["skippedReason"], "subject_mismatch", "{slug}: {f}");
        assert_eq!(f["attempts"], 0);
        let a = items.iter().find(|i| i["leadId"] == ann.as_str()).unwrap();
        assert_eq!(a["status"], "completed", "{slug}: {a}");
        assert_eq!(a["attempts"], 1);
    }
    let attrs = attributes(&app, &ann).await;
    assert_eq!(attrs["name_parse"]["first"], "Ann", "{attrs}");
    assert_eq!(attrs["name_parse"]["last"], "Lee", "{attrs}");
    assert_eq!(attrs["email_check"]["email"], "ann@acme.com", "{attrs}");
    assert_eq!(attrs["email_check"]["syntaxValid"], true, "{attrs}");
    assert!(
        attrs["work_email_patterns"]["candidates"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("ann.lee@acme.com"))),
        "{attrs}"
    );
    assert!(attributes(&app, &firm)
        .await
        .as_object()
        .unwrap()
        .is_empty());
}

// --- the SSRF guard ---------------------------------------------------------------------------

#[tokio::test]
async fn loopback_and_metadata_destinations_are_refused_by_default() {
    let app = TestApp::spawn_with(|c| {
        c.engine.retry_base = Duration::from_millis(20);
    })
    .await;
    let p = Provider::always(json!({"data": {"employees": 1}})).await;
    let a = company(&app, "Acme", "acme.com").await;
    for url in [
        p.url("/co/") + "{{lead.domain}}",
        format!("http://localhost:{}/co/", p.port()) + "{{lead.domain}}",
        "http://169.254.169.254/latest/meta-data/{{lead.domain}}".to_string(),
        "http://10.0.0.1/{{lead.domain}}".to_string(),
        "http://0.0.0.0/{{lead.domain}}".to_string(),
        format!("http://[::1]:{}/co/", p.port()) + "{{lead.domain}}",
    ] {
        let (_, items) = run_http(&app, json!({"url": url}), std::slice::from_ref(&a)).await;
        let item = &items[&a];
        assert_eq!(item["status"], "failed", "{url}: {item}");
        let message = item["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("not allowed"),
            "{url}: the destination is not allowed: {item}"
        );
    }
    assert_eq!(p.count(), 0, "no request reached the loopback provider");
}

// --- custom_ai --------------------------------------------------------------------------------

#[tokio::test]
async fn custom_ai_calls_an_openai_compatible_endpoint() {
    let p = Provider::start(|r| {
        if r.path() != "/v1/chat/completions" {
            return Reply::status(404);
        }
        let prompt = r.json()["messages"].to_string();
        let answer = if prompt.contains("Acme Inc") {
            json!({"employees": 50, "b2b": true})
        } else {
            json!({"employees": 0, "b2b": false})
        };
        Reply::json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer.to_string()}}]
        }))
    })
    .await;
    let base = p.url("/v1");
    let app = TestApp::spawn_for_providers_with(|c| {
        c.engine.ai_base_url = Some(base);
        c.engine.ai_model = Some("test-model".into());
        c.engine.ai_api_key = Some("sk-test-secret-never-shown".into());
    })
    .await;
    let a = company(&app, "Acme Inc", "acme.com").await;
    let before = app.balance().await;
    let id = app
        .start_run(json!({"enrichmentId": "custom_ai",
                          "input": {"prompt": "How many employees does {{lead.name.full}} have?"},
                          "scope": explicit(std::slice::from_ref(&a))}))
        .await;
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        app.balance().await,
        before - 1,
        "custom_ai costs 1 per lead"
    );
    let items = app.all_items(&id).await;
    let item = &items[0];
    assert_eq!(item["status"], "completed", "{item}");
    assert_eq!(
        item["result"],
        json!({"employees": 50, "b2b": true}),
        "{item}"
    );
    assert_eq!(
        attributes(&app, &a).await["custom_ai"],
        json!({"employees": 50, "b2b": true})
    );
    let reqs = p.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(
        reqs[0].header("authorization"),
        Some("Bearer sk-test-secret-never-shown")
    );
    assert_eq!(reqs[0].json()["model"], "test-model");
    assert!(
        reqs[0].json()["messages"]
            .to_string()
            .contains("How many employees does Acme Inc have?"),
        "the prompt is templated: {}",
        reqs[0].json()
    );
    // The secret never shows.
    let status = app.get(&format!("/api/enrichment/{id}")).await;
    let page = app.items_page(&id, "").await;
    for text in [&status.text, &page.text] {
        assert!(
            !text.contains("sk-test-secret-never-shown"),
            "secret leaked: {text}"
        );
    }
}

// --- restarts and fairness --------------------------------------------------------------------

/// The heartbeat keeps the leases of the items the worker is executing: a provider slower than
/// the lease is called once per item, and no item is rescued and run a second time.
#[tokio::test]
async fn items_executing_longer_than_their_lease_keep_it_and_run_once() {
    const N: usize = 4;
    let app = TestApp::spawn_for_providers_with(|c| {
        c.engine.concurrency = N;
        c.engine.lease = Duration::from_millis(600);
    })
    .await;
    let p = Provider::start(|r| {
        Reply::json(json!({"value": {"call": r.index}})).after(Duration::from_millis(2_000))
    })
    .await;
    let leads = app.companies("slow", N, None).await;
    let id = app
        .start_run(json!({"enrichmentId": "custom_http",
                          "input": {"url": p.url("/slow"), "resultPointer": "/value"},
                          "scope": explicit(&leads)}))
        .await;
    let run = app.wait_run_for(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "completed", "{run}");
    let items = app.all_items(&id).await;
    assert_eq!(items.len(), N);
    for item in &items {
        assert_eq!(item["status"], "completed", "{item}");
        assert_eq!(item["attempts"], 1, "{item}");
    }
    assert_eq!(p.count(), N, "each item called its provider once");
}

#[tokio::test]
async fn a_restart_mid_run_loses_nothing_and_writes_each_result_once() {
    const N: usize = 60;
    let mut app = TestApp::spawn_for_providers_with(|c| {
        c.engine.concurrency = 4;
        c.engine.lease = Duration::from_secs(2);
    })
    .await;
    // Each answer names the call that produced it, so a second write would show.
    let p = Provider::start(|r| {
        let domain = r.path().rsplit('/').next().unwrap_or("").to_string();
        Reply::json(json!({"value": {"domain": domain, "call": r.index}}))
            .after(Duration::from_millis(150))
    })
    .await;
    let leads = app.companies("rs", N, None).await;
    let id = app
        .start_run(json!({"enrichmentId": "custom_http",
                          "input": {"url": p.url("/co/") + "{{lead.domain}}",
                                    "resultPointer": "/value"},
                          "scope": explicit(&leads)}))
        .await;
    app.wait_run_until(&id, Duration::from_secs(30), "under way", |r| {
        r["scope"]["counts"]["completed"].as_i64() >= Some(8)
    })
    .await;
    app.restart().await;
    let mid = app.run_status(&id).await;
    assert!(
        mid["scope"]["counts"]["completed"].as_i64() < Some(N as i64),
        "the restart happened mid-run: {mid}"
    );
    let run = app.wait_run_for(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "completed", "{run}");
    let items = app.all_items(&id).await;
    assert_counts_match(&run, &items);
    assert_eq!(items.len(), N);
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["status"], "completed", "{item}");
        let lead = item["leadId"].as_str().unwrap();
        assert!(seen.insert(lead.to_string()), "one item per lead");
        let attrs = attributes(&app, lead).await;
        assert_eq!(
            attrs["custom_http"], item["result"],
            "the lead holds exactly the item's result (item {i})"
        );
        assert!(item["result"]["domain"]
            .as_str()
            .unwrap()
            .ends_with(".example"));
    }
    // Every lead was called, none more often than its attempts.
    for item in &items {
        let domain = item["result"]["domain"].as_str().unwrap();
        let calls = p.requests_to(&format!("/co/{domain}")).len() as i64;
        assert!(calls >= 1, "{domain} called");
        assert!(
            calls <= item["attempts"].as_i64().unwrap() + 1,
            "{domain}: {calls} calls for {} attempts",
            item["attempts"]
        );
    }
    assert_eq!(app.balance().await, 1000 - N as i64, "charged once");
}

#[tokio::test]
async fn a_small_run_is_not_starved_by_a_big_one() {
    let app = TestApp::spawn_for_providers_with(|c| c.engine.concurrency = 4).await;
    let p = Provider::start(|r| {
        let domain = r.path().rsplit('/').next().unwrap_or("").to_string();
        Reply::json(json!({"value": domain})).after(Duration::from_millis(20))
    })
    .await;
    app.grant(2000).await;
    let big_leads = app.companies("huge", 1500, None).await;
    let small_leads = app.companies("tiny", 3, None).await;
    let input = json!({"url": p.url("/co/") + "{{lead.domain}}", "resultPointer": "/value"});
    let big = app
        .start_run(
            json!({"enrichmentId": "custom_http", "input": input, "scope": explicit(&big_leads)}),
        )
        .await;
    app.wait_run_until(&big, Duration::from_secs(30), "running", |r| {
        r["status"] == "running"
    })
    .await;
    let small = app
        .start_run(json!({"enrichmentId": "custom_http", "input": input,
                          "scope": explicit(&small_leads)}))
        .await;
    let small_run = app.wait_run(&small).await;
    assert_eq!(small_run["status"], "completed");
    let big_run = app.run_status(&big).await;
    assert_eq!(
        big_run["status"], "running",
        "the small run finished while the big one was still running: {big_run}"
    );
    let cancel = app
        .post(&format!("/api/enrichment/{big}/cancel"), json!({}))
        .await;
    assert_eq!(cancel.status, 200, "{}", cancel.text);
}

#[tokio::test]
async fn a_retry_of_a_cancelled_run_is_skipped() {
    let app = TestApp::spawn_for_providers_with(|c| {
        c.engine.concurrency = 2;
        c.engine.retry_base = Duration::from_millis(50);
    })
    .await;
    let p = Provider::start(|_| Reply::status(503).after(Duration::from_millis(800))).await;
    let leads = vec![
        company(&app, "Acme", "acme.com").await,
        company(&app, "Globex", "globex.com").await,
    ];
    let id = app
        .start_run(
            json!({"enrichmentId": "custom_http", "input": employees_input(&p),
                          "scope": explicit(&leads)}),
        )
        .await;
    // `running` counts items claimed ahead too: cancel once both calls reached the provider.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while p.count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the provider got {} calls",
            p.count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = app
        .post(&format!("/api/enrichment/{id}/cancel"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let run = app
        .wait_run_until(&id, Duration::from_secs(20), "settled", |r| {
            r["scope"]["counts"]["running"] == 0 && r["scope"]["counts"]["pending"] == 0
        })
        .await;
    assert_eq!(run["status"], "cancelled");
    for item in app.all_items(&id).await {
        assert_eq!(
            item["status"], "skipped",
            "a retry of a cancelled run: {item}"
        );
        assert_eq!(item["skippedReason"], "run_cancelled", "{item}");
        assert_eq!(item["attempts"], 1, "{item}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.count(), 2, "no retry after the cancel");
}

/// A run whose enrichment cannot run on this server any more fails as a whole: `status: failed`,
/// `error` says why, and its remaining items are skipped with `run_failed`.
#[tokio::test]
async fn a_run_whose_provider_is_gone_fails_and_skips_its_items() {
    let p = Provider::always(json!({"choices": [{"message": {"content": "{}"}}]})).await;
    let base = p.url("/v1");
    let mut app = TestApp::spawn_for_providers_with(|c| {
        c.run_worker = false;
        c.engine.ai_base_url = Some(base);
        c.engine.ai_model = Some("test-model".into());
    })
    .await;
    let leads = app.companies("gone", 3, None).await;
    let id = app
        .start_run(
            json!({"enrichmentId": "custom_ai", "input": {"prompt": "{{lead.name.full}}"},
                          "scope": explicit(&leads)}),
        )
        .await;
    // The AI endpoint is removed from the configuration before any worker ran the run.
    app.restart_with(|c| {
        c.run_worker = true;
        c.engine.ai_base_url = None;
        c.engine.ai_model = None;
    })
    .await;
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_keys(&run["error"], &["message", "details"]);
    assert!(
        run["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{run}"
    );
    assert!(run["timing"]["completedAt"].is_string(), "{run}");
    assert_eq!(run["timing"]["cancelledAt"], Value::Null);
    let items = app.all_items(&id).await;
    assert_counts_match(&run, &items);
    for item in &items {
        assert_eq!(item["status"], "skipped", "{item}");
        assert_eq!(item["skippedReason"], "run_failed", "{item}");
        assert_eq!(item["attempts"], 0, "{item}");
    }
    assert_eq!(p.count(), 0);
    // A failed run is not cancellable.
    let r = app
        .post(&format!("/api/enrichment/{id}/cancel"), json!({}))
        .await;
    r.assert_error(409, "conflict");
    assert_eq!(r.body["reason"], "run_not_cancellable");
}
