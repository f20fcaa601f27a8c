//! Run webhooks [ours]: a run created with `webhookUrl` announces its end to a real loopback
//! receiver, signed with the secret from `POST /api/user/webhook-secret`; failing receivers get
//! retries; deliveries show at `GET /api/enrichment/{id}/webhooks`; the secret shows nowhere
//! else.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::*;

/// A server whose workers may reach 127.0.0.1, retrying failed deliveries after 200 ms.
async fn app_with(adjust: impl FnOnce(&mut puffle_server::Config)) -> TestApp {
    TestApp::spawn_for_providers_with(|c| {
        c.engine.webhook_retry_first = Duration::from_millis(200);
        adjust(c);
    })
    .await
}

/// A receiver that answers 200 to everything.
async fn receiver() -> Provider {
    Provider::start(|_| Reply::json(json!({"ok": true}))).await
}

/// `POST /api/user/webhook-secret` with `key`: the secret, shown this once.
async fn new_secret(app: &TestApp, key: &str) -> String {
    let r = app
        .call_as(
            key,
            reqwest::Method::POST,
            "/api/user/webhook-secret",
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["secret", "createdAt", "message"]);
    assert_timestamp(&r.body["createdAt"]);
    let secret = r.body["secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32, "{secret}");
    secret
}

/// Start a `company_domain` run (a built-in: it completes on its own) over `n` new companies.
async fn start_hooked_run(app: &TestApp, prefix: &str, n: usize, url: &str) -> String {
    let leads = app.companies(prefix, n, None).await;
    app.start_run(json!({
        "enrichmentId": "company_domain",
        "scope": {"type": "explicit_leads", "leadIds": leads},
        "webhookUrl": url,
    }))
    .await
}

/// `GET /api/enrichment/{id}/webhooks` (admin key): asserts 200 and the documented shape.
async fn deliveries(app: &TestApp, run: &str) -> Vec<Value> {
    let r = app.get(&format!("/api/enrichment/{run}/webhooks")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["deliveries"]);
    let list = r.body["deliveries"].as_array().unwrap().clone();
    for d in &list {
        assert_keys(
            d,
            &[
                "id",
                "eventId",
                "type",
                "url",
                "status",
                "attempts",
                "lastStatusCode",
                "lastError",
                "nextAttemptAt",
                "deliveredAt",
                "createdAt",
            ],
        );
        assert_timestamp(&d["createdAt"]);
        let status = d["status"].as_str().unwrap();
        assert!(["pending", "delivered", "failed"].contains(&status), "{d}");
        assert_eq!(d["nextAttemptAt"].is_string(), status == "pending", "{d}");
        assert_eq!(d["deliveredAt"].is_string(), status == "delivered", "{d}");
    }
    list
}

/// Poll the run's deliveries until the one delivery is no longer pending (30 s at most).
async fn settled_delivery(app: &TestApp, run: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = deliveries(app, run).await;
        assert!(list.len() <= 1, "one event per run: {list:?}");
        if let Some(d) = list.first().filter(|d| d["status"] != "pending") {
            return d.clone();
        }
        if std::time::Instant::now() > deadline {
            panic!("the delivery of run {run} is still pending: {list:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `request` carries a valid `Puffle-Signature` of its body under `secret`.
fn signed_with(secret: &str, request: &ProviderRequest) -> bool {
    let Some(header) = request.header("puffle-signature") else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    assert!(t.parse::<i64>().is_ok(), "t is unix seconds: {header}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&request.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

/// The event a request carries, checked against the delivery record and the run as the API
/// shows it now.
async fn assert_event(app: &TestApp, request: &ProviderRequest, delivery: &Value, run: &str) {
    assert_eq!(request.method, "POST");
    assert!(
        request
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{:?}",
        request.headers
    );
    let event = request.json();
    assert_keys(&event, &["id", "type", "createdAt", "data"]);
    assert_eq!(event["id"], delivery["eventId"]);
    assert_eq!(
        request.header("puffle-event-id"),
        delivery["eventId"].as_str()
    );
    assert_eq!(event["type"], delivery["type"]);
    assert_eq!(event["createdAt"], delivery["createdAt"]);
    assert_keys(&event["data"], &["run"]);
    assert_eq!(event["data"]["run"], app.run_status(run).await);
    assert_eq!(
        event["type"],
        format!(
            "enrichment.run.{}",
            event["data"]["run"]["status"].as_str().unwrap()
        )
    );
}

#[tokio::test]
async fn a_completed_run_posts_a_signed_event_with_the_run() {
    let app = app_with(|_| {}).await;
    let secret = new_secret(&app, &app.key).await;
    let hook = receiver().await;
    let url = hook.url("/hooks/puffle?source=test");
    let run = start_hooked_run(&app, "done", 3, &url).await;
    let status = app.wait_run(&run).await;
    assert_eq!(status["status"], "completed");
    let delivery = settled_delivery(&app, &run).await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["type"], "enrichment.run.completed");
    assert_eq!(delivery["url"], url.as_str());
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["lastStatusCode"], 200);
    assert_eq!(delivery["lastError"], Value::Null);
    assert_eq!(delivery["createdAt"], status["timing"]["completedAt"]);
    // A UUID minted by the database (version 4: see docs/api-decisions.md).
    assert!(
        delivery["id"].as_str().is_some_and(|id| id.len() == 36),
        "{delivery}"
    );
    let requests = hook.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].target, "/hooks/puffle?source=test");
    assert!(signed_with(&secret, &requests[0]), "{:?}", requests[0]);
    assert!(!signed_with("whsec_not-the-secret", &requests[0]));
    assert_event(&app, &requests[0], &delivery, &run).await;
}

/// An empty scope makes a run that is completed at creation: it is announced too.
#[tokio::test]
async fn a_run_completed_at_creation_is_announced() {
    let app = app_with(|_| {}).await;
    let secret = new_secret(&app, &app.key).await;
    let hook = receiver().await;
    let run = app
        .start_run(json!({
            "enrichmentId": "company_domain",
            "scope": {"type": "explicit_leads", "leadIds": []},
            "webhookUrl": hook.url("/empty"),
        }))
        .await;
    let delivery = settled_delivery(&app, &run).await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["type"], "enrichment.run.completed");
    let requests = hook.requests();
    assert_eq!(requests.len(), 1);
    assert!(signed_with(&secret, &requests[0]));
    assert_event(&app, &requests[0], &delivery, &run).await;
}

#[tokio::test]
async fn a_cancelled_run_posts_a_cancelled_event() {
    let mut app = app_with(|c| c.run_worker = false).await;
    let secret = new_secret(&app, &app.key).await;
    let hook = receiver().await;
    let run = start_hooked_run(&app, "cancel", 2, &hook.url("/cancel")).await;
    let r = app
        .post(&format!("/api/enrichment/{run}/cancel"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Queued with the cancel, sent once a worker runs.
    let queued = deliveries(&app, &run).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["status"], "pending");
    assert_eq!(queued[0]["attempts"], 0);
    app.restart_with(|c| c.run_worker = true).await;
    let delivery = settled_delivery(&app, &run).await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["type"], "enrichment.run.cancelled");
    assert_eq!(delivery["eventId"], queued[0]["eventId"]);
    let requests = hook.requests();
    assert_eq!(requests.len(), 1);
    assert!(signed_with(&secret, &requests[0]));
    assert_event(&app, &requests[0], &delivery, &run).await;
    assert_eq!(requests[0].json()["data"]["run"]["status"], "cancelled");
}

/// A run that fails as a whole (its provider is no longer configured) posts a failed event.
#[tokio::test]
async fn a_failed_run_posts_a_failed_event() {
    let ai = Provider::always(json!({"choices": [{"message": {"content": "{}"}}]})).await;
    let base = ai.url("/v1");
    let mut app = app_with(|c| {
        c.run_worker = false;
        c.engine.ai_base_url = Some(base);
        c.engine.ai_model = Some("test-model".into());
    })
    .await;
    let secret = new_secret(&app, &app.key).await;
    let hook = receiver().await;
    let leads = app.companies("fail", 2, None).await;
    let run = app
        .start_run(json!({
            "enrichmentId": "custom_ai",
            "input": {"prompt": "{{lead.name.full}}"},
            "scope": {"type": "explicit_leads", "leadIds": leads},
            "webhookUrl": hook.url("/failed"),
        }))
        .await;
    app.restart_with(|c| {
        c.run_worker = true;
        c.engine.ai_base_url = None;
        c.engine.ai_model = None;
    })
    .await;
    assert_eq!(app.wait_run(&run).await["status"], "failed");
    let delivery = settled_delivery(&app, &run).await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["type"], "enrichment.run.failed");
    let requests = hook.requests();
    assert_eq!(requests.len(), 1);
    assert!(signed_with(&secret, &requests[0]));
    assert_event(&app, &requests[0], &delivery, &run).await;
    assert!(requests[0].json()["data"]["run"]["error"]["message"].is_string());
    assert_eq!(ai.count(), 0);
}

/// 500, 500, then 200: three attempts of the same event (same id, same bytes), each signed,
/// and the delivery ends delivered.
#[tokio::test]
async fn a_failing_receiver_gets_retries_of_the_same_event() {
    let app = app_with(|_| {}).await;
    let secret = new_secret(&app, &app.key).await;
    let hook = Provider::start(|r| {
        if r.index < 2 {
            Reply::status(500)
        } else {
            Reply::json(json!({}))
        }
    })
    .await;
    let run = start_hooked_run(&app, "retry", 1, &hook.url("/flaky")).await;
    let delivery = settled_delivery(&app, &run).await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["attempts"], 3);
    assert_eq!(delivery["lastStatusCode"], 200);
    assert_eq!(delivery["lastError"], Value::Null);
    let requests = hook.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    for r in &requests {
        assert_eq!(r.header("puffle-event-id"), delivery["eventId"].as_str());
        assert_eq!(
            r.body, requests[0].body,
            "every attempt sends the same bytes"
        );
        assert!(signed_with(&secret, r), "{r:?}");
    }
    assert_event(&app, &requests[2], &delivery, &run).await;
}

/// A receiver that never answers 2xx: the delivery stays pending with the last answer recorded
/// and a next attempt scheduled.
#[tokio::test]
async fn a_receiver_that_keeps_failing_leaves_the_delivery_pending_with_the_reason() {
    let app = app_with(|_| {}).await;
    new_secret(&app, &app.key).await;
    let hook = Provider::start(|_| Reply::status(503)).await;
    let run = start_hooked_run(&app, "down", 1, &hook.url("/down")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let delivery = loop {
        let list = deliveries(&app, &run).await;
        if let Some(d) = list.first().filter(|d| d["attempts"].as_i64() >= Some(2)) {
            break d.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(delivery["status"], "pending", "{delivery}");
    assert_eq!(delivery["lastStatusCode"], 503);
    assert!(
        delivery["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{delivery}"
    );
    assert_timestamp(&delivery["nextAttemptAt"]);
}

/// After a rotation, deliveries are signed with the new secret and not the old one.
#[tokio::test]
async fn a_rotated_secret_signs_the_next_deliveries() {
    let app = app_with(|_| {}).await;
    let old = new_secret(&app, &app.key).await;
    let hook = receiver().await;
    let first = start_hooked_run(&app, "before", 1, &hook.url("/a")).await;
    settled_delivery(&app, &first).await;
    let new = new_secret(&app, &app.key).await;
    assert_ne!(old, new);
    let second = start_hooked_run(&app, "after", 1, &hook.url("/b")).await;
    settled_delivery(&app, &second).await;
    let a = &hook.requests_to("/a")[0];
    let b = &hook.requests_to("/b")[0];
    assert!(signed_with(&old, a));
    assert!(signed_with(&new, b), "{b:?}");
    assert!(!signed_with(&old, b), "the old secret no longer signs");
}

#[tokio::test]
async fn webhook_urls_are_validated_and_need_a_secret() {
    let app = app_with(|_| {}).await;
    let leads = app.companies("bad", 1, None).await;
    let body = |url: Value| {
        json!({"enrichmentId": "company_domain",
               "scope": {"type": "explicit_leads", "leadIds": leads}, "webhookUrl": url})
    };
    // No secret yet: the request says how to make one.
    let r = app.enrich(body(json!("https://hooks.example.com/x"))).await;
    let message = r.assert_invalid("webhookUrl");
    assert!(message.contains("/api/user/webhook-secret"), "{message}");
    new_secret(&app, &app.key).await;
    let long = format!("https://example.com/{}", "a".repeat(3000));
    for bad in [
        json!("not a url"),
        json!("/relative/path"),
        json!("ftp://example.com/x"),
        json!("https://user:password@example.com/x"),
        json!(long),
        json!(42),
    ] {
        let r = app.enrich(body(bad.clone())).await;
        r.assert_invalid("webhookUrl");
    }
    // Nothing was created (and nothing charged) by the refusals.
    let r = app.enrich(body(json!("https://hooks.example.com/x"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A private destination not on the allow-list (PUFFLE_HTTP_ALLOW_HOSTS): nothing is sent and
/// the delivery fails at once, saying why.
#[tokio::test]
async fn a_private_receiver_not_allowed_fails_without_being_sent() {
    let app = TestApp::spawn_with(|c| {
        c.engine.webhook_retry_first = Duration::from_millis(200);
    })
    .await;
    new_secret(&app, &app.key).await;
    let hook = receiver().await;
    let run = start_hooked_run(&app, "private", 1, &hook.url("/private")).await;
    let delivery = settled_delivery(&app, &run).await;
    assert_eq!(delivery["status"], "failed", "{delivery}");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["lastStatusCode"], Value::Null);
    let error = delivery["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains("not allowed") && error.contains("PUFFLE_HTTP_ALLOW_HOSTS"),
        "{delivery}"
    );
    assert_eq!(hook.count(), 0, "nothing reaches the private address");
}

#[tokio::test]
async fn another_users_run_has_no_deliveries_to_show() {
    let app = app_with(|_| {}).await;
    new_secret(&app, &app.key).await;
    let hook = receiver().await;
    let run = start_hooked_run(&app, "mine", 1, &hook.url("/mine")).await;
    let ws = app.workspace_id().await;
    let (_, other) = app
        .create_user("other@example.com", "member", Some(&ws))
        .await;
    let r = app
        .call_as(
            &other,
            reqwest::Method::GET,
            &format!("/api/enrichment/{run}/webhooks"),
            None,
        )
        .await;
    r.assert_error(404, "not_found");
    let r = app
        .get(&format!("/api/enrichment/{}/webhooks", unknown_id()))
        .await;
    r.assert_error(404, "not_found");
}

/// `puffle serve` with debug logs: a delivery happens, and the secret appears in no log line
/// and in no answer but the one that created it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_appears_in_no_log_line_nor_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = format!("pk_live_{}", "cd".repeat(32));
    let mut command = LoggedServe::command(dir.path(), &key);
    command
        .args(["--log-format", "json"])
        .env("PUFFLE_HTTP_ALLOW_HOSTS", "127.0.0.1")
        .env("PUFFLE_WEBHOOK_RETRY_FIRST_MS", "100");
    let serve = LoggedServe::start(command);
    let (status, text) = serve
        .call(
            &key,
            reqwest::Method::POST,
            "/api/user/webhook-secret",
            None,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let secret = serde_json::from_str::<Value>(&text).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    // Fails twice, so retries are logged too.
    let hook = Provider::start(|r| {
        if r.index < 2 {
            Reply::status(500)
        } else {
            Reply::json(json!({}))
        }
    })
    .await;
    let (status, text) = serve
        .call(
            &key,
            reqwest::Method::POST,
            "/api/leads",
            Some(json!({"type": "company", "name": "Logged", "domain": "logged.example"})),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let lead = serde_json::from_str::<Value>(&text).unwrap()["lead"]["id"].clone();
    let (status, text) = serve
        .call(
            &key,
            reqwest::Method::POST,
            "/api/enrichment",
            Some(json!({"enrichmentId": "company_domain",
                    "scope": {"type": "explicit_leads", "leadIds": [lead]},
                    "webhookUrl": hook.url("/logged")})),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let run = serde_json::from_str::<Value>(&text).unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_string();
    let mut answers = vec![text];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = serve
            .call(
                &key,
                reqwest::Method::GET,
                &format!("/api/enrichment/{run}/webhooks"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{text}");
        let done = text.contains("\"delivered\"");
        answers.push(text);
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{answers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in [format!("/api/enrichment/{run}"), "/api/account".to_string()] {
        answers.push(serve.call(&key, reqwest::Method::GET, &path, None).await.1);
    }
    assert_eq!(hook.count(), 3);
    let (exit, lines) = serve.stop().await;
    assert!(exit.success(), "{exit:?}");
    assert!(
        lines.iter().any(|l| l.contains("webhook delivered")),
        "the delivery is logged: {lines:#?}"
    );
    let hex = &secret["whsec_".len()..];
    for text in lines.iter().chain(&answers) {
        assert!(!text.contains(hex), "the secret leaked: {text}");
    }
    // Nor is it sent to the receiver (only signatures made with it are).
    for r in hook.requests() {
        assert!(!String::from_utf8_lossy(&r.body).contains(hex));
        assert!(r.headers.iter().all(|(_, v)| !v.contains(hex)));
    }
}

/// The CLI: `puffle account webhook-secret`, `puffle enrichment create --webhook-url`, and
/// `puffle enrichment webhooks --id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_a_secret_a_hooked_run_and_shows_its_deliveries() {
    let app = app_with(|_| {}).await;
    let hook = receiver().await;
    let leads = app.companies("cli", 1, None).await;
    let run_cli = |args: Vec<String>| {
        let mut cmd = app.cli();
        cmd.args(&args);
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().expect("puffle runs"))
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "{args:?}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_str::<Value>(&stdout).expect("JSON on stdout")
        }
    };
    let secret = run_cli(vec!["account".into(), "webhook-secret".into()]).await;
    let secret = secret["secret"].as_str().unwrap().to_string();
    let created = run_cli(vec![
        "enrichment".into(),
        "create".into(),
        "--enrichment-id".into(),
        "company_domain".into(),
        "--scope".into(),
        json!({"type": "explicit_leads", "leadIds": leads}).to_string(),
        "--webhook-url".into(),
        hook.url("/cli"),
    ])
    .await;
    let run = created["runId"].as_str().unwrap().to_string();
    let delivery = settled_delivery(&app, &run).await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert!(signed_with(&secret, &hook.requests()[0]));
    let shown = run_cli(vec![
        "enrichment".into(),
        "webhooks".into(),
        "--id".into(),
        run.clone(),
    ])
    .await;
    assert_eq!(shown["deliveries"], json!([delivery]));
}
