//! Issue 5: providers and enrichments configured in `puffle.toml` — the catalog, waterfalls,
//! `miss_when`, throttles, secrets, the result cache — against real loopback vendors.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use puffle_engine::providers::configured::ProvidersConfig;
use serde_json::{json, Value};

use crate::support::*;

const SECRET: &str = "sk-e2e-very-secret-4711";

/// The providers of `text`, with `VENDOR_KEY` set to [`SECRET`] and nothing else set.
fn providers(text: &str) -> Arc<ProvidersConfig> {
    let env = |var: &str| (var == "VENDOR_KEY").then(|| SECRET.to_string());
    Arc::new(
        puffle_engine::config_file::parse("puffle.toml", text, &env)
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A server whose engine has the providers of `text`, at `concurrency`.
async fn app_with(text: &str, concurrency: usize) -> TestApp {
    let providers = providers(text);
    TestApp::spawn_for_providers_with(move |c| {
        c.engine.providers = providers;
        c.engine.concurrency = concurrency;
    })
    .await
}

/// `[providers.<name>]` at `p`, with `extra` lines.
fn provider(name: &str, p: &Provider, extra: &str) -> String {
    format!(
        "[providers.{name}]\nbase_url = \"{}\"\nheaders = {{ Authorization = \"Bearer ${{VENDOR_KEY}}\" }}\n{extra}\n",
        p.url("")
    )
}

/// Run `slug` over `leads` to completion; the run and its items in lead order.
async fn run(app: &TestApp, slug: &str, leads: &[String]) -> (Value, Vec<Value>) {
    let id = app
        .start_run(json!({"enrichmentId": slug,
            "scope": {"type": "explicit_leads", "leadIds": leads}}))
        .await;
    let run = app.wait_run_for(&id, Duration::from_secs(120)).await;
    let items = app.all_items(&id).await;
    assert_counts_match(&run, &items);
    let ordered = leads
        .iter()
        .map(|l| {
            items
                .iter()
                .find(|i| i["leadId"] == l.as_str())
                .cloned()
                .expect("an item per lead")
        })
        .collect();
    (run, ordered)
}

// --- the catalog --------------------------------------------------------------------------------

#[tokio::test]
async fn configured_enrichments_are_listed_and_take_over_hosted_slugs() {
    let vendor = Provider::always(json!({})).await;
    let text = provider("vendor", &vendor, "")
        + r#"
[[enrichments]]
slug = "work_email"
name = "Work email (vendor)"
description = "Vendor lookup"
subject = "person"
credit_action = "work_email_lookup"
steps = [{ provider = "vendor", path = "/email" }]

[[enrichments]]
slug = "vendor_company"
name = "Vendor company"
subject = "company"
credit_action = "FIND_PERSON"
attribute_key = "vendor"
steps = [{ provider = "vendor", path = "/company" }]
"#;
    let app = app_with(&text, 4).await;
    let r = app.get("/api/enrichments").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let all = r.body["enrichments"]
        .as_array()
        .or_else(|| r.body.as_array())
        .cloned()
        .expect("a list of enrichments");
    let find = |slug: &str| {
        all.iter()
            .find(|e| e["slug"] == slug)
            .cloned()
            .unwrap_or_else(|| panic!("{slug} listed: {all:?}"))
    };
    let work_email = find("work_email");
    assert_enrichment_shape(&work_email);
    assert_eq!(work_email["enabled"], true);
    assert_eq!(work_email["name"], "Work email (vendor)");
    assert_eq!(work_email["toolBinding"]["type"], "provider");
    let company = find("vendor_company");
    assert_enrichment_shape(&company);
    assert_eq!(company["defaultOutputAttributeKey"], "vendor");
    assert_eq!(company["costModel"]["creditAction"], "FIND_PERSON");
    assert_eq!(
        all.iter().filter(|e| e["slug"] == "work_email").count(),
        1,
        "replaced, not added"
    );
}

// --- waterfalls and miss_when ------------------------------------------------------------------

#[tokio::test]
async fn a_waterfall_stops_at_the_first_hit_and_keeps_what_earlier_steps_said() {
    // First vendor: a low score for "low", not_found for "nf", a 401 for "auth", a hit for "hit".
    let first = Provider::start(|r| {
        let domain = r.path().trim_start_matches("/find/").to_string();
        match domain.split('.').next().unwrap_or("") {
            "low" => Reply::json(json!({"score": 10, "data": {"email": "guess@low.example"}})),
            "nf" => Reply::json(json!({"status": "not_found", "data": {}})),
            "auth" => Reply::status(401),
            _ => Reply::json(json!({"score": 95, "data": {"email": "first@hit.example"}})),
        }
    })
    .await;
    let second = Provider::start(|r| {
        if r.path().contains("none") {
            Reply::status(404)
        } else {
            Reply::json(json!({"person": {"email": "second@found.example"}}))
        }
    })
    .await;
    let text = provider("first", &first, "")
        + &provider("second", &second, "")
        + r#"
[[enrichments]]
slug = "email_waterfall"
name = "Email waterfall"
subject = "company"
credit_action = "work_email_lookup"

[[enrichments.steps]]
provider = "first"
path = "/find/{{lead.domain}}"
result_pointer = "/data/email"
miss_when = [{ pointer = "/score", below = 50 }, { pointer = "/status", equals = "not_found" }]

[[enrichments.steps]]
provider = "second"
method = "POST"
path = "/match"
body = { domain = "{{lead.domain}}" }
result_pointer = "/person/email"
"#;
    let app = app_with(&text, 4).await;
    let mut leads = Vec::new();
    for (name, domain) in [
        ("Hit", "hit.example"),
        ("Low", "low.example"),
        ("Nf", "nf.example"),
        ("Auth", "auth.example"),
    ] {
        leads.push(
            app.lead(json!({"type": "company", "name": name, "domain": domain}))
                .await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (run, items) = run(&app, "email_waterfall", &leads).await;
    assert_eq!(run["status"], "completed", "{run}");
    for item in &items {
        assert_item_shape(item);
        assert_eq!(item["status"], "completed", "{item}");
    }

    // A first-step hit: the second vendor is never asked for it.
    let hit = &items[0];
    assert_eq!(hit["result"], "first@hit.example");
    assert_eq!(hit["metadata"]["provider"], "first");
    assert_eq!(hit["metadata"]["result"]["score"], 95);
    assert_eq!(
        hit["metadata"]["inputSnapshot"]["steps"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let asked: Vec<Value> = second.requests().iter().map(|r| r.json()).collect();
    assert!(
        !asked.contains(&json!({"domain": "hit.example"})),
        "{asked:?}"
    );

    // miss_when (a low score, a not_found status) and a failed first step hand over to the second.
    for (item, first_outcome) in [
        (&items[1], "miss"),
        (&items[2], "miss"),
        (&items[3], "failed"),
    ] {
        assert_eq!(item["result"], "second@found.example", "{item}");
        let m = &item["metadata"];
        assert_eq!(m["provider"], "second", "{item}");
        assert_eq!(
            m["result"],
            json!({"person": {"email": "second@found.example"}})
        );
        let steps = m["inputSnapshot"]["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2, "{item}");
        assert_eq!(steps[0]["provider"], "first");
        assert_eq!(steps[0]["outcome"], first_outcome, "{item}");
        assert_eq!(steps[1]["outcome"], "hit");
        assert!(
            steps[0]["answer"].is_object(),
            "earlier answers are kept: {item}"
        );
    }
    assert!(items[3]["metadata"]["inputSnapshot"]["steps"][0]["message"]
        .as_str()
        .unwrap()
        .contains("401"));
    assert_eq!(second.count(), 3);
}

#[tokio::test]
async fn when_every_step_fails_the_item_fails_with_each_step_in_its_details() {
    let first = Provider::start(|_| Reply::status(403)).await;
    let second = Provider::start(|_| Reply::status(400)).await;
    let nothing = Provider::start(|_| Reply::json(json!({"status": "not_found"}))).await;
    let text = provider("first", &first, "")
        + &provider("second", &second, "")
        + &provider("nothing", &nothing, "")
        + r#"
[[enrichments]]
slug = "all_fail"
name = "All fail"
subject = "any"
credit_action = "FIND_PERSON"
steps = [{ provider = "first", path = "/a" }, { provider = "second", path = "/b" }]

[[enrichments]]
slug = "vendor_miss"
name = "Vendor miss"
subject = "any"
credit_action = "FIND_PERSON"
steps = [{ provider = "nothing", path = "/c", miss_when = [{ pointer = "/status", equals = "not_found" }] }]
"#;
    let app = app_with(&text, 4).await;
    let lead = app.companies("fail", 1, None).await;
    let (_, items) = run(&app, "all_fail", &lead).await;
    let item = &items[0];
    assert_eq!(item["status"], "failed", "{item}");
    assert_eq!(item["attempts"], 1, "4xx are not retried: {item}");
    let message = item["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("403") && message.contains("400"),
        "{message}"
    );
    let steps = item["error"]["details"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["outcome"], "failed");
    assert_eq!(steps[1]["provider"], "second");

    // A 200 that miss_when calls a miss completes with no result and writes nothing.
    let (_, items) = run(&app, "vendor_miss", &lead).await;
    assert_eq!(items[0]["status"], "completed", "{}", items[0]);
    assert_eq!(items[0]["result"], Value::Null);
    let attrs = app.get_lead(&lead[0]).await.unwrap()["attributes"].clone();
    assert!(attrs.get("vendor_miss").is_none(), "{attrs}");
}

// --- throttles ---------------------------------------------------------------------------------

#[tokio::test]
async fn per_second_limits_hold_at_the_vendor() {
    let vendor = Provider::always(json!({"ok": true})).await;
    let text = provider("vendor", &vendor, "rate_limit = { per_second = 5 }")
        + r#"
[[enrichments]]
slug = "limited"
name = "Limited"
subject = "company"
credit_action = "FIND_PERSON"
steps = [{ provider = "vendor", path = "/x/{{lead.domain}}" }]
"#;
    let app = app_with(&text, 16).await;
    let leads = app.companies("rate", 50, None).await;
    let (run, _) = run(&app, "limited", &leads).await;
    assert_eq!(run["status"], "completed", "{run}");
    let arrivals: Vec<_> = vendor.requests().iter().map(|r| r.at).collect();
    assert_eq!(arrivals.len(), 50);
    for (i, start) in arrivals.iter().enumerate() {
        let in_window = arrivals
            .iter()
            .filter(|t| **t >= *start && t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 5,
            "{in_window} requests within one second of request {i}"
        );
    }
}

#[tokio::test]
async fn max_in_flight_bounds_concurrent_requests() {
    const HOLD: Duration = Duration::from_millis(200);
    let vendor = Provider::start(|_| Reply::json(json!({"ok": 1})).after(HOLD)).await;
    let text = provider("vendor", &vendor, "max_in_flight = 2")
        + r#"
[[enrichments]]
slug = "narrow"
name = "Narrow"
subject = "company"
credit_action = "FIND_PERSON"
steps = [{ provider = "vendor", path = "/x/{{lead.domain}}" }]
"#;
    let app = app_with(&text, 16).await;
    let leads = app.companies("narrow", 12, None).await;
    let (run, _) = run(&app, "narrow", &leads).await;
    assert_eq!(run["status"], "completed", "{run}");
    // Each request is held at least HOLD after it arrived: those that arrived within HOLD
    // before one were still in flight when it arrived.
    let arrivals: Vec<_> = vendor.requests().iter().map(|r| r.at).collect();
    assert_eq!(arrivals.len(), 12);
    for t in &arrivals {
        let in_flight = arrivals
            .iter()
            .filter(|s| *s <= t && t.duration_since(**s) < HOLD)
            .count();
        assert!(in_flight <= 2, "{in_flight} requests in flight at once");
    }
}

#[tokio::test]
async fn a_429_with_retry_after_pauses_the_provider() {
    let vendor = Provider::start(|r| {
        if r.index == 0 {
            Reply::retry_after(2)
        } else {
            Reply::json(json!({"ok": 1}))
        }
    })
    .await;
    let text = provider("vendor", &vendor, "max_in_flight = 1")
        + r#"
[[enrichments]]
slug = "paused"
name = "Paused"
subject = "company"
credit_action = "FIND_PERSON"
steps = [{ provider = "vendor", path = "/x/{{lead.domain}}" }]
"#;
    let app = app_with(&text, 8).await;
    let leads = app.companies("pause", 4, None).await;
    let (run, items) = run(&app, "paused", &leads).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(items.iter().all(|i| i["status"] == "completed"));
    let requests = vendor.requests();
    assert_eq!(requests.len(), 5, "four hits and the 429");
    let refused_at = requests[0].at;
    for r in &requests[1..] {
        assert!(
            r.at.duration_since(refused_at) >= Duration::from_secs(2),
            "request {} came {:?} after the 429",
            r.index,
            r.at.duration_since(refused_at)
        );
    }
}

// --- secrets -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_provider_without_its_secret_disables_its_enrichments() {
    let vendor = Provider::always(json!({})).await;
    let text = format!(
        "[providers.keyless]\nbase_url = \"{}\"\nheaders = {{ \"X-Api-Key\" = \"${{KEYLESS_API_KEY}}\" }}\n",
        vendor.url("")
    ) + r#"
[[enrichments]]
slug = "keyless_lookup"
name = "Keyless lookup"
subject = "any"
credit_action = "FIND_PERSON"
steps = [{ provider = "keyless", path = "/x" }]
"#;
    let app = app_with(&text, 2).await;
    let r = app.get("/api/enrichments?q=keyless").await;
    assert!(r.text.contains("\"enabled\":false"), "{}", r.text);
    let lead = app.companies("keyless", 1, None).await;
    let r = app
        .enrich(json!({"enrichmentId": "keyless_lookup",
            "scope": {"type": "explicit_leads", "leadIds": lead}}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("KEYLESS_API_KEY"), "{}", r.text);
    assert_eq!(vendor.count(), 0);
}

/// The vendor echoes every header back; the server runs as a process with `--config` and
/// debug logs. The key reaches the vendor and appears nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_vendor_and_nothing_else() {
    let echo = Provider::start(|r| {
        let headers: serde_json::Map<String, Value> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Reply::json(json!({"email": "ada@echo.example", "headers": headers}))
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("puffle.toml");
    std::fs::write(
        &config,
        provider("echo", &echo, "")
            + r#"
[[enrichments]]
slug = "echo_lookup"
name = "Echo lookup"
subject = "company"
credit_action = "FIND_PERSON"
steps = [{ provider = "echo", path = "/find/{{lead.domain}}" }]
"#,
    )
    .unwrap();
    let key = format!("pk_live_{}", "cd".repeat(32));
    let mut command = LoggedServe::command(dir.path(), &key);
    // hyper's and reqwest's debug lines too: none may carry the vendor key.
    command
        .arg("--config")
        .arg(&config)
        .env("VENDOR_KEY", SECRET)
        .env("PUFFLE_LOG", "debug,sqlx=warn");
    let serve = LoggedServe::start(command);
    let (status, text) = serve
        .call(
            &key,
            reqwest::Method::POST,
            "/api/leads",
            Some(json!({"type": "company", "name": "Echo", "domain": "echo.example"})),
        )
        .await;
    assert!(status == 200 || status == 201, "{text}");
    let lead: Value = serde_json::from_str(&text).unwrap();
    let lead_id = lead["id"]
        .as_str()
        .or(lead["lead"]["id"].as_str())
        .unwrap()
        .to_string();
    let (status, text) = serve
        .call(
            &key,
            reqwest::Method::POST,
            "/api/enrichment",
            Some(json!({"enrichmentId": "echo_lookup",
            "scope": {"type": "explicit_leads", "leadIds": [lead_id]}})),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let run_id = serde_json::from_str::<Value>(&text).unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = Vec::new();
    for _ in 0..600 {
        let (_, run) = serve
            .call(
                &key,
                reqwest::Method::GET,
                &format!("/api/enrichment/{run_id}"),
                None,
            )
            .await;
        if run.contains("\"status\":\"completed\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, items) = serve
        .call(
            &key,
            reqwest::Method::GET,
            &format!("/api/enrichment/{run_id}/items"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{items}");
    seen.push(items.clone());
    for path in ["/api/enrichments", &format!("/api/enrichment/{run_id}")] {
        seen.push(serve.call(&key, reqwest::Method::GET, path, None).await.1);
    }
    // The vendor got the key.
    assert_eq!(
        echo.requests()[0].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    let items: Value = serde_json::from_str(&items).unwrap();
    let item = &items["items"][0];
    assert_eq!(item["status"], "completed", "{items}");
    assert_eq!(
        item["metadata"]["inputSnapshot"]["steps"][0]["request"]["headers"]["authorization"],
        "Bearer [redacted]"
    );
    assert_eq!(
        item["metadata"]["result"]["headers"]["authorization"], "Bearer [redacted]",
        "the echoed key is scrubbed from the stored answer"
    );

    let (_, logs) = serve.stop().await;
    assert!(
        logs.iter().any(|l| l.contains("DEBUG")),
        "debug logs captured"
    );
    for text in seen.iter().chain(&logs) {
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
    }
}

#[test]
fn a_bad_config_file_stops_startup_naming_file_line_and_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[providers.v]\nbase_url = \"http://127.0.0.1:1\"\n\n[[enrichments]]\nslug = \"x\"\nname = \"X\"\nsubject = \"people\"\ncredit_action = \"FIND_PERSON\"\nsteps = [{ provider = \"v\", path = \"/\" }]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_puffle"))
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .env("PUFFLE_DATABASE_URL", "sqlite://puffle.db")
        .output()
        .expect("puffle runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml: line 7: enrichments[0].subject"),
        "{stderr}"
    );
}

// --- the result cache --------------------------------------------------------------------------

#[tokio::test]
async fn a_second_run_within_the_ttl_is_served_from_the_cache() {
    let vendor = Provider::start(|r| {
        if r.path().contains("miss") {
            Reply::status(404)
        } else {
            Reply::json(json!({"employees": 7, "path": r.path()}))
        }
    })
    .await;
    let text = provider("vendor", &vendor, "cache_ttl_seconds = 3600")
        + r#"
[[enrichments]]
slug = "cached_lookup"
name = "Cached lookup"
subject = "company"
credit_action = "FIND_PERSON"
steps = [{ provider = "vendor", path = "/co/{{lead.domain}}", result_pointer = "/employees" }]
"#;
    let app = app_with(&text, 4).await;
    let mut leads = app.companies("cache", 3, None).await;
    leads.extend(app.companies("miss", 1, None).await);
    let (_, first) = run(&app, "cached_lookup", &leads).await;
    assert_eq!(vendor.count(), 4);
    for item in &first {
        assert_eq!(item["metadata"]["inputSnapshot"]["cached"], false, "{item}");
    }
    let (run2, second) = run(&app, "cached_lookup", &leads).await;
    assert_eq!(run2["status"], "completed", "{run2}");
    assert_eq!(vendor.count(), 4, "the vendor was not called again");
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(b["status"], "completed", "{b}");
        assert_eq!(a["result"], b["result"]);
        assert_eq!(a["metadata"]["result"], b["metadata"]["result"]);
        assert_eq!(b["metadata"]["provider"], "vendor");
    }
    for b in &second[..3] {
        assert_eq!(b["result"], 7);
        assert_eq!(b["metadata"]["inputSnapshot"]["cached"], true, "{b}");
        assert_eq!(
            b["metadata"]["inputSnapshot"]["steps"][0]["cached"], true,
            "{b}"
        );
    }
    // The 404 miss was cached too.
    assert_eq!(second[3]["result"], Value::Null);
    assert_eq!(
        second[3]["metadata"]["inputSnapshot"]["steps"][0]["cached"],
        true
    );
}
