//! Spec §8: health, metrics, the OpenAPI document.

use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn healthz_needs_no_key() {
    let app = TestApp::spawn().await;
    let r = app.raw(app.client.get(app.url("/healthz"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"status": "ok"}));
    // A bad key does not make it fail either.
    let r = app
        .raw(app.client.get(app.url("/healthz")).bearer_auth("nonsense"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        app.get("/api/leads").await;
    }
    let r = app.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ct = r.headers["content-type"].to_str().unwrap();
    assert!(
        ct.starts_with("text/plain"),
        "Prometheus exposition content type: {ct}"
    );
    assert!(
        r.text.lines().any(|l| l.starts_with("# TYPE ")),
        "TYPE lines: {}",
        r.text
    );
    let mut samples = 0;
    for line in r
        .text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        // `name{labels} value [timestamp]`
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("sample line: {line}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "metric name: {line}"
        );
        let rest = match line[name_end..].strip_prefix('{') {
            Some(labels) => {
                &labels[labels
                    .rfind('}')
                    .unwrap_or_else(|| panic!("labels close: {line}"))
                    + 1..]
            }
            None => &line[name_end..],
        };
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("sample value: {line}"));
        let ok = value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value);
        assert!(ok, "sample value {value:?}: {line}");
        samples += 1;
    }
    assert!(samples > 0, "at least one sample: {}", r.text);

    // The numbers move with the traffic.
    for _ in 0..5 {
        app.get("/api/lists").await;
    }
    let again = app.get("/metrics").await;
    let before = sample_values(&r.text);
    let after = sample_values(&again.text);
    assert!(
        after
            .iter()
            .any(|(k, v)| before.get(k).is_none_or(|b| v > b)),
        "some sample grows after requests:\n{}\n---\n{}",
        r.text,
        again.text
    );
}

/// `series (name and labels) → value` of a Prometheus text body.
fn sample_values(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Every endpoint of spec §1–§4, §7 and §8, with its methods.
const ENDPOINTS: &[(&str, &[&str])] = &[
    ("/api/account", &["get"]),
    ("/api/user/api-key", &["get", "post", "delete"]),
    ("/api/admin/users", &["post"]),
    ("/api/admin/credits", &["post"]),
    ("/api/leads", &["get", "post", "patch", "delete"]),
    ("/api/lists", &["get", "post", "patch", "delete"]),
    ("/api/lists/{id}/leads", &["get", "post", "delete"]),
    ("/api/lists/import", &["post"]),
    ("/api/lists/{id}/import.csv", &["post"]),
    ("/api/lists/{id}/export.csv", &["get"]),
    ("/api/credits", &["get"]),
    ("/api/credits/config", &["get"]),
    ("/api/credits/preview", &["post"]),
    ("/healthz", &["get"]),
    ("/metrics", &["get"]),
    ("/api/openapi.json", &["get"]),
    // [ours] run webhooks
    ("/api/user/webhook-secret", &["post"]),
    ("/api/enrichment/{id}/webhooks", &["get"]),
    // Async provider callbacks (docs/providers.md).
    ("/api/webhooks/providers/{provider}", &["post"]),
];

#[tokio::test]
async fn openapi_document_describes_every_endpoint() {
    let app = TestApp::spawn().await;
    let r = app.get("/api/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc = &r.body;
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1"), "OpenAPI 3.1: {version}");
    assert!(
        doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()),
        "info.title"
    );
    assert!(doc["info"]["version"].is_string(), "info.version");
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut missing = Vec::new();
    for (path, methods) in ENDPOINTS {
        for method in *methods {
            let op = paths.get(*path).and_then(|p| p.get(*method));
            match op {
                Some(op) => assert!(
                    op["responses"].is_object(),
                    "{method} {path} has responses: {op}"
                ),
                None => missing.push(format!("{} {path}", method.to_uppercase())),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "operations missing from the OpenAPI document: {missing:?}"
    );
    // Path templates name their parameters.
    for (path, item) in paths {
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_start_matches('{').split('}').next().unwrap();
            let declared = |params: &Value| {
                params
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"))
            };
            let item_level = declared(&item["parameters"]);
            let ops = item.as_object().unwrap();
            for (method, op) in ops
                .iter()
                .filter(|(m, _)| ["get", "post", "patch", "delete", "put"].contains(&m.as_str()))
            {
                assert!(
                    item_level || declared(&op["parameters"]),
                    "{method} {path}: path parameter {name} is declared"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_configured_bootstrap_key_is_the_admin_key() {
    let wanted = format!("pk_live_{}", "ab".repeat(32));
    let key = puffle_domain::account::ApiKey::parse(&wanted).expect("a well-formed key");
    let app = TestApp::spawn_with(|c| c.bootstrap_api_key = Some(key)).await;
    assert_eq!(app.key, wanted);
    let r = app.get("/api/account").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["user"]["email"], "admin@localhost");
    assert_eq!(r.body["user"]["role"], "admin");
    assert_eq!(r.body["workspace"]["name"], "default");
    assert_eq!(r.body["credits"]["balance"], 1000);
}

#[tokio::test]
async fn a_restart_keeps_everything_and_never_bootstraps_again() {
    let mut app = TestApp::spawn().await;
    let lead = app
        .lead(json!({"type": "person", "name": "Persistent"}))
        .await;
    let list = app
        .list(json!({"name": "Kept", "leadIds": [lead["id"]]}))
        .await;
    let ws = app.workspace_id().await;
    app.post(
        "/api/admin/credits",
        json!({"workspaceId": ws, "amount": 7}),
    )
    .await;
    app.stop().await;

    let config = puffle_server::Config::new("127.0.0.1:0", app.database_url.clone());
    let server = puffle_server::start(config)
        .await
        .expect("restarts on the same database");
    assert!(
        server.bootstrap_key.is_none(),
        "a non-empty database is never re-bootstrapped"
    );
    let base = format!("http://{}", server.addr);
    let get = |path: &str| {
        app.raw(
            app.client
                .get(format!("{base}{path}"))
                .bearer_auth(&app.key),
        )
    };
    let r = get("/api/account").await;
    assert_eq!(r.status, 200, "the old key still works: {}", r.text);
    assert_eq!(r.body["credits"]["balance"], 1007);
    let r = get(&format!("/api/leads?id={}", lead["id"].as_str().unwrap())).await;
    assert_eq!(r.body["leads"][0]["name"], lead["name"], "{}", r.text);
    assert_eq!(r.body["leads"][0]["createdAt"], lead["createdAt"]);
    assert!(ids(&r.body["leads"][0]["lists"]).contains(&list["id"].as_str().unwrap().to_string()));
    let r = get("/api/lists").await;
    let names: Vec<&str> = r.body["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Kept", "all"], "one list all, no second bootstrap");
    server.shutdown().await.expect("clean shutdown");
}
