//! Store conformance tests: each test is a function over `&dyn Store`, run against every backend.

use puffle_domain::account::{ApiKey, Role};
use puffle_domain::lead::{LeadInput, NewLead};
use puffle_domain::list::ListLeadType;
use puffle_domain::LeadType;
use serde_json::json;

use crate::{LeadQuery, NewList, NewUser, Store, StoreError, UserWorkspace};

mod throttles;

fn key(n: u8) -> ApiKey {
    ApiKey::from_random([n; 32])
}

fn lead(v: serde_json::Value) -> NewLead {
    serde_json::from_value::<LeadInput>(v)
        .unwrap()
        .into_new_lead(puffle_domain::new_id)
        .unwrap()
}

async fn sqlite() -> Box<dyn Store> {
    let store = crate::sqlite::SqliteStore::open("sqlite::memory:")
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Box::new(store)
}

/// Every conformance check, in order, against one backend.
async fn conformance(store: &dyn Store) {
    bootstrap_happens_once(store).await;
    keys_authenticate_until_revoked(store).await;
    leads_dedupe_and_stay_in_their_workspace(store).await;
    list_membership_respects_lead_type(store).await;
    the_worker_reads_leads_with_their_lists(store).await;
    nul_characters_are_stored_not_fatal(store).await;
    list_runs_take_members_in_lead_order(store).await;
    runs::runs_claim_finish_and_count(store).await;
    runs::large_finish_batches_record_each_item(store).await;
    runs::writes_to_one_lead_in_one_batch_apply_in_order(store).await;
    runs::heartbeats_extend_only_the_named_leases(store).await;
    runs::outcomes_after_the_run_ended(store).await;
    provider_cache_expires(store).await;
    webhooks_are_queued_claimed_and_recorded(store).await;
    throttles::throttles_on_one_handle(store).await;
}

/// Cached answers are found until they expire, replaced by a newer put, and pruned after.
async fn provider_cache_expires(store: &dyn Store) {
    let answer = serde_json::json!({"outcome": "hit", "value": "a@b.c"});
    assert_eq!(store.cache_get("k1", 1_000).await.unwrap(), None);
    store
        .cache_put("k1", "hunter", &answer, 2_000)
        .await
        .unwrap();
    store
        .cache_put("k2", "hunter", &answer, 5_000)
        .await
        .unwrap();
    assert_eq!(
        store.cache_get("k1", 1_999).await.unwrap(),
        Some(answer.clone())
    );
    assert_eq!(store.cache_get("k1", 2_000).await.unwrap(), None);
    let newer = serde_json::json!({"outcome": "miss"});
    store
        .cache_put("k1", "hunter", &newer, 3_000)
        .await
        .unwrap();
    assert_eq!(store.cache_get("k1", 2_500).await.unwrap(), Some(newer));
    assert_eq!(store.cache_prune(4_000).await.unwrap(), 1);
    assert_eq!(store.cache_get("k2", 4_000).await.unwrap(), Some(answer));
}

/// A hooked run's end queues one delivery (also for a run completed at creation); claims are
/// leased; an attempt is recorded only under the current lease; retries fall due when scheduled.
async fn webhooks_are_queued_claimed_and_recorded(store: &dyn Store) {
    use crate::{AttemptOutcome, DeliveryAttempt, DeliveryStatus, NewRun};
    let caller = store.authenticate(&key(3)).await.unwrap().unwrap();
    let (ws, user) = (caller.user.workspace_id.clone(), caller.user.id.clone());
    assert_eq!(store.webhook_secret(&user).await.unwrap(), None);
    store.set_webhook_secret(&user, "whsec_one").await.unwrap();
    store.set_webhook_secret(&user, "whsec_two").await.unwrap();
    assert_eq!(
        store.webhook_secret(&user).await.unwrap().as_deref(),
        Some("whsec_two")
    );
    let hooked = |targets, key: &str| NewRun {
        webhook_url: Some(format!("http://hooks.example/{key}")),
        ..sample_run(&ws, &user, targets, Some(key))
    };
    let (empty, _) = store.create_run(hooked(vec![], "wh-empty")).await.unwrap();
    let (l, _) = store
        .create_lead(&ws, lead(json!({"type": "company", "domain": "hooked.io"})))
        .await
        .unwrap();
    let targets = store.resolve_targets(&ws, &[l.id], None).await.unwrap();
    let (cancelled, _) = store
        .create_run(hooked(targets, "wh-cancel"))
        .await
        .unwrap();
    assert!(store.deliveries(&cancelled.id).await.unwrap().is_empty());
    store.cancel_run(&ws, &user, &cancelled.id).await.unwrap();
    let queued = store.deliveries(&cancelled.id).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].event_type, "enrichment.run.cancelled");
    assert_eq!(queued[0].url, "http://hooks.example/wh-cancel");
    assert_eq!(
        (
            queued[0].status,
            queued[0].attempts,
            queued[0].payload.as_deref()
        ),
        (DeliveryStatus::Pending, 0, None)
    );
    let done = store.deliveries(&empty.id).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].event_type, "enrichment.run.completed");

    // Far in the future, so the rows queued at the database's "now" are due.
    let now = 4_000_000_000_000_i64;
    let first = store
        .claim_deliveries("w1", 10, now, now + 60_000)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert!(store
        .claim_deliveries("w2", 10, now, now + 60_000)
        .await
        .unwrap()
        .is_empty());
    // The lease expires: another worker takes them over.
    let second = store
        .claim_deliveries("w2", 10, now + 60_000, now + 120_000)
        .await
        .unwrap();
    assert_eq!(second.len(), 2);
    let attempt = |claim: &crate::ClaimedDelivery, outcome| DeliveryAttempt {
        delivery_id: claim.delivery.id.clone(),
        lease_token: claim.lease_token.clone(),
        payload: format!("{{\"id\":\"{}\"}}", claim.delivery.event_id),
        at: puffle_domain::now_timestamp(),
        status_code: Some(500),
        error: Some("the receiver answered 500".into()),
        outcome,
    };
    let stale = attempt(&first[0], AttemptOutcome::Delivered);
    assert!(!store.record_delivery_attempt(stale).await.unwrap());
    let retry = AttemptOutcome::Retry {
        next_attempt_ms: now + 200_000,
    };
    assert!(store
        .record_delivery_attempt(attempt(&second[0], retry))
        .await
        .unwrap());
    assert!(store
        .record_delivery_attempt(attempt(&second[1], AttemptOutcome::GaveUp))
        .await
        .unwrap());
    let retried = &second[0].delivery;
    let after = store.deliveries(&retried.run_id).await.unwrap();
    assert_eq!(after[0].attempts, 1);
    assert_eq!(after[0].status, DeliveryStatus::Pending);
    assert_eq!(after[0].last_status_code, Some(500));
    assert_eq!(after[0].next_attempt_at_ms, now + 200_000);
    assert!(after[0].payload.is_some());
    let gave_up = store.deliveries(&second[1].delivery.run_id).await.unwrap();
    assert_eq!(gave_up[0].status, DeliveryStatus::Failed);
    // Not due before its time; due then, with the payload kept.
    assert!(store
        .claim_deliveries("w3", 10, now + 199_999, now + 300_000)
        .await
        .unwrap()
        .is_empty());
    let due = store
        .claim_deliveries("w3", 10, now + 200_000, now + 300_000)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].delivery.id, retried.id);
    assert_eq!(due[0].delivery.payload, after[0].payload);
}

async fn bootstrap_happens_once(store: &dyn Store) {
    let (ws, user) = store
        .bootstrap("admin@localhost", &key(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ws.name, "default");
    assert_eq!(user.role, Role::Admin);
    assert_eq!(store.balance(&ws.id).await.unwrap(), 1000);
    assert!(store
        .bootstrap("admin@localhost", &key(2))
        .await
        .unwrap()
        .is_none());
}

async fn keys_authenticate_until_revoked(store: &dyn Store) {
    let caller = store
        .authenticate(&key(1))
        .await
        .unwrap()
        .expect("bootstrap key works");
    assert!(store.authenticate(&key(9)).await.unwrap().is_none());
    store
        .add_api_key(&caller.user.id, &caller.key_id, &key(3))
        .await
        .unwrap();
    let err = store
        .add_api_key(&caller.user.id, &caller.key_id, &key(4))
        .await;
    assert!(matches!(err, Err(StoreError::Conflict(_))));
    store.revoke_api_key(&caller.key_id).await.unwrap();
    assert!(store.authenticate(&key(1)).await.unwrap().is_none());
    assert!(store.authenticate(&key(3)).await.unwrap().is_some());
}

/// The workspace of the user holding test key `n`.
async fn workspace_of(store: &dyn Store, n: u8) -> String {
    let caller = store.authenticate(&key(n)).await.unwrap().unwrap();
    caller.user.workspace_id
}

async fn leads_dedupe_and_stay_in_their_workspace(store: &dyn Store) {
    let a = workspace_of(store, 3).await;
    let other = NewUser {
        email: "b@b.io".into(),
        role: Role::Admin,
        workspace: UserWorkspace::New {
            name: "b".into(),
            credits: 5,
        },
    };
    let b = store
        .create_user(other, &key(5))
        .await
        .unwrap()
        .workspace_id;
    let (first, created) = store
        .create_lead(&a, lead(json!({"type": "person", "name": "Ann Lee", "contacts": [{"value": "ann@acme.com"}]})))
        .await
        .unwrap();
    assert!(created);
    let (again, created) = store
        .create_lead(
            &a,
            lead(
                json!({"type": "person", "title": "CTO", "contacts": [{"value": "ANN@acme.com"}]}),
            ),
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    assert_eq!(again.fields.title.as_deref(), Some("CTO"));
    assert_eq!(again.lists.len(), 1, "member of the all list only");
    // The same email in another workspace is another lead.
    let (in_b, created) = store
        .create_lead(
            &b,
            lead(json!({"type": "person", "contacts": [{"value": "ann@acme.com"}]})),
        )
        .await
        .unwrap();
    assert!(created);
    assert_ne!(in_b.id, first.id);
    let query = LeadQuery {
        id: Some(first.id.clone()),
        limit: 10,
        ..LeadQuery::default()
    };
    assert!(store.leads(&b, &query).await.unwrap().leads.is_empty());
    assert!(matches!(
        store.delete_lead(&b, &first.id).await,
        Err(StoreError::NotFound(_))
    ));
    let query = LeadQuery {
        q: Some("ACME".into()),
        limit: 10,
        ..LeadQuery::default()
    };
    assert_eq!(store.leads(&a, &query).await.unwrap().leads.len(), 1);
}

/// The worker reads a batch's leads with their lists (the all list first, then by id), as the
/// lead snapshots of items show them; ids of another workspace or of no lead are not answered.
async fn the_worker_reads_leads_with_their_lists(store: &dyn Store) {
    let ws = workspace_of(store, 3).await;
    let (acme, _) = store
        .create_lead(
            &ws,
            lead(json!({"type": "company", "name": "Acme \"Inc\"", "domain": "acme-lists.io"})),
        )
        .await
        .unwrap();
    let (bare, _) = store
        .create_lead(
            &ws,
            lead(json!({"type": "company", "domain": "bare-lists.io"})),
        )
        .await
        .unwrap();
    let mut lists = Vec::new();
    for name in ["Zeta ünïcode", "Alpha"] {
        let list = store
            .create_list(
                &ws,
                NewList {
                    name: name.into(),
                    description: None,
                    lead_type: ListLeadType::Company,
                    lead_ids: vec![acme.id.clone()],
                },
            )
            .await
            .unwrap();
        lists.push(list);
    }
    let ids = vec![acme.id.clone(), bare.id.clone(), "no-such-lead".to_string()];
    let mut read = store.leads_by_id(&ws, &ids).await.unwrap();
    read.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = Vec::new();
    for id in [&acme.id, &bare.id] {
        let query = LeadQuery {
            id: Some(id.clone()),
            limit: 10,
            ..LeadQuery::default()
        };
        expected.extend(store.leads(&ws, &query).await.unwrap().leads);
    }
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(read, expected, "the worker reads the leads the API shows");
    let with_lists = read.iter().find(|l| l.id == acme.id).unwrap();
    let names: Vec<&str> = with_lists.lists.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[0], "all", "the all list first");
    let mut rest: Vec<&puffle_domain::list::List> = lists.iter().collect();
    rest.sort_by(|a, b| a.id.cmp(&b.id));
    let rest: Vec<&str> = rest.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names[1..], rest[..], "then by list id");
    assert_eq!(
        read.iter().find(|l| l.id == bare.id).unwrap().lists.len(),
        1
    );

    let other = workspace_of(store, 5).await;
    assert!(store.leads_by_id(&other, &ids).await.unwrap().is_empty());
    assert!(store.leads_by_id(&ws, &[]).await.unwrap().is_empty());
}

async fn list_membership_respects_lead_type(store: &dyn Store) {
    let ws = workspace_of(store, 3).await;
    let (company, _) = store
        .create_lead(
            &ws,
            lead(json!({"type": "company", "name": "Acme", "domain": "acme.com"})),
        )
        .await
        .unwrap();
    let list = store
        .create_list(
            &ws,
            NewList {
                name: "People".into(),
                description: None,
                lead_type: ListLeadType::Person,
                lead_ids: vec![],
            },
        )
        .await
        .unwrap();
    let err = store
        .add_members(&ws, &list.id, std::slice::from_ref(&company.id))
        .await;
    assert!(matches!(err, Err(StoreError::Invalid(_))));
    let list = store.lists(&ws, Some(&list.id)).await.unwrap().remove(0);
    assert_eq!(list.lead_count, 0);
    let page = store
        .list_members(&ws, &list.id, Some(LeadType::Person), None, 10)
        .await
        .unwrap();
    assert_eq!(page.total, 0);
}

/// A run over a whole list gets one item per member, numbered in lead-id order; a list that lost
/// members since it was counted refuses the run and leaves nothing behind.
async fn list_runs_take_members_in_lead_order(store: &dyn Store) {
    use crate::{ItemQuery, Targets, SCOPE_CHANGED};
    let caller = store.authenticate(&key(3)).await.unwrap().unwrap();
    let (ws, user) = (caller.user.workspace_id.clone(), caller.user.id.clone());
    let mut lead_ids = Vec::new();
    for i in 0..5 {
        let domain = format!("member{i}.io");
        let (l, _) = store
            .create_lead(&ws, lead(json!({"type": "company", "domain": domain})))
            .await
            .unwrap();
        lead_ids.push(l.id);
    }
    let list = NewList {
        name: "Members".into(),
        description: None,
        lead_type: ListLeadType::Company,
        lead_ids: lead_ids.iter().rev().cloned().collect(),
    };
    let list = store.create_list(&ws, list).await.unwrap();
    let over = |count: usize, key: &str| crate::NewRun {
        targets: Targets::ListMembers {
            list_id: list.id.clone(),
            count,
        },
        list_id: Some(list.id.clone()),
        ..sample_run(&ws, &user, vec![], Some(key))
    };
    let all = ItemQuery {
        limit: 10,
        ..ItemQuery::default()
    };

    let (run, _) = store.create_run(over(5, "members-all")).await.unwrap();
    assert_eq!((run.resolved_count, run.counts.pending), (5, 5));
    let (items, more) = store.items(&run.id, &all).await.unwrap();
    assert!(!more);
    let leads: Vec<&str> = items.iter().map(|i| i.lead_id.as_str()).collect();
    lead_ids.sort();
    assert_eq!(leads, lead_ids);
    for item in &items {
        assert!(puffle_domain::is_id(&item.id), "{}", item.id);
        assert_eq!(item.list_id.as_deref(), Some(list.id.as_str()));
        assert!(item.membership_id.is_some());
    }
    assert!(items.windows(2).all(|w| w[0].id < w[1].id));

    let (first, _) = store.create_run(over(2, "members-first")).await.unwrap();
    let (items, _) = store.items(&first.id, &all).await.unwrap();
    let leads: Vec<&str> = items.iter().map(|i| i.lead_id.as_str()).collect();
    assert_eq!(leads, lead_ids[..2]);

    let gone = store.create_run(over(6, "members-gone")).await;
    assert!(
        matches!(gone, Err(StoreError::StateConflict { reason, .. }) if reason == SCOPE_CHANGED),
        "{gone:?}"
    );
    let left = store.run_by_idempotency_key(&user, "members-gone").await;
    assert!(matches!(left, Ok(None)), "{left:?}");
    // Out of the way of the queue checks that follow.
    for id in [run.id, first.id] {
        store.cancel_run(&ws, &user, &id).await.unwrap();
    }
}

/// PostgreSQL `text` cannot hold NUL; a lead naming one must still be stored and listed.
async fn nul_characters_are_stored_not_fatal(store: &dyn Store) {
    let ws = workspace_of(store, 3).await;
    let (l, _) = store
        .create_lead(
            &ws,
            lead(json!({"type": "person", "name": "Nul\u{0}Person", "attributes": {"k\u{0}": "v\u{0}"}})),
        )
        .await
        .unwrap();
    assert_eq!(l.fields.name.full.as_deref(), Some("Nul\u{0}Person"));
    let query = LeadQuery {
        name: Some("nulperson".into()),
        limit: 10,
        ..LeadQuery::default()
    };
    let all = store.lists(&ws, None).await.unwrap();
    let all = all.iter().find(|l| l.name == "all").unwrap();
    let keys = store.list_attribute_keys(&ws, &all.id).await.unwrap();
    assert!(keys.contains(&"k\u{0}".to_string()), "{keys:?}");
    // Found on PostgreSQL (NUL dropped from search text), not on SQLite: either is no error.
    store.leads(&ws, &query).await.unwrap();
    store.delete_lead(&ws, &l.id).await.unwrap();
}

#[tokio::test]
async fn sqlite_conforms() {
    conformance(sqlite().await.as_ref()).await;
}

/// A migrated PostgreSQL store on a fresh database of its own (dropped with the guard), or
/// `None`, after saying so, when no server answers (CI always has one; a laptop may not).
async fn postgres() -> Option<(crate::postgres::PgStore, crate::scratch::ScratchDatabase)> {
    let server = crate::scratch::server_url();
    let db = match crate::scratch::ScratchDatabase::create(&server).await {
        Ok(db) => db,
        Err(e) if std::env::var_os("PUFFLE_TEST_REQUIRE_POSTGRES").is_some() => {
            panic!("no PostgreSQL at {server}: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no PostgreSQL at {server} ({e})");
            return None;
        }
    };
    let store = crate::postgres::PgStore::open(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    Some((store, db))
}

#[tokio::test]
async fn postgres_conforms() {
    let Some((store, _db)) = postgres().await else {
        return;
    };
    conformance(&store).await;
}

/// Many API processes share one PostgreSQL: the same lead created at once from several
/// connections is still one lead, and a batch import agrees with one-by-one creates.
#[tokio::test]
async fn postgres_concurrent_creates_dedupe() {
    let Some((store, _db)) = postgres().await else {
        return;
    };
    let store = std::sync::Arc::new(store);
    let (ws, _) = store
        .bootstrap("admin@localhost", &key(1))
        .await
        .unwrap()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, ws) = (store.clone(), ws.id.clone());
        tasks.push(tokio::spawn(async move {
            let one = lead(json!({"type": "person", "name": format!("Ann {i}"),
                "contacts": [{"value": "ann@acme.com"}]}));
            let batch: Vec<_> = (0..50)
                .map(|n| {
                    lead(json!({"type": "person", "contacts": [{"value": format!("p{n}@x.io")}]}))
                })
                .collect();
            let (l, _) = store.create_lead(&ws, one).await.unwrap();
            let imported = store.import_leads(&ws, batch, None).await.unwrap();
            (l.id, imported.lead_ids)
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut batches = std::collections::HashSet::new();
    for t in tasks {
        let (id, batch) = t.await.unwrap();
        ids.insert(id);
        batches.insert(batch);
    }
    assert_eq!(ids.len(), 1, "one lead for one email");
    assert_eq!(batches.len(), 1, "every import found the same 50 leads");
    let all = store.lists(&ws.id, None).await.unwrap().remove(0);
    assert_eq!(all.lead_count, 51);
    // Concurrent grants never lose an update.
    let grants = (0..10).map(|_| {
        let (store, ws) = (store.clone(), ws.id.clone());
        tokio::spawn(async move { store.grant_credits(&ws, 5, "test").await.unwrap() })
    });
    for g in grants.collect::<Vec<_>>() {
        g.await.unwrap();
    }
    assert_eq!(store.balance(&ws.id).await.unwrap(), 1050);
}

/// A free `company_domain` run of `user` over `targets`, for store tests of either backend.
pub(crate) fn sample_run(
    ws: &str,
    user: &str,
    targets: Vec<crate::ItemTarget>,
    key: Option<&str>,
) -> crate::NewRun {
    use puffle_domain::run::{OutputTarget, RunMode, Subject, WritePolicy};
    crate::NewRun {
        workspace_id: ws.into(),
        user_id: user.into(),
        mode: RunMode::Persisted,
        enrichment_slug: "company_domain".into(),
        enrichment_snapshot: serde_json::json!({}),
        subject: Subject::Any,
        scope_type: "explicit_leads".into(),
        list_id: None,
        scope_requested: serde_json::json!({}),
        targets: crate::Targets::Leads(targets),
        output_target: OutputTarget::Lead,
        attribute_key: "company_domain".into(),
        write_policy: WritePolicy::Overwrite,
        persist_results: true,
        input: serde_json::json!({}),
        credit_action: "custom_http".into(),
        cost_per_unit: 0,
        total_credits: 0,
        idempotency_key: key.map(str::to_string),
        display_request: None,
        max_active_runs: None,
        webhook_url: None,
    }
}

mod runs {
    use puffle_domain::run::{ItemStatus, RunStatus, SkipReason};
    use serde_json::json;

    use super::*;
    use crate::{Finish, FinishOutcome, ItemQuery, NewRun};

    /// The shared sample run, charging `credits` under the idempotency key `k1`.
    fn new_run(ws: &str, user: &str, targets: Vec<crate::ItemTarget>, credits: i64) -> NewRun {
        NewRun {
            cost_per_unit: 1,
            total_credits: credits,
            ..super::sample_run(ws, user, targets, Some("k1"))
        }
    }

    fn done(item: &crate::ClaimedItem, outcome: FinishOutcome) -> Finish {
        Finish {
            item_id: item.id.clone(),
            lease_token: item.lease_token.clone(),
            run_id: item.run_id.clone(),
            outcome,
            executed: true,
            input_snapshot: None,
            lead_snapshot: None,
            raw_result: None,
            provider: Some("test".into()),
        }
    }

    /// The write of `key = value` onto the attributes of `item`'s lead.
    fn lead_write(
        ws: &str,
        item: &crate::ClaimedItem,
        key: &str,
        value: serde_json::Value,
    ) -> crate::AttributeWrite {
        crate::AttributeWrite {
            target: puffle_domain::run::OutputTarget::Lead,
            workspace_id: ws.to_string(),
            lead_id: item.lead_id.clone(),
            membership_id: None,
            key: key.to_string(),
            value,
        }
    }

    /// A new free run over `n` new company leads (domains `<tag><i>.io`) with every item
    /// claimed by `worker` (items of other runs claimed on the way are handed back). Answers
    /// the workspace, the leads' ids, the run's id and the claimed items in claim order.
    async fn claimed_run(
        store: &dyn Store,
        tag: &str,
        n: usize,
        worker: &str,
    ) -> (String, Vec<String>, String, Vec<crate::ClaimedItem>) {
        let caller = store.authenticate(&key(3)).await.unwrap().unwrap();
        let ws = caller.user.workspace_id.clone();
        let mut ids = Vec::new();
        for i in 0..n {
            let domain = format!("{tag}{i}.io");
            let (l, _) = store
                .create_lead(&ws, lead(json!({"type": "company", "domain": domain})))
                .await
                .unwrap();
            ids.push(l.id);
        }
        let (run_id, claimed) = claimed_run_over(store, &ids, worker).await;
        (ws, ids, run_id, claimed)
    }

    /// A new free run over the leads `ids` with every item claimed by `worker`.
    async fn claimed_run_over(
        store: &dyn Store,
        ids: &[String],
        worker: &str,
    ) -> (String, Vec<crate::ClaimedItem>) {
        let caller = store.authenticate(&key(3)).await.unwrap().unwrap();
        let ws = caller.user.workspace_id.clone();
        let n = ids.len();
        let targets = store.resolve_targets(&ws, ids, None).await.unwrap();
        let (run, _) = store
            .create_run(super::sample_run(&ws, &caller.user.id, targets, None))
            .await
            .unwrap();
        let mut claimed = Vec::new();
        while claimed.len() < n {
            // Room for a share of every active run (claims split among them), so that other
            // tests' leftovers cannot crowd this run out.
            let batch = store
                .claim_items(worker, 16 * n, 1_000, 61_000)
                .await
                .unwrap();
            assert!(!batch.is_empty(), "{} of {n} claimed", claimed.len());
            let (mine, others): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|c| c.run_id == run.id);
            let others: Vec<String> = others.into_iter().map(|c| c.id).collect();
            store.release_items(worker, &others).await.unwrap();
            claimed.extend(mine);
        }
        (run.id, claimed)
    }

    /// One batch of finishes writing the same attribute of a lead twice (two runs over the same
    /// leads, finished together) applies the writes in the batch's order, and counts both runs.
    pub async fn writes_to_one_lead_in_one_batch_apply_in_order(store: &dyn Store) {
        let (ws, ids, first_run, first) = claimed_run(store, "twice", 3, "w-twice").await;
        let (second_run, second) = claimed_run_over(store, &ids, "w-twice").await;
        let write = |c: &crate::ClaimedItem, value: &str| {
            done(
                c,
                FinishOutcome::Completed {
                    result: Some(json!({"v": value})),
                    write: Some(lead_write(&ws, c, "seen", json!(value))),
                },
            )
        };
        // Interleaved: each lead's first-run write comes before its second-run write.
        let finishes: Vec<Finish> = first
            .iter()
            .zip(&second)
            .flat_map(|(a, b)| [write(a, "first"), write(b, "second")])
            .collect();
        assert_eq!(
            store
                .finish_items("w-twice", &finishes, 2_000)
                .await
                .unwrap(),
            6
        );
        for lead in store.leads_by_id(&ws, &ids).await.unwrap() {
            assert_eq!(
                lead.attributes.get("seen"),
                Some(&json!("second")),
                "{}",
                lead.id
            );
        }
        for run in [first_run, second_run] {
            let got = store.run_for_worker(&run).await.unwrap();
            assert_eq!(
                (got.status, got.counts.completed, got.counts.running),
                (RunStatus::Completed, 3, 0)
            );
        }
    }

    /// A large batch of finishes (one padded statement on SQLite) records
    /// each item's own outcome and lead attribute, leaves an item under another lease alone
    /// wherever it falls in the batch, and counts exactly.
    pub async fn large_finish_batches_record_each_item(store: &dyn Store) {
        const N: usize = 300;
        let (ws, ids, run_id, claimed) = claimed_run(store, "big", N, "w-big").await;
        // One lease is lost, near the end of the batch: the others are recorded without it.
        let lost = 297;
        let finishes: Vec<Finish> = claimed
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let value = json!(format!("{}.example", c.lead_id));
                Finish {
                    lease_token: if i == lost {
                        "not-the-claim".into()
                    } else {
                        c.lease_token.clone()
                    },
                    ..done(
                        c,
                        FinishOutcome::Completed {
                            result: Some(json!({"domain": value})),
                            write: Some(lead_write(&ws, c, "company_domain", value)),
                        },
                    )
                }
            })
            .collect();
        assert_eq!(
            store.finish_items("w-big", &finishes, 2_000).await.unwrap(),
            N as u64 - 1
        );
        let counts = store.run_for_worker(&run_id).await.unwrap().counts;
        assert_eq!((counts.completed, counts.running), (N as i64 - 1, 1));
        let leads: std::collections::HashMap<String, _> = store
            .leads_by_id(&ws, &ids)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.id.clone(), l))
            .collect();
        let mut after = None;
        let mut seen = 0;
        loop {
            let query = ItemQuery {
                after: after.clone(),
                limit: 100,
                ..ItemQuery::default()
            };
            let (page, _) = store.items(&run_id, &query).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for item in &page {
                seen += 1;
                let expected = json!(format!("{}.example", item.lead_id));
                if item.id == claimed[lost].id {
                    assert_eq!((item.status, &item.result), (ItemStatus::Running, &None));
                    continue;
                }
                assert_eq!(item.status, ItemStatus::Completed, "{}", item.id);
                assert_eq!(
                    item.result,
                    Some(json!({"domain": expected})),
                    "{}",
                    item.id
                );
                let attributes = &leads[&item.lead_id].attributes;
                assert_eq!(attributes.get("company_domain"), Some(&expected));
            }
        }
        assert_eq!(seen, N);
    }

    /// A heartbeat extends the leases it names that the worker holds, and no other: an item the
    /// worker leased but does not name (it never learned of the claim) expires and is rescued.
    /// Items executing when their run ends: after a cancel, a completion is kept but a retry
    /// or a wait for a provider ends as skipped (a pending item in an ended run would never
    /// run); after a failure, the running items were skipped already and their late finishes
    /// record nothing.
    pub async fn outcomes_after_the_run_ended(store: &dyn Store) {
        let caller = store.authenticate(&key(3)).await.unwrap().unwrap();
        let (ws, _, run_id, claimed) = claimed_run(store, "ended", 3, "w-end").await;
        let run = store
            .cancel_run(&ws, &caller.user.id, &run_id)
            .await
            .unwrap();
        assert_eq!((run.status, run.counts.running), (RunStatus::Cancelled, 3));
        let outcomes = [
            FinishOutcome::Retry {
                due_at_ms: 5_000,
                message: "429".into(),
            },
            FinishOutcome::Waiting {
                submission_id: "job-1".into(),
                submitted_at_ms: 1_500,
                due_at_ms: 9_000,
                callback_used: false,
            },
            FinishOutcome::Completed {
                result: Some(json!("late.io")),
                write: None,
            },
        ];
        let finishes = claimed.iter().zip(outcomes).map(|(c, o)| done(c, o));
        assert_eq!(
            store
                .finish_items("w-end", &finishes.collect::<Vec<_>>(), 2_000)
                .await
                .unwrap(),
            3
        );
        let run = store.run(&ws, &caller.user.id, &run_id).await.unwrap();
        assert_eq!(run.status, RunStatus::Cancelled);
        let c = run.counts;
        assert_eq!((c.pending, c.running, c.skipped, c.completed), (0, 0, 2, 1));
        let query = ItemQuery {
            limit: 10,
            ..ItemQuery::default()
        };
        let (items, _) = store.items(&run_id, &query).await.unwrap();
        let by_id = |id: &str| items.iter().find(|i| i.id == id).unwrap();
        for retried in &claimed[..2] {
            let item = by_id(&retried.id);
            assert_eq!(item.status, ItemStatus::Skipped, "{item:?}");
            assert_eq!(item.skipped_reason, Some(SkipReason::RunCancelled));
            assert_eq!(item.error, None);
        }
        assert_eq!(by_id(&claimed[2].id).status, ItemStatus::Completed);
        let later = store
            .claim_items("w-end", 10, 10_000, 70_000)
            .await
            .unwrap();
        assert!(later.iter().all(|c| c.run_id != run_id));
        store
            .release_items(
                "w-end",
                &later.into_iter().map(|c| c.id).collect::<Vec<_>>(),
            )
            .await
            .unwrap();

        let (ws, _, run_id, claimed) = claimed_run(store, "failing", 2, "w-fail").await;
        store
            .fail_run(&run_id, "the provider is gone")
            .await
            .unwrap();
        let completions = claimed.iter().map(|c| {
            let result = Some(json!("too-late.io"));
            done(
                c,
                FinishOutcome::Completed {
                    result,
                    write: None,
                },
            )
        });
        assert_eq!(
            store
                .finish_items("w-fail", &completions.collect::<Vec<_>>(), 2_000)
                .await
                .unwrap(),
            0
        );
        let run = store.run(&ws, &caller.user.id, &run_id).await.unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        let c = run.counts;
        assert_eq!((c.running, c.skipped, c.completed), (0, 2, 0));
    }

    pub async fn heartbeats_extend_only_the_named_leases(store: &dyn Store) {
        let (_, _, run_id, claimed) = claimed_run(store, "hb", 3, "w-hb").await;
        let (kept, stolen, forgotten) = (&claimed[0].id, &claimed[1].id, &claimed[2].id);
        store
            .heartbeat("w-hb", std::slice::from_ref(kept), 500_000)
            .await
            .unwrap();
        // Another worker naming an item does not extend a lease it does not hold.
        store
            .heartbeat("w-other", std::slice::from_ref(stolen), 500_000)
            .await
            .unwrap();
        store.heartbeat("w-hb", &[], 500_000).await.unwrap();
        assert!(store.rescue_expired(100_000).await.unwrap() >= 2);
        let (items, _) = store
            .items(
                &run_id,
                &ItemQuery {
                    limit: 10,
                    ..ItemQuery::default()
                },
            )
            .await
            .unwrap();
        let status_of = |id: &String| items.iter().find(|i| &i.id == id).unwrap().status;
        assert_eq!(status_of(kept), ItemStatus::Running);
        assert_eq!(status_of(stolen), ItemStatus::Pending);
        assert_eq!(status_of(forgotten), ItemStatus::Pending);
        let counts = store.run_for_worker(&run_id).await.unwrap().counts;
        assert_eq!((counts.running, counts.pending), (1, 2));
    }

    /// Charge once, claim under a lease, finish only while holding it, keep counts exact.
    pub async fn runs_claim_finish_and_count(store: &dyn Store) {
        let caller = store.authenticate(&key(3)).await.unwrap().unwrap();
        let ws = caller.user.workspace_id.clone();
        let mut ids = Vec::new();
        for i in 0..3 {
            let (l, _) = store
                .create_lead(
                    &ws,
                    lead(json!({"type": "company", "domain": format!("c{i}.io")})),
                )
                .await
                .unwrap();
            ids.push(l.id);
        }
        let targets = store.resolve_targets(&ws, &ids, None).await.unwrap();
        assert_eq!(targets.len(), 3);
        let before = store.balance(&ws).await.unwrap();
        let too_much = new_run(&ws, &caller.user.id, targets.clone(), before + 1);
        assert!(matches!(
            store.create_run(too_much).await,
            Err(StoreError::InsufficientCredits { .. })
        ));
        let (run, reused) = store
            .create_run(new_run(&ws, &caller.user.id, targets.clone(), 3))
            .await
            .unwrap();
        assert!(!reused);
        let (again, reused) = store
            .create_run(new_run(&ws, &caller.user.id, targets, 3))
            .await
            .unwrap();
        assert!(reused && again.id == run.id);
        assert_eq!(store.balance(&ws).await.unwrap(), before - 3);
        let queue = store.queue_stats().await.unwrap();
        assert_eq!((queue.pending, queue.running), (3, 0));
        let first = store
            .items(
                &run.id,
                &ItemQuery {
                    limit: 1,
                    ..ItemQuery::default()
                },
            )
            .await
            .unwrap()
            .0;
        assert_eq!(
            queue.oldest_pending_created_at,
            Some(first[0].created_at.clone())
        );

        let claimed = store.claim_items("w1", 2, 1_000, 61_000).await.unwrap();
        assert_eq!(claimed.len(), 2);
        assert!(
            store
                .claim_items("w2", 10, 1_000, 61_000)
                .await
                .unwrap()
                .len()
                == 1
        );
        let queue = store.queue_stats().await.unwrap();
        assert_eq!((queue.pending, queue.running), (0, 3));
        assert_eq!(queue.oldest_pending_created_at, None);
        let run_now = store.run_for_worker(&run.id).await.unwrap();
        assert_eq!(run_now.status, RunStatus::Running);
        assert_eq!(run_now.counts.running, 3);

        // A worker that lost its lease records nothing.
        let stolen = done(
            &claimed[0],
            FinishOutcome::Completed {
                result: Some(json!(1)),
                write: None,
            },
        );
        assert_eq!(store.finish_items("w2", &[stolen], 2_000).await.unwrap(), 0);
        let mine = claimed
            .iter()
            .map(|c| {
                done(
                    c,
                    FinishOutcome::Completed {
                        result: Some(json!({"domain": "x.io"})),
                        write: None,
                    },
                )
            })
            .collect::<Vec<Finish>>();
        // In one batch, an item under another lease token is left alone, the rest recorded.
        let mut batch = mine;
        let second = batch.pop().unwrap();
        batch.push(Finish {
            lease_token: "not-the-claim".into(),
            ..second.clone()
        });
        assert_eq!(store.finish_items("w1", &batch, 2_000).await.unwrap(), 1);
        assert_eq!(
            store.run_for_worker(&run.id).await.unwrap().counts.running,
            2
        );
        assert_eq!(store.finish_items("w1", &[second], 2_000).await.unwrap(), 1);
        // The third item's lease expires: it is rescued, then finished by its new holder.
        assert_eq!(store.rescue_expired(100_000).await.unwrap(), 1);
        let again = store.claim_items("w3", 10, 100_000, 160_000).await.unwrap();
        assert_eq!(again.len(), 1);
        let retry = done(
            &again[0],
            FinishOutcome::Retry {
                due_at_ms: 200_000,
                message: "503".into(),
            },
        );
        store.finish_items("w3", &[retry], 100_000).await.unwrap();
        assert!(
            store
                .claim_items("w3", 10, 150_000, 210_000)
                .await
                .unwrap()
                .is_empty(),
            "not due yet"
        );
        let last = store.claim_items("w3", 10, 200_000, 260_000).await.unwrap();
        assert_eq!(last[0].attempts, 1);
        let failed = done(
            &last[0],
            FinishOutcome::Failed {
                message: "nope".into(),
                details: None,
            },
        );
        store.finish_items("w3", &[failed], 200_000).await.unwrap();

        let finished = store.run(&ws, &caller.user.id, &run.id).await.unwrap();
        assert_eq!(finished.status, RunStatus::Completed);
        assert_eq!((finished.counts.completed, finished.counts.failed), (2, 1));
        assert_eq!(finished.counts.total(), 3);
        let query = ItemQuery {
            status: Some(ItemStatus::Failed),
            limit: 10,
            ..ItemQuery::default()
        };
        let (items, more) = store.items(&run.id, &query).await.unwrap();
        assert!(!more);
        assert_eq!(items[0].attempts, 2);
        assert!(matches!(
            store.cancel_run(&ws, &caller.user.id, &run.id).await,
            Err(StoreError::StateConflict {
                reason: "run_not_cancellable",
                ..
            })
        ));
        assert!(matches!(
            store.run(&ws, "someone-else", &run.id).await,
            Err(StoreError::NotFound(_))
        ));
    }
}
