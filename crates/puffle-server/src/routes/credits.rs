//! Credits (spec §7): the price registry, previews, balance and ledger.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;

const LEDGER_LIMIT: u32 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/credits", get(balance))
        .route("/api/credits/config", get(config))
        .route("/api/credits/preview", post(preview))
}

async fn config(State(state): State<AppState>, _auth: Auth) -> Json<Value> {
    Json(state.prices.config_document())
}

#[derive(Deserialize)]
struct Preview {
    action: String,
    count: i64,
}

async fn preview(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<Preview>,
) -> ApiResult<Json<Value>> {
    let cost = state.prices.price(&body.action).ok_or_else(|| {
        ApiError::invalid(
            "action",
            format!(
                "{:?} is not a known credit action (see GET /api/credits/config)",
                body.action
            ),
        )
    })?;
    if body.count < 0 {
        return Err(ApiError::invalid("count", "must not be negative"));
    }
    let total = cost
        .checked_mul(body.count)
        .ok_or_else(|| ApiError::invalid("count", "is too large"))?;
    let balance = state.store.balance(auth.workspace()).await?;
    Ok(Json(json!({
        "action": body.action,
        "count": body.count,
        "costPerUnit": cost,
        "totalCredits": total,
        "required": total,
        "sufficient": balance >= total,
        "balance": balance,
    })))
}

async fn balance(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let balance = state.store.balance(auth.workspace()).await?;
    let ledger = state.store.ledger(auth.workspace(), LEDGER_LIMIT).await?;
    let ledger: Vec<Value> = ledger
        .into_iter()
        .map(|e| {
            json!({"id": e.id, "amount": e.amount, "reason": e.reason, "runId": e.run_id,
                   "createdAt": e.created_at})
        })
        .collect();
    Ok(Json(json!({"balance": balance, "ledger": ledger})))
}
