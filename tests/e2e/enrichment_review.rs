//! Behaviour found in review: fill_empty on membership output, the replayed idempotent response,
//! and the lead snapshot of items skipped after they started.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn fill_empty_checks_the_membership_when_results_go_there() {
    let app = TestApp::spawn().await;
    let list = app
        .list(json!({"name": "Accounts", "leadType": "company"}))
        .await;
    let list_id = list["id"].as_str().unwrap().to_string();
    app.companies("member", 3, Some(&list_id)).await;
    let body = |key: &str| {
        json!({"enrichmentId": "company_domain", "scope": {"type": "list", "listId": list_id},
               "output": {"target": "membership", "writePolicy": "fill_empty"},
               "idempotencyKey": key})
    };
    let first = app.start_run(body("first")).await;
    let first = app.wait_run(&first).await;
    assert_eq!(first["scope"]["counts"]["completed"], 3, "{first}");
    let members = app.get(&format!("/api/lists/{list_id}/leads")).await;
    for lead in members.body["leads"].as_array().unwrap() {
        assert!(
            lead["membership"]["attributes"]["company_domain"]["domain"].is_string(),
            "{lead}"
        );
        assert!(
            lead["attributes"].get("company_domain").is_none(),
            "lead attributes untouched"
        );
    }
    let second = app.start_run(body("second")).await;
    let second = app.wait_run(&second).await;
    assert_eq!(second["scope"]["counts"]["skipped"], 3, "{second}");
    for item in app.all_items(second["id"].as_str().unwrap()).await {
        assert_eq!(item["skippedReason"], "already_has_value");
        assert_eq!(item["attempts"], 0);
        assert!(
            item["metadata"]["leadSnapshot"].is_object(),
            "started items show their lead"
        );
    }
}

#[tokio::test]
async fn a_repeated_idempotency_key_replays_the_first_response() {
    let app = TestApp::spawn().await;
    let leads = app.companies("replay", 2, None).await;
    let body = json!({"enrichmentId": "company_domain", "idempotencyKey": "once",
        "scope": {"type": "explicit_leads", "leadIds": leads}});
    let first = app.enrich(body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let run = first.body["runId"].as_str().unwrap().to_string();
    app.wait_run(&run).await;
    let again = app.enrich(body).await;
    assert_eq!(again.status, 200, "{}", again.text);
    let mut expected = first.body.clone();
    expected["reusedExistingRun"] = json!(true);
    assert_eq!(again.body, expected, "the first response, status included");
}

#[tokio::test]
async fn items_skipped_after_starting_keep_the_lead_snapshot() {
    let app = TestApp::spawn().await;
    let leads = app.companies("acme", 1, None).await;
    let run = app
        .start_run(json!({"enrichmentId": "name_parse",
            "scope": {"type": "explicit_leads", "leadIds": leads}}))
        .await;
    app.wait_run(&run).await;
    let items = app.all_items(&run).await;
    assert_eq!(items[0]["skippedReason"], "subject_mismatch");
    assert_eq!(items[0]["attempts"], 0);
    assert_eq!(
        items[0]["metadata"]["leadSnapshot"]["id"],
        leads[0].as_str()
    );
}
