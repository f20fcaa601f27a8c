//! Store conformance tests: each test is a function over `&dyn Store`, run against every backend.

use puffle_domain::account::{ApiKey, Role};
use puffle_domain::lead::{LeadInput, NewLead};
use puffle_domain::list::ListLeadType;
use puffle_domain::LeadType;
use serde_json::json;

use crate::{LeadQuery, NewList, NewUser, Store, StoreError, UserWorkspace};

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

async fn leads_dedupe_and_stay_in_their_workspace(store: &dyn Store) {
    let a = store
        .authenticate(&key(3))
        .await
        .unwrap()
        .unwrap()
        .user
        .workspace_id;
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

async fn list_membership_respects_lead_type(store: &dyn Store) {
    let ws = store
        .authenticate(&key(3))
        .await
        .unwrap()
        .unwrap()
        .user
        .workspace_id;
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

#[tokio::test]
async fn sqlite_conforms() {
    conformance(sqlite().await.as_ref()).await;
}
