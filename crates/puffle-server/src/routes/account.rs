//! The caller's account and key, and the admin endpoints (spec §2).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use puffle_domain::account::{parse_account_email, Role};
use puffle_domain::credits::FREE_PLAN_CREDITS;
use puffle_store::{NewUser, UserWorkspace};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::{new_api_key, AppState};
use crate::auth::{Admin, Auth};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/account", get(account))
        .route(
            "/api/user/api-key",
            post(create_key).get(show_key).delete(revoke_key),
        )
        .route("/api/admin/users", post(create_user))
        .route("/api/admin/credits", post(grant_credits))
}

async fn account(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let workspace = state.store.workspace(auth.workspace()).await?;
    let balance = state.store.balance(auth.workspace()).await?;
    Ok(Json(json!({
        "user": auth.user,
        "workspace": workspace,
        "effectiveUser": {"id": auth.effective.id, "email": auth.effective.email},
        "credits": {"balance": balance},
    })))
}

async fn create_key(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let key = new_api_key();
    state
        .store
        .add_api_key(&auth.user.id, &auth.key_id, &key)
        .await?;
    Ok(Json(json!({
        "api_key": key.expose(),
        "prefix": key.public_prefix(),
        "message": "Store this key now: it is shown only once. The key you called with stays \
                    active until you revoke it (DELETE /api/user/api-key with that key).",
    })))
}

async fn show_key(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let key = state.store.active_api_key(&auth.user.id).await?;
    Ok(Json(json!({
        "has_key": key.is_some(),
        "prefix": key.as_ref().map(|k| &k.prefix),
        "created_at": key.as_ref().map(|k| &k.created_at),
    })))
}

async fn revoke_key(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    state.store.revoke_api_key(&auth.key_id).await?;
    Ok(Json(json!({"success": true})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateUser {
    email: String,
    role: Option<Role>,
    workspace_id: Option<String>,
    credits: Option<i64>,
}

async fn create_user(
    State(state): State<AppState>,
    Admin(auth): Admin,
    ApiJson(body): ApiJson<CreateUser>,
) -> ApiResult<Json<Value>> {
    let email = parse_account_email(&body.email).ok_or_else(|| {
        ApiError::invalid("email", format!("{:?} is not an email address", body.email))
    })?;
    let workspace = match body.workspace_id {
        Some(id) if id == auth.workspace() => UserWorkspace::Existing(id),
        Some(_) => return Err(ApiError::not_found("workspace")),
        None => {
            let credits = body.credits.unwrap_or(FREE_PLAN_CREDITS);
            if credits < 0 {
                return Err(ApiError::invalid("credits", "must not be negative"));
            }
            UserWorkspace::New {
                name: email.clone(),
                credits,
            }
        }
    };
    let key = new_api_key();
    let user = state
        .store
        .create_user(
            NewUser {
                email,
                role: body.role.unwrap_or(Role::Member),
                workspace,
            },
            &key,
        )
        .await?;
    Ok(Json(json!({"user": user, "apiKey": key.expose()})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GrantCredits {
    workspace_id: String,
    amount: i64,
}

async fn grant_credits(
    State(state): State<AppState>,
    Admin(auth): Admin,
    ApiJson(body): ApiJson<GrantCredits>,
) -> ApiResult<Json<Value>> {
    if body.workspace_id != auth.workspace() {
        return Err(ApiError::not_found("workspace"));
    }
    let balance = state
        .store
        .grant_credits(auth.workspace(), body.amount, "admin_grant")
        .await?;
    Ok(Json(json!({"balance": balance})))
}
