//! Spec §5: the enrichment catalog, `GET /api/enrichments`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

/// The built-ins of spec §5: (slug, subject, creditAction).
const BUILTINS: &[(&str, &str, &str)] = &[
    ("company_domain", "any", "builtin"),
    ("name_parse", "person", "builtin"),
    ("email_check", "person", "builtin"),
    ("work_email_patterns", "person", "builtin"),
    ("phone_normalize", "any", "builtin"),
    ("custom_http", "any", "custom_http"),
    ("custom_ai", "any", "custom_ai"),
];

/// The hosted service's slugs, disabled until their provider is configured.
const HOSTED: &[&str] = &["work_email", "website_overview", "hiring_status"];

async fn catalog(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app.get(&format!("/api/enrichments{query}")).await;
    assert_eq!(r.status, 200, "GET /api/enrichments{query}: {}", r.text);
    assert_keys(&r.body, &["enrichments"]);
    let list = r.body["enrichments"]
        .as_array()
        .expect("enrichments is an array")
        .clone();
    for e in &list {
        assert_enrichment_shape(e);
    }
    list
}

fn find<'a>(list: &'a [Value], slug: &str) -> Option<&'a Value> {
    list.iter().find(|e| e["slug"] == slug)
}

fn slugs(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|e| e["slug"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn catalog_lists_every_builtin_with_the_enrichment_shape() {
    let app = TestApp::spawn().await;
    let list = catalog(&app, "").await;
    let all = slugs(&list);
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "slugs are unique: {all:?}");
    for (slug, subject, action) in BUILTINS {
        let e = find(&list, slug).unwrap_or_else(|| panic!("{slug} missing from {all:?}"));
        assert_eq!(e["subject"], *subject, "{slug}.subject: {e}");
        assert_eq!(e["costModel"]["creditAction"], *action, "{slug}: {e}");
        assert_eq!(e["visibility"], "public", "{slug}: {e}");
        assert_eq!(
            e["defaultOutput"],
            json!({"target": "lead", "attributeKey": slug}),
            "{slug} writes to the lead under its slug"
        );
        assert_eq!(e["defaultOutputAttributeKey"], *slug);
        // custom_ai needs an AI endpoint; the default configuration has none.
        assert_eq!(e["enabled"], *slug != "custom_ai", "{slug}.enabled: {e}");
    }
    for slug in HOSTED {
        let e = find(&list, slug).unwrap_or_else(|| panic!("{slug} missing from {all:?}"));
        assert_eq!(
            e["enabled"], false,
            "{slug} has no provider configured: {e}"
        );
    }
    // Hidden and internal enrichments are left out of discovery.
    for e in &list {
        assert_eq!(e["visibility"], "public", "only public ones listed: {e}");
    }
}

#[tokio::test]
async fn custom_http_input_schema_requires_a_url() {
    let app = TestApp::spawn().await;
    let list = catalog(&app, "?id=custom_http").await;
    let schema = &list[0]["inputSchema"];
    assert!(
        schema["properties"]["url"].is_object(),
        "inputSchema describes url: {schema}"
    );
    assert!(
        schema["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("url"))),
        "url is required: {schema}"
    );
}

#[tokio::test]
async fn custom_ai_is_enabled_only_with_an_endpoint_and_a_model() {
    let only_url = TestApp::spawn_with(|c| {
        c.engine.ai_base_url = Some("http://127.0.0.1:9/v1".into());
    })
    .await;
    let e = catalog(&only_url, "?id=custom_ai").await;
    assert_eq!(e[0]["enabled"], false, "no model: {}", e[0]);

    let only_model = TestApp::spawn_with(|c| {
        c.engine.ai_model = Some("some-model".into());
    })
    .await;
    let e = catalog(&only_model, "?id=custom_ai").await;
    assert_eq!(e[0]["enabled"], false, "no endpoint: {}", e[0]);

    let both = TestApp::spawn_with(|c| {
        c.engine.ai_base_url = Some("http://127.0.0.1:9/v1".into());
        c.engine.ai_model = Some("some-model".into());
        c.engine.ai_api_key = Some("sk-test-secret-never-shown".into());
    })
    .await;
    let e = catalog(&both, "?id=custom_ai").await;
    assert_eq!(e[0]["enabled"], true, "{}", e[0]);
    let r = both.get("/api/enrichments").await;
    assert!(
        !r.text.contains("sk-test-secret-never-shown"),
        "secrets never appear in the catalog"
    );
}

#[tokio::test]
async fn one_enrichment_by_id() {
    let app = TestApp::spawn().await;
    let full = catalog(&app, "").await;
    for (slug, _, _) in BUILTINS {
        let one = catalog(&app, &format!("?id={slug}")).await;
        assert_eq!(one.len(), 1, "?id={slug}: {one:?}");
        assert_eq!(one[0]["slug"], *slug);
        assert_eq!(
            Some(&one[0]),
            find(&full, slug),
            "the same object as in the list"
        );
    }
    // A disabled one is still returned by id.
    let one = catalog(&app, "?id=work_email").await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["enabled"], false);

    for unknown in ["no_such_enrichment", "COMPANY_DOMAIN", "company_domain%20"] {
        app.get(&format!("/api/enrichments?id={unknown}"))
            .await
            .assert_error(404, "not_found");
    }
    // An empty value counts as absent.
    assert_eq!(slugs(&catalog(&app, "?id=").await), slugs(&full));
}

#[tokio::test]
async fn q_searches_slug_name_and_description() {
    let app = TestApp::spawn().await;
    let full = catalog(&app, "").await;
    let matches = |e: &Value, q: &str| {
        let q = q.to_lowercase();
        ["slug", "name", "description"]
            .iter()
            .any(|k| e[*k].as_str().unwrap().to_lowercase().contains(&q))
    };
    let check = |q: String, expect_slug: String, got: Vec<Value>| {
        assert!(
            find(&got, &expect_slug).is_some(),
            "?q={q} finds {expect_slug}: {:?}",
            slugs(&got)
        );
        for e in &got {
            assert!(matches(e, &q), "?q={q} returned a non-match: {e}");
        }
        let expected: Vec<String> = full
            .iter()
            .filter(|e| matches(e, &q))
            .map(|e| e["slug"].as_str().unwrap().to_string())
            .collect();
        let mut got = slugs(&got);
        got.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(got, expected, "?q={q} returns every match");
    };

    // By slug fragment.
    check(
        "phone".into(),
        "phone_normalize".into(),
        catalog(&app, "?q=phone").await,
    );
    check(
        "custom_".into(),
        "custom_http".into(),
        catalog(&app, "?q=custom_").await,
    );
    // By a word of the name and of the description.
    let e = find(&full, "email_check").unwrap();
    let name_word = longest_word(e["name"].as_str().unwrap());
    check(
        name_word.clone(),
        "email_check".into(),
        catalog(&app, &format!("?q={name_word}")).await,
    );
    let e = find(&full, "custom_http").unwrap();
    let desc_word = longest_word(e["description"].as_str().unwrap());
    check(
        desc_word.clone(),
        "custom_http".into(),
        catalog(&app, &format!("?q={desc_word}")).await,
    );
    // Nothing matches: an empty list, not an error.
    assert!(catalog(&app, "?q=zzqqxx-no-such-thing").await.is_empty());
    // An empty value counts as absent.
    assert_eq!(slugs(&catalog(&app, "?q=").await), slugs(&full));
}

/// Assumption: `q` is case-insensitive, like `GET /api/leads?q=`.
#[tokio::test]
async fn q_is_case_insensitive() {
    let app = TestApp::spawn().await;
    let got = catalog(&app, "?q=PHONE_Normalize").await;
    assert_eq!(slugs(&got), vec!["phone_normalize".to_string()]);
}

#[tokio::test]
async fn catalog_requires_a_key() {
    let app = TestApp::spawn().await;
    let r = app.raw(app.client.get(app.url("/api/enrichments"))).await;
    r.assert_error(401, "unauthorized");
    app.call_as(
        "pk_live_0000000000000000000000000000000000000000000000000000000000000000",
        Method::GET,
        "/api/enrichments",
        None,
    )
    .await
    .assert_error(401, "unauthorized");
}

fn longest_word(s: &str) -> String {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .max_by_key(|w| w.len())
        .unwrap()
        .to_string()
}
