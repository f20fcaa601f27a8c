//! Spec §6: `GET /api/enrichment/{id}/items`, the seed endpoint: item fields, ordering, limits,
//! filters, cursors, stability under concurrent status changes, and who may read them.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

fn explicit(lead_ids: &[String]) -> Value {
    json!({"type": "explicit_leads", "leadIds": lead_ids})
}

/// A completed `company_domain` run over `n` companies; returns (run id, lead ids).
async fn finished_run(app: &TestApp, prefix: &str, n: usize) -> (String, Vec<String>) {
    let leads = app.companies(prefix, n, None).await;
    let id = app
        .start_run(json!({"enrichmentId": "company_domain", "scope": explicit(&leads)}))
        .await;
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "completed", "{run}");
    (id, leads)
}

async fn page(app: &TestApp, id: &str, query: &str) -> Resp {
    let r = app.items_page(id, query).await;
    assert_eq!(r.status, 200, "GET items{query}: {}", r.text);
    r
}

fn item_ids(r: &Resp) -> Vec<String> {
    ids(&r.body["items"])
}

#[tokio::test]
async fn a_completed_item_has_every_field() {
    let app = TestApp::spawn().await;
    let lead = app
        .lead(
            json!({"type": "company", "name": "Acme", "domain": "acme.com",
                     "industry": "Software"}),
        )
        .await;
    let lead_id = lead["id"].as_str().unwrap();
    let id = app
        .start_run(
            json!({"enrichmentId": "company_domain", "scope": explicit(&[lead_id.to_string()])}),
        )
        .await;
    let run = app.wait_run(&id).await;
    let r = page(&app, &id, "").await;
    assert_items_page(&r.body, 50);
    assert_eq!(
        r.body["page"],
        json!({"limit": 50, "nextCursor": null, "hasMore": false})
    );
    let item = &r.body["items"][0];
    assert_eq!(item["runId"], id.as_str());
    assert_eq!(item["leadId"], lead_id);
    assert_eq!(item["listId"], Value::Null);
    assert_eq!(item["membershipId"], Value::Null);
    assert_eq!(item["status"], "completed");
    assert_eq!(item["result"], json!({"domain": "acme.com"}));
    assert_eq!(item["skippedReason"], Value::Null);
    assert_eq!(item["error"], Value::Null);
    assert_eq!(item["attempts"], 1);
    let m = &item["metadata"];
    assert_eq!(
        m["leadSnapshot"]["id"], lead_id,
        "the lead as the enrichment saw it: {item}"
    );
    assert_eq!(m["leadSnapshot"]["domain"], "acme.com", "{item}");
    assert!(!m["result"].is_null(), "the raw answer of a hit: {item}");
    assert!(
        m["provider"].as_str().is_some_and(|s| !s.is_empty()),
        "the provider that produced the result: {item}"
    );
    let t = &item["timing"];
    assert!(
        t["startedAt"].is_string() && t["completedAt"].is_string(),
        "{item}"
    );
    assert!(t["createdAt"].as_str() <= t["startedAt"].as_str());
    assert!(t["startedAt"].as_str() <= t["completedAt"].as_str());
    assert!(t["completedAt"].as_str() <= t["updatedAt"].as_str());
    assert!(run["timing"]["createdAt"].as_str() <= t["createdAt"].as_str());
    // The result written is the result on the item.
    let after = app.get_lead(lead_id).await.unwrap();
    assert_eq!(after["attributes"]["company_domain"], item["result"]);
}

#[tokio::test]
async fn items_are_ordered_by_id_and_limit_defaults_to_50_and_clamps_to_100() {
    let app = TestApp::spawn().await;
    let (id, leads) = finished_run(&app, "ord", 120).await;
    let all = app.all_items(&id).await;
    assert_eq!(all.len(), 120);
    let lead_set: BTreeSet<String> = leads.into_iter().collect();
    let item_leads: BTreeSet<String> = all
        .iter()
        .map(|i| i["leadId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(item_leads, lead_set, "one item per lead");
    let all_ids = ids(&Value::Array(all.clone()));

    let r = page(&app, &id, "").await;
    assert_items_page(&r.body, 50);
    assert_eq!(item_ids(&r), all_ids[..50]);
    assert_eq!(r.body["page"]["hasMore"], true);
    assert_eq!(r.body["page"]["nextCursor"], all_ids[49].as_str());

    for (query, limit, len) in [
        ("?limit=1", 1, 1),
        ("?limit=100", 100, 100),
        ("?limit=101", 100, 100),
        ("?limit=1000", 100, 100),
        ("?limit=99999999999999999999999", 100, 100),
        ("?limit=007", 7, 7),
    ] {
        let r = page(&app, &id, query).await;
        assert_items_page(&r.body, limit);
        assert_eq!(r.body["page"]["limit"], limit, "{query}");
        assert_eq!(item_ids(&r), all_ids[..len], "{query}");
    }
    for bad in ["0", "-1", "abc", "1.5", "1e2", "0x10", "%20", "5abc", "-0"] {
        let r = app.items_page(&id, &format!("?limit={bad}")).await;
        r.assert_invalid("limit");
    }
}

#[tokio::test]
async fn empty_parameters_count_as_absent() {
    let app = TestApp::spawn().await;
    let (id, _) = finished_run(&app, "emp", 60).await;
    let plain = page(&app, &id, "").await;
    let empty = page(&app, &id, "?limit=&status=&leadId=&cursor=").await;
    assert_items_page(&empty.body, 50);
    assert_eq!(item_ids(&empty), item_ids(&plain));
    assert_eq!(empty.body["page"], plain.body["page"]);
}

#[tokio::test]
async fn the_cursor_walks_every_item_once() {
    let app = TestApp::spawn().await;
    let (id, _) = finished_run(&app, "cur", 120).await;
    let all_ids = ids(&Value::Array(app.all_items(&id).await));
    for limit in [7usize, 40, 60, 100] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut q = format!("?limit={limit}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let r = page(&app, &id, &q).await;
            assert_items_page(&r.body, limit as i64);
            pages += 1;
            let got = item_ids(&r);
            if let Some(c) = &cursor {
                assert!(
                    got.iter().all(|g| g > c),
                    "the page holds ids after the cursor"
                );
            }
            seen.extend(got);
            match r.body["page"]["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, all_ids, "limit {limit}: every item once, in order");
        assert_eq!(
            pages,
            120usize.div_ceil(limit),
            "limit {limit}: no empty last page"
        );
    }
    // The last id as cursor: an empty page.
    let r = page(&app, &id, &format!("?cursor={}", all_ids.last().unwrap())).await;
    assert_items_page(&r.body, 50);
    assert_eq!(r.body["items"], json!([]));
    assert_eq!(r.body["page"]["hasMore"], false);
    assert_eq!(r.body["page"]["nextCursor"], Value::Null);
    // A cursor that is not an id.
    app.items_page(&id, "?cursor=not-a-cursor")
        .await
        .assert_invalid("cursor");
}

/// Leads for a run with every kind of outcome: 3 hits, 2 missing input.
async fn mixed_run(app: &TestApp) -> (String, Vec<String>, Vec<String>) {
    let hits = app.companies("mx", 3, None).await;
    let mut misses = Vec::new();
    for name in ["No Domain One", "No Domain Two"] {
        misses.push(
            app.lead(json!({"type": "company", "name": name})).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let all: Vec<String> = hits.iter().chain(misses.iter()).cloned().collect();
    let id = app
        .start_run(json!({"enrichmentId": "company_domain", "scope": explicit(&all)}))
        .await;
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["scope"]["counts"]["completed"], 3, "{run}");
    assert_eq!(run["scope"]["counts"]["skipped"], 2, "{run}");
    (id, hits, misses)
}

#[tokio::test]
async fn status_and_lead_filters_combine() {
    let app = TestApp::spawn().await;
    let (id, hits, misses) = mixed_run(&app).await;

    let r = page(&app, &id, "?status=completed").await;
    assert_items_page(&r.body, 50);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i["status"] == "completed"));

    let r = page(&app, &id, "?status=skipped").await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for i in items {
        assert_eq!(i["status"], "skipped");
        assert_eq!(i["skippedReason"], "missing_input", "{i}");
        assert_eq!(i["attempts"], 0, "a skip is not an attempt: {i}");
        assert_eq!(i["result"], Value::Null);
    }
    for status in ["pending", "running", "failed"] {
        let r = page(&app, &id, &format!("?status={status}")).await;
        assert_eq!(r.body["items"], json!([]), "{status}");
        assert_eq!(r.body["page"]["hasMore"], false);
    }
    for bad in ["done", "COMPLETED", "completed,skipped", "cancelled"] {
        app.items_page(&id, &format!("?status={bad}"))
            .await
            .assert_invalid("status");
    }

    let r = page(&app, &id, &format!("?leadId={}", hits[1])).await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["leadId"], hits[1].as_str());
    let r = page(&app, &id, &format!("?leadId={}&status=completed", hits[1])).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = page(&app, &id, &format!("?leadId={}&status=skipped", hits[1])).await;
    assert_eq!(r.body["items"], json!([]));
    let r = page(&app, &id, &format!("?status=skipped&leadId={}", misses[0])).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // A lead that is not in the run: nothing.
    let r = page(&app, &id, &format!("?leadId={}", unknown_id())).await;
    assert_eq!(r.body["items"], json!([]));

    // Paging through a filter.
    let r = page(&app, &id, "?status=completed&limit=2").await;
    assert_items_page(&r.body, 2);
    assert_eq!(r.body["page"]["hasMore"], true);
    let c = r.body["page"]["nextCursor"].as_str().unwrap();
    let r2 = page(&app, &id, &format!("?status=completed&limit=2&cursor={c}")).await;
    assert_items_page(&r2.body, 2);
    assert_eq!(r2.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r2.body["page"]["hasMore"], false);
    assert_eq!(r2.body["items"][0]["status"], "completed");
}

/// 3,000 items while a worker pool changes their statuses: every walk sees each item once.
#[tokio::test]
async fn cursor_walks_are_stable_while_the_worker_runs() {
    const N: usize = 3000;
    let app = TestApp::spawn_for_providers_with(|c| c.engine.concurrency = 8).await;
    let p = Provider::start(|r| {
        let domain = r.path().rsplit('/').next().unwrap_or("").to_string();
        Reply::json(json!({"value": domain})).after(Duration::from_millis(15))
    })
    .await;
    app.grant(N as i64).await;
    let list = app
        .list(json!({"name": "Big", "leadType": "company"}))
        .await;
    let list_id = list["id"].as_str().unwrap();
    let leads = app.companies("big", N, Some(list_id)).await;
    let r = app
        .enrich(json!({"enrichmentId": "custom_http",
                       "input": {"url": p.url("/co/") + "{{lead.domain}}",
                                 "resultPointer": "/value"},
                       "scope": {"type": "list", "listId": list_id}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["leadCount"], N);
    let id = r.body["runId"].as_str().unwrap().to_string();

    let mut walks_during_run = 0;
    let mut first_walk: Option<Vec<String>> = None;
    let mut statuses_seen = BTreeSet::new();
    loop {
        let before = app.run_status(&id).await;
        let items = app.all_items(&id).await;
        let walk: Vec<String> = items
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        for i in &items {
            statuses_seen.insert(i["status"].as_str().unwrap().to_string());
        }
        assert_eq!(
            walk.len(),
            N,
            "every item, once (the walk checks order and repeats)"
        );
        match &first_walk {
            Some(f) => assert_eq!(&walk, f, "the same items every walk"),
            None => first_walk = Some(walk),
        }
        if TERMINAL_RUN_STATUSES.contains(&before["status"].as_str().unwrap()) {
            break;
        }
        walks_during_run += 1;
        if walks_during_run == 10 {
            // Enough overlap seen; let the run finish undisturbed.
            break;
        }
    }
    assert!(
        walks_during_run >= 1,
        "at least one walk overlapped the run (slow the provider down if not)"
    );
    eprintln!("{walks_during_run} walks during the run; statuses seen: {statuses_seen:?}");

    let run = app.wait_run_for(&id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "completed", "{run}");
    let items = app.all_items(&id).await;
    assert_counts_match(&run, &items);
    let item_leads: BTreeSet<&str> = items
        .iter()
        .map(|i| i["leadId"].as_str().unwrap())
        .collect();
    assert_eq!(item_leads.len(), N);
    assert!(leads.iter().all(|l| item_leads.contains(l.as_str())));
    for i in &items {
        assert_eq!(i["status"], "completed", "{i}");
        assert_eq!(i["listId"], list_id);
    }
    // The last page says so.
    let last = page(
        &app,
        &id,
        &format!("?cursor={}", items[N - 101]["id"].as_str().unwrap()),
    )
    .await;
    assert_items_page(&last.body, 50);
    assert_eq!(last.body["page"]["hasMore"], true);
    let c = last.body["page"]["nextCursor"].as_str().unwrap();
    let last = page(&app, &id, &format!("?cursor={c}&limit=100")).await;
    assert_eq!(last.body["items"].as_array().unwrap().len(), 50);
    assert_eq!(last.body["page"]["hasMore"], false);
    assert_eq!(last.body["page"]["nextCursor"], Value::Null);
    // leadId finds one item among thousands.
    let r = page(&app, &id, &format!("?leadId={}", leads[N / 2])).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(p.count(), N);
}

#[tokio::test]
async fn items_of_an_unknown_or_foreign_run_are_404() {
    let app = TestApp::spawn().await;
    let (id, _) = finished_run(&app, "iso", 2).await;
    let ws = app.workspace_id().await;
    let (_, member) = app.create_user("m@example.com", "member", Some(&ws)).await;
    let (_, stranger) = app.create_user("s@example.com", "admin", None).await;
    for key in [&member, &stranger] {
        for query in ["", "?limit=100", "?status=completed"] {
            app.call_as(
                key,
                Method::GET,
                &format!("/api/enrichment/{id}/items{query}"),
                None,
            )
            .await
            .assert_error(404, "not_found");
        }
    }
    for bad in [unknown_id(), "nope".to_string()] {
        app.items_page(&bad, "")
            .await
            .assert_error(404, "not_found");
    }
    // Items are never served one by one.
    let item = page(&app, &id, "").await.body["items"][0]["id"].clone();
    app.get(&format!(
        "/api/enrichment/{id}/items/{}",
        item.as_str().unwrap()
    ))
    .await
    .assert_error(404, "not_found");
    // 404 wins over a bad parameter: existence is checked for the caller first.
    let r = app
        .call_as(
            &stranger,
            Method::GET,
            &format!("/api/enrichment/{id}/items?limit=abc"),
            None,
        )
        .await;
    assert!(r.status == 404 || r.status == 400, "{}", r.text);
}

#[tokio::test]
async fn a_lead_deleted_before_its_item_runs_is_skipped_and_snapshots_survive_deletion() {
    let mut app = TestApp::spawn_with(|c| c.run_worker = false).await;
    let leads = app.companies("del", 3, None).await;
    let id = app
        .start_run(json!({"enrichmentId": "company_domain", "scope": explicit(&leads)}))
        .await;
    let r = app.delete("/api/leads", json!({"id": leads[0]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.restart_with(|c| {
        c.run_worker = true;
        c.engine.concurrency = 2;
    })
    .await;
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "completed", "{run}");
    let items = app.all_items(&id).await;
    assert_eq!(items.len(), 3, "the item of a deleted lead is still listed");
    let gone = items
        .iter()
        .find(|i| i["leadId"] == leads[0].as_str())
        .unwrap();
    assert_eq!(gone["status"], "skipped", "{gone}");
    assert_eq!(gone["skippedReason"], "lead_deleted");
    assert_eq!(gone["attempts"], 0);
    // It never started: no snapshot, and no start time either.
    assert_eq!(gone["metadata"]["leadSnapshot"], Value::Null, "{gone}");
    assert_eq!(gone["timing"]["startedAt"], Value::Null, "{gone}");
    assert!(gone["timing"]["completedAt"].is_string(), "{gone}");

    // Deleting a lead after its item ran keeps the item and its snapshot.
    let r = app.delete("/api/leads", json!({"id": leads[1]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = page(&app, &id, &format!("?leadId={}", leads[1])).await;
    let item = &r.body["items"][0];
    assert_eq!(item["status"], "completed", "{item}");
    assert_eq!(
        item["metadata"]["leadSnapshot"]["id"],
        leads[1].as_str(),
        "{item}"
    );
    assert_eq!(item["result"], json!({"domain": "del1.example"}));
}
