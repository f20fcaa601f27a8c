//! Issue 7: every limit answers the spec's envelope with a clear 4xx, and nothing is written
//! by a refused request.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

/// Leads in the workspace (the `all` list's count), to prove a refusal wrote nothing.
async fn lead_count(app: &TestApp) -> i64 {
    app.all_list_as(&app.key).await["leadCount"]
        .as_i64()
        .expect("leadCount")
}

fn person(i: usize) -> Value {
    json!({"type": "person", "name": format!("Person {i}"),
           "contacts": [{"type": "email", "value": format!("p{i}@limits.example")}]})
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_writes_nothing() {
    let app = TestApp::spawn_with(|c| c.max_body_bytes = 2048).await;
    let leads: Vec<Value> = (0..40).map(person).collect();
    let r = app.post("/api/lists/import", json!({"leads": leads})).await;
    r.assert_error(413, "payload_too_large");
    assert_eq!(lead_count(&app).await, 0);
    // Under the limit the same endpoint works.
    let r = app
        .post("/api/lists/import", json!({"leads": [person(1)]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn a_json_import_over_the_lead_limit_is_400_and_writes_nothing() {
    let app = TestApp::spawn_with(|c| c.max_import_leads = 3).await;
    let leads: Vec<Value> = (0..4).map(person).collect();
    let r = app.post("/api/lists/import", json!({"leads": leads})).await;
    let message = r.assert_error(400, "invalid_request");
    assert!(
        message.starts_with("leads:") && message.contains("1 to 3"),
        "{message}"
    );
    assert_eq!(lead_count(&app).await, 0);
    let leads: Vec<Value> = (0..3).map(person).collect();
    let r = app.post("/api/lists/import", json!({"leads": leads})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(lead_count(&app).await, 3);
}

#[tokio::test]
async fn membership_requests_over_the_id_limit_are_400_and_change_nothing() {
    let app = TestApp::spawn_with(|c| c.max_ids_per_request = 2).await;
    let ids = app.import_leads((0..3).map(person).collect(), None).await;
    let list = app.list(json!({"name": "Few", "leadType": "person"})).await;
    let list_id = list["id"].as_str().unwrap();
    let path = format!("/api/lists/{list_id}/leads");

    let r = app.post(&path, json!({"leadIds": ids})).await;
    let message = r.assert_error(400, "invalid_request");
    assert!(
        message.starts_with("leadIds:") && message.contains("at most 2"),
        "{message}"
    );
    assert_eq!(app.get_list(list_id).await["leadCount"], 0);
    // A list created with too many ids is not created either.
    let before = app.lists_as(&app.key).await.len();
    let r = app
        .post("/api/lists", json!({"name": "Many", "leadIds": ids}))
        .await;
    r.assert_error(400, "invalid_request");
    assert_eq!(app.lists_as(&app.key).await.len(), before);

    let r = app.post(&path, json!({"leadIds": &ids[..2]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.delete(&path, json!({"leadIds": ids})).await;
    r.assert_error(400, "invalid_request");
    assert_eq!(
        app.get_list(list_id).await["leadCount"],
        2,
        "nothing removed"
    );
}

/// `depth` nested arrays around a number.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn json_nested_deeper_than_the_limit_is_400_and_writes_nothing() {
    let app = TestApp::spawn_with(|c| c.max_json_depth = 8).await;
    let body = format!(
        r#"{{"type": "person", "name": "Deep", "attributes": {{"x": {}}}}}"#,
        nested(10)
    );
    let r = app
        .send_text(
            &app.key,
            Method::POST,
            "/api/leads",
            "application/json",
            body,
        )
        .await;
    let message = r.assert_error(400, "invalid_request");
    assert!(message.contains("deeper than 8"), "{message}");
    assert_eq!(lead_count(&app).await, 0);
    let shallow = json!({"type": "person", "name": "Shallow", "attributes": {"x": [[1]]}});
    assert_eq!(app.post("/api/leads", shallow).await.status, 200);
}

#[tokio::test]
async fn a_hostile_nesting_depth_is_400_with_the_default_limit() {
    let app = TestApp::spawn().await;
    for depth in [65, 129, 100_000] {
        let r = app
            .send_text(
                &app.key,
                Method::POST,
                "/api/leads",
                "application/json",
                nested(depth),
            )
            .await;
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(lead_count(&app).await, 0);
}

#[tokio::test]
async fn headers_over_the_limit_are_431_and_write_nothing() {
    let app = TestApp::spawn_with(|c| c.max_header_bytes = 4096).await;
    let r = app
        .raw(
            app.client
                .post(app.url("/api/leads"))
                .bearer_auth(&app.key)
                .header("x-padding", "a".repeat(5000))
                .json(&person(1)),
        )
        .await;
    r.assert_error(431, "request_headers_too_large");
    assert_eq!(lead_count(&app).await, 0);
    // A long query string counts too.
    let r = app.get(&format!("/api/leads?q={}", "b".repeat(5000))).await;
    r.assert_error(431, "request_headers_too_large");
    assert_eq!(app.post("/api/leads", person(2)).await.status, 200);
}

#[tokio::test]
async fn a_key_over_its_rate_is_429_with_retry_after_and_writes_nothing() {
    // Refill so slow that no token comes back during the test: no timing in the assertions.
    let app = TestApp::spawn_with(|c| {
        c.rate_limit = puffle_server::RateLimit {
            per_second: 0.001,
            burst: 4.0,
        }
    })
    .await;
    let (_, member_key) = app.create_user("rate@limits.example", "member", None).await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/account").await.status, 200);
    }
    let r = app.post("/api/leads", person(1)).await;
    r.assert_error(429, "rate_limited");
    let retry_after: u64 = r.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(retry_after >= 1, "{retry_after}");
    // Another key has its own budget, and sees that nothing was written.
    let r = app
        .call_as(&member_key, Method::GET, "/api/leads", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["leads"], json!([]));
    // Requests without a well-formed key are not counted against anyone (they are 401s).
    let r = app
        .raw(app.client.get(app.url("/api/account")).bearer_auth("nope"))
        .await;
    r.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn a_run_over_the_item_limit_is_400_and_creates_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.max_items_per_run = 2;
        c.run_worker = false;
    })
    .await;
    let ids = app.companies("cap", 3, None).await;
    let list = app
        .list(json!({"name": "Three", "leadType": "company", "leadIds": ids}))
        .await;
    let before = app.balance().await;
    let body = |scope: Value| {
        json!({"enrichmentId": "custom_http", "scope": scope, "idempotencyKey": "capped",
               "input": {"url": "https://example.com/{{lead.domain}}"}})
    };
    let r = app
        .enrich(body(json!({"type": "explicit_leads", "leadIds": ids})))
        .await;
    let message = r.assert_error(400, "invalid_request");
    assert!(message.starts_with("scope.leadIds:"), "{message}");
    let r = app
        .enrich(body(json!({"type": "list", "listId": list["id"]})))
        .await;
    let message = r.assert_error(400, "invalid_request");
    assert!(
        message.starts_with("scope:") && message.contains("at most 2"),
        "{message}"
    );
    assert_eq!(app.balance().await, before, "nothing charged");
    // Nothing was created under the idempotency key: a valid request with it creates a run.
    let r = app
        .enrich(body(
            json!({"type": "explicit_leads", "leadIds": &ids[..2]}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["reusedExistingRun"], false);
    assert_eq!(r.body["leadCount"], 2);
}

#[tokio::test]
async fn runs_over_the_active_limit_are_409_charge_nothing_and_free_up_when_one_ends() {
    let app = TestApp::spawn_with(|c| {
        c.max_active_runs = 2;
        c.run_worker = false;
    })
    .await;
    let ids = app.companies("busy", 2, None).await;
    let body = |key: &str| {
        json!({"enrichmentId": "custom_http", "scope": {"type": "explicit_leads", "leadIds": ids},
               "idempotencyKey": key, "input": {"url": "https://example.com/{{lead.domain}}"}})
    };
    let first = app.enrich(body("first")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let before = app.balance().await;
    // Four creates race for the one place left: exactly one gets it, on every backend.
    let calls = (0..4).map(|i| {
        let body = body(&format!("race-{i}"));
        let app = &app;
        async move { app.enrich(body).await }
    });
    let answers = futures::future::join_all(calls).await;
    let won: Vec<_> = answers.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        won.len(),
        1,
        "{:?}",
        answers.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(409, "conflict");
        assert_eq!(r.body["reason"], "too_many_active_runs", "{}", r.text);
    }
    assert_eq!(
        app.balance().await,
        before - 2,
        "only the run created was charged"
    );
    // A repeated idempotency key still answers with its run.
    let again = app.enrich(body("first")).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["reusedExistingRun"], true);
    // Once a run ends, a new one is accepted.
    let id = first.body["runId"].as_str().unwrap();
    let r = app
        .post(&format!("/api/enrichment/{id}/cancel"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.enrich(body("after-cancel")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["reusedExistingRun"], false);
}
