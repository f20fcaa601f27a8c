//! Spec §2: authentication, API keys, the account, admin endpoints, impersonation.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

const EFFECTIVE_USER: &str = "X-Puffle-Effective-User";

/// A key of the right shape that was never issued.
const UNKNOWN_KEY: &str =
    "pk_live_0000000000000000000000000000000000000000000000000000000000000000";

fn assert_key_shape(key: &str) {
    let hex = key
        .strip_prefix("pk_live_")
        .unwrap_or_else(|| panic!("key starts with pk_live_: {key}"));
    assert_eq!(hex.len(), 64, "pk_live_ + 64 hex: {key}");
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "lowercase hex: {key}"
    );
}

async fn account(app: &TestApp, key: &str) -> Resp {
    app.call_as(key, Method::GET, "/api/account", None).await
}

// --- authentication ---------------------------------------------------------------------------

#[tokio::test]
async fn requests_without_a_key_are_401_on_every_api_endpoint() {
    let app = TestApp::spawn().await;
    let endpoints = [
        (Method::GET, "/api/account"),
        (Method::GET, "/api/leads"),
        (Method::POST, "/api/leads"),
        (Method::PATCH, "/api/leads"),
        (Method::DELETE, "/api/leads"),
        (Method::GET, "/api/lists"),
        (Method::POST, "/api/lists"),
        (Method::POST, "/api/lists/import"),
        (Method::GET, "/api/credits"),
        (Method::GET, "/api/credits/config"),
        (Method::POST, "/api/credits/preview"),
        (Method::GET, "/api/user/api-key"),
        (Method::POST, "/api/user/api-key"),
        (Method::DELETE, "/api/user/api-key"),
        (Method::POST, "/api/admin/users"),
        (Method::POST, "/api/admin/credits"),
    ];
    for (method, path) in endpoints {
        let r = app
            .raw(
                app.client
                    .request(method.clone(), app.url(path))
                    .json(&json!({})),
            )
            .await;
        assert_eq!(r.status, 401, "{method} {path} without a key: {}", r.text);
        r.assert_error(401, "unauthorized");
    }
    let list = app.list(json!({"name": "L"})).await;
    let id = list["id"].as_str().unwrap();
    for path in [
        format!("/api/lists/{id}/leads"),
        format!("/api/lists/{id}/export.csv"),
    ] {
        let r = app.raw(app.client.get(app.url(&path))).await;
        r.assert_error(401, "unauthorized");
    }
}

#[tokio::test]
async fn malformed_authorization_headers_are_401() {
    let app = TestApp::spawn().await;
    let upper = format!("pk_live_{}", app.key[8..].to_uppercase());
    let short = app.key[..app.key.len() - 1].to_string();
    let long = format!("{}0", app.key);
    let test_prefix = format!("pk_test_{}", &app.key[8..]);
    let headers = [
        "".to_string(),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        "Bearer not-a-key".to_string(),
        format!("Basic {}", app.key),
        app.key.clone(),
        format!("Bearer {upper}"),
        format!("Bearer {short}"),
        format!("Bearer {long}"),
        format!("Bearer {test_prefix}"),
        format!("Bearer {}", &app.key[..24]),
    ];
    for h in headers {
        let r = app
            .raw(
                app.client
                    .get(app.url("/api/account"))
                    .header("authorization", h.clone()),
            )
            .await;
        assert_eq!(r.status, 401, "Authorization: {h:?} → {}", r.text);
        r.assert_error(401, "unauthorized");
    }
}

#[tokio::test]
async fn unknown_well_formed_key_is_401() {
    let app = TestApp::spawn().await;
    let r = account(&app, UNKNOWN_KEY).await;
    r.assert_error(401, "unauthorized");
    // A key that differs from a real one only after the public prefix is unknown too.
    let mut forged = app.key[..24].to_string();
    forged.push_str(&"f".repeat(app.key.len() - 24));
    assert_ne!(forged, app.key);
    account(&app, &forged)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn bootstrap_key_works_and_is_the_default_workspace_admin() {
    let app = TestApp::spawn().await;
    assert_key_shape(&app.key);
    let r = account(&app, &app.key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["user"]["email"], "admin@localhost");
    assert_eq!(r.body["user"]["role"], "admin");
    assert_eq!(r.body["workspace"]["name"], "default");
    assert_eq!(r.body["credits"]["balance"], 1000);
}

// --- the account ------------------------------------------------------------------------------

#[tokio::test]
async fn account_has_every_documented_key() {
    let app = TestApp::spawn().await;
    let r = app.get("/api/account").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "JSON content type: {:?}",
        r.headers["content-type"]
    );
    let b = &r.body;
    assert_keys(b, &["user", "workspace", "effectiveUser", "credits"]);
    assert_keys(
        &b["user"],
        &["id", "email", "role", "workspaceId", "createdAt"],
    );
    assert_keys(&b["workspace"], &["id", "name", "createdAt"]);
    assert_keys(&b["effectiveUser"], &["id", "email"]);
    assert_keys(&b["credits"], &["balance"]);
    assert_id(&b["user"]["id"]);
    assert_id(&b["workspace"]["id"]);
    assert_timestamp(&b["user"]["createdAt"]);
    assert_timestamp(&b["workspace"]["createdAt"]);
    assert_eq!(b["user"]["workspaceId"], b["workspace"]["id"]);
    assert_eq!(
        b["effectiveUser"]["id"], b["user"]["id"],
        "no impersonation: effective user is the caller"
    );
    assert_eq!(b["effectiveUser"]["email"], b["user"]["email"]);
    assert!(
        b["credits"]["balance"].is_i64(),
        "balance is an integer: {}",
        r.text
    );
}

// --- key management ---------------------------------------------------------------------------

#[tokio::test]
async fn get_api_key_shows_the_calling_keys_prefix() {
    let app = TestApp::spawn().await;
    let r = app.get("/api/user/api-key").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["has_key", "prefix", "created_at"]);
    assert_eq!(r.body["has_key"], true);
    assert_eq!(
        r.body["prefix"],
        app.key[..24],
        "the prefix is pk_live_ + 16 hex"
    );
    assert_timestamp(&r.body["created_at"]);
    assert!(
        !r.text.contains(&app.key[24..]),
        "the secret part is never shown: {}",
        r.text
    );
}

#[tokio::test]
async fn post_api_key_returns_a_new_key_and_keeps_the_calling_key() {
    let app = TestApp::spawn().await;
    let (_, old) = app.create_user("rotate@example.com", "member", None).await;
    let r = app
        .call_as(&old, Method::POST, "/api/user/api-key", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["api_key", "prefix", "message"]);
    let new = r.body["api_key"]
        .as_str()
        .expect("api_key is a string")
        .to_string();
    assert_key_shape(&new);
    assert_ne!(new, old);
    assert_eq!(r.body["prefix"], new[..24]);
    assert!(
        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {}",
        r.text
    );

    // Both work until the old one is revoked (rotation: create new, deploy, revoke old).
    let a_old = account(&app, &old).await;
    let a_new = account(&app, &new).await;
    assert_eq!(a_old.status, 200, "{}", a_old.text);
    assert_eq!(a_new.status, 200, "{}", a_new.text);
    assert_eq!(
        a_old.body["user"]["id"], a_new.body["user"]["id"],
        "both keys belong to the same user"
    );
    assert_eq!(a_new.body["user"]["email"], "rotate@example.com");

    // GET shows the newest active key, whichever key asks.
    for key in [&old, &new] {
        let g = app
            .call_as(key, Method::GET, "/api/user/api-key", None)
            .await;
        assert_eq!(g.status, 200, "{}", g.text);
        assert_eq!(g.body["has_key"], true);
        assert_eq!(
            g.body["prefix"],
            new[..24],
            "GET shows the newest key: {}",
            g.text
        );
    }

    // DELETE with the old key revokes the calling (old) key only.
    let d = app
        .call_as(&old, Method::DELETE, "/api/user/api-key", None)
        .await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body, json!({"success": true}));
    account(&app, &old).await.assert_error(401, "unauthorized");
    let a_new = account(&app, &new).await;
    assert_eq!(
        a_new.status, 200,
        "the new key survives revoking the old one: {}",
        a_new.text
    );
    let g = app
        .call_as(&new, Method::GET, "/api/user/api-key", None)
        .await;
    assert_eq!(g.body["prefix"], new[..24], "{}", g.text);
}

#[tokio::test]
async fn post_api_key_conflicts_while_another_key_is_active() {
    let app = TestApp::spawn().await;
    let (_, k1) = app.create_user("two@example.com", "member", None).await;
    let r = app
        .call_as(&k1, Method::POST, "/api/user/api-key", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let k2 = r.body["api_key"].as_str().unwrap().to_string();

    // k2 is active and is not the calling key: 409, from either key.
    for key in [&k1, &k2] {
        let again = app
            .call_as(key, Method::POST, "/api/user/api-key", None)
            .await;
        again.assert_error(409, "conflict");
    }
    // Still exactly two working keys, nothing minted by the refused calls.
    let g = app
        .call_as(&k1, Method::GET, "/api/user/api-key", None)
        .await;
    assert_eq!(g.body["prefix"], k2[..24], "{}", g.text);

    // Once k1 is revoked, k2 is the only active key and may rotate again.
    let d = app
        .call_as(&k1, Method::DELETE, "/api/user/api-key", None)
        .await;
    assert_eq!(d.status, 200, "{}", d.text);
    let r3 = app
        .call_as(&k2, Method::POST, "/api/user/api-key", None)
        .await;
    assert_eq!(r3.status, 200, "{}", r3.text);
    let k3 = r3.body["api_key"].as_str().unwrap();
    assert_eq!(account(&app, k3).await.status, 200);
}

#[tokio::test]
async fn another_users_keys_do_not_conflict() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let (_, member) = app.create_user("m@example.com", "member", Some(&ws)).await;
    // The admin has an active key and so does the member; each rotates independently.
    let r = app
        .call_as(&member, Method::POST, "/api/user/api-key", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.post("/api/user/api-key", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn revoked_key_is_401_immediately() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_user("gone@example.com", "member", None).await;
    // Warm up any cache first.
    assert_eq!(account(&app, &key).await.status, 200);
    let d = app
        .call_as(&key, Method::DELETE, "/api/user/api-key", None)
        .await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body, json!({"success": true}));
    for (method, path) in [
        (Method::GET, "/api/account"),
        (Method::GET, "/api/leads"),
        (Method::GET, "/api/user/api-key"),
        (Method::POST, "/api/user/api-key"),
        (Method::DELETE, "/api/user/api-key"),
    ] {
        let r = app.call_as(&key, method.clone(), path, None).await;
        assert_eq!(
            r.status, 401,
            "{method} {path} with a revoked key: {}",
            r.text
        );
        r.assert_error(401, "unauthorized");
    }
    // Other keys are unaffected.
    assert_eq!(account(&app, &app.key).await.status, 200);
}

// --- admin: users -----------------------------------------------------------------------------

#[tokio::test]
async fn admin_creates_a_user_in_a_new_workspace_with_free_credits() {
    let app = TestApp::spawn().await;
    let own_ws = app.workspace_id().await;
    let r = app
        .post("/api/admin/users", json!({"email": "ann@example.com"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["user", "apiKey"]);
    let user = &r.body["user"];
    assert_keys(user, &["id", "email", "role", "workspaceId", "createdAt"]);
    assert_id(&user["id"]);
    assert_id(&user["workspaceId"]);
    assert_timestamp(&user["createdAt"]);
    assert_eq!(user["email"], "ann@example.com");
    assert_eq!(user["role"], "member", "role defaults to member");
    assert_ne!(user["workspaceId"], own_ws, "a new workspace");
    let key = r.body["apiKey"].as_str().unwrap();
    assert_key_shape(key);

    let a = account(&app, key).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.body["user"], *user,
        "GET /api/account shows the same user"
    );
    assert_eq!(a.body["workspace"]["id"], user["workspaceId"]);
    assert!(a.body["workspace"]["name"]
        .as_str()
        .is_some_and(|n| !n.is_empty()));
    assert_eq!(a.body["credits"]["balance"], 1000);
    // The caller's balance is untouched.
    assert_eq!(
        app.get("/api/account").await.body["credits"]["balance"],
        1000
    );
}

#[tokio::test]
async fn admin_creates_a_user_with_chosen_credits_and_role() {
    let app = TestApp::spawn().await;
    let r = app
        .post(
            "/api/admin/users",
            json!({"email": "rich@example.com", "role": "admin", "credits": 50}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["user"]["role"], "admin");
    let key = r.body["apiKey"].as_str().unwrap().to_string();
    assert_eq!(account(&app, &key).await.body["credits"]["balance"], 50);
    // The new admin administers its own workspace.
    let ws = r.body["user"]["workspaceId"].as_str().unwrap();
    let r2 = app
        .call_as(
            &key,
            Method::POST,
            "/api/admin/users",
            Some(json!({"email": "sub@example.com", "workspaceId": ws})),
        )
        .await;
    assert_eq!(r2.status, 200, "{}", r2.text);
    assert_eq!(r2.body["user"]["workspaceId"], ws);
}

#[tokio::test]
async fn admin_adds_a_user_to_its_own_workspace_and_credits_are_ignored() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let r = app
        .post(
            "/api/admin/users",
            json!({"email": "mate@example.com", "workspaceId": ws, "credits": 5}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["user"]["workspaceId"], ws);
    let key = r.body["apiKey"].as_str().unwrap();
    let a = account(&app, key).await;
    assert_eq!(a.body["workspace"]["id"], ws);
    assert_eq!(
        a.body["credits"]["balance"], 1000,
        "credits belong to the workspace: {}",
        a.text
    );
    assert_eq!(
        app.get("/api/account").await.body["credits"]["balance"],
        1000
    );
}

#[tokio::test]
async fn duplicate_email_is_409() {
    let app = TestApp::spawn().await;
    app.create_user("dup@example.com", "member", None).await;
    for email in ["dup@example.com", "DUP@Example.com", "admin@localhost"] {
        let r = app.post("/api/admin/users", json!({"email": email})).await;
        assert_eq!(r.status, 409, "{email}: {}", r.text);
        r.assert_error(409, "conflict");
    }
}

#[tokio::test]
async fn member_key_gets_403_on_admin_endpoints() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let (_, member) = app.create_user("m@example.com", "member", Some(&ws)).await;
    let r = app
        .call_as(
            &member,
            Method::POST,
            "/api/admin/users",
            Some(json!({"email": "x@example.com"})),
        )
        .await;
    r.assert_error(403, "forbidden");
    let r = app
        .call_as(
            &member,
            Method::POST,
            "/api/admin/credits",
            Some(json!({"workspaceId": ws, "amount": 10})),
        )
        .await;
    r.assert_error(403, "forbidden");
    // Nothing happened.
    assert_eq!(
        app.get("/api/account").await.body["credits"]["balance"],
        1000
    );
    let again = app
        .post("/api/admin/users", json!({"email": "x@example.com"}))
        .await;
    assert_eq!(
        again.status, 200,
        "the refused user was not created: {}",
        again.text
    );
}

#[tokio::test]
async fn admin_users_in_another_workspace_is_404() {
    let app = TestApp::spawn().await;
    let (other, _) = app.create_user("other@example.com", "admin", None).await;
    let other_ws = other["workspaceId"].as_str().unwrap();
    for ws in [other_ws.to_string(), unknown_id()] {
        let r = app
            .post(
                "/api/admin/users",
                json!({"email": "intruder@example.com", "workspaceId": ws}),
            )
            .await;
        r.assert_error(404, "not_found");
    }
    let ok = app
        .post("/api/admin/users", json!({"email": "intruder@example.com"}))
        .await;
    assert_eq!(
        ok.status, 200,
        "the refused user was not created: {}",
        ok.text
    );
}

#[tokio::test]
async fn admin_users_validates_role_and_email() {
    let app = TestApp::spawn().await;
    for role in [json!("owner"), json!("Admin"), json!(5), json!("")] {
        let r = app
            .post(
                "/api/admin/users",
                json!({"email": "r@example.com", "role": role}),
            )
            .await;
        r.assert_invalid("role");
    }
    for email in [
        json!("not-an-email"),
        json!(""),
        json!("a b@example.com"),
        json!(42),
        json!(null),
    ] {
        let r = app.post("/api/admin/users", json!({"email": email})).await;
        r.assert_invalid("email");
    }
    app.post("/api/admin/users", json!({}))
        .await
        .assert_invalid("email");
    app.post(
        "/api/admin/users",
        json!({"email": "c@example.com", "credits": "many"}),
    )
    .await
    .assert_invalid("credits");
    app.post(
        "/api/admin/users",
        json!({"email": "w@example.com", "workspaceId": 7}),
    )
    .await
    .assert_invalid("workspaceId");
}

// --- admin: credits ---------------------------------------------------------------------------

#[tokio::test]
async fn admin_grants_and_removes_credits() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let r = app
        .post(
            "/api/admin/credits",
            json!({"workspaceId": ws, "amount": 250}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"balance": 1250}));
    let r = app
        .post(
            "/api/admin/credits",
            json!({"workspaceId": ws, "amount": -300}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"balance": 950}));
    assert_eq!(
        app.get("/api/account").await.body["credits"]["balance"],
        950
    );
    // Members of the workspace see the same balance.
    let (_, member) = app.create_user("m@example.com", "member", Some(&ws)).await;
    assert_eq!(account(&app, &member).await.body["credits"]["balance"], 950);
}

#[tokio::test]
async fn admin_credits_for_another_workspace_is_404() {
    let app = TestApp::spawn().await;
    let (other, other_key) = app.create_user("other@example.com", "admin", None).await;
    let other_ws = other["workspaceId"].as_str().unwrap();
    app.post(
        "/api/admin/credits",
        json!({"workspaceId": other_ws, "amount": 100}),
    )
    .await
    .assert_error(404, "not_found");
    app.post(
        "/api/admin/credits",
        json!({"workspaceId": unknown_id(), "amount": 100}),
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(
        account(&app, &other_key).await.body["credits"]["balance"],
        1000
    );
    assert_eq!(
        app.get("/api/account").await.body["credits"]["balance"],
        1000
    );
}

#[tokio::test]
async fn admin_credits_validates_its_body() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    app.post("/api/admin/credits", json!({"amount": 1}))
        .await
        .assert_invalid("workspaceId");
    app.post("/api/admin/credits", json!({"workspaceId": ws}))
        .await
        .assert_invalid("amount");
    for amount in [json!("10"), json!(1.5), json!(null), json!([1])] {
        app.post(
            "/api/admin/credits",
            json!({"workspaceId": ws, "amount": amount}),
        )
        .await
        .assert_invalid("amount");
    }
    assert_eq!(
        app.get("/api/account").await.body["credits"]["balance"],
        1000
    );
}

// --- impersonation ----------------------------------------------------------------------------

#[tokio::test]
async fn admin_impersonates_a_user_of_its_workspace() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let (member, member_key) = app.create_user("m@example.com", "member", Some(&ws)).await;
    let admin = app.get("/api/account").await.body["user"].clone();
    let member_id = member["id"].as_str().unwrap();
    let r = app
        .call_with_headers(
            &app.key,
            Method::GET,
            "/api/account",
            None,
            &[(EFFECTIVE_USER, member_id)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["effectiveUser"],
        json!({"id": member_id, "email": "m@example.com"})
    );
    assert_eq!(
        r.body["user"]["id"], admin["id"],
        "user stays the key's owner: {}",
        r.text
    );
    assert_eq!(r.body["workspace"]["id"], ws);

    // Leads are workspace-wide: what the admin creates as the member, the member sees.
    let c = app
        .call_with_headers(
            &app.key,
            Method::POST,
            "/api/leads",
            Some(json!({"type": "person", "name": "Imp Ersonated"})),
            &[(EFFECTIVE_USER, member_id)],
        )
        .await;
    assert_eq!(c.status, 200, "{}", c.text);
    let id = c.body["lead"]["id"].as_str().unwrap();
    let seen = app
        .call_as(
            &member_key,
            Method::GET,
            &format!("/api/leads?id={id}"),
            None,
        )
        .await;
    assert_eq!(
        ids(&seen.body["leads"]),
        vec![id.to_string()],
        "{}",
        seen.text
    );
}

#[tokio::test]
async fn impersonation_by_a_member_key_is_403() {
    let app = TestApp::spawn().await;
    let ws = app.workspace_id().await;
    let (m1, k1) = app.create_user("m1@example.com", "member", Some(&ws)).await;
    let (m2, _) = app.create_user("m2@example.com", "member", Some(&ws)).await;
    let admin_id = app.get("/api/account").await.body["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for target in [
        admin_id.as_str(),
        m2["id"].as_str().unwrap(),
        m1["id"].as_str().unwrap(),
    ] {
        let r = app
            .call_with_headers(
                &k1,
                Method::GET,
                "/api/account",
                None,
                &[(EFFECTIVE_USER, target)],
            )
            .await;
        r.assert_error(403, "forbidden");
    }
}

#[tokio::test]
async fn impersonating_a_user_of_another_workspace_or_nobody_is_403() {
    let app = TestApp::spawn().await;
    let (stranger, _) = app
        .create_user("stranger@example.com", "member", None)
        .await;
    for target in [stranger["id"].as_str().unwrap().to_string(), unknown_id()] {
        let r = app
            .call_with_headers(
                &app.key,
                Method::GET,
                "/api/account",
                None,
                &[(EFFECTIVE_USER, target.as_str())],
            )
            .await;
        r.assert_error(403, "forbidden");
        let r = app
            .call_with_headers(
                &app.key,
                Method::POST,
                "/api/leads",
                Some(json!({"type": "person", "name": "Nope"})),
                &[(EFFECTIVE_USER, target.as_str())],
            )
            .await;
        r.assert_error(403, "forbidden");
    }
    let leads: Vec<Value> = app.all_leads_as(&app.key).await;
    assert!(
        leads.is_empty(),
        "refused requests created nothing: {leads:?}"
    );
}

#[tokio::test]
async fn concurrent_key_creation_mints_exactly_one_key() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_user("race@example.com", "member", None).await;
    let calls = (0..8).map(|_| app.call_as(&key, Method::POST, "/api/user/api-key", None));
    let answers = futures::future::join_all(calls).await;
    let ok: Vec<&Resp> = answers.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        ok.len(),
        1,
        "exactly one POST wins: {:?}",
        answers.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(409, "conflict");
    }
    let g = app
        .call_as(&key, Method::GET, "/api/user/api-key", None)
        .await;
    let new = ok[0].body["api_key"].as_str().unwrap();
    assert_eq!(g.body["prefix"], new[..24]);
}
