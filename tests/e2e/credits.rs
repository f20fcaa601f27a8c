//! Spec §7: the price registry, cost previews, balance and ledger.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn credits_config_has_every_documented_key() {
    let app = TestApp::spawn().await;
    let r = app.get("/api/credits/config").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = &r.body;
    assert_keys(
        b,
        &[
            "registryVersion",
            "operations",
            "plans",
            "entitlements",
            "legacyCreditActions",
            "costs",
        ],
    );
    assert!(
        b["registryVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "{}",
        r.text
    );
    assert!(b["plans"].is_object(), "{}", r.text);
    assert!(b["entitlements"]["keys"].is_array(), "{}", r.text);
    assert!(b["legacyCreditActions"].is_object(), "{}", r.text);
    let ops = b["operations"]
        .as_object()
        .expect("operations is an object");
    assert!(!ops.is_empty());
    for (action, op) in ops {
        assert_keys(
            op,
            &[
                "id",
                "label",
                "credits",
                "billableUnit",
                "unitLabel",
                "featureGroup",
                "certainty",
            ],
        );
        assert_eq!(
            op["id"],
            action.as_str(),
            "operations are keyed by their id"
        );
        for k in ["label", "billableUnit", "unitLabel", "featureGroup"] {
            assert!(
                op[k].as_str().is_some_and(|s| !s.is_empty()),
                "{action}.{k}: {op}"
            );
        }
        assert!(
            op["credits"].as_i64().is_some_and(|c| c >= 0),
            "{action}.credits: {op}"
        );
    }
    // The prices of spec §5.
    for (action, credits) in [
        ("builtin", 0),
        ("custom_http", 1),
        ("custom_ai", 1),
        ("work_email_lookup", 2),
    ] {
        assert_eq!(b["operations"][action]["credits"], credits, "{action}");
    }
    for (name, c) in b["costs"].as_object().expect("costs is an object") {
        assert!(c.as_i64().is_some_and(|c| c >= 0), "costs.{name}: {c}");
    }
    // A legacy action name costs what the operation it maps onto costs.
    for (legacy, op) in b["legacyCreditActions"].as_object().unwrap() {
        let op = op
            .as_str()
            .expect("legacyCreditActions maps onto operation ids");
        assert!(
            ops.contains_key(op),
            "{legacy} maps onto a known operation: {op}"
        );
        assert_eq!(
            b["costs"][legacy], b["operations"][op]["credits"],
            "costs.{legacy} = operations.{op}.credits"
        );
    }
}

#[tokio::test]
async fn credits_preview_prices_an_action() {
    let app = TestApp::spawn().await;
    let r = app
        .post(
            "/api/credits/preview",
            json!({"action": "custom_http", "count": 10}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"action": "custom_http", "count": 10, "costPerUnit": 1, "totalCredits": 10,
               "required": 10, "sufficient": true, "balance": 1000})
    );
    let r = app
        .post(
            "/api/credits/preview",
            json!({"action": "work_email_lookup", "count": 3}),
        )
        .await;
    assert_eq!(r.body["costPerUnit"], 2, "{}", r.text);
    assert_eq!(r.body["totalCredits"], 6);
    let r = app
        .post(
            "/api/credits/preview",
            json!({"action": "builtin", "count": 100000}),
        )
        .await;
    assert_eq!(r.body["totalCredits"], 0, "{}", r.text);
    assert_eq!(r.body["sufficient"], true);
    let r = app
        .post(
            "/api/credits/preview",
            json!({"action": "custom_ai", "count": 0}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["totalCredits"], 0);
}

#[tokio::test]
async fn credits_preview_says_when_the_balance_is_short() {
    let app = TestApp::spawn().await;
    let r = app
        .post(
            "/api/credits/preview",
            json!({"action": "custom_http", "count": 1001}),
        )
        .await;
    assert_eq!(r.status, 200, "a preview is not a charge: {}", r.text);
    assert_eq!(r.body["totalCredits"], 1001);
    assert_eq!(r.body["required"], 1001);
    assert_eq!(r.body["sufficient"], false);
    assert_eq!(r.body["balance"], 1000);
    let r = app
        .post(
            "/api/credits/preview",
            json!({"action": "custom_http", "count": 1000}),
        )
        .await;
    assert_eq!(
        r.body["sufficient"], true,
        "exactly the balance is enough: {}",
        r.text
    );
    // Nothing was charged.
    assert_eq!(app.get("/api/credits").await.body["balance"], 1000);
}

#[tokio::test]
async fn credits_preview_validates_its_body() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"action": "teleport", "count": 1}), "action"),
        (json!({"count": 1}), "action"),
        (json!({"action": 5, "count": 1}), "action"),
        (json!({"action": "custom_http", "count": -1}), "count"),
        (json!({"action": "custom_http"}), "count"),
        (json!({"action": "custom_http", "count": "3"}), "count"),
        (json!({"action": "custom_http", "count": 1.5}), "count"),
    ];
    for (body, field) in cases {
        let r = app.post("/api/credits/preview", body.clone()).await;
        assert_eq!(r.status, 400, "{body} → {}", r.text);
        r.assert_invalid(field);
    }
}

#[tokio::test]
async fn credits_show_balance_and_ledger_newest_first() {
    let app = TestApp::spawn().await;
    let r = app.get("/api/credits").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["balance", "ledger"]);
    assert_eq!(r.body["balance"], 1000);
    let ledger = r.body["ledger"].as_array().expect("ledger is an array");
    assert_eq!(ledger.len(), 1, "the free-plan grant: {}", r.text);
    assert_eq!(ledger[0]["amount"], 1000);

    let ws = app.workspace_id().await;
    for amount in [250, -100] {
        let g = app
            .post(
                "/api/admin/credits",
                json!({"workspaceId": ws, "amount": amount}),
            )
            .await;
        assert_eq!(g.status, 200, "{}", g.text);
    }
    let r = app.get("/api/credits").await;
    assert_eq!(r.body["balance"], 1150);
    let ledger = r.body["ledger"].as_array().unwrap();
    let amounts: Vec<i64> = ledger
        .iter()
        .map(|e| e["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![-100, 250, 1000], "newest first");
    for e in ledger {
        assert_keys(e, &["id", "amount", "reason", "runId", "createdAt"]);
        assert_id(&e["id"]);
        assert!(e["reason"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
        assert_eq!(e["runId"], Value::Null, "no run behind a grant");
        assert_timestamp(&e["createdAt"]);
    }
    let created: Vec<&str> = ledger
        .iter()
        .map(|e| e["createdAt"].as_str().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "createdAt descending: {created:?}"
    );
    assert_eq!(
        app.get("/api/account").await.body["credits"]["balance"],
        1150
    );
}

#[tokio::test]
async fn ledger_holds_the_newest_100_entries() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    for i in 1..=105 {
        let g = app
            .post(
                "/api/admin/credits",
                json!({"workspaceId": ws, "amount": i}),
            )
            .await;
        assert_eq!(g.status, 200, "{}", g.text);
    }
    let r = app.get("/api/credits").await;
    assert_eq!(r.body["balance"], 1000 + (1..=105).sum::<i64>());
    let ledger = r.body["ledger"].as_array().unwrap();
    assert_eq!(ledger.len(), 100);
    assert_eq!(ledger[0]["amount"], 105);
    assert_eq!(ledger[99]["amount"], 6);
}

#[tokio::test]
async fn credits_belong_to_the_workspace() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let (_, member) = app.create_user("m@example.com", "member", Some(&ws)).await;
    let (_, stranger) = app.create_user("s@example.com", "admin", None).await;
    app.post(
        "/api/admin/credits",
        json!({"workspaceId": ws, "amount": 5}),
    )
    .await;
    let m = app
        .call_as(&member, Method::GET, "/api/credits", None)
        .await;
    assert_eq!(m.status, 200, "{}", m.text);
    assert_eq!(m.body["balance"], 1005);
    let p = app
        .call_as(
            &member,
            Method::POST,
            "/api/credits/preview",
            Some(json!({"action": "custom_http", "count": 1})),
        )
        .await;
    assert_eq!(p.body["balance"], 1005, "{}", p.text);
    let s = app
        .call_as(&stranger, Method::GET, "/api/credits", None)
        .await;
    assert_eq!(s.body["balance"], 1000, "{}", s.text);
    let amounts: Vec<i64> = s.body["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![1000], "another workspace's ledger is its own");
}

#[tokio::test]
async fn concurrent_grants_lose_nothing() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let calls = (0..20).map(|_| {
        app.post(
            "/api/admin/credits",
            json!({"workspaceId": ws, "amount": 3}),
        )
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = app.get("/api/credits").await;
    assert_eq!(r.body["balance"], 1060);
    assert_eq!(r.body["ledger"].as_array().unwrap().len(), 21);
}

#[tokio::test]
async fn a_grant_that_overflows_the_balance_is_refused() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let r = app
        .post(
            "/api/admin/credits",
            json!({"workspaceId": ws, "amount": i64::MAX}),
        )
        .await;
    r.assert_invalid("amount");
    assert_eq!(app.get("/api/credits").await.body["balance"], 1000);
}
