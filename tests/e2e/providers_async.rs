//! Issue 5, async providers: a step submits a job, then polls it (or receives a signed callback)
//! until the answer is ready; waiting items hold no worker slot and spend no attempt. Against a
//! real loopback vendor.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use puffle_engine::providers::configured::ProvidersConfig;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::*;

const HOOK_SECRET: &str = "whsec-e2e-async-0815";

/// The providers of `text`, with `HOOK_SECRET` set.
fn providers(text: &str) -> Arc<ProvidersConfig> {
    let env = |var: &str| (var == "HOOK_SECRET").then(|| HOOK_SECRET.to_string());
    Arc::new(
        puffle_engine::config_file::parse("puffle.toml", text, &env)
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

async fn app_with(text: &str) -> TestApp {
    let providers = providers(text);
    TestApp::spawn_for_providers_with(move |c| {
        c.engine.providers = providers;
        c.engine.concurrency = 4;
    })
    .await
}

/// An async enrichment `slug` on provider `vendor` at `p`: submit `POST /jobs` (job id at
/// `/job/id`), poll `GET /jobs/{id}`, pending while `/status` is `pending`, result at
/// `/data/email`.
fn config(p: &Provider, max_wait_seconds: u64) -> String {
    format!(
        r#"
[providers.vendor]
base_url = "{}"
callback_secret = "${{HOOK_SECRET}}"
callback_id_pointer = "/job_id"

[[enrichments]]
slug = "slow_email"
name = "Slow email"
subject = "any"
credit_action = "FIND_PERSON"

[[enrichments.steps]]
provider = "vendor"
kind = "async"
submit = {{ method = "POST", path = "/jobs", body = {{ domain = "{{{{lead.domain}}}}" }}, submission_id_pointer = "/job/id" }}
poll = {{ path = "/jobs/{{{{submission.id}}}}" }}
pending_when = [{{ pointer = "/status", equals = "pending" }}]
result_pointer = "/data/email"
poll_interval_ms = 100
max_wait_seconds = {max_wait_seconds}
"#,
        p.url("")
    )
}

/// The vendor: a submit answers job `job-<domain>`; a poll answers `pending` for its first
/// `pending_polls` requests, then the result.
async fn vendor(pending_polls: usize) -> Provider {
    Provider::start(move |r| {
        if r.method == "POST" && r.path() == "/jobs" {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let domain = body["domain"].as_str().unwrap_or("none");
            return Reply::json(json!({"job": {"id": format!("job-{domain}")}}));
        }
        if r.target_index < pending_polls {
            return Reply::json(json!({"status": "pending"}));
        }
        let domain = r.path().trim_start_matches("/jobs/job-");
        Reply::json(json!({"status": "done", "data": {"email": format!("info@{domain}")}}))
    })
    .await
}

async fn run_items(app: &TestApp, leads: &[String]) -> (Value, Vec<Value>) {
    let id = app
        .start_run(json!({"enrichmentId": "slow_email",
            "scope": {"type": "explicit_leads", "leadIds": leads}}))
        .await;
    let run = app.wait_run_for(&id, Duration::from_secs(60)).await;
    let items = app.all_items(&id).await;
    assert_counts_match(&run, &items);
    (run, items)
}

#[tokio::test]
async fn async_steps_submit_once_poll_until_ready_and_spend_one_attempt() {
    let vendor = vendor(2).await;
    let app = app_with(&config(&vendor, 60)).await;
    let leads = app.companies("slow", 3, None).await;
    let (run, items) = run_items(&app, &leads).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(items.len(), 3);
    for item in &items {
        let domain = item["metadata"]["leadSnapshot"]["fields"]["domain"]
            .as_str()
            .or_else(|| item["metadata"]["leadSnapshot"]["domain"].as_str())
            .unwrap_or_default()
            .to_string();
        assert_eq!(item["status"], "completed", "{item}");
        assert_eq!(item["result"], format!("info@{domain}"), "{item}");
        assert_eq!(
            item["metadata"]["providerSubmissionId"],
            format!("job-{domain}"),
            "{item}"
        );
        assert_eq!(item["attempts"], 1, "waiting spends no attempt: {item}");
        let polls = vendor.requests_to(&format!("/jobs/job-{domain}"));
        assert_eq!(polls.len(), 3, "two pending answers, then the result");
    }
    let submits = vendor.requests_to("/jobs");
    assert_eq!(submits.len(), 3, "exactly one submit per lead");
    let mut domains: Vec<String> = submits
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            body["domain"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    domains.sort();
    domains.dedup();
    assert_eq!(domains.len(), 3, "one submit for each lead: {domains:?}");
}

#[tokio::test]
async fn a_job_pending_beyond_max_wait_fails_the_item() {
    let vendor = vendor(usize::MAX).await;
    let app = app_with(&config(&vendor, 1)).await;
    let leads = app.companies("stuck", 1, None).await;
    let (_, items) = run_items(&app, &leads).await;
    let item = &items[0];
    assert_eq!(item["status"], "failed", "{item}");
    let message = item["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("job job-stuck0.example was still pending after 1 s"),
        "{message}"
    );
    // It failed on a pending poll answer, not on the submit (how many polls fit in the second
    // depends on the machine).
    assert!(!vendor.requests_to("/jobs/job-stuck0.example").is_empty());
    assert_eq!(vendor.requests_to("/jobs").len(), 1);
}

/// `Puffle-Signature` for `body` signed with `secret` now.
fn signature(secret: &str, body: &str) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn callback(app: &TestApp, provider: &str, body: &str, signature: Option<String>) -> Resp {
    let mut req = reqwest::Client::new()
        .post(app.url(&format!("/api/webhooks/providers/{provider}")))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = signature {
        req = req.header("Puffle-Signature", s);
    }
    app.raw(req).await
}

#[tokio::test]
async fn a_signed_callback_completes_a_waiting_item_and_a_bad_one_is_refused() {
    let vendor = vendor(usize::MAX).await;
    let app = app_with(&config(&vendor, 600)).await;
    let leads = app.companies("hook", 1, None).await;
    let run_id = app
        .start_run(json!({"enrichmentId": "slow_email",
            "scope": {"type": "explicit_leads", "leadIds": leads}}))
        .await;
    // Wait until the job is submitted and polled: the item is waiting.
    let job = "job-hook0.example";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while vendor.requests_to(&format!("/jobs/{job}")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the job is never polled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let body =
        json!({"job_id": job, "status": "done", "data": {"email": "cb@hook0.example"}}).to_string();
    let bad = callback(
        &app,
        "vendor",
        &body,
        Some(signature("wrong-secret", &body)),
    )
    .await;
    assert_eq!(bad.status, 401, "{}", bad.text);
    assert_eq!(bad.body["error"]["code"], "unauthorized", "{}", bad.text);
    let missing = callback(&app, "vendor", &body, None).await;
    assert_eq!(missing.status, 401, "{}", missing.text);
    let unknown = callback(&app, "nobody", &body, Some(signature(HOOK_SECRET, &body))).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    let other = json!({"job_id": "job-unknown"}).to_string();
    let no_item = callback(&app, "vendor", &other, Some(signature(HOOK_SECRET, &other))).await;
    assert_eq!(no_item.status, 404, "{}", no_item.text);
    assert_eq!(no_item.body["error"]["code"], "not_found");

    // Still waiting after the refused callbacks.
    let items = app.all_items(&run_id).await;
    assert!(
        matches!(items[0]["status"].as_str(), Some("pending" | "running")),
        "{}",
        items[0]
    );
    assert_eq!(items[0]["metadata"]["providerSubmissionId"], job);

    let good = callback(&app, "vendor", &body, Some(signature(HOOK_SECRET, &body))).await;
    assert_eq!(good.status, 200, "{}", good.text);
    let run = app.wait_run_for(&run_id, Duration::from_secs(30)).await;
    let items = app.all_items(&run_id).await;
    assert_counts_match(&run, &items);
    let item = &items[0];
    assert_eq!(item["status"], "completed", "{item}");
    assert_eq!(item["result"], "cb@hook0.example", "{item}");
    assert_eq!(item["attempts"], 1, "{item}");
    assert_eq!(vendor.requests_to("/jobs").len(), 1);
}

#[tokio::test]
async fn cancelling_a_run_skips_its_waiting_items() {
    let vendor = vendor(usize::MAX).await;
    let app = app_with(&config(&vendor, 600)).await;
    let leads = app.companies("cancel", 2, None).await;
    let run_id = app
        .start_run(json!({"enrichmentId": "slow_email",
            "scope": {"type": "explicit_leads", "leadIds": leads}}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for lead in 0..2 {
        let job = format!("/jobs/job-cancel{lead}.example");
        while vendor.requests_to(&job).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{job} is never polled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let r = app
        .post(&format!("/api/enrichment/{run_id}/cancel"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // An item whose poll was under way at the cancel finishes that poll first (the spec skips
    // pending items at once; one that would go back to pending is skipped when it does). The
    // run's counts move with the items, so once they show nothing running the items are final.
    let run = app
        .wait_run_until(
            &run_id,
            Duration::from_secs(30),
            "without running items",
            |r| r["scope"]["counts"]["running"] == 0,
        )
        .await;
    let items = app.all_items(&run_id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_counts_match(&run, &items);
    for item in &items {
        assert_eq!(item["status"], "skipped", "{item}");
        assert_eq!(item["skippedReason"], "run_cancelled", "{item}");
        assert_eq!(item["attempts"], 0, "waiting spent no attempt: {item}");
    }
}
