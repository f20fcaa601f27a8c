//! Spec §3: leads — create, filters, pagination, dedupe, update, delete, workspace isolation.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

async fn leads_page(app: &TestApp, query: &str) -> Resp {
    let r = app.get(&format!("/api/leads{query}")).await;
    assert_eq!(r.status, 200, "GET /api/leads{query}: {}", r.text);
    assert_keys(&r.body, &["leads", "nextCursor"]);
    r
}

/// The ids `GET /api/leads?<query>` returns (one page, limit 500).
async fn found(app: &TestApp, query: &str) -> Vec<String> {
    let sep = if query.is_empty() { "" } else { "&" };
    let r = leads_page(app, &format!("?limit=500{sep}{query}")).await;
    ids(&r.body["leads"])
}

fn email_values(lead: &Value) -> Vec<String> {
    lead["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"].as_str().is_some_and(|t| t.contains("email")))
        .map(|c| c["value"].as_str().unwrap().to_string())
        .collect()
}

// --- create -----------------------------------------------------------------------------------

#[tokio::test]
async fn create_person_with_plain_string_name_derives_first_and_last() {
    let app = TestApp::spawn().await;
    let r = app
        .post(
            "/api/leads",
            json!({"type": "person", "name": "Ada Lovelace"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["lead", "created"]);
    assert_eq!(r.body["created"], true);
    let lead = &r.body["lead"];
    assert_lead_shape(lead);
    assert_eq!(lead["type"], "person");
    assert_eq!(
        lead["name"],
        json!({"full": "Ada Lovelace", "short": null, "aliases": [], "first": "Ada", "last": "Lovelace"})
    );
    // Nothing else was given: every other field is null or empty, never absent.
    assert_eq!(lead["title"], Value::Null);
    assert_eq!(
        lead["company"],
        json!({"name": null, "id": null, "domain": null})
    );
    assert_eq!(
        lead["location"],
        json!({"city": null, "state": null, "country": null, "raw": null})
    );
    assert_eq!(lead["socials"], json!([]));
    assert_eq!(lead["contacts"], json!([]));
    assert_eq!(lead["domain"], Value::Null);
    assert_eq!(lead["industry"], Value::Null);
    assert_eq!(lead["size"], Value::Null);
    assert_eq!(lead["raw"], Value::Null);
    assert_eq!(lead["sources"], json!([]));
    assert_eq!(lead["attributes"], json!({}));
    // Every lead belongs to the list `all`.
    let all = app.all_list_as(&app.key).await;
    assert_eq!(lead["lists"], json!([{"id": all["id"], "name": "all"}]));
}

#[tokio::test]
async fn create_keeps_given_first_and_last() {
    let app = TestApp::spawn().await;
    let lead = app
        .lead(json!({"type": "person", "name": {"full": "Grace Brewster Hopper", "first": "Grace", "last": "Hopper"}}))
        .await;
    assert_eq!(lead["name"]["full"], "Grace Brewster Hopper");
    assert_eq!(lead["name"]["first"], "Grace");
    assert_eq!(lead["name"]["last"], "Hopper");
}

#[tokio::test]
async fn company_name_is_not_split_into_first_and_last() {
    let app = TestApp::spawn().await;
    let lead = app
        .lead(json!({"type": "company", "name": "Acme Corp", "domain": "acme.com"}))
        .await;
    assert_eq!(lead["type"], "company");
    assert_eq!(lead["name"]["full"], "Acme Corp");
    assert_eq!(lead["name"]["first"], Value::Null);
    assert_eq!(lead["name"]["last"], Value::Null);
    assert_eq!(lead["domain"], "acme.com");
}

#[tokio::test]
async fn create_with_every_field_round_trips_through_get() {
    let app = TestApp::spawn().await;
    let r = app
        .post(
            "/api/leads",
            json!({
                "type": "person",
                "name": {"full": "Ada Lovelace", "short": "Ada", "aliases": ["Countess of Lovelace"],
                         "first": "Ada", "last": "Lovelace"},
                "title": "Chief Engineer",
                "company": {"name": "Analytical Engines", "id": "ae-1", "domain": "analytical.io"},
                "location": {"city": "London", "state": "England", "country": "GB", "raw": "London, UK"},
                "socials": [{"type": "linkedin", "url": "https://www.linkedin.com/in/ada-lovelace"}],
                "contacts": [{"type": "email", "value": "ada@analytical.io"},
                             {"type": "phone", "value": "+44 20 7946 0000"}],
                "domain": "analytical.io",
                "industry": "Computing",
                "size": 50,
                "attributes": {"score": 7, "tags": ["a", "b"], "nested": {"x": true}},
                "raw": {"from": "test", "n": [1, 2]},
                "sources": [{"provider": "apollo", "externalId": "p-1"}]
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lead = &r.body["lead"];
    assert_lead_shape(lead);
    assert_eq!(lead["name"]["short"], "Ada");
    assert_eq!(lead["name"]["aliases"], json!(["Countess of Lovelace"]));
    assert_eq!(lead["title"], "Chief Engineer");
    assert_eq!(
        lead["company"],
        json!({"name": "Analytical Engines", "id": "ae-1", "domain": "analytical.io"})
    );
    assert_eq!(
        lead["location"],
        json!({"city": "London", "state": "England", "country": "GB", "raw": "London, UK"})
    );
    assert_eq!(lead["socials"][0]["type"], "linkedin");
    assert_eq!(
        lead["socials"][0]["url"],
        "https://www.linkedin.com/in/ada-lovelace"
    );
    assert_eq!(
        lead["contacts"][0],
        json!({"type": "email", "value": "ada@analytical.io"})
    );
    assert_eq!(
        lead["contacts"][1],
        json!({"type": "phone", "value": "+44 20 7946 0000"})
    );
    assert_eq!(lead["domain"], "analytical.io");
    assert_eq!(lead["industry"], "Computing");
    assert_eq!(lead["size"], 50);
    assert_eq!(
        lead["attributes"],
        json!({"score": 7, "tags": ["a", "b"], "nested": {"x": true}})
    );
    assert_eq!(lead["raw"], json!({"from": "test", "n": [1, 2]}));
    assert_eq!(lead["sources"].as_array().unwrap().len(), 1);
    assert_eq!(lead["sources"][0]["provider"], "apollo");
    assert_eq!(lead["sources"][0]["externalId"], "p-1");
    assert!(
        lead["sources"][0]["id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "source id: {lead}"
    );

    let got = app
        .get_lead(lead["id"].as_str().unwrap())
        .await
        .expect("lead is listed");
    assert_eq!(&got, lead, "GET shows exactly what POST returned");
}

#[tokio::test]
async fn create_requires_a_valid_type() {
    let app = TestApp::spawn().await;
    app.post("/api/leads", json!({"name": "No Type"}))
        .await
        .assert_invalid("type");
    for t in [
        json!("robot"),
        json!("Person"),
        json!(5),
        json!(null),
        json!(""),
    ] {
        app.post("/api/leads", json!({"type": t, "name": "X"}))
            .await
            .assert_invalid("type");
    }
    assert!(
        app.all_leads_as(&app.key).await.is_empty(),
        "nothing was created"
    );
}

#[tokio::test]
async fn create_rejects_malformed_fields_naming_them() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"type": "person", "title": 5}), "title"),
        (
            json!({"type": "person", "contacts": "ada@x.io"}),
            "contacts",
        ),
        (
            json!({"type": "person", "contacts": [{"type": "email", "value": "not-an-email"}]}),
            "contacts[0]",
        ),
        (
            json!({"type": "person", "socials": [{"type": "linkedin"}]}),
            "socials",
        ),
        (
            json!({"type": "person", "attributes": [1, 2]}),
            "attributes",
        ),
        (
            json!({"type": "company", "domain": "not a domain"}),
            "domain",
        ),
        (json!({"type": "person", "listIds": "abc"}), "listIds"),
        (json!({"type": "person", "name": 42}), "name"),
    ];
    for (body, field) in cases {
        let r = app.post("/api/leads", body.clone()).await;
        assert_eq!(r.status, 400, "{body} → {}", r.text);
        r.assert_invalid(field);
    }
    assert!(
        app.all_leads_as(&app.key).await.is_empty(),
        "nothing was created"
    );
}

#[tokio::test]
async fn create_with_list_ids_attaches_the_lead() {
    let app = TestApp::spawn().await;
    let l1 = app.list(json!({"name": "One"})).await;
    let l2 = app.list(json!({"name": "Two", "leadType": "mixed"})).await;
    let lead = app
        .lead(json!({"type": "person", "name": "Listed Person", "listIds": [l1["id"], l2["id"]]}))
        .await;
    let mut names: Vec<&str> = lead["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["One", "Two", "all"], "{lead}");
    for l in [&l1, &l2] {
        let list = app.get_list(l["id"].as_str().unwrap()).await;
        assert_eq!(list["leadCount"], 1, "{list}");
        assert_eq!(list["personCount"], 1, "{list}");
    }
}

#[tokio::test]
async fn create_with_unknown_list_id_is_400_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let l1 = app.list(json!({"name": "One"})).await;
    let r = app
        .post(
            "/api/leads",
            json!({"type": "person", "name": "X", "listIds": [l1["id"], unknown_id()]}),
        )
        .await;
    r.assert_invalid("listIds");
    assert!(
        app.all_leads_as(&app.key).await.is_empty(),
        "nothing was created"
    );
    assert_eq!(
        app.get_list(l1["id"].as_str().unwrap()).await["leadCount"],
        0
    );
}

#[tokio::test]
async fn create_into_a_list_of_the_other_type_is_400_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let people = app
        .list(json!({"name": "People", "leadType": "person"}))
        .await;
    let r = app
        .post("/api/leads", json!({"type": "company", "name": "Acme", "domain": "acme.com", "listIds": [people["id"]]}))
        .await;
    r.assert_error(400, "invalid_request");
    assert!(
        app.all_leads_as(&app.key).await.is_empty(),
        "nothing was created"
    );
}

// --- filters ----------------------------------------------------------------------------------

struct Fixture {
    ada: String,
    grace: String,
    acme: String,
}

async fn fixture(app: &TestApp) -> Fixture {
    let ada = app
        .lead(json!({
            "type": "person", "name": "Ada Lovelace", "title": "Chief Engineer",
            "company": {"name": "Analytical Engines", "domain": "analytical.io"},
            "location": {"city": "London", "country": "United Kingdom"}, "industry": "Computing",
            "contacts": [{"type": "email", "value": "countess@analytical.io"}]
        }))
        .await;
    let grace = app
        .lead(json!({
            "type": "person", "name": "Grace Hopper", "title": "Rear Admiral",
            "company": {"name": "US Navy", "domain": "navy.mil"},
            "location": {"raw": "Arlington, Virginia"}, "industry": "Defense",
            "contacts": [{"type": "work_email", "value": "ghopper@navy.mil"}]
        }))
        .await;
    let acme = app
        .lead(json!({"type": "company", "name": "Acme Corp", "domain": "acme.com", "industry": "Anvils",
                      "location": {"raw": "Phoenix"}}))
        .await;
    let id = |v: Value| v["id"].as_str().unwrap().to_string();
    Fixture {
        ada: id(ada),
        grace: id(grace),
        acme: id(acme),
    }
}

#[tokio::test]
async fn q_searches_every_documented_field_case_insensitively() {
    let app = TestApp::spawn().await;
    let f = fixture(&app).await;
    let cases: Vec<(&str, Vec<&String>)> = vec![
        ("q=LOVELACE", vec![&f.ada]),         // name
        ("q=admiral", vec![&f.grace]),        // title
        ("q=analytical%20eng", vec![&f.ada]), // company
        ("q=navy.mil", vec![&f.grace]),       // domain (company domain) and email
        ("q=acme.com", vec![&f.acme]),        // domain
        ("q=anvil", vec![&f.acme]),           // industry
        ("q=arlington", vec![&f.grace]),      // location raw
        ("q=kingdom", vec![&f.ada]),          // location country
        ("q=countess@", vec![&f.ada]),        // email
        ("q=zzzz", vec![]),
    ];
    for (query, expected) in cases {
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(found(&app, query).await, expected, "{query}");
    }
    // A term several leads share: all of them, in id order.
    let mut all = vec![f.ada.clone(), f.grace.clone(), f.acme.clone()];
    all.sort();
    assert_eq!(found(&app, "q=a").await, all);
}

#[tokio::test]
async fn narrow_filters_match_their_own_field_only() {
    let app = TestApp::spawn().await;
    let f = fixture(&app).await;
    let cases: Vec<(&str, Vec<&String>)> = vec![
        ("name=velac", vec![&f.ada]),
        ("name=HOPPER", vec![&f.grace]),
        ("name=admiral", vec![]),
        ("title=chief", vec![&f.ada]),
        ("title=lovelace", vec![]),
        ("role=REAR", vec![&f.grace]),
        ("role=engineer", vec![&f.ada]),
        ("company=navy", vec![&f.grace]),
        ("company=computing", vec![]),
        ("domain=acme", vec![&f.acme]),
        ("domain=analytical.io", vec![&f.ada]),
        ("email=GHOPPER", vec![&f.grace]),
        ("email=countess@analytical.io", vec![&f.ada]),
        ("email=acme", vec![]),
        ("industry=defen", vec![&f.grace]),
        ("industry=navy", vec![]),
        ("location=london", vec![&f.ada]),
        ("location=phoenix", vec![&f.acme]),
        ("location=engineer", vec![]),
        // Filters combine with AND.
        ("title=chief&company=navy", vec![]),
        ("title=chief&company=analytical", vec![&f.ada]),
        ("q=a&type=company", vec![&f.acme]),
    ];
    for (query, expected) in cases {
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(found(&app, query).await, expected, "{query}");
    }
}

#[tokio::test]
async fn type_and_id_filters() {
    let app = TestApp::spawn().await;
    let f = fixture(&app).await;
    let mut people = vec![f.ada.clone(), f.grace.clone()];
    people.sort();
    assert_eq!(found(&app, "type=person").await, people);
    assert_eq!(found(&app, "type=company").await, vec![f.acme.clone()]);
    assert_eq!(
        found(&app, &format!("id={}", f.grace)).await,
        vec![f.grace.clone()]
    );
    assert_eq!(
        found(&app, &format!("id={}&type=company", f.grace)).await,
        Vec::<String>::new()
    );
    let r = app.get("/api/leads?type=robot").await;
    r.assert_invalid("type");
    let r = leads_page(&app, &format!("?id={}", f.acme)).await;
    assert_lead_shape(&r.body["leads"][0]);
    assert_eq!(r.body["nextCursor"], Value::Null);
}

// --- pagination -------------------------------------------------------------------------------

async fn create_people(app: &TestApp, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let lead = app
            .lead(json!({"type": "person", "name": format!("Person {i:03}")}))
            .await;
        out.push(lead["id"].as_str().unwrap().to_string());
    }
    out
}

#[tokio::test]
async fn pagination_walks_every_lead_once_in_id_order() {
    let app = TestApp::spawn().await;
    let mut created = create_people(&app, 120).await;
    created.sort();

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut query = "?limit=50".to_string();
    loop {
        let r = leads_page(&app, &query).await;
        let page = ids(&r.body["leads"]);
        pages.push(page.len());
        seen.extend(page.iter().cloned());
        match r.body["nextCursor"].as_str() {
            Some(c) => {
                assert_eq!(
                    Some(&c.to_string()),
                    page.last(),
                    "nextCursor is the last id of the page"
                );
                query = format!("?limit=50&cursor={c}");
            }
            None => break,
        }
        assert!(pages.len() < 10, "pagination does not end");
    }
    assert_eq!(pages, vec![50, 50, 20]);
    assert_eq!(seen, created, "every lead once, ids ascending");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 120);
}

#[tokio::test]
async fn default_limit_is_50_and_cursor_is_exclusive() {
    let app = TestApp::spawn().await;
    let mut created = create_people(&app, 60).await;
    created.sort();
    let r = leads_page(&app, "").await;
    assert_eq!(ids(&r.body["leads"]), created[..50].to_vec());
    assert_eq!(r.body["nextCursor"], created[49]);
    let r = leads_page(&app, &format!("?cursor={}&limit=5", created[9])).await;
    assert_eq!(
        ids(&r.body["leads"]),
        created[10..15].to_vec(),
        "leads after the cursor, not including it"
    );
    let r = leads_page(&app, "?limit=500").await;
    assert_eq!(ids(&r.body["leads"]), created);
    assert_eq!(r.body["nextCursor"], Value::Null);
    let r = leads_page(&app, "?limit=1").await;
    assert_eq!(ids(&r.body["leads"]), created[..1].to_vec());
}

#[tokio::test]
async fn last_full_page_has_no_next_cursor() {
    let app = TestApp::spawn().await;
    let mut created = create_people(&app, 10).await;
    created.sort();
    let r = leads_page(&app, "?limit=5").await;
    assert_eq!(r.body["nextCursor"], created[4]);
    let r = leads_page(&app, &format!("?limit=5&cursor={}", created[4])).await;
    assert_eq!(ids(&r.body["leads"]), created[5..].to_vec());
    assert_eq!(
        r.body["nextCursor"],
        Value::Null,
        "no more leads: no cursor to an empty page"
    );
}

#[tokio::test]
async fn limit_out_of_range_is_400() {
    let app = TestApp::spawn().await;
    for limit in ["0", "501", "abc", "-1", "1.5", "99999999999999999999"] {
        let r = app.get(&format!("/api/leads?limit={limit}")).await;
        assert_eq!(r.status, 400, "limit={limit}: {}", r.text);
        r.assert_invalid("limit");
    }
}

// --- dedupe -----------------------------------------------------------------------------------

#[tokio::test]
async fn same_linkedin_url_is_the_same_lead_and_fills_only_empty_fields() {
    let app = TestApp::spawn().await;
    let first = app
        .lead(json!({"type": "person", "name": "Ann Lee", "title": "CTO",
                      "socials": [{"url": "https://www.linkedin.com/in/ann-lee/"}]}))
        .await;
    let r = app
        .post(
            "/api/leads",
            json!({"type": "person", "name": "Ann B. Lee", "title": "CEO", "industry": "Software",
                   "location": {"city": "Berlin"},
                   "socials": [{"url": "http://linkedin.com/in/Ann-Lee?trk=abc"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["created"], false);
    let lead = &r.body["lead"];
    assert_lead_shape(lead);
    assert_eq!(lead["id"], first["id"]);
    assert_eq!(
        lead["name"]["full"], "Ann Lee",
        "set fields are not overwritten"
    );
    assert_eq!(lead["title"], "CTO", "set fields are not overwritten");
    assert_eq!(lead["industry"], "Software", "empty fields are filled");
    assert_eq!(
        lead["location"]["city"], "Berlin",
        "empty fields are filled"
    );
    assert_eq!(app.all_leads_as(&app.key).await.len(), 1);
    assert_eq!(
        &app.get_lead(first["id"].as_str().unwrap()).await.unwrap(),
        lead,
        "the merge is stored"
    );
}

#[tokio::test]
async fn same_email_is_the_same_lead_case_insensitively() {
    let app = TestApp::spawn().await;
    let first = app
        .lead(json!({"type": "person", "name": "Bo Diddley",
                      "contacts": [{"type": "email", "value": "Bo@Example.com"}],
                      "attributes": {"score": 1}}))
        .await;
    let r = app
        .post(
            "/api/leads",
            json!({"type": "person", "name": "Robert Diddley", "title": "Musician",
                   "contacts": [{"type": "work_email", "value": "bo@EXAMPLE.COM"}],
                   "attributes": {"score": 2, "genre": "rock"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["created"], false);
    let lead = &r.body["lead"];
    assert_eq!(lead["id"], first["id"]);
    assert_eq!(lead["name"]["full"], "Bo Diddley");
    assert_eq!(lead["title"], "Musician");
    assert_eq!(
        lead["attributes"],
        json!({"score": 1, "genre": "rock"}),
        "attributes fill, never overwrite"
    );
    assert!(
        email_values(lead)
            .iter()
            .any(|e| e.eq_ignore_ascii_case("bo@example.com")),
        "{lead}"
    );
    // A different email is a different lead.
    let r = app
        .post("/api/leads", json!({"type": "person", "name": "Bo Diddley", "contacts": [{"type": "email", "value": "bo2@example.com"}]}))
        .await;
    assert_eq!(r.body["created"], true, "{}", r.text);
    assert_ne!(r.body["lead"]["id"], first["id"]);
}

#[tokio::test]
async fn same_source_provider_and_external_id_is_the_same_lead() {
    let app = TestApp::spawn().await;
    let first = app
        .lead(json!({"type": "person", "name": "Src One", "sources": [{"provider": "apollo", "externalId": "42"}]}))
        .await;
    let r = app
        .post(
            "/api/leads",
            json!({"type": "person", "name": "Src Two", "industry": "Retail",
                                     "sources": [{"provider": "apollo", "externalId": "42"}]}),
        )
        .await;
    assert_eq!(r.body["created"], false, "{}", r.text);
    assert_eq!(r.body["lead"]["id"], first["id"]);
    assert_eq!(r.body["lead"]["name"]["full"], "Src One");
    assert_eq!(r.body["lead"]["industry"], "Retail");
    // Same external id from another provider, or another id from the same provider: new leads.
    for source in [
        json!({"provider": "clearbit", "externalId": "42"}),
        json!({"provider": "apollo", "externalId": "43"}),
    ] {
        let r = app
            .post(
                "/api/leads",
                json!({"type": "person", "name": "Other", "sources": [source]}),
            )
            .await;
        assert_eq!(r.body["created"], true, "{}", r.text);
        assert_ne!(r.body["lead"]["id"], first["id"]);
    }
    assert_eq!(app.all_leads_as(&app.key).await.len(), 3);
}

#[tokio::test]
async fn companies_with_the_same_normalized_domain_are_the_same_lead() {
    let app = TestApp::spawn().await;
    let first = app
        .lead(json!({"type": "company", "name": "Acme", "domain": "acme.com"}))
        .await;
    let r = app
        .post(
            "/api/leads",
            json!({"type": "company", "name": "ACME Inc", "industry": "Anvils",
                                     "domain": "https://www.Acme.com/about"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["created"], false);
    assert_eq!(r.body["lead"]["id"], first["id"]);
    assert_eq!(r.body["lead"]["name"]["full"], "Acme");
    assert_eq!(r.body["lead"]["domain"], "acme.com");
    assert_eq!(r.body["lead"]["industry"], "Anvils");
    let other = app
        .post(
            "/api/leads",
            json!({"type": "company", "name": "Acme", "domain": "acme.org"}),
        )
        .await;
    assert_eq!(
        other.body["created"], true,
        "another domain is another company: {}",
        other.text
    );
}

#[tokio::test]
async fn people_with_the_same_domain_are_not_deduped() {
    let app = TestApp::spawn().await;
    let a = app
        .post(
            "/api/leads",
            json!({"type": "person", "name": "Ann One", "domain": "acme.com",
                                     "company": {"name": "Acme", "domain": "acme.com"}}),
        )
        .await;
    let b = app
        .post(
            "/api/leads",
            json!({"type": "person", "name": "Ben Two", "domain": "acme.com",
                                     "company": {"name": "Acme", "domain": "acme.com"}}),
        )
        .await;
    assert_eq!(a.body["created"], true, "{}", a.text);
    assert_eq!(b.body["created"], true, "{}", b.text);
    assert_ne!(a.body["lead"]["id"], b.body["lead"]["id"]);
    assert_eq!(b.body["lead"]["name"]["full"], "Ben Two");
}

#[tokio::test]
async fn a_duplicate_with_list_ids_attaches_the_existing_lead() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "Later"})).await;
    let first = app
        .lead(json!({"type": "person", "name": "Dee Dupe", "contacts": [{"type": "email", "value": "dee@example.com"}]}))
        .await;
    let r = app
        .post(
            "/api/leads",
            json!({"type": "person", "name": "Dee", "listIds": [list["id"]],
                                     "contacts": [{"type": "email", "value": "dee@example.com"}]}),
        )
        .await;
    assert_eq!(r.body["created"], false, "{}", r.text);
    assert_eq!(r.body["lead"]["id"], first["id"]);
    assert!(
        ids(&r.body["lead"]["lists"]).contains(&list["id"].as_str().unwrap().to_string()),
        "{}",
        r.text
    );
    assert_eq!(
        app.get_list(list["id"].as_str().unwrap()).await["leadCount"],
        1
    );
}

// --- update -----------------------------------------------------------------------------------

#[tokio::test]
async fn patch_changes_only_the_given_fields() {
    let app = TestApp::spawn().await;
    let lead = app
        .lead(
            json!({"type": "person", "name": "Pat Ch", "title": "Old", "industry": "Ind",
                      "contacts": [{"type": "email", "value": "pat@example.com"}]}),
        )
        .await;
    let id = lead["id"].as_str().unwrap();
    let r = app
        .patch(
            "/api/leads",
            json!({"id": id, "title": "New", "location": {"city": "Paris"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["lead"]);
    let updated = &r.body["lead"];
    assert_lead_shape(updated);
    assert_eq!(updated["id"], id);
    assert_eq!(updated["title"], "New");
    assert_eq!(updated["location"]["city"], "Paris");
    assert_eq!(updated["industry"], "Ind");
    assert_eq!(updated["name"], lead["name"]);
    assert_eq!(updated["contacts"], lead["contacts"]);
    assert_eq!(updated["createdAt"], lead["createdAt"]);
    assert!(updated["updatedAt"].as_str() >= lead["updatedAt"].as_str());
    assert_eq!(
        &app.get_lead(id).await.unwrap(),
        updated,
        "the change is stored"
    );
}

#[tokio::test]
async fn patch_with_null_clears_a_field() {
    let app = TestApp::spawn().await;
    let lead = app
        .lead(json!({"type": "person", "name": "Nul Field", "title": "Temp", "industry": "Keep"}))
        .await;
    let r = app
        .patch("/api/leads", json!({"id": lead["id"], "title": null}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["lead"]["title"], Value::Null);
    assert_eq!(r.body["lead"]["industry"], "Keep");
}

#[tokio::test]
async fn patch_merges_attributes_by_key_and_null_removes() {
    let app = TestApp::spawn().await;
    let lead = app
        .lead(json!({"type": "person", "name": "At Tr", "attributes": {"a": 1, "b": {"x": 2}}}))
        .await;
    let id = lead["id"].as_str().unwrap();
    let r = app
        .patch(
            "/api/leads",
            json!({"id": id, "attributes": {"a": null, "c": [3]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["lead"]["attributes"],
        json!({"b": {"x": 2}, "c": [3]})
    );
    let r = app
        .patch(
            "/api/leads",
            json!({"id": id, "attributes": {"b": "replaced"}}),
        )
        .await;
    assert_eq!(
        r.body["lead"]["attributes"],
        json!({"b": "replaced", "c": [3]})
    );
    assert_eq!(
        app.get_lead(id).await.unwrap()["attributes"],
        json!({"b": "replaced", "c": [3]})
    );
}

#[tokio::test]
async fn patch_cannot_change_type() {
    let app = TestApp::spawn().await;
    let lead = app.lead(json!({"type": "person", "name": "Ty Pe"})).await;
    let r = app
        .patch("/api/leads", json!({"id": lead["id"], "type": "company"}))
        .await;
    r.assert_invalid("type");
    assert_eq!(
        app.get_lead(lead["id"].as_str().unwrap()).await.unwrap()["type"],
        "person"
    );
}

#[tokio::test]
async fn patch_unknown_or_missing_id() {
    let app = TestApp::spawn().await;
    app.patch("/api/leads", json!({"id": unknown_id(), "title": "x"}))
        .await
        .assert_error(404, "not_found");
    app.patch("/api/leads", json!({"id": "not-a-uuid", "title": "x"}))
        .await
        .assert_error(404, "not_found");
    app.patch("/api/leads", json!({"title": "x"}))
        .await
        .assert_invalid("id");
    app.patch("/api/leads", json!({"id": 12, "title": "x"}))
        .await
        .assert_invalid("id");
}

#[tokio::test]
async fn patch_validates_fields() {
    let app = TestApp::spawn().await;
    let lead = app
        .lead(json!({"type": "person", "name": "Val Id", "title": "Keep"}))
        .await;
    let id = lead["id"].as_str().unwrap();
    app.patch("/api/leads", json!({"id": id, "title": 5}))
        .await
        .assert_invalid("title");
    app.patch("/api/leads", json!({"id": id, "attributes": "x"}))
        .await
        .assert_invalid("attributes");
    app.patch(
        "/api/leads",
        json!({"id": id, "contacts": [{"type": "email", "value": "nope"}]}),
    )
    .await
    .assert_invalid("contacts[0]");
    assert_eq!(
        app.get_lead(id).await.unwrap(),
        lead,
        "refused patches change nothing"
    );
}

// --- delete -----------------------------------------------------------------------------------

#[tokio::test]
async fn delete_removes_the_lead_and_its_memberships() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "Doomed members"})).await;
    let list_id = list["id"].as_str().unwrap();
    let keep = app
        .lead(json!({"type": "person", "name": "Keep Me", "listIds": [list_id]}))
        .await;
    let gone = app
        .lead(json!({"type": "person", "name": "Delete Me", "listIds": [list_id]}))
        .await;
    assert_eq!(app.get_list(list_id).await["leadCount"], 2);
    assert_eq!(app.all_list_as(&app.key).await["leadCount"], 2);

    let r = app.delete("/api/leads", json!({"id": gone["id"]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"success": true}));

    assert_eq!(app.get_lead(gone["id"].as_str().unwrap()).await, None);
    assert_eq!(
        ids(&Value::Array(app.all_leads_as(&app.key).await)),
        vec![keep["id"].as_str().unwrap().to_string()]
    );
    let l = app.get_list(list_id).await;
    assert_eq!(
        (l["leadCount"].as_i64(), l["personCount"].as_i64()),
        (Some(1), Some(1)),
        "{l}"
    );
    assert_eq!(app.all_list_as(&app.key).await["leadCount"], 1);
    let members = app.get(&format!("/api/lists/{list_id}/leads")).await;
    assert_eq!(
        ids(&members.body["leads"]),
        vec![keep["id"].as_str().unwrap().to_string()]
    );
    assert_eq!(members.body["total"], 1);

    // Deleting again, or a lead that never existed: 404.
    app.delete("/api/leads", json!({"id": gone["id"]}))
        .await
        .assert_error(404, "not_found");
    app.delete("/api/leads", json!({"id": unknown_id()}))
        .await
        .assert_error(404, "not_found");
    app.delete("/api/leads", json!({}))
        .await
        .assert_invalid("id");
}

#[tokio::test]
async fn a_deleted_lead_can_be_created_again() {
    let app = TestApp::spawn().await;
    let body = json!({"type": "person", "name": "Phoenix", "contacts": [{"type": "email", "value": "phoenix@example.com"}]});
    let first = app.lead(body.clone()).await;
    let r = app.delete("/api/leads", json!({"id": first["id"]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let again = app.post("/api/leads", body).await;
    assert_eq!(
        again.body["created"], true,
        "its dedupe keys went with it: {}",
        again.text
    );
    assert_ne!(again.body["lead"]["id"], first["id"]);
}

// --- workspaces -------------------------------------------------------------------------------

/// A second workspace with its own admin key.
async fn other_workspace(app: &TestApp) -> String {
    app.create_user("other-admin@example.com", "admin", None)
        .await
        .1
}

/// Two responses are indistinguishable to the client (status and error code; whole body on 200).
fn assert_same_answer(foreign: &Resp, unknown: &Resp, what: &str) {
    assert_eq!(
        foreign.status, unknown.status,
        "{what}: foreign {} vs unknown {}",
        foreign.text, unknown.text
    );
    assert!(foreign.status < 500, "{what}: {}", foreign.text);
    if foreign.status == 200 {
        assert_eq!(foreign.body, unknown.body, "{what}");
    } else {
        assert_eq!(
            foreign.body["error"]["code"], unknown.body["error"]["code"],
            "{what}"
        );
    }
}

#[tokio::test]
async fn leads_of_another_workspace_do_not_exist_for_it() {
    let app = TestApp::spawn().await;
    let lead = app
        .lead(
            json!({"type": "person", "name": "Secret Agent", "title": "Spy",
                      "contacts": [{"type": "email", "value": "agent@example.com"}]}),
        )
        .await;
    let id = lead["id"].as_str().unwrap();
    let b = other_workspace(&app).await;

    // Listings and searches.
    assert!(app.all_leads_as(&b).await.is_empty(), "B sees no lead of A");
    for q in ["q=secret", "name=agent", "email=agent@", "title=spy"] {
        let r = app
            .call_as(&b, Method::GET, &format!("/api/leads?{q}"), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["leads"], json!([]), "{q}");
    }
    let foreign = app
        .call_as(&b, Method::GET, &format!("/api/leads?id={id}"), None)
        .await;
    let unknown = app
        .call_as(
            &b,
            Method::GET,
            &format!("/api/leads?id={}", unknown_id()),
            None,
        )
        .await;
    assert_same_answer(&foreign, &unknown, "GET ?id=");
    if foreign.status == 200 {
        assert_eq!(foreign.body["leads"], json!([]));
    } else {
        foreign.assert_error(404, "not_found");
    }

    // Writes.
    app.call_as(
        &b,
        Method::PATCH,
        "/api/leads",
        Some(json!({"id": id, "title": "Hacked"})),
    )
    .await
    .assert_error(404, "not_found");
    app.call_as(&b, Method::DELETE, "/api/leads", Some(json!({"id": id})))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        app.get_lead(id).await.unwrap(),
        lead,
        "A's lead is untouched"
    );

    // Dedupe is per workspace: B creating the same email gets a lead of its own.
    let r = app
        .call_as(&b, Method::POST, "/api/leads",
            Some(json!({"type": "person", "name": "Other Agent", "contacts": [{"type": "email", "value": "agent@example.com"}]})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["created"], true);
    assert_ne!(r.body["lead"]["id"], lead["id"]);
    assert_eq!(r.body["lead"]["name"]["full"], "Other Agent");
    assert_eq!(
        app.get_lead(id).await.unwrap()["name"]["full"],
        "Secret Agent"
    );
}

#[tokio::test]
async fn users_of_one_workspace_share_leads() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let (_, member) = app
        .create_user("teammate@example.com", "member", Some(&ws))
        .await;
    let lead = app
        .lead(json!({"type": "person", "name": "Shared Lead"}))
        .await;
    let id = lead["id"].as_str().unwrap();
    assert_eq!(
        ids(&Value::Array(app.all_leads_as(&member).await)),
        vec![id.to_string()]
    );
    let r = app
        .call_as(
            &member,
            Method::PATCH,
            "/api/leads",
            Some(json!({"id": id, "title": "Edited"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get_lead(id).await.unwrap()["title"], "Edited");
    let r = app
        .call_as(
            &member,
            Method::POST,
            "/api/leads",
            Some(json!({"type": "person", "name": "Member Lead"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.all_leads_as(&app.key).await.len(), 2);
    let r = app
        .call_as(
            &member,
            Method::DELETE,
            "/api/leads",
            Some(json!({"id": id})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get_lead(id).await, None);
}

#[tokio::test]
async fn concurrent_duplicate_creates_make_one_lead() {
    let app = TestApp::spawn().await;
    let body = json!({"type": "person", "name": "Race Condition",
                      "contacts": [{"type": "email", "value": "race@example.com"}]});
    let calls = (0..12).map(|_| app.post("/api/leads", body.clone()));
    let answers = futures::future::join_all(calls).await;
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let created = answers.iter().filter(|r| r.body["created"] == true).count();
    assert_eq!(created, 1, "exactly one request creates the lead");
    let ids: HashSet<&str> = answers
        .iter()
        .map(|r| r.body["lead"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every request answers the same lead");
    assert_eq!(app.all_leads_as(&app.key).await.len(), 1);
}

#[tokio::test]
async fn pagination_survives_deleting_the_cursor_lead() {
    let app = TestApp::spawn().await;
    let mut created = create_people(&app, 9).await;
    created.sort();
    let r = leads_page(&app, "?limit=3").await;
    let cursor = r.body["nextCursor"]
        .as_str()
        .expect("more pages")
        .to_string();
    assert_eq!(cursor, created[2]);
    // Process-and-delete: the page's leads are gone before the next page is asked for.
    for id in &created[..3] {
        let d = app.delete("/api/leads", json!({"id": id})).await;
        assert_eq!(d.status, 200, "{}", d.text);
    }
    let r = leads_page(&app, &format!("?limit=3&cursor={cursor}")).await;
    assert_eq!(
        ids(&r.body["leads"]),
        created[3..6].to_vec(),
        "a cursor stays valid after its lead is deleted"
    );
}
