//! Spec §1: the error envelope, input validation, body limits, unknown routes, no 500s.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

/// Every JSON-body endpoint of §2–§4 and §7, with a valid-enough path.
async fn json_endpoints(app: &TestApp) -> Vec<(Method, String)> {
    let list = app.list(json!({"name": "Target"})).await;
    let id = list["id"].as_str().unwrap().to_string();
    vec![
        (Method::POST, "/api/leads".into()),
        (Method::PATCH, "/api/leads".into()),
        (Method::DELETE, "/api/leads".into()),
        (Method::POST, "/api/lists".into()),
        (Method::PATCH, "/api/lists".into()),
        (Method::DELETE, "/api/lists".into()),
        (Method::POST, format!("/api/lists/{id}/leads")),
        (Method::DELETE, format!("/api/lists/{id}/leads")),
        (Method::POST, "/api/lists/import".into()),
        (Method::POST, "/api/credits/preview".into()),
        (Method::POST, "/api/admin/users".into()),
        (Method::POST, "/api/admin/credits".into()),
    ]
}

fn assert_envelope(r: &Resp, what: &str) {
    let ct = r
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap_or(""))
        .unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{what}: error content type {ct:?}: {}",
        r.text
    );
    assert!(
        r.body["error"]["code"].is_string(),
        "{what}: envelope: {}",
        r.text
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: envelope: {}",
        r.text
    );
}

#[tokio::test]
async fn malformed_json_is_400_on_every_endpoint() {
    let app = TestApp::spawn().await;
    for (method, path) in json_endpoints(&app).await {
        for body in [
            "{\"type\": \"person\",",
            "not json",
            "{'a': 1}",
            "{\"a\": 1} trailing",
        ] {
            let r = app
                .send_text(&app.key, method.clone(), &path, "application/json", body)
                .await;
            assert_eq!(r.status, 400, "{method} {path} with {body:?}: {}", r.text);
            r.assert_error(400, "invalid_request");
            assert_envelope(&r, &path);
        }
    }
}

#[tokio::test]
async fn bodies_that_are_not_objects_are_400() {
    let app = TestApp::spawn().await;
    for (method, path) in json_endpoints(&app).await {
        for body in ["[]", "null", "42", "\"text\"", ""] {
            let r = app
                .send_text(&app.key, method.clone(), &path, "application/json", body)
                .await;
            assert_eq!(r.status, 400, "{method} {path} with {body:?}: {}", r.text);
            r.assert_error(400, "invalid_request");
        }
    }
}

#[tokio::test]
async fn wrong_types_are_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let lead = app.lead(json!({"type": "person", "name": "Typed"})).await;
    let list = app.list(json!({"name": "Typed"})).await;
    let lid = list["id"].as_str().unwrap();
    let cases = [
        (
            Method::POST,
            "/api/leads".to_string(),
            json!({"type": "person", "title": ["x"]}),
            "title",
        ),
        (
            Method::POST,
            "/api/leads".to_string(),
            json!({"type": "person", "industry": 3}),
            "industry",
        ),
        (
            Method::POST,
            "/api/leads".to_string(),
            json!({"type": "person", "socials": {"url": "x"}}),
            "socials",
        ),
        (
            Method::POST,
            "/api/leads".to_string(),
            json!({"type": "person", "sources": "apollo"}),
            "sources",
        ),
        (
            Method::PATCH,
            "/api/leads".to_string(),
            json!({"id": lead["id"], "attributes": 5}),
            "attributes",
        ),
        (
            Method::DELETE,
            "/api/leads".to_string(),
            json!({"id": true}),
            "id",
        ),
        (
            Method::POST,
            "/api/lists".to_string(),
            json!({"leadIds": [1, 2]}),
            "leadIds",
        ),
        (
            Method::PATCH,
            "/api/lists".to_string(),
            json!({"id": lid, "description": 1}),
            "description",
        ),
        (
            Method::POST,
            format!("/api/lists/{lid}/leads"),
            json!({"leadIds": lead["id"]}),
            "leadIds",
        ),
        (
            Method::POST,
            "/api/lists/import".to_string(),
            json!({"leads": [{"type": "person"}], "preview": "yes"}),
            "preview",
        ),
        (
            Method::POST,
            "/api/lists/import".to_string(),
            json!({"leads": [{"type": "person"}], "listId": 3}),
            "listId",
        ),
        (
            Method::POST,
            "/api/credits/preview".to_string(),
            json!({"action": "builtin", "count": true}),
            "count",
        ),
        (
            Method::POST,
            "/api/admin/credits".to_string(),
            json!({"workspaceId": "x", "amount": "1"}),
            "amount",
        ),
    ];
    for (method, path, body, field) in cases {
        let r = app.call(method.clone(), &path, Some(body.clone())).await;
        assert_eq!(r.status, 400, "{method} {path} {body}: {}", r.text);
        r.assert_invalid(field);
    }
}

#[tokio::test]
async fn unknown_enum_values_are_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "Enum"})).await;
    let lid = list["id"].as_str().unwrap();
    app.post("/api/leads", json!({"type": "animal"}))
        .await
        .assert_invalid("type");
    app.post("/api/lists", json!({"leadType": "animal"}))
        .await
        .assert_invalid("leadType");
    app.patch("/api/lists", json!({"id": lid, "leadType": "PERSON"}))
        .await
        .assert_invalid("leadType");
    app.post("/api/lists/import", json!({"leads": [{"type": "animal"}]}))
        .await
        .assert_invalid("leads[0]");
    app.post(
        "/api/admin/users",
        json!({"email": "e@example.com", "role": "root"}),
    )
    .await
    .assert_invalid("role");
    app.post(
        "/api/credits/preview",
        json!({"action": "nope", "count": 1}),
    )
    .await
    .assert_invalid("action");
    app.get("/api/leads?type=animal")
        .await
        .assert_invalid("type");
    app.get(&format!("/api/lists/{lid}/leads?type=animal"))
        .await
        .assert_invalid("type");
}

#[tokio::test]
async fn missing_required_fields_are_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "Req"})).await;
    let lid = list["id"].as_str().unwrap();
    let cases = [
        (Method::POST, "/api/leads".to_string(), "type"),
        (Method::PATCH, "/api/leads".to_string(), "id"),
        (Method::DELETE, "/api/leads".to_string(), "id"),
        (Method::PATCH, "/api/lists".to_string(), "id"),
        (Method::DELETE, "/api/lists".to_string(), "id"),
        (Method::POST, format!("/api/lists/{lid}/leads"), "leadIds"),
        (Method::DELETE, format!("/api/lists/{lid}/leads"), "leadIds"),
        (Method::POST, "/api/lists/import".to_string(), "leads"),
        (Method::POST, "/api/credits/preview".to_string(), "action"),
        (Method::POST, "/api/admin/users".to_string(), "email"),
        (
            Method::POST,
            "/api/admin/credits".to_string(),
            "workspaceId",
        ),
    ];
    for (method, path, field) in cases {
        let r = app.call(method.clone(), &path, Some(json!({}))).await;
        assert_eq!(r.status, 400, "{method} {path} {{}}: {}", r.text);
        r.assert_invalid(field);
    }
}

#[tokio::test]
async fn a_json_body_without_a_json_content_type_is_never_a_bare_415() {
    let app = TestApp::spawn().await;
    let body = r#"{"type": "person", "name": "No Content Type"}"#;
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = app
            .send_text(&app.key, Method::POST, "/api/leads", ct, body)
            .await;
        assert!(
            r.status == 200 || r.status == 400,
            "Content-Type {ct}: {} {}",
            r.status,
            r.text
        );
        if r.status == 400 {
            r.assert_error(400, "invalid_request");
        }
    }
}

#[tokio::test]
async fn a_body_above_the_limit_is_413() {
    let app = TestApp::spawn_with(|c| c.max_body_bytes = 1024).await;
    let small = app
        .post("/api/leads", json!({"type": "person", "name": "Small"}))
        .await;
    assert_eq!(
        small.status, 200,
        "a small body still works: {}",
        small.text
    );
    let big = json!({"type": "person", "name": "Big", "attributes": {"blob": "x".repeat(4096)}});
    let r = app.post("/api/leads", big).await;
    assert_eq!(r.status, 413, "{}", r.text);
    r.assert_error(413, "payload_too_large");
    assert_envelope(&r, "413");
    let rows: Vec<Value> = (0..100)
        .map(|i| json!({"type": "person", "name": format!("Row number {i}")}))
        .collect();
    let r = app.post("/api/lists/import", json!({"leads": rows})).await;
    r.assert_error(413, "payload_too_large");
    assert_eq!(
        app.all_leads_as(&app.key).await.len(),
        1,
        "nothing of the big bodies was stored"
    );
}

#[tokio::test]
async fn a_streamed_body_above_the_limit_is_413() {
    let app = TestApp::spawn_with(|c| c.max_body_bytes = 1024).await;
    let payload = format!(
        r#"{{"type": "person", "name": "Chunked", "title": "{}"}}"#,
        "y".repeat(8192)
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = payload
        .into_bytes()
        .chunks(512)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = app
        .raw(
            app.client
                .post(app.url("/api/leads"))
                .bearer_auth(&app.key)
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    r.assert_error(413, "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_are_404_with_the_envelope() {
    let app = TestApp::spawn().await;
    for path in [
        "/api/nope",
        "/api/leads/extra/segments",
        "/api/lists/abc/unknown",
        "/nope",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
        r.assert_error(404, "not_found");
        assert_envelope(&r, path);
    }
}

#[tokio::test]
async fn a_wrong_method_is_answered_with_the_envelope() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::PUT, "/api/leads"),
        (Method::PUT, "/api/lists"),
        (Method::GET, "/api/credits/preview"),
    ] {
        let r = app.call(method.clone(), path, Some(json!({}))).await;
        assert!(
            r.status == 404 || r.status == 405,
            "{method} {path}: {} {}",
            r.status,
            r.text
        );
        assert_envelope(&r, path);
    }
}

#[tokio::test]
async fn hostile_input_never_yields_a_500() {
    let app = TestApp::spawn().await;
    let lead = app.lead(json!({"type": "person", "name": "Target"})).await;
    let list = app.list(json!({"name": "Target"})).await;
    let (lead_id, list_id) = (lead["id"].as_str().unwrap(), list["id"].as_str().unwrap());
    let ws = app.workspace_id().await;
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let deep_attr = format!(r#"{{"type":"person","attributes":{{"a":{deep}}}}}"#);
    let raw_bodies: Vec<(Method, String, String)> = vec![
        (Method::POST, "/api/leads".into(), deep.clone()),
        (Method::POST, "/api/leads".into(), deep_attr),
        (
            Method::POST,
            "/api/leads".into(),
            r#"{"type":"person","size":1e400}"#.into(),
        ),
        (
            Method::POST,
            "/api/leads".into(),
            "{\"type\":\"person\",\"name\":\"\\u0000\\ud800\"}".into(),
        ),
        (
            Method::POST,
            "/api/leads".into(),
            "\u{feff}{\"type\":\"person\"}".into(),
        ),
        (
            Method::POST,
            "/api/credits/preview".into(),
            r#"{"action":"custom_http","count":18446744073709551616}"#.into(),
        ),
        (
            Method::POST,
            "/api/credits/preview".into(),
            r#"{"action":"work_email_lookup","count":9223372036854775807}"#.into(),
        ),
        (
            Method::POST,
            "/api/admin/credits".into(),
            r#"{"workspaceId":"x","amount":9223372036854775807}"#.into(),
        ),
        (
            Method::POST,
            "/api/lists".into(),
            format!(r#"{{"name":"{}"}}"#, "ü".repeat(100_000)),
        ),
    ];
    for (method, path, body) in raw_bodies {
        let r = app
            .send_text(
                &app.key,
                method.clone(),
                &path,
                "application/json",
                body.clone(),
            )
            .await;
        assert!(
            r.status < 500,
            "{method} {path} {}: {} {}",
            &body[..body.len().min(80)],
            r.status,
            r.text
        );
        if r.status >= 400 {
            assert_envelope(&r, &path);
        }
    }
    let json_bodies: Vec<(Method, String, Value)> = vec![
        (
            Method::PATCH,
            "/api/leads".into(),
            json!({"id": "'; DROP TABLE leads; --", "title": "x"}),
        ),
        (
            Method::PATCH,
            "/api/leads".into(),
            json!({"id": lead_id, "attributes": {"": null, "a.b": {"c": [null]}}}),
        ),
        (
            Method::PATCH,
            "/api/leads".into(),
            json!({"id": lead_id, "name": {"full": "x".repeat(50_000)}}),
        ),
        (
            Method::POST,
            "/api/leads".into(),
            json!({"type": "person", "listIds": [list_id, list_id]}),
        ),
        (
            Method::POST,
            "/api/leads".into(),
            json!({"type": "company", "domain": "a".repeat(300) + ".com"}),
        ),
        (
            Method::POST,
            "/api/leads".into(),
            json!({"type": "person", "contacts": [{"type": "email", "value": "@"}]}),
        ),
        (
            Method::POST,
            "/api/leads".into(),
            json!({"type": "person", "socials": [{"url": "linkedin.com/in/"}]}),
        ),
        (Method::DELETE, "/api/lists".into(), json!({"id": ""})),
        (
            Method::POST,
            "/api/lists".into(),
            json!({"name": "a\u{0}b"}),
        ),
        (
            Method::POST,
            "/api/enrichment".into(),
            json!({"enrichmentId": "company_domain", "scope": {"leadIds": [lead_id]},
                   "idempotencyKey": "k\u{0}", "correlationId": "c\u{0}"}),
        ),
        (
            Method::POST,
            "/api/admin/users".into(),
            json!({"email": "a\u{0}@b.io", "role": "member"}),
        ),
        (
            Method::POST,
            format!("/api/lists/{list_id}/leads"),
            json!({"leadIds": ["", "%", lead_id]}),
        ),
        (
            Method::POST,
            "/api/lists/import".into(),
            json!({"leads": [{"type": "person", "sources": [{}]}]}),
        ),
        (
            Method::POST,
            "/api/credits/preview".into(),
            json!({"action": "", "count": 0}),
        ),
        (
            Method::POST,
            "/api/admin/users".into(),
            json!({"email": "x@y", "credits": -1}),
        ),
        (
            Method::POST,
            "/api/admin/users".into(),
            json!({"email": "big@example.com", "credits": i64::MAX}),
        ),
        (
            Method::POST,
            "/api/admin/credits".into(),
            json!({"workspaceId": ws, "amount": i64::MAX}),
        ),
        (
            Method::POST,
            "/api/admin/credits".into(),
            json!({"workspaceId": ws, "amount": i64::MAX}),
        ),
        (
            Method::POST,
            "/api/admin/credits".into(),
            json!({"workspaceId": ws, "amount": i64::MIN}),
        ),
    ];
    for (method, path, body) in json_bodies {
        let r = app.call(method.clone(), &path, Some(body.clone())).await;
        assert!(
            r.status < 500,
            "{method} {path} {}: {} {}",
            body.to_string().chars().take(80).collect::<String>(),
            r.status,
            r.text
        );
        if r.status >= 400 {
            assert_envelope(&r, &path);
        }
    }
    let queries = [
        "/api/leads?limit=%00".to_string(),
        "/api/leads?cursor=%27%20OR%201%3D1".to_string(),
        "/api/leads?cursor=".to_string(),
        "/api/leads?q=%25".to_string(),
        "/api/leads?q=_".to_string(),
        "/api/leads?id=%FF%FE".to_string(),
        "/api/leads?name=%5C".to_string(),
        "/api/lists?id=..%2F..%2Fetc%2Fpasswd".to_string(),
        "/api/lists/%00/leads".to_string(),
        "/api/lists/%20/leads".to_string(),
        format!("/api/lists/{list_id}/leads?cursor=zzz"),
        format!("/api/lists/{}/export.csv", "9".repeat(1000)),
    ];
    for path in queries {
        let r = app.get(&path).await;
        assert!(r.status < 500, "GET {path}: {} {}", r.status, r.text);
        if r.status >= 400 {
            assert_envelope(&r, &path);
        }
    }
    // No id or filter can hold a NUL character: a URL with one is refused, on every backend.
    for path in ["/api/lists/%00/leads", "/api/leads?q=a%00b"] {
        app.get(path).await.assert_error(400, "invalid_request");
    }
    // Nor can any text of a body: refused, naming the field.
    let r = app.post("/api/lists", json!({"name": "a\u{0}b"})).await;
    r.assert_error(400, "invalid_request");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("name: ")),
        "{}",
        r.text
    );
    let r = app
        .post(
            "/api/leads",
            json!({"type": "person", "attributes": {"x": ["ok", "\u{0}"]}}),
        )
        .await;
    r.assert_error(400, "invalid_request");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("attributes.x[1]: ")),
        "{}",
        r.text
    );
    // `%` and `_` are literal characters for q, not wildcards.
    let r = app.get("/api/leads?q=%25").await;
    assert_eq!(r.body["leads"], json!([]), "{}", r.text);
    let r = app.get("/api/leads?name=_").await;
    assert_eq!(r.body["leads"], json!([]), "{}", r.text);
    // And the server still answers.
    assert_eq!(app.get("/api/account").await.status, 200);
}
