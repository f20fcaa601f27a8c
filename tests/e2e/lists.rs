//! Spec §4: lists, the protected list `all`, memberships, workspace isolation.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

async fn person(app: &TestApp, name: &str) -> String {
    app.lead(json!({"type": "person", "name": name})).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn company(app: &TestApp, name: &str, domain: &str) -> String {
    app.lead(json!({"type": "company", "name": name, "domain": domain}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn counts(list: &Value) -> (i64, i64, i64) {
    (
        list["leadCount"].as_i64().unwrap(),
        list["personCount"].as_i64().unwrap(),
        list["companyCount"].as_i64().unwrap(),
    )
}

async fn members(app: &TestApp, list_id: &str, query: &str) -> Resp {
    let r = app.get(&format!("/api/lists/{list_id}/leads{query}")).await;
    assert_eq!(
        r.status, 200,
        "GET /api/lists/{list_id}/leads{query}: {}",
        r.text
    );
    assert_keys(&r.body, &["leads", "total", "hasMore", "nextCursor"]);
    r
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// --- the list `all` ---------------------------------------------------------------------------

#[tokio::test]
async fn every_workspace_has_the_list_all_holding_every_lead() {
    let app = TestApp::spawn().await;
    let all = app.all_list_as(&app.key).await;
    assert_list_shape(&all);
    assert_eq!(all["leadType"], "mixed", "all holds people and companies");
    assert_eq!(counts(&all), (0, 0, 0));

    let p = person(&app, "Pe Rson").await;
    let c = company(&app, "Co Mpany", "company.example").await;
    let all = app.all_list_as(&app.key).await;
    assert_eq!(counts(&all), (2, 1, 1));
    let m = members(&app, all["id"].as_str().unwrap(), "").await;
    assert_eq!(sorted(ids(&m.body["leads"])), sorted(vec![p, c]));

    // A new workspace gets its own, empty.
    let (_, other) = app.create_user("new@example.com", "admin", None).await;
    let other_all = app.all_list_as(&other).await;
    assert_list_shape(&other_all);
    assert_ne!(other_all["id"], all["id"]);
    assert_eq!(counts(&other_all), (0, 0, 0));
}

#[tokio::test]
async fn the_list_all_cannot_be_renamed_retyped_or_deleted() {
    let app = TestApp::spawn().await;
    person(&app, "Some One").await;
    let all = app.all_list_as(&app.key).await;
    let id = all["id"].as_str().unwrap();
    app.patch("/api/lists", json!({"id": id, "name": "everything"}))
        .await
        .assert_error(400, "invalid_request");
    app.patch("/api/lists", json!({"id": id, "leadType": "person"}))
        .await
        .assert_error(400, "invalid_request");
    app.delete("/api/lists", json!({"id": id}))
        .await
        .assert_error(400, "invalid_request");
    let after = app.all_list_as(&app.key).await;
    assert_eq!(after["name"], "all");
    assert_eq!(after["leadType"], "mixed");
    assert_eq!(after["leadCount"], 1);
}

#[tokio::test]
async fn leads_cannot_be_removed_from_the_list_all() {
    let app = TestApp::spawn().await;
    let p = person(&app, "Stay Put").await;
    let all = app.all_list_as(&app.key).await;
    let id = all["id"].as_str().unwrap();
    let r = app
        .delete(&format!("/api/lists/{id}/leads"), json!({"leadIds": [p]}))
        .await;
    r.assert_error(400, "invalid_request");
    assert_eq!(app.all_list_as(&app.key).await["leadCount"], 1);
    assert_eq!(ids(&members(&app, id, "").await.body["leads"]), vec![p]);
}

// --- create, read -----------------------------------------------------------------------------

#[tokio::test]
async fn create_list_with_defaults() {
    let app = TestApp::spawn().await;
    let r = app.post("/api/lists", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["list"]);
    let list = &r.body["list"];
    assert_list_shape(list);
    assert_eq!(list["name"], "Untitled List");
    assert_eq!(list["description"], Value::Null);
    assert_eq!(list["leadType"], "person");
    assert_eq!(counts(list), (0, 0, 0));
}

#[tokio::test]
async fn create_list_with_fields_and_leads_counts_them() {
    let app = TestApp::spawn().await;
    let p1 = person(&app, "One Person").await;
    let p2 = person(&app, "Two Person").await;
    let c = company(&app, "Firm", "firm.example").await;
    let r = app
        .post(
            "/api/lists",
            json!({"name": "Targets", "description": "Q3 accounts", "leadType": "mixed",
                                     "leadIds": [p1, p2, c]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let list = &r.body["list"];
    assert_list_shape(list);
    assert_eq!(list["name"], "Targets");
    assert_eq!(list["description"], "Q3 accounts");
    assert_eq!(list["leadType"], "mixed");
    assert_eq!(counts(list), (3, 2, 1));
    let lead = app.get_lead(&c).await.unwrap();
    assert!(
        lead["lists"]
            .as_array()
            .unwrap()
            .contains(&json!({"id": list["id"], "name": "Targets"})),
        "{lead}"
    );
}

#[tokio::test]
async fn create_list_rejects_bad_input_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let c = company(&app, "Firm", "firm.example").await;
    let before = app.lists_as(&app.key).await.len();
    app.post("/api/lists", json!({"leadType": "people"}))
        .await
        .assert_invalid("leadType");
    app.post("/api/lists", json!({"name": 5}))
        .await
        .assert_invalid("name");
    app.post("/api/lists", json!({"description": ["x"]}))
        .await
        .assert_invalid("description");
    app.post("/api/lists", json!({"leadIds": "x"}))
        .await
        .assert_invalid("leadIds");
    app.post("/api/lists", json!({"leadIds": [unknown_id()]}))
        .await
        .assert_invalid("leadIds");
    // A company in a person list (the default type).
    app.post("/api/lists", json!({"name": "People", "leadIds": [c]}))
        .await
        .assert_error(400, "invalid_request");
    assert_eq!(
        app.lists_as(&app.key).await.len(),
        before,
        "no list was created"
    );
}

#[tokio::test]
async fn lists_are_newest_first_and_one_can_be_fetched_by_id() {
    let app = TestApp::spawn().await;
    app.list(json!({"name": "A"})).await;
    let b = app.list(json!({"name": "B"})).await;
    app.list(json!({"name": "C"})).await;
    let lists = app.lists_as(&app.key).await;
    for l in &lists {
        assert_list_shape(l);
    }
    let names: Vec<&str> = lists.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["C", "B", "A", "all"]);
    let r = app
        .get(&format!("/api/lists?id={}", b["id"].as_str().unwrap()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["lists"], json!([b]));
}

#[tokio::test]
async fn get_list_by_unknown_id_finds_nothing() {
    let app = TestApp::spawn().await;
    let r = app.get(&format!("/api/lists?id={}", unknown_id())).await;
    assert!(r.status == 200 || r.status == 404, "{}", r.text);
    if r.status == 200 {
        assert_eq!(r.body["lists"], json!([]));
    } else {
        r.assert_error(404, "not_found");
    }
}

// --- update, delete ---------------------------------------------------------------------------

#[tokio::test]
async fn patch_list_changes_only_the_given_fields() {
    let app = TestApp::spawn().await;
    let list = app
        .list(json!({"name": "Before", "description": "desc"}))
        .await;
    let id = list["id"].as_str().unwrap();
    let r = app
        .patch("/api/lists", json!({"id": id, "name": "After"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["list"]);
    let updated = &r.body["list"];
    assert_list_shape(updated);
    assert_eq!(updated["name"], "After");
    assert_eq!(updated["description"], "desc");
    assert_eq!(updated["leadType"], "person");
    assert_eq!(updated["createdAt"], list["createdAt"]);
    assert!(updated["updatedAt"].as_str() >= list["updatedAt"].as_str());
    let r = app
        .patch(
            "/api/lists",
            json!({"id": id, "description": null, "leadType": "mixed"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["list"]["description"], Value::Null);
    assert_eq!(r.body["list"]["leadType"], "mixed");
    assert_eq!(r.body["list"]["name"], "After");
    assert_eq!(
        app.get_list(id).await,
        r.body["list"],
        "the change is stored"
    );
}

#[tokio::test]
async fn patch_list_lead_type_that_members_violate_is_409() {
    let app = TestApp::spawn().await;
    let p = person(&app, "Mem Ber").await;
    let c = company(&app, "Firm", "firm.example").await;
    let list = app
        .list(json!({"name": "Mixed", "leadType": "mixed", "leadIds": [p, c]}))
        .await;
    let id = list["id"].as_str().unwrap();
    for t in ["person", "company"] {
        app.patch("/api/lists", json!({"id": id, "leadType": t}))
            .await
            .assert_error(409, "conflict");
    }
    assert_eq!(app.get_list(id).await["leadType"], "mixed");
    // Once the company is gone, the list may become a person list.
    let r = app
        .delete(&format!("/api/lists/{id}/leads"), json!({"leadIds": [c]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .patch("/api/lists", json!({"id": id, "leadType": "person"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["list"]["leadType"], "person");
}

#[tokio::test]
async fn patch_list_validates_and_404s() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "V"})).await;
    app.patch(
        "/api/lists",
        json!({"id": list["id"], "leadType": "robots"}),
    )
    .await
    .assert_invalid("leadType");
    app.patch("/api/lists", json!({"id": list["id"], "name": 3}))
        .await
        .assert_invalid("name");
    app.patch("/api/lists", json!({"name": "x"}))
        .await
        .assert_invalid("id");
    app.patch("/api/lists", json!({"id": unknown_id(), "name": "x"}))
        .await
        .assert_error(404, "not_found");
    assert_eq!(app.get_list(list["id"].as_str().unwrap()).await, list);
}

#[tokio::test]
async fn delete_list_keeps_its_leads() {
    let app = TestApp::spawn().await;
    let p = person(&app, "Sur Vivor").await;
    let list = app.list(json!({"name": "Temp", "leadIds": [p]})).await;
    let id = list["id"].as_str().unwrap();
    let r = app.delete("/api/lists", json!({"id": id})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"success": true}));
    assert!(!ids(&Value::Array(app.lists_as(&app.key).await)).contains(&id.to_string()));
    let lead = app.get_lead(&p).await.expect("the lead survives");
    assert!(
        !ids(&lead["lists"]).contains(&id.to_string()),
        "membership is gone: {lead}"
    );
    assert_eq!(app.all_list_as(&app.key).await["leadCount"], 1);
    app.get(&format!("/api/lists/{id}/leads"))
        .await
        .assert_error(404, "not_found");
    app.delete("/api/lists", json!({"id": id}))
        .await
        .assert_error(404, "not_found");
    app.delete("/api/lists", json!({}))
        .await
        .assert_invalid("id");
}

// --- members ----------------------------------------------------------------------------------

#[tokio::test]
async fn list_leads_carry_the_membership() {
    let app = TestApp::spawn().await;
    let p = person(&app, "In List").await;
    let list = app.list(json!({"name": "M", "leadIds": [p]})).await;
    let r = members(&app, list["id"].as_str().unwrap(), "").await;
    assert_eq!(r.body["total"], 1);
    assert_eq!(r.body["hasMore"], false);
    assert_eq!(r.body["nextCursor"], Value::Null);
    let lead = &r.body["leads"][0];
    assert_lead_shape(lead);
    assert_eq!(lead["id"], p);
    assert_keys(&lead["membership"], &["id", "attributes", "createdAt"]);
    assert_id(&lead["membership"]["id"]);
    assert_eq!(lead["membership"]["attributes"], json!({}));
    assert_timestamp(&lead["membership"]["createdAt"]);
    // The lead part is the lead as GET /api/leads shows it.
    let mut plain = lead.clone();
    plain.as_object_mut().unwrap().remove("membership");
    assert_eq!(plain, app.get_lead(&p).await.unwrap());
}

#[tokio::test]
async fn list_leads_type_filter() {
    let app = TestApp::spawn().await;
    let p1 = person(&app, "P One").await;
    let p2 = person(&app, "P Two").await;
    let c = company(&app, "C One", "c1.example").await;
    let list = app
        .list(json!({"name": "Mix", "leadType": "mixed", "leadIds": [p1, p2, c]}))
        .await;
    let id = list["id"].as_str().unwrap();
    let r = members(&app, id, "?type=company").await;
    assert_eq!(ids(&r.body["leads"]), vec![c.clone()]);
    assert_eq!(r.body["total"], 1, "total counts what the filter matches");
    let r = members(&app, id, "?type=person").await;
    assert_eq!(sorted(ids(&r.body["leads"])), sorted(vec![p1, p2]));
    assert_eq!(r.body["total"], 2);
    let r = members(&app, id, "").await;
    assert_eq!(r.body["total"], 3);
    app.get(&format!("/api/lists/{id}/leads?type=robot"))
        .await
        .assert_invalid("type");
}

#[tokio::test]
async fn list_leads_paginate_without_gaps_or_repeats() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "Big"})).await;
    let id = list["id"].as_str().unwrap();
    let mut created = Vec::new();
    for i in 0..120 {
        let lead = app
            .lead(json!({"type": "person", "name": format!("Member {i:03}"), "listIds": [id]}))
            .await;
        created.push(lead["id"].as_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut query = "?limit=50".to_string();
    loop {
        let r = members(&app, id, &query).await;
        assert_eq!(r.body["total"], 120);
        let page = ids(&r.body["leads"]);
        sizes.push(page.len());
        seen.extend(page);
        let has_more = r.body["hasMore"].as_bool().expect("hasMore is a boolean");
        match r.body["nextCursor"].as_str() {
            Some(c) => {
                assert!(has_more, "nextCursor only when hasMore: {}", r.text);
                query = format!("?limit=50&cursor={c}");
            }
            None => {
                assert!(!has_more, "hasMore needs a nextCursor: {}", r.text);
                break;
            }
        }
        assert!(sizes.len() < 10, "pagination does not end");
    }
    assert_eq!(sizes, vec![50, 50, 20]);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 120, "no repeats");
    assert_eq!(sorted(seen), sorted(created), "none missing");
    // Default limit 50.
    assert_eq!(
        members(&app, id, "").await.body["leads"]
            .as_array()
            .unwrap()
            .len(),
        50
    );
    for limit in ["0", "501", "abc", "-3"] {
        app.get(&format!("/api/lists/{id}/leads?limit={limit}"))
            .await
            .assert_invalid("limit");
    }
}

#[tokio::test]
async fn add_members_is_idempotent() {
    let app = TestApp::spawn().await;
    let a = person(&app, "A A").await;
    let b = person(&app, "B B").await;
    let list = app.list(json!({"name": "Add"})).await;
    let id = list["id"].as_str().unwrap();
    let r = app
        .post(
            &format!("/api/lists/{id}/leads"),
            json!({"leadIds": [a, b]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["list"]);
    assert_list_shape(&r.body["list"]);
    assert_eq!(r.body["list"]["id"], id);
    assert_eq!(counts(&r.body["list"]), (2, 2, 0));
    let m1 = members(&app, id, "").await;
    // Again, with a duplicate inside the request: no-op.
    let r = app
        .post(
            &format!("/api/lists/{id}/leads"),
            json!({"leadIds": [a, a]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(counts(&r.body["list"]), (2, 2, 0));
    let m2 = members(&app, id, "").await;
    assert_eq!(
        m1.body, m2.body,
        "memberships (ids, createdAt) are unchanged by a no-op add"
    );
}

#[tokio::test]
async fn add_members_is_atomic_on_wrong_type_or_unknown_lead() {
    let app = TestApp::spawn().await;
    let p = person(&app, "Good Person").await;
    let c = company(&app, "Bad Fit", "badfit.example").await;
    let list = app
        .list(json!({"name": "People only", "leadType": "person"}))
        .await;
    let id = list["id"].as_str().unwrap();
    let path = format!("/api/lists/{id}/leads");
    app.post(&path, json!({"leadIds": [p, c]}))
        .await
        .assert_error(400, "invalid_request");
    app.post(&path, json!({"leadIds": [p, unknown_id()]}))
        .await
        .assert_error(400, "invalid_request");
    assert_eq!(
        counts(&app.get_list(id).await),
        (0, 0, 0),
        "nothing was added"
    );
    let lead = app.get_lead(&p).await.unwrap();
    assert!(!ids(&lead["lists"]).contains(&id.to_string()));
    let companies = app
        .list(json!({"name": "Companies", "leadType": "company"}))
        .await;
    let cid = companies["id"].as_str().unwrap();
    app.post(&format!("/api/lists/{cid}/leads"), json!({"leadIds": [p]}))
        .await
        .assert_error(400, "invalid_request");
    let r = app
        .post(&format!("/api/lists/{cid}/leads"), json!({"leadIds": [c]}))
        .await;
    assert_eq!(counts(&r.body["list"]), (1, 0, 1), "{}", r.text);
}

#[tokio::test]
async fn add_members_takes_1_to_1000_ids() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "Limits"})).await;
    let path = format!("/api/lists/{}/leads", list["id"].as_str().unwrap());
    app.post(&path, json!({"leadIds": []}))
        .await
        .assert_invalid("leadIds");
    app.post(&path, json!({})).await.assert_invalid("leadIds");
    app.post(&path, json!({"leadIds": "x"}))
        .await
        .assert_invalid("leadIds");
    let many: Vec<String> = (0..1001).map(|_| unknown_id()).collect();
    app.post(&path, json!({"leadIds": many}))
        .await
        .assert_invalid("leadIds");
    app.delete(&path, json!({"leadIds": []}))
        .await
        .assert_invalid("leadIds");
}

#[tokio::test]
async fn add_members_to_an_unknown_list_is_404() {
    let app = TestApp::spawn().await;
    let p = person(&app, "Orphan").await;
    let path = format!("/api/lists/{}/leads", unknown_id());
    app.post(&path, json!({"leadIds": [p]}))
        .await
        .assert_error(404, "not_found");
    app.delete(&path, json!({"leadIds": [p]}))
        .await
        .assert_error(404, "not_found");
    app.get(&path).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn remove_members_keeps_the_leads() {
    let app = TestApp::spawn().await;
    let a = person(&app, "Rem Ove").await;
    let b = person(&app, "Sta Y").await;
    let list = app.list(json!({"name": "Shrink", "leadIds": [a, b]})).await;
    let id = list["id"].as_str().unwrap();
    let r = app
        .delete(&format!("/api/lists/{id}/leads"), json!({"leadIds": [a]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["list"]);
    assert_eq!(counts(&r.body["list"]), (1, 1, 0));
    assert_eq!(ids(&members(&app, id, "").await.body["leads"]), vec![b]);
    let lead = app.get_lead(&a).await.expect("the lead survives");
    assert!(!ids(&lead["lists"]).contains(&id.to_string()));
    assert_eq!(app.all_list_as(&app.key).await["leadCount"], 2);
}

// --- workspaces -------------------------------------------------------------------------------

#[tokio::test]
async fn lists_of_another_workspace_do_not_exist_for_it() {
    let app = TestApp::spawn().await;
    let p = person(&app, "Their Lead").await;
    let list = app
        .list(json!({"name": "Secret list", "leadIds": [p]}))
        .await;
    let all_a = app.all_list_as(&app.key).await;
    let (_, b) = app.create_user("b-admin@example.com", "admin", None).await;
    let b_person = app
        .call_as(
            &b,
            Method::POST,
            "/api/leads",
            Some(json!({"type": "person", "name": "B Lead"})),
        )
        .await
        .body["lead"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_list = app
        .call_as(
            &b,
            Method::POST,
            "/api/lists",
            Some(json!({"name": "B list"})),
        )
        .await
        .body["list"]
        .clone();
    let b_list_id = b_list["id"].as_str().unwrap();

    let b_lists = ids(&Value::Array(app.lists_as(&b).await));
    assert!(!b_lists.contains(&list["id"].as_str().unwrap().to_string()));
    assert!(!b_lists.contains(&all_a["id"].as_str().unwrap().to_string()));

    for id in [list["id"].as_str().unwrap(), all_a["id"].as_str().unwrap()] {
        let foreign = app
            .call_as(&b, Method::GET, &format!("/api/lists?id={id}"), None)
            .await;
        let unknown = app
            .call_as(
                &b,
                Method::GET,
                &format!("/api/lists?id={}", unknown_id()),
                None,
            )
            .await;
        assert_eq!(
            foreign.status, unknown.status,
            "{} vs {}",
            foreign.text, unknown.text
        );
        if foreign.status == 200 {
            assert_eq!(foreign.body["lists"], json!([]));
        } else {
            foreign.assert_error(404, "not_found");
        }
        let calls = [
            (
                Method::PATCH,
                "/api/lists".to_string(),
                Some(json!({"id": id, "description": "hacked"})),
            ),
            (
                Method::DELETE,
                "/api/lists".to_string(),
                Some(json!({"id": id})),
            ),
            (Method::GET, format!("/api/lists/{id}/leads"), None),
            (
                Method::POST,
                format!("/api/lists/{id}/leads"),
                Some(json!({"leadIds": [b_person]})),
            ),
            (
                Method::DELETE,
                format!("/api/lists/{id}/leads"),
                Some(json!({"leadIds": [p]})),
            ),
            (Method::GET, format!("/api/lists/{id}/export.csv"), None),
        ];
        for (method, path, body) in calls {
            let r = app.call_as(&b, method.clone(), &path, body).await;
            assert_eq!(
                r.status, 404,
                "{method} {path} by another workspace: {}",
                r.text
            );
            r.assert_error(404, "not_found");
        }
        let r = app
            .send_text(
                &b,
                Method::POST,
                &format!("/api/lists/{id}/import.csv"),
                "text/csv",
                "type,name\nperson,Sneaky\n",
            )
            .await;
        r.assert_error(404, "not_found");
    }
    // B cannot pull A's lead into its own list, nor into a new one.
    let r = app
        .call_as(
            &b,
            Method::POST,
            &format!("/api/lists/{b_list_id}/leads"),
            Some(json!({"leadIds": [p]})),
        )
        .await;
    r.assert_error(400, "invalid_request");
    let r = app
        .call_as(
            &b,
            Method::POST,
            "/api/lists",
            Some(json!({"name": "Grab", "leadIds": [p]})),
        )
        .await;
    r.assert_error(400, "invalid_request");
    // Nor attach a new lead to A's list.
    let r = app
        .call_as(
            &b,
            Method::POST,
            "/api/leads",
            Some(json!({"type": "person", "name": "X", "listIds": [list["id"]]})),
        )
        .await;
    r.assert_invalid("listIds");

    // A's list is untouched.
    let after = app.get_list(list["id"].as_str().unwrap()).await;
    assert_eq!(after, list);
    assert_eq!(
        ids(&members(&app, list["id"].as_str().unwrap(), "").await.body["leads"]),
        vec![p]
    );
    assert_eq!(app.all_list_as(&app.key).await["leadCount"], 1);
}

#[tokio::test]
async fn users_of_one_workspace_share_lists() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let (_, member) = app
        .create_user("mate@example.com", "member", Some(&ws))
        .await;
    let p = person(&app, "Shared").await;
    let list = app.list(json!({"name": "Team"})).await;
    let id = list["id"].as_str().unwrap();
    assert!(ids(&Value::Array(app.lists_as(&member).await)).contains(&id.to_string()));
    let r = app
        .call_as(
            &member,
            Method::POST,
            &format!("/api/lists/{id}/leads"),
            Some(json!({"leadIds": [p]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get_list(id).await["leadCount"], 1);
    let r = app
        .call_as(
            &member,
            Method::PATCH,
            "/api/lists",
            Some(json!({"id": id, "name": "Team 2"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get_list(id).await["name"], "Team 2");
    let r = app
        .call_as(
            &member,
            Method::GET,
            &format!("/api/lists/{id}/leads"),
            None,
        )
        .await;
    assert_eq!(ids(&r.body["leads"]), vec![p]);
}

#[tokio::test]
async fn list_leads_pagination_survives_removing_the_cursor_lead() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "Queue"})).await;
    let id = list["id"].as_str().unwrap();
    let mut created = Vec::new();
    for i in 0..6 {
        created.push(
            app.lead(json!({"type": "person", "name": format!("Q {i}"), "listIds": [id]}))
                .await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let first = members(&app, id, "?limit=2").await;
    let page1 = ids(&first.body["leads"]);
    let cursor = first.body["nextCursor"]
        .as_str()
        .expect("more pages")
        .to_string();
    let r = app
        .delete(&format!("/api/lists/{id}/leads"), json!({"leadIds": page1}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut seen = page1.clone();
    let mut query = format!("?limit=2&cursor={cursor}");
    loop {
        let r = members(&app, id, &query).await;
        seen.extend(ids(&r.body["leads"]));
        match r.body["nextCursor"].as_str() {
            Some(c) => query = format!("?limit=2&cursor={c}"),
            None => break,
        }
        assert!(seen.len() <= 12, "pagination does not end");
    }
    assert_eq!(
        sorted(seen),
        sorted(created),
        "every member once, though the cursor's lead left the list"
    );
}

#[tokio::test]
async fn renaming_a_list_shows_on_its_leads() {
    let app = TestApp::spawn().await;
    let p = person(&app, "Named").await;
    let list = app.list(json!({"name": "Old name", "leadIds": [p]})).await;
    let r = app
        .patch("/api/lists", json!({"id": list["id"], "name": "New name"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lead = app.get_lead(&p).await.unwrap();
    assert!(
        lead["lists"]
            .as_array()
            .unwrap()
            .contains(&json!({"id": list["id"], "name": "New name"})),
        "{lead}"
    );
}
