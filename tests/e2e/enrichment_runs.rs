//! Spec §6: starting runs (`POST /api/enrichment`), their status (`GET /api/enrichment/{id}`),
//! credits, idempotency, preview, write policies, scoping to the effective user, cancellation.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

async fn company(app: &TestApp, name: &str, domain: &str) -> String {
    app.lead(json!({"type": "company", "name": name, "domain": domain}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn person(app: &TestApp, body: Value) -> String {
    let mut body = body;
    body["type"] = json!("person");
    app.lead(body).await["id"].as_str().unwrap().to_string()
}

/// A provider that answers `{"value": {"domain": <the last path segment>}}`.
async fn echo_provider(delay: Duration) -> Provider {
    Provider::start(move |r| {
        let domain = r.path().rsplit('/').next().unwrap_or("").to_string();
        Reply::json(json!({"value": {"domain": domain}})).after(delay)
    })
    .await
}

/// `custom_http` input calling `/co/{{lead.domain}}` on `p`, result at `/value`.
fn http_input(p: &Provider) -> Value {
    json!({"url": p.url("/co/") + "{{lead.domain}}", "resultPointer": "/value"})
}

fn explicit(lead_ids: &[String]) -> Value {
    json!({"type": "explicit_leads", "leadIds": lead_ids})
}

fn set(v: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

fn lead_ids_of(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .map(|i| i["leadId"].as_str().unwrap().to_string())
        .collect()
}

/// `None` when `r` is `400 invalid_request` with a message naming `field`, else what it is.
fn invalid_naming(r: &Resp, field: &str) -> Option<String> {
    let ok = r.status == 400
        && r.body["error"]["code"] == "invalid_request"
        && r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(field));
    (!ok).then(|| format!("{} {} (should name {field:?})", r.status, r.text))
}

/// `400 invalid_request` naming `field`, or `404 not_found` (spec: "400/404 as fits").
fn assert_bad_ref(r: &Resp, field: &str) {
    assert!(r.status == 400 || r.status == 404, "{}", r.text);
    if r.status == 400 {
        r.assert_invalid(field);
    } else {
        r.assert_error(404, "not_found");
    }
}

/// The run and its items, once terminal.
async fn finish(app: &TestApp, id: &str) -> (Value, Vec<Value>) {
    let run = app.wait_run(id).await;
    let items = app.all_items(id).await;
    assert_counts_match(&run, &items);
    (run, items)
}

// --- create: response, status shape, lifecycle ------------------------------------------------

#[tokio::test]
async fn create_answers_the_documented_response_and_the_run_completes() {
    let app = TestApp::spawn().await;
    let a = company(&app, "Acme", "acme.com").await;
    let b = company(&app, "Globex", "globex.com").await;
    let c = company(&app, "Initech", "initech.com").await;
    let r = app
        .enrich(json!({"enrichmentId": "company_domain",
                       "scope": explicit(&[a.clone(), b.clone(), c.clone()])}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_create_shape(&r.body);
    assert_eq!(r.body["status"], "pending", "{}", r.text);
    assert_eq!(r.body["leadCount"], 3);
    assert_eq!(r.body["reusedExistingRun"], false);
    let obj = r.body.as_object().unwrap();
    assert_eq!(obj.len(), 6, "exactly the documented keys: {}", r.text);
    let id = r.body["runId"].as_str().unwrap().to_string();

    let (run, items) = finish(&app, &id).await;
    assert_eq!(run["id"], id.as_str());
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        run["scope"]["counts"],
        json!({"pending": 0, "running": 0, "completed": 3, "skipped": 0, "failed": 0})
    );
    assert_eq!(run["trigger"]["triggerRunId"], r.body["triggerRunId"]);
    assert_eq!(items.len(), 3);
    for (lead, domain) in [(&a, "acme.com"), (&b, "globex.com"), (&c, "initech.com")] {
        let item = items.iter().find(|i| i["leadId"] == lead.as_str()).unwrap();
        assert_eq!(item["status"], "completed", "{item}");
        assert_eq!(item["result"], json!({"domain": domain}), "{item}");
        let l = app.get_lead(lead).await.unwrap();
        assert_eq!(l["attributes"]["company_domain"], json!({"domain": domain}));
    }
}

#[tokio::test]
async fn run_status_has_every_documented_key_with_exact_values() {
    let app = TestApp::spawn_for_providers().await;
    let p = echo_provider(Duration::ZERO).await;
    let list = app
        .list(json!({"name": "Accounts", "leadType": "company"}))
        .await;
    let list_id = list["id"].as_str().unwrap();
    app.companies("st", 4, Some(list_id)).await;
    let scope = json!({"type": "list", "listId": list_id});
    let r = app
        .enrich(json!({"enrichmentId": "custom_http", "scope": scope, "input": http_input(&p)}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.body["runId"].as_str().unwrap();
    let (run, _) = finish(&app, id).await;

    assert_eq!(run["status"], "completed");
    assert_eq!(run["mode"], "persisted");
    assert_eq!(run["enrichment"]["slug"], "custom_http");
    assert_eq!(run["enrichment"]["version"], 1);
    let snapshot = &run["enrichment"]["snapshot"];
    assert_eq!(
        snapshot["slug"], "custom_http",
        "the contract at dispatch: {run}"
    );
    assert!(snapshot["inputSchema"].is_object(), "{run}");
    let catalog = app.get("/api/enrichments?id=custom_http").await;
    assert_eq!(
        run["enrichment"]["id"],
        catalog.body["enrichments"][0]["id"]
    );

    assert_eq!(run["scope"]["type"], "list");
    assert_eq!(run["scope"]["listId"], list_id);
    assert_eq!(run["scope"]["requested"], scope, "the scope as sent");
    assert_eq!(run["scope"]["resolvedCount"], 4);
    assert_eq!(
        run["output"],
        json!({"target": "lead", "attributeKey": "custom_http", "writePolicy": "overwrite",
               "persistResults": true})
    );
    assert_eq!(
        run["cost"]["preview"],
        json!({"creditAction": "custom_http", "costPerUnit": 1, "totalCredits": 4})
    );
    assert_eq!(run["cost"]["actual"]["totalCredits"], 4);
    assert_eq!(run["trigger"]["triggerRunId"], r.body["triggerRunId"]);
    assert_eq!(run["error"], Value::Null);
    let t = &run["timing"];
    assert_eq!(t["cancelledAt"], Value::Null);
    let (created, started, completed, updated) = (
        t["createdAt"].as_str().unwrap(),
        t["startedAt"]
            .as_str()
            .expect("a completed run has started"),
        t["completedAt"].as_str().unwrap(),
        t["updatedAt"].as_str().unwrap(),
    );
    assert!(
        created <= started && started <= completed && completed <= updated,
        "createdAt <= startedAt <= completedAt <= updatedAt: {t}"
    );
}

#[tokio::test]
async fn lifecycle_pending_then_running_then_completed() {
    // No worker in this process: the run stays pending.
    let mut app = TestApp::spawn_for_providers_with(|c| c.run_worker = false).await;
    let p = echo_provider(Duration::from_millis(700)).await;
    let leads = app.companies("lc", 3, None).await;
    let r = app
        .enrich(
            json!({"enrichmentId": "custom_http", "scope": explicit(&leads),
                       "input": http_input(&p)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "pending");
    let id = r.body["runId"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = app.run_status(&id).await;
    assert_eq!(run["status"], "pending", "{run}");
    assert_eq!(
        run["scope"]["counts"],
        json!({"pending": 3, "running": 0, "completed": 0, "skipped": 0, "failed": 0})
    );
    assert_eq!(run["timing"]["startedAt"], Value::Null);
    assert_eq!(run["timing"]["completedAt"], Value::Null);
    let items = app.all_items(&id).await;
    assert_eq!(items.len(), 3);
    for item in &items {
        assert_eq!(item["status"], "pending", "{item}");
        assert_eq!(item["attempts"], 0, "{item}");
        assert_eq!(item["result"], Value::Null);
        assert_eq!(item["error"], Value::Null);
        assert_eq!(
            item["metadata"]["leadSnapshot"],
            Value::Null,
            "never started"
        );
        assert_eq!(item["timing"]["startedAt"], Value::Null);
        assert_eq!(item["timing"]["completedAt"], Value::Null);
    }
    assert_eq!(p.count(), 0);

    // One worker, a slow provider: the run is seen running, then completed.
    app.restart_with(|c| {
        c.run_worker = true;
        c.engine.concurrency = 1;
    })
    .await;
    let running = app
        .wait_run_until(&id, Duration::from_secs(20), "running", |r| {
            r["status"] == "running"
        })
        .await;
    assert!(running["timing"]["startedAt"].is_string(), "{running}");
    assert_eq!(running["timing"]["completedAt"], Value::Null);
    let (run, items) = finish(&app, &id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(run["timing"]["startedAt"].as_str() <= run["timing"]["completedAt"].as_str());
    for item in &items {
        assert_eq!(item["status"], "completed", "{item}");
        let t = &item["timing"];
        assert!(
            t["createdAt"].as_str() <= t["startedAt"].as_str()
                && t["startedAt"].as_str() <= t["completedAt"].as_str(),
            "{item}"
        );
    }
    assert_eq!(p.count(), 3);
}

// --- scopes -----------------------------------------------------------------------------------

#[tokio::test]
async fn explicit_leads_without_a_list_have_no_list_or_membership() {
    let app = TestApp::spawn().await;
    let a = company(&app, "Acme", "acme.com").await;
    let b = company(&app, "Globex", "globex.com").await;
    let list = app
        .list(json!({"name": "L", "leadType": "company", "leadIds": [a, b]}))
        .await;
    let id = app
        .start_run(
            json!({"enrichmentId": "company_domain", "scope": explicit(&[a.clone(), b.clone()])}),
        )
        .await;
    let (run, items) = finish(&app, &id).await;
    assert_eq!(run["scope"]["type"], "explicit_leads");
    assert_eq!(run["scope"]["listId"], Value::Null);
    assert_eq!(lead_ids_of(&items), set([a, b]));
    for item in &items {
        assert_eq!(item["listId"], Value::Null, "{item}");
        assert_eq!(item["membershipId"], Value::Null, "{item}");
    }
    let _ = list;
}

/// The membership ids of a list's members, by lead id.
async fn memberships(app: &TestApp, list_id: &str) -> Vec<(String, String)> {
    let r = app
        .get(&format!("/api/lists/{list_id}/leads?limit=500"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_string(),
                l["membership"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_membership_items(items: &[Value], list_id: &str, members: &[(String, String)]) {
    for item in items {
        assert_eq!(item["listId"], list_id, "{item}");
        let (_, m) = members
            .iter()
            .find(|(l, _)| item["leadId"] == l.as_str())
            .unwrap_or_else(|| panic!("item of a non-member: {item}"));
        assert_eq!(item["membershipId"], m.as_str(), "{item}");
    }
}

#[tokio::test]
async fn explicit_leads_with_a_list_carry_the_list_and_membership() {
    let app = TestApp::spawn().await;
    let a = company(&app, "Acme", "acme.com").await;
    let b = company(&app, "Globex", "globex.com").await;
    let c = company(&app, "Initech", "initech.com").await;
    let list = app
        .list(json!({"name": "L", "leadType": "company", "leadIds": [a, b, c]}))
        .await;
    let list_id = list["id"].as_str().unwrap();
    let id = app
        .start_run(json!({"enrichmentId": "company_domain",
                          "scope": {"type": "explicit_leads", "leadIds": [a, b], "listId": list_id}}))
        .await;
    let (run, items) = finish(&app, &id).await;
    assert_eq!(run["scope"]["listId"], list_id);
    assert_eq!(run["scope"]["resolvedCount"], 2, "only the named leads");
    assert_eq!(lead_ids_of(&items), set([a, b]));
    assert_membership_items(&items, list_id, &memberships(&app, list_id).await);
}

/// Assumption: naming a lead that is not a member of the scope's `listId` is a `400`: it has no
/// membership to carry or write to.
#[tokio::test]
async fn explicit_leads_with_a_list_refuse_a_non_member() {
    let app = TestApp::spawn().await;
    let a = company(&app, "Acme", "acme.com").await;
    let outsider = company(&app, "Globex", "globex.com").await;
    let list = app
        .list(json!({"name": "L", "leadType": "company", "leadIds": [a]}))
        .await;
    let before = app.balance().await;
    let r = app
        .enrich(
            json!({"enrichmentId": "company_domain", "idempotencyKey": "nm",
                       "scope": {"type": "explicit_leads", "leadIds": [a, outsider],
                                 "listId": list["id"]}}),
        )
        .await;
    r.assert_invalid("leadIds");
    assert_eq!(app.balance().await, before);
    assert_nothing_created_under(&app, "nm", &a).await;
}

#[tokio::test]
async fn list_scope_takes_the_members_at_planning_time() {
    let app = TestApp::spawn_with(|c| c.run_worker = false).await;
    let list = app.list(json!({"name": "L", "leadType": "company"})).await;
    let list_id = list["id"].as_str().unwrap();
    let members = app.companies("pl", 3, Some(list_id)).await;
    let r = app
        .enrich(json!({"enrichmentId": "company_domain",
                       "scope": {"type": "list", "listId": list_id}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["leadCount"], 3);
    let id = r.body["runId"].as_str().unwrap().to_string();
    // A member added after planning is not part of the run.
    app.companies("late", 1, Some(list_id)).await;
    let run = app.run_status(&id).await;
    assert_eq!(run["scope"]["resolvedCount"], 3);
    let items = app.all_items(&id).await;
    assert_eq!(lead_ids_of(&items), set(members));
    assert_membership_items(&items, list_id, &memberships(&app, list_id).await);
}

#[tokio::test]
async fn filtered_list_applies_every_op_on_every_field() {
    let app = TestApp::spawn().await;
    let list = app
        .list(json!({"name": "Mixed", "leadType": "mixed"}))
        .await;
    let list_id = list["id"].as_str().unwrap().to_string();
    let ann = person(
        &app,
        json!({"name": "Ann Lee", "title": "CEO", "company": {"name": "Acme", "domain": "acme.com"},
               "contacts": [{"type": "email", "value": "ann@acme.com"}],
               "industry": "Software", "location": "Berlin, Germany",
               "attributes": {"tier": "gold", "score": 5}, "listIds": [list_id]}),
    )
    .await;
    let bob = person(
        &app,
        json!({"name": "Bob Stone", "title": "CTO", "company": {"name": "Globex"},
               "contacts": [{"type": "email", "value": "bob@globex.com"}],
               "industry": "Hardware", "location": "Paris, France",
               "attributes": {"tier": "silver"}, "listIds": [list_id]}),
    )
    .await;
    let cara = person(
        &app,
        json!({"name": "Cara Moss", "title": "Head of Sales", "listIds": [list_id]}),
    )
    .await;
    let ini = app
        .lead(
            json!({"type": "company", "name": "Initech", "domain": "initech.com",
                     "industry": "Software", "listIds": [list_id]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Matches many filters but is not in the list.
    person(
        &app,
        json!({"name": "Ann Lee", "title": "CEO", "industry": "Software",
               "attributes": {"tier": "gold", "score": 5}}),
    )
    .await;
    let members = memberships(&app, &list_id).await;

    let cases: Vec<(Value, Vec<&String>)> = vec![
        (
            json!([{"field": "type", "op": "eq", "value": "company"}]),
            vec![&ini],
        ),
        (
            json!([{"field": "type", "op": "neq", "value": "company"}]),
            vec![&ann, &bob, &cara],
        ),
        (
            json!([{"field": "name", "op": "eq", "value": "Ann Lee"}]),
            vec![&ann],
        ),
        (
            json!([{"field": "name", "op": "neq", "value": "Ann Lee"}]),
            vec![&bob, &cara, &ini],
        ),
        (
            json!([{"field": "name", "op": "contains", "value": "Sto"}]),
            vec![&bob],
        ),
        (
            json!([{"field": "title", "op": "eq", "value": "CTO"}]),
            vec![&bob],
        ),
        (
            json!([{"field": "title", "op": "contains", "value": "Sales"}]),
            vec![&cara],
        ),
        (
            json!([{"field": "title", "op": "exists"}]),
            vec![&ann, &bob, &cara],
        ),
        (json!([{"field": "title", "op": "not_exists"}]), vec![&ini]),
        (
            json!([{"field": "company", "op": "contains", "value": "Glob"}]),
            vec![&bob],
        ),
        (
            json!([{"field": "domain", "op": "eq", "value": "initech.com"}]),
            vec![&ini],
        ),
        (
            json!([{"field": "email", "op": "eq", "value": "bob@globex.com"}]),
            vec![&bob],
        ),
        (
            json!([{"field": "email", "op": "exists"}]),
            vec![&ann, &bob],
        ),
        (
            json!([{"field": "email", "op": "not_exists"}]),
            vec![&cara, &ini],
        ),
        (
            json!([{"field": "industry", "op": "eq", "value": "Software"}]),
            vec![&ann, &ini],
        ),
        (
            json!([{"field": "location", "op": "contains", "value": "Berlin"}]),
            vec![&ann],
        ),
        (
            json!([{"field": "attributes.tier", "op": "eq", "value": "gold"}]),
            vec![&ann],
        ),
        (
            json!([{"field": "attributes.tier", "op": "exists"}]),
            vec![&ann, &bob],
        ),
        (
            json!([{"field": "attributes.tier", "op": "not_exists"}]),
            vec![&cara, &ini],
        ),
        (
            json!([{"field": "attributes.score", "op": "eq", "value": 5}]),
            vec![&ann],
        ),
        (
            json!([{"field": "industry", "op": "eq", "value": "Software"},
                   {"field": "type", "op": "eq", "value": "person"}]),
            vec![&ann],
        ),
        (
            json!([{"field": "name", "op": "eq", "value": "Nobody"}]),
            vec![],
        ),
    ];
    let names: Vec<(&String, &str)> = vec![
        (&ann, "ann"),
        (&bob, "bob"),
        (&cara, "cara"),
        (&ini, "initech"),
    ];
    let name_of = |ids: &BTreeSet<String>| -> Vec<&str> {
        names
            .iter()
            .filter(|(id, _)| ids.contains(id.as_str()))
            .map(|(_, n)| *n)
            .collect()
    };
    let mut wrong = Vec::new();
    for (filter, expected) in cases {
        let scope =
            json!({"type": "filtered_list", "listId": list_id, "filter": {"where": filter}});
        let r = app
            .enrich(json!({"enrichmentId": "company_domain", "scope": scope}))
            .await;
        if r.status != 200 {
            wrong.push(format!("filter {filter}\n    -> {} {}", r.status, r.text));
            continue;
        }
        let id = r.body["runId"].as_str().unwrap();
        let (run, items) = finish(&app, id).await;
        assert_eq!(run["scope"]["type"], "filtered_list");
        assert_eq!(run["scope"]["listId"], list_id.as_str());
        assert_membership_items(&items, &list_id, &members);
        let expected = set(expected.into_iter().cloned());
        let got = lead_ids_of(&items);
        if got != expected || r.body["leadCount"] != expected.len() {
            wrong.push(format!(
                "filter {filter}\n    -> expected {:?}, got {:?} (leadCount {})",
                name_of(&expected),
                name_of(&got),
                r.body["leadCount"]
            ));
        }
        if run["scope"]["requested"] != scope {
            wrong.push(format!(
                "filter {filter}\n    -> scope.requested is not the scope as sent: {}",
                run["scope"]["requested"]
            ));
        }
    }
    assert!(wrong.is_empty(), "filtered_list:\n{}", wrong.join("\n"));

    // `limit` caps the resolved scope.
    let scope = json!({"type": "filtered_list", "listId": list_id,
                       "filter": {"where": [{"field": "type", "op": "eq", "value": "person"}],
                                  "limit": 2}});
    let id = app
        .start_run(json!({"enrichmentId": "company_domain", "scope": scope}))
        .await;
    let (run, items) = finish(&app, &id).await;
    assert_eq!(run["scope"]["resolvedCount"], 2);
    let got = lead_ids_of(&items);
    assert!(
        got.is_subset(&set([ann.clone(), bob.clone(), cara.clone()])),
        "{got:?}"
    );
}

#[tokio::test]
async fn filtered_list_rejects_unknown_fields_ops_and_bad_filters() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "L", "leadType": "company"})).await;
    let list_id = list["id"].as_str().unwrap();
    let any = app.companies("fl", 1, Some(list_id)).await;
    let bad = [
        (
            json!({"where": [{"field": "shoe_size", "op": "eq", "value": 1}]}),
            "field",
        ),
        (
            json!({"where": [{"field": "attributes.", "op": "exists"}]}),
            "field",
        ),
        (
            json!({"where": [{"field": "name", "op": "gt", "value": "a"}]}),
            "op",
        ),
        (json!({"where": [{"field": "name", "op": "eq"}]}), "value"),
        (json!({"where": "name = a"}), "where"),
        (json!({"where": [], "limit": 0}), "limit"),
        (json!({"where": [], "limit": "ten"}), "limit"),
    ];
    let mut wrong = Vec::new();
    for (filter, field) in bad {
        let r = app
            .enrich(
                json!({"enrichmentId": "company_domain", "idempotencyKey": "bad-filter",
                           "scope": {"type": "filtered_list", "listId": list_id,
                                     "filter": filter}}),
            )
            .await;
        if let Some(why) = invalid_naming(&r, field) {
            wrong.push(format!("filter {filter}\n    -> {why}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "expected 400 invalid_request naming the field:\n{}",
        wrong.join("\n")
    );
    assert_nothing_created_under(&app, "bad-filter", &any[0]).await;
}

#[tokio::test]
async fn a_lead_named_twice_is_one_item() {
    let app = TestApp::spawn().await;
    let a = company(&app, "Acme", "acme.com").await;
    let b = company(&app, "Globex", "globex.com").await;
    let r = app
        .enrich(json!({"enrichmentId": "company_domain",
                       "scope": explicit(&[a.clone(), b.clone(), a.clone(), a.clone()])}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["leadCount"], 2);
    let (run, items) = finish(&app, r.body["runId"].as_str().unwrap()).await;
    assert_eq!(run["scope"]["resolvedCount"], 2);
    assert_eq!(items.len(), 2);
    assert_eq!(lead_ids_of(&items), set([a, b]));
}

#[tokio::test]
async fn an_empty_scope_completes_at_once() {
    let app = TestApp::spawn_for_providers().await;
    let p = echo_provider(Duration::ZERO).await;
    let list = app
        .list(json!({"name": "Empty", "leadType": "company"}))
        .await;
    let before = app.balance().await;
    let r = app
        .enrich(
            json!({"enrichmentId": "custom_http", "input": http_input(&p),
                       "scope": {"type": "list", "listId": list["id"]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_create_shape(&r.body);
    assert_eq!(r.body["status"], "completed");
    assert_eq!(r.body["leadCount"], 0);
    let id = r.body["runId"].as_str().unwrap();
    let run = app.run_status(id).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["scope"]["resolvedCount"], 0);
    assert!(run["timing"]["completedAt"].is_string(), "{run}");
    assert_eq!(run["cost"]["actual"]["totalCredits"], 0);
    let page = app.items_page(id, "").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_items_page(&page.body, 50);
    assert_eq!(page.body["items"], json!([]));
    assert_eq!(page.body["page"]["hasMore"], false);
    assert_eq!(app.balance().await, before);

    // A filter that matches nothing in a non-empty list, too.
    app.companies("ef", 2, Some(list["id"].as_str().unwrap()))
        .await;
    let r = app
        .enrich(json!({"enrichmentId": "company_domain",
                       "scope": {"type": "filtered_list", "listId": list["id"],
                                 "filter": {"where": [{"field": "type", "op": "eq",
                                                       "value": "person"}]}}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "completed");
    assert_eq!(r.body["leadCount"], 0);
    assert_eq!(p.count(), 0);
}

// --- refused requests create nothing ----------------------------------------------------------

/// Nothing was created under the idempotency key `key` by the refused requests before: a valid
/// request with that key now starts a new run.
async fn assert_nothing_created_under(app: &TestApp, key: &str, lead: &str) {
    let r = app
        .enrich(
            json!({"enrichmentId": "company_domain", "idempotencyKey": key,
                       "scope": {"type": "explicit_leads", "leadIds": [lead]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["reusedExistingRun"], false,
        "a refused request created no run under its idempotency key: {}",
        r.text
    );
}

#[tokio::test]
async fn invalid_requests_are_400_and_create_and_charge_nothing() {
    let app = TestApp::spawn_for_providers().await;
    let p = echo_provider(Duration::ZERO).await;
    let a = company(&app, "Acme", "acme.com").await;
    let scope = explicit(std::slice::from_ref(&a));
    let good = json!({"enrichmentId": "custom_http", "scope": scope, "input": http_input(&p),
                      "idempotencyKey": "refused"});
    let with = |patch: Value| {
        let mut b = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let without = |key: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(key);
        b
    };
    let ledger_before = app.ledger().await.len();
    let balance_before = app.balance().await;
    let cases: Vec<(Value, &str)> = vec![
        (without("enrichmentId"), "enrichmentId"),
        (with(json!({"enrichmentId": 5})), "enrichmentId"),
        (without("scope"), "scope"),
        (with(json!({"scope": "everything"})), "scope"),
        (with(json!({"scope": {"type": "everyone"}})), "type"),
        (
            with(json!({"scope": {"type": "explicit_leads"}})),
            "leadIds",
        ),
        (
            with(json!({"scope": {"type": "explicit_leads", "leadIds": a}})),
            "leadIds",
        ),
        (with(json!({"scope": {"type": "list"}})), "listId"),
        (with(json!({"mode": "fast"})), "mode"),
        (with(json!({"input": "url"})), "input"),
        (with(json!({"input": {"resultPointer": "/value"}})), "url"),
        (with(json!({"input": {"url": 42}})), "url"),
        (
            with(json!({"input": {"url": p.url("/x"), "timeoutMs": 120001}})),
            "timeoutMs",
        ),
        (with(json!({"output": "lead"})), "output"),
        (with(json!({"output": {"target": "nowhere"}})), "target"),
        (with(json!({"writePolicy": "sometimes"})), "writePolicy"),
        (
            with(json!({"output": {"writePolicy": "sometimes"}})),
            "writePolicy",
        ),
        (
            with(json!({"writePolicy": "overwrite", "output": {"writePolicy": "fill_empty"}})),
            "writePolicy",
        ),
        (with(json!({"idempotencyKey": 7})), "idempotencyKey"),
        (with(json!({"displayRequest": "col"})), "displayRequest"),
    ];
    let mut wrong = Vec::new();
    for (body, field) in cases {
        let r = app.enrich(body.clone()).await;
        if let Some(why) = invalid_naming(&r, field) {
            wrong.push(format!("{body}\n    -> {why}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "expected 400 invalid_request naming the field:\n{}",
        wrong.join("\n")
    );
    // Not JSON at all.
    let r = app
        .send_text(
            &app.key,
            Method::POST,
            "/api/enrichment",
            "application/json",
            "{\"enrichmentId\": ",
        )
        .await;
    r.assert_error(400, "invalid_request");

    assert_eq!(p.count(), 0, "no provider call");
    assert_eq!(app.balance().await, balance_before, "nothing charged");
    assert_eq!(app.ledger().await.len(), ledger_before, "no ledger entry");
    assert!(
        app.get_lead(&a).await.unwrap()["attributes"]
            .as_object()
            .unwrap()
            .is_empty(),
        "nothing written"
    );
    assert_nothing_created_under(&app, "refused", &a).await;
}

#[tokio::test]
async fn unknown_references_are_refused_and_create_nothing() {
    let app = TestApp::spawn().await;
    let a = company(&app, "Acme", "acme.com").await;
    let (_, other) = app.create_user("other@example.com", "admin", None).await;
    let foreign_lead = app
        .call_as(
            &other,
            Method::POST,
            "/api/leads",
            Some(json!({"type": "company", "name": "Theirs", "domain": "theirs.com"})),
        )
        .await
        .body["lead"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let foreign_list = app
        .call_as(
            &other,
            Method::POST,
            "/api/lists",
            Some(json!({"name": "Theirs"})),
        )
        .await
        .body["list"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let balance = app.balance().await;
    let cases = [
        (
            json!({"enrichmentId": "no_such_enrichment", "scope": explicit(std::slice::from_ref(&a))}),
            "enrichmentId",
        ),
        (
            json!({"enrichmentId": "company_domain", "scope": explicit(&[a.clone(), unknown_id()])}),
            "leadIds",
        ),
        (
            json!({"enrichmentId": "company_domain", "scope": explicit(&[a.clone(), foreign_lead])}),
            "leadIds",
        ),
        (
            json!({"enrichmentId": "company_domain", "scope": explicit(&["not-an-id".to_string()])}),
            "leadIds",
        ),
        (
            json!({"enrichmentId": "company_domain", "scope": {"type": "list", "listId": unknown_id()}}),
            "listId",
        ),
        (
            json!({"enrichmentId": "company_domain", "scope": {"type": "list", "listId": foreign_list}}),
            "listId",
        ),
        (
            json!({"enrichmentId": "company_domain",
                   "scope": {"type": "filtered_list", "listId": unknown_id(), "filter": {"where": []}}}),
            "listId",
        ),
        (
            json!({"enrichmentId": "company_domain",
                   "scope": {"type": "explicit_leads", "leadIds": [a], "listId": unknown_id()}}),
            "listId",
        ),
    ];
    for (mut body, field) in cases {
        body["idempotencyKey"] = json!("unknown-refs");
        let r = app.enrich(body.clone()).await;
        assert_bad_ref(&r, field);
    }
    assert_eq!(app.balance().await, balance);
    assert_nothing_created_under(&app, "unknown-refs", &a).await;
}

#[tokio::test]
async fn a_disabled_enrichment_is_refused() {
    let app = TestApp::spawn().await;
    let p = person(
        &app,
        json!({"name": "Ann Lee", "company": {"name": "Acme", "domain": "acme.com"}}),
    )
    .await;
    for slug in ["work_email", "custom_ai"] {
        let r = app
            .enrich(json!({"enrichmentId": slug, "idempotencyKey": "disabled",
                           "input": {"prompt": "hi"},
                           "scope": explicit(std::slice::from_ref(&p))}))
            .await;
        r.assert_invalid("enrichmentId");
    }
    assert_nothing_created_under(&app, "disabled", &p).await;
}

/// Output overrides the catalog's `outputOverridePolicy` forbids are refused; allowed ones take
/// effect.
#[tokio::test]
async fn output_overrides_follow_the_override_policy() {
    let app = TestApp::spawn().await;
    let a = company(&app, "Acme", "acme.com").await;
    let list = app
        .list(json!({"name": "L", "leadType": "company", "leadIds": [a]}))
        .await;
    let list_id = list["id"].as_str().unwrap();
    let r = app.get("/api/enrichments").await;
    let catalog = r.body["enrichments"].as_array().unwrap().clone();
    let mut exercised = 0;
    for e in catalog.iter().filter(|e| e["enabled"] == true) {
        let slug = e["slug"].as_str().unwrap();
        let policy = &e["outputOverridePolicy"];
        let default_target = e["defaultOutput"]["target"].as_str().unwrap();
        let other_target = if default_target == "lead" {
            "membership"
        } else {
            "lead"
        };
        let scope = json!({"type": "explicit_leads", "leadIds": [a], "listId": list_id});
        let input = if slug == "custom_http" {
            json!({"url": "http://127.0.0.1:9/{{lead.domain}}"})
        } else {
            json!({})
        };
        if policy["allowTarget"] == false {
            let r = app
                .enrich(json!({"enrichmentId": slug, "scope": scope, "input": input,
                               "idempotencyKey": "forbidden", "output": {"target": other_target}}))
                .await;
            r.assert_invalid("target");
            exercised += 1;
        }
        if policy["allowAttributeKey"] == false {
            let r = app
                .enrich(json!({"enrichmentId": slug, "scope": scope, "input": input,
                               "idempotencyKey": "forbidden", "output": {"attributeKey": "elsewhere"}}))
                .await;
            r.assert_invalid("attributeKey");
            exercised += 1;
        }
        // Restating the defaults is never an override.
        let r = app
            .enrich(json!({"enrichmentId": slug, "scope": scope, "input": input,
                           "output": e["defaultOutput"].clone()}))
            .await;
        assert_eq!(r.status, 200, "{slug} with its default output: {}", r.text);
    }
    if exercised == 0 {
        eprintln!("no enabled enrichment forbids an output override: nothing to refuse");
    }
    assert_nothing_created_under(&app, "forbidden", &a).await;
}

/// Assumption: `custom_http` lets the caller choose the attribute key (several custom calls
/// would otherwise overwrite each other).
#[tokio::test]
async fn custom_http_writes_under_the_requested_attribute_key() {
    let app = TestApp::spawn_for_providers().await;
    let p = echo_provider(Duration::ZERO).await;
    let a = company(&app, "Acme", "acme.com").await;
    let id = app
        .start_run(
            json!({"enrichmentId": "custom_http", "input": http_input(&p),
                          "scope": explicit(std::slice::from_ref(&a)),
                          "output": {"attributeKey": "hq_domain"}}),
        )
        .await;
    let (run, items) = finish(&app, &id).await;
    assert_eq!(run["output"]["attributeKey"], "hq_domain");
    assert_eq!(items[0]["status"], "completed", "{}", items[0]);
    let lead = app.get_lead(&a).await.unwrap();
    assert_eq!(
        lead["attributes"]["hq_domain"],
        json!({"domain": "acme.com"})
    );
    assert!(
        lead["attributes"].get("custom_http").is_none(),
        "nothing under the default key: {lead}"
    );
    // An empty attribute key is refused.
    let r = app
        .enrich(
            json!({"enrichmentId": "custom_http", "input": http_input(&p),
                       "scope": explicit(std::slice::from_ref(&a)),
                       "output": {"attributeKey": ""}}),
        )
        .await;
    r.assert_invalid("attributeKey");
}

#[tokio::test]
async fn membership_target_writes_to_the_membership() {
    let app = TestApp::spawn().await;
    let a = company(&app, "Acme", "acme.com").await;
    let list = app
        .list(json!({"name": "L", "leadType": "company", "leadIds": [a]}))
        .await;
    let list_id = list["id"].as_str().unwrap();
    let e = app.get("/api/enrichments?id=company_domain").await.body["enrichments"][0].clone();
    let body = json!({"enrichmentId": "company_domain", "output": {"target": "membership"},
                      "scope": {"type": "list", "listId": list_id}});
    if e["outputOverridePolicy"]["allowTarget"] == false {
        app.enrich(body).await.assert_invalid("target");
        return;
    }
    let id = app.start_run(body).await;
    let (run, items) = finish(&app, &id).await;
    assert_eq!(run["output"]["target"], "membership");
    assert_eq!(items[0]["status"], "completed", "{}", items[0]);
    let r = app.get(&format!("/api/lists/{list_id}/leads")).await;
    let member = &r.body["leads"][0];
    assert_eq!(
        member["membership"]["attributes"]["company_domain"],
        json!({"domain": "acme.com"}),
        "{member}"
    );
    let lead = app.get_lead(&a).await.unwrap();
    assert!(
        lead["attributes"].get("company_domain").is_none(),
        "not written to the lead: {lead}"
    );
    // Assumption: a membership target needs a list in the scope.
    app.enrich(
        json!({"enrichmentId": "company_domain", "output": {"target": "membership"},
                      "scope": explicit(std::slice::from_ref(&a))}),
    )
    .await
    .assert_invalid("target");
}

// --- credits ----------------------------------------------------------------------------------

#[tokio::test]
async fn custom_http_costs_one_credit_per_lead_charged_once() {
    let app = TestApp::spawn_for_providers().await;
    let p = echo_provider(Duration::ZERO).await;
    let leads = app.companies("cr", 5, None).await;
    assert_eq!(app.balance().await, 1000);
    let id = app
        .start_run(
            json!({"enrichmentId": "custom_http", "input": http_input(&p),
                          "scope": explicit(&leads)}),
        )
        .await;
    assert_eq!(app.balance().await, 995, "charged at dispatch");
    let (run, _) = finish(&app, &id).await;
    assert_eq!(run["cost"]["actual"]["totalCredits"], 5);
    assert_eq!(app.balance().await, 995, "charged once");
    let ledger = app.ledger().await;
    let entries: Vec<&Value> = ledger
        .iter()
        .filter(|e| e["runId"] == id.as_str())
        .collect();
    assert_eq!(entries.len(), 1, "one ledger entry for the run: {ledger:?}");
    assert_eq!(entries[0]["amount"], -5);
    assert!(entries[0]["reason"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(ledger[0]["runId"], id.as_str(), "newest first");
}

#[tokio::test]
async fn builtins_are_free() {
    let app = TestApp::spawn().await;
    let leads = app.companies("fr", 5, None).await;
    app.grant(-1000).await;
    assert_eq!(app.balance().await, 0);
    let id = app
        .start_run(json!({"enrichmentId": "company_domain", "scope": explicit(&leads)}))
        .await;
    let (run, _) = finish(&app, &id).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["cost"]["preview"]["costPerUnit"], 0);
    assert_eq!(run["cost"]["preview"]["totalCredits"], 0);
    assert_eq!(app.balance().await, 0);
}

#[tokio::test]
async fn a_short_balance_is_402_and_creates_nothing() {
    let app = TestApp::spawn_for_providers().await;
    let p = echo_provider(Duration::ZERO).await;
    let leads = app.companies("sb", 3, None).await;
    app.grant(-998).await;
    let ledger_before = app.ledger().await.len();
    let r = app
        .enrich(
            json!({"enrichmentId": "custom_http", "input": http_input(&p),
                       "scope": explicit(&leads), "idempotencyKey": "short"}),
        )
        .await;
    r.assert_error(402, "insufficient_credits");
    assert_eq!(r.body["required"], 3, "{}", r.text);
    assert_eq!(r.body["balance"], 2, "{}", r.text);
    assert_eq!(app.balance().await, 2);
    assert_eq!(app.ledger().await.len(), ledger_before);
    assert_eq!(p.count(), 0);
    assert_nothing_created_under(&app, "short", &leads[0]).await;
    // Exactly enough is enough.
    let id = app
        .start_run(
            json!({"enrichmentId": "custom_http", "input": http_input(&p),
                          "scope": explicit(&leads[..2])}),
        )
        .await;
    assert_eq!(app.balance().await, 0);
    finish(&app, &id).await;
}

// --- idempotency ------------------------------------------------------------------------------

#[tokio::test]
async fn an_idempotency_key_returns_the_first_run() {
    let app = TestApp::spawn_for_providers().await;
    let p = echo_provider(Duration::ZERO).await;
    let leads = app.companies("ik", 4, None).await;
    let first = app
        .enrich(
            json!({"enrichmentId": "custom_http", "input": http_input(&p),
                       "scope": explicit(&leads[..3]), "idempotencyKey": "import-42"}),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["reusedExistingRun"], false);
    let id = first.body["runId"].as_str().unwrap().to_string();
    assert_eq!(app.balance().await, 997);
    // Same key, another body: the first run, nothing charged.
    for body in [
        json!({"enrichmentId": "custom_http", "input": http_input(&p),
               "scope": explicit(&leads[..3]), "idempotencyKey": "import-42"}),
        json!({"enrichmentId": "company_domain", "scope": explicit(&leads),
               "idempotencyKey": "import-42"}),
    ] {
        let again = app.enrich(body).await;
        assert_eq!(again.status, 200, "{}", again.text);
        assert_create_shape(&again.body);
        assert_eq!(again.body["reusedExistingRun"], true, "{}", again.text);
        assert_eq!(again.body["runId"], id.as_str());
        assert_eq!(again.body["enrichmentRunId"], id.as_str());
        assert_eq!(again.body["leadCount"], 3);
        assert_eq!(again.body["triggerRunId"], first.body["triggerRunId"]);
    }
    let (run, items) = finish(&app, &id).await;
    assert_eq!(run["enrichment"]["slug"], "custom_http");
    assert_eq!(items.len(), 3);
    assert_eq!(app.balance().await, 997, "charged once");
    assert_eq!(p.count(), 3);
    // After completion the key still answers with the run.
    let again = app
        .enrich(
            json!({"enrichmentId": "company_domain", "scope": explicit(&leads),
                       "idempotencyKey": "import-42"}),
        )
        .await;
    assert_eq!(again.body["runId"], id.as_str(), "{}", again.text);
    assert_eq!(again.body["reusedExistingRun"], true);
    // Another key is another run.
    let other = app
        .enrich(
            json!({"enrichmentId": "company_domain", "scope": explicit(&leads),
                       "idempotencyKey": "import-43"}),
        )
        .await;
    assert_eq!(other.body["reusedExistingRun"], false, "{}", other.text);
    assert_ne!(other.body["runId"], id.as_str());
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_the_effective_user() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let (_, member) = app.create_user("m@example.com", "member", Some(&ws)).await;
    let a = company(&app, "Acme", "acme.com").await;
    let body = json!({"enrichmentId": "company_domain", "scope": explicit(std::slice::from_ref(&a)),
                      "idempotencyKey": "shared-key"});
    let mine = app.enrich(body.clone()).await;
    let theirs = app.enrich_as(&member, body).await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert_eq!(theirs.status, 200, "{}", theirs.text);
    assert_eq!(theirs.body["reusedExistingRun"], false, "{}", theirs.text);
    assert_ne!(mine.body["runId"], theirs.body["runId"]);
}

#[tokio::test]
async fn concurrent_identical_requests_make_exactly_one_run() {
    let app = TestApp::spawn_for_providers().await;
    let p = echo_provider(Duration::ZERO).await;
    let leads = app.companies("cc", 5, None).await;
    let body = json!({"enrichmentId": "custom_http", "input": http_input(&p),
                      "scope": explicit(&leads), "idempotencyKey": "burst"});
    let calls = (0..8).map(|_| app.enrich(body.clone()));
    let answers = futures::future::join_all(calls).await;
    let mut run_ids = BTreeSet::new();
    let mut fresh = 0;
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text);
        assert_create_shape(&r.body);
        assert_eq!(r.body["leadCount"], 5);
        run_ids.insert(r.body["runId"].as_str().unwrap().to_string());
        if r.body["reusedExistingRun"] == false {
            fresh += 1;
        }
    }
    assert_eq!(run_ids.len(), 1, "one run: {run_ids:?}");
    assert_eq!(fresh, 1, "exactly one request created it");
    assert_eq!(app.balance().await, 995, "charged once");
    let id = run_ids.into_iter().next().unwrap();
    let ledger = app.ledger().await;
    assert_eq!(
        ledger.iter().filter(|e| e["runId"] == id.as_str()).count(),
        1
    );
    let (_, items) = finish(&app, &id).await;
    assert_eq!(items.len(), 5);
    assert_eq!(p.count(), 5, "each lead called once");
}

// --- preview ----------------------------------------------------------------------------------

#[tokio::test]
async fn preview_runs_at_most_ten_items_and_writes_nothing() {
    let app = TestApp::spawn_for_providers().await;
    let p = echo_provider(Duration::ZERO).await;
    let list = app.list(json!({"name": "L", "leadType": "company"})).await;
    let list_id = list["id"].as_str().unwrap();
    let leads = app.companies("pv", 12, Some(list_id)).await;
    for (slug, input) in [
        ("company_domain", json!({})),
        ("custom_http", http_input(&p)),
    ] {
        let before = app.balance().await;
        let r = app
            .enrich(
                json!({"enrichmentId": slug, "mode": "preview", "input": input,
                           "scope": {"type": "list", "listId": list_id}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["leadCount"], 10, "{}", r.text);
        let id = r.body["runId"].as_str().unwrap();
        let (run, items) = finish(&app, id).await;
        assert_eq!(run["mode"], "preview");
        assert_eq!(run["output"]["persistResults"], false);
        assert_eq!(run["scope"]["resolvedCount"], 10);
        assert_eq!(run["cost"]["actual"]["totalCredits"], 0, "preview is free");
        assert_eq!(app.balance().await, before, "preview is free");
        assert_eq!(items.len(), 10);
        assert!(lead_ids_of(&items).is_subset(&set(leads.clone())));
        for item in &items {
            assert_eq!(item["status"], "completed", "{item}");
            assert!(item["result"]["domain"].is_string(), "a result: {item}");
        }
    }
    assert_eq!(p.count(), 10);
    for lead in app.all_leads_as(&app.key).await {
        assert!(
            lead["attributes"].as_object().unwrap().is_empty(),
            "preview writes nothing: {lead}"
        );
    }
    // Preview works with a short balance.
    app.grant(-app.balance().await).await;
    let r = app
        .enrich(
            json!({"enrichmentId": "custom_http", "mode": "preview", "input": http_input(&p),
                       "scope": explicit(&leads[..3])}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["leadCount"], 3);
}

// --- write policy -----------------------------------------------------------------------------

#[tokio::test]
async fn fill_empty_skips_leads_that_have_a_value_without_calling_the_provider() {
    let app = TestApp::spawn_for_providers().await;
    let p = echo_provider(Duration::ZERO).await;
    let leads = app.companies("fe", 3, None).await;
    let r = app
        .patch(
            "/api/leads",
            json!({"id": leads[0], "attributes": {"custom_http": "kept"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for (n, policy) in [
        json!({"writePolicy": "fill_empty"}),
        json!({"output": {"writePolicy": "fill_empty"}}),
        json!({"writePolicy": "fill_empty", "output": {"writePolicy": "fill_empty"}}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"enrichmentId": "custom_http", "input": http_input(&p),
                              "scope": explicit(&leads)});
        for (k, v) in policy.as_object().unwrap() {
            body[k] = v.clone();
        }
        let calls_before = p.count();
        let id = app.start_run(body).await;
        let (run, items) = finish(&app, &id).await;
        assert_eq!(run["output"]["writePolicy"], "fill_empty", "{run}");
        let kept = items
            .iter()
            .find(|i| i["leadId"] == leads[0].as_str())
            .unwrap();
        assert_eq!(kept["status"], "skipped", "{kept}");
        assert_eq!(kept["skippedReason"], "already_has_value");
        assert_eq!(kept["attempts"], 0);
        assert_eq!(
            p.requests_to("/co/fe0.example").len(),
            0,
            "the provider is not called for a lead that has a value"
        );
        assert_eq!(
            app.get_lead(&leads[0]).await.unwrap()["attributes"]["custom_http"],
            "kept"
        );
        if n == 0 {
            // The first run filled the others; later runs skip them too.
            assert_eq!(p.count() - calls_before, 2);
            assert_eq!(run["scope"]["counts"]["completed"], 2);
        } else {
            assert_eq!(p.count(), calls_before, "every lead has a value now");
            assert_eq!(run["scope"]["counts"]["skipped"], 3);
        }
    }
    // The default overwrites.
    let id = app
        .start_run(
            json!({"enrichmentId": "custom_http", "input": http_input(&p),
                          "scope": explicit(&leads)}),
        )
        .await;
    let (run, _) = finish(&app, &id).await;
    assert_eq!(run["output"]["writePolicy"], "overwrite");
    assert_eq!(run["scope"]["counts"]["completed"], 3);
    assert_eq!(
        app.get_lead(&leads[0]).await.unwrap()["attributes"]["custom_http"],
        json!({"domain": "fe0.example"})
    );
}

// --- who sees a run ---------------------------------------------------------------------------

async fn get_as(app: &TestApp, key: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    app.call_with_headers(key, Method::GET, path, None, headers)
        .await
}

/// The run's status, items and cancel are all 404 for this caller.
async fn assert_invisible(app: &TestApp, key: &str, id: &str, headers: &[(&str, &str)]) {
    get_as(app, key, &format!("/api/enrichment/{id}"), headers)
        .await
        .assert_error(404, "not_found");
    get_as(app, key, &format!("/api/enrichment/{id}/items"), headers)
        .await
        .assert_error(404, "not_found");
    app.call_with_headers(
        key,
        Method::POST,
        &format!("/api/enrichment/{id}/cancel"),
        None,
        headers,
    )
    .await
    .assert_error(404, "not_found");
}

#[tokio::test]
async fn runs_are_scoped_to_the_effective_user() {
    let app = TestApp::spawn_with(|c| c.run_worker = false).await;
    let ws = app.workspace_id().await;
    let (member, member_key) = app.create_user("m@example.com", "member", Some(&ws)).await;
    let member_id = member["id"].as_str().unwrap();
    let (_, peer_key) = app.create_user("p@example.com", "member", Some(&ws)).await;
    let (_, stranger_key) = app.create_user("s@example.com", "admin", None).await;
    let a = company(&app, "Acme", "acme.com").await;
    let body =
        json!({"enrichmentId": "company_domain", "scope": explicit(std::slice::from_ref(&a))});

    // The member's run: leads are workspace-wide, runs are not.
    let r = app.enrich_as(&member_key, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let run_id = r.body["runId"].as_str().unwrap().to_string();
    assert_eq!(
        app.run_status_as(&member_key, &run_id).await["id"],
        run_id.as_str()
    );
    assert_invisible(&app, &app.key, &run_id, &[]).await;
    assert_invisible(&app, &peer_key, &run_id, &[]).await;
    assert_invisible(&app, &stranger_key, &run_id, &[]).await;
    // The admin acting as the member sees it.
    let impersonate = [("X-Puffle-Effective-User", member_id)];
    let r = get_as(
        &app,
        &app.key,
        &format!("/api/enrichment/{run_id}"),
        &impersonate,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["run"]["id"], run_id.as_str());
    let r = get_as(
        &app,
        &app.key,
        &format!("/api/enrichment/{run_id}/items"),
        &impersonate,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // A member may not impersonate; a stranger may not name our user.
    get_as(
        &app,
        &peer_key,
        &format!("/api/enrichment/{run_id}"),
        &impersonate,
    )
    .await
    .assert_error(403, "forbidden");
    get_as(
        &app,
        &stranger_key,
        &format!("/api/enrichment/{run_id}"),
        &impersonate,
    )
    .await
    .assert_error(403, "forbidden");

    // A run started by the admin acting as the member belongs to the member.
    let r = app
        .call_with_headers(
            &app.key,
            Method::POST,
            "/api/enrichment",
            Some(body.clone()),
            &impersonate,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let on_behalf = r.body["runId"].as_str().unwrap().to_string();
    assert_eq!(
        app.run_status_as(&member_key, &on_behalf).await["id"],
        on_behalf.as_str()
    );
    assert_invisible(&app, &app.key, &on_behalf, &[]).await;

    // The admin's own run is invisible to the member.
    let own = app.start_run(body).await;
    assert_eq!(app.run_status(&own).await["id"], own.as_str());
    assert_invisible(&app, &member_key, &own, &[]).await;

    // The admin acting as the member may cancel the member's run.
    let r = app
        .call_with_headers(
            &app.key,
            Method::POST,
            &format!("/api/enrichment/{run_id}/cancel"),
            None,
            &impersonate,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["run"]["status"], "cancelled");
}

#[tokio::test]
async fn another_workspace_cannot_run_over_our_leads_or_lists() {
    let app = TestApp::spawn().await;
    let a = company(&app, "Acme", "acme.com").await;
    let list = app
        .list(json!({"name": "Ours", "leadType": "company", "leadIds": [a]}))
        .await;
    let (_, stranger) = app.create_user("s@example.com", "admin", None).await;
    let theirs_before = app
        .call_as(&stranger, Method::GET, "/api/credits", None)
        .await
        .body["balance"]
        .clone();
    let r = app
        .enrich_as(
            &stranger,
            json!({"enrichmentId": "company_domain", "scope": explicit(std::slice::from_ref(&a))}),
        )
        .await;
    assert_bad_ref(&r, "leadIds");
    let r = app
        .enrich_as(
            &stranger,
            json!({"enrichmentId": "company_domain", "scope": {"type": "list", "listId": list["id"]}}),
        )
        .await;
    assert_bad_ref(&r, "listId");
    let r = app
        .enrich_as(
            &stranger,
            json!({"enrichmentId": "company_domain",
                   "scope": {"type": "filtered_list", "listId": list["id"], "filter": {"where": []}}}),
        )
        .await;
    assert_bad_ref(&r, "listId");
    assert!(
        app.get_lead(&a).await.unwrap()["attributes"]
            .as_object()
            .unwrap()
            .is_empty(),
        "nothing written to our lead"
    );
    let theirs_after = app
        .call_as(&stranger, Method::GET, "/api/credits", None)
        .await
        .body["balance"]
        .clone();
    assert_eq!(theirs_before, theirs_after);
}

#[tokio::test]
async fn an_unknown_run_is_404() {
    let app = TestApp::spawn().await;
    for id in [unknown_id(), "not-a-run".to_string(), "1".to_string()] {
        app.get(&format!("/api/enrichment/{id}"))
            .await
            .assert_error(404, "not_found");
        app.post(&format!("/api/enrichment/{id}/cancel"), json!({}))
            .await
            .assert_error(404, "not_found");
    }
    let r = app
        .raw(
            app.client
                .get(app.url(&format!("/api/enrichment/{}", unknown_id()))),
        )
        .await;
    r.assert_error(401, "unauthorized");
}

// --- cancel -----------------------------------------------------------------------------------

async fn cancel(app: &TestApp, id: &str) -> Resp {
    app.call(Method::POST, &format!("/api/enrichment/{id}/cancel"), None)
        .await
}

#[tokio::test]
async fn cancel_a_running_run() {
    let app = TestApp::spawn_for_providers_with(|c| c.engine.concurrency = 2).await;
    let p = echo_provider(Duration::from_millis(1500)).await;
    let leads = app.companies("cx", 10, None).await;
    let id = app
        .start_run(
            json!({"enrichmentId": "custom_http", "input": http_input(&p),
                          "scope": explicit(&leads)}),
        )
        .await;
    app.wait_run_until(&id, Duration::from_secs(20), "running an item", |r| {
        r["scope"]["counts"]["running"].as_i64() >= Some(1)
    })
    .await;
    // `running` counts items claimed ahead too: cancel once the provider has a call in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while p.count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no provider call started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = cancel(&app, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["run"]);
    assert_keys(&r.body["run"], &["id", "status", "cancelledAt"]);
    assert_eq!(r.body["run"]["id"], id.as_str());
    assert_eq!(r.body["run"]["status"], "cancelled");
    assert_timestamp(&r.body["run"]["cancelledAt"]);

    let run = app.run_status(&id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["timing"]["cancelledAt"], r.body["run"]["cancelledAt"]);
    assert_eq!(run["timing"]["completedAt"], r.body["run"]["cancelledAt"]);
    assert_eq!(
        run["scope"]["counts"]["pending"], 0,
        "no pending item is left: {run}"
    );
    // Running: the 2 items in the slots and at most as many (2) claimed ahead for them, which
    // are skipped, not started, when they get a slot after the cancel.
    let in_flight = run["scope"]["counts"]["running"].as_i64().unwrap();
    assert!((1..=4).contains(&in_flight), "{run}");

    // Running items finish on their own; the run stays cancelled.
    let run = app
        .wait_run_until(&id, Duration::from_secs(20), "without running items", |r| {
            r["scope"]["counts"]["running"] == 0
        })
        .await;
    assert_eq!(run["status"], "cancelled");
    let items = app.all_items(&id).await;
    assert_counts_match(&run, &items);
    let executed: Vec<&Value> = items
        .iter()
        .filter(|i| i["status"] == "completed")
        .collect();
    let skipped: Vec<&Value> = items.iter().filter(|i| i["status"] == "skipped").collect();
    assert_eq!(executed.len() + skipped.len(), 10, "{items:?}");
    assert!(!executed.is_empty(), "the in-flight items finished");
    for item in &skipped {
        assert_eq!(item["skippedReason"], "run_cancelled", "{item}");
        assert_eq!(item["attempts"], 0, "{item}");
        // Claimed ahead or not, a skipped item never started.
        assert_eq!(item["metadata"]["leadSnapshot"], Value::Null, "{item}");
        assert_eq!(item["timing"]["startedAt"], Value::Null, "{item}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        p.count(),
        executed.len(),
        "no call after the cancel but the in-flight ones"
    );
    assert_eq!(app.balance().await, 990, "no refund");

    // Again: not cancellable.
    let r = cancel(&app, &id).await;
    r.assert_error(409, "conflict");
    assert_eq!(r.body["reason"], "run_not_cancellable", "{}", r.text);
}

#[tokio::test]
async fn cancel_a_pending_run_skips_every_item() {
    let app = TestApp::spawn_with(|c| c.run_worker = false).await;
    let leads = app.companies("cp", 4, None).await;
    let id = app
        .start_run(json!({"enrichmentId": "company_domain", "scope": explicit(&leads)}))
        .await;
    let r = cancel(&app, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let run = app.run_status(&id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(
        run["timing"]["startedAt"],
        Value::Null,
        "never started: {run}"
    );
    assert_eq!(
        run["scope"]["counts"],
        json!({"pending": 0, "running": 0, "completed": 0, "skipped": 4, "failed": 0})
    );
    for item in app.all_items(&id).await {
        assert_eq!(item["status"], "skipped", "{item}");
        assert_eq!(item["skippedReason"], "run_cancelled");
        assert_eq!(item["attempts"], 0);
        assert!(item["timing"]["completedAt"].is_string(), "{item}");
    }
}

#[tokio::test]
async fn a_finished_run_is_not_cancellable() {
    let app = TestApp::spawn().await;
    let leads = app.companies("fin", 2, None).await;
    let id = app
        .start_run(json!({"enrichmentId": "company_domain", "scope": explicit(&leads)}))
        .await;
    let (run, _) = finish(&app, &id).await;
    assert_eq!(run["status"], "completed");
    let r = cancel(&app, &id).await;
    r.assert_error(409, "conflict");
    assert_eq!(r.body["reason"], "run_not_cancellable", "{}", r.text);
    let after = app.run_status(&id).await;
    assert_eq!(after["status"], "completed");
    assert_eq!(after["timing"]["cancelledAt"], Value::Null);
    // An empty run completes at once and is not cancellable either.
    let list = app.list(json!({"name": "Empty"})).await;
    let r = app
        .enrich(json!({"enrichmentId": "company_domain",
                       "scope": {"type": "list", "listId": list["id"]}}))
        .await;
    let r = cancel(&app, r.body["runId"].as_str().unwrap()).await;
    r.assert_error(409, "conflict");
    assert_eq!(r.body["reason"], "run_not_cancellable");
}

#[tokio::test]
async fn concurrent_cancels_succeed_once() {
    let app = TestApp::spawn_with(|c| c.run_worker = false).await;
    let leads = app.companies("cc", 3, None).await;
    let id = app
        .start_run(json!({"enrichmentId": "company_domain", "scope": explicit(&leads)}))
        .await;
    let answers = futures::future::join_all((0..6).map(|_| cancel(&app, &id))).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1, "one cancel wins: {answers:?}");
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(409, "conflict");
        assert!(
            r.body["reason"] == "run_not_cancellable" || r.body["reason"] == "run_status_changed",
            "{}",
            r.text
        );
    }
}
