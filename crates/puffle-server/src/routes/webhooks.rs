//! Run webhooks [ours]: the caller's signing secret (`POST /api/user/webhook-secret`), a run's
//! deliveries (`GET /api/enrichment/{id}/webhooks`), and the check of a new run's `webhookUrl`.
//! Delivering is the worker's (see `puffle_engine::webhooks`).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use puffle_domain::timestamp_from_unix_ms;
use puffle_engine::webhooks::{new_secret, validate_url};
use puffle_store::{Delivery, DeliveryStatus};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/user/webhook-secret", post(rotate_secret))
        .route("/api/enrichment/{id}/webhooks", get(run_deliveries))
}

/// Create or replace the signing secret of the user the request acts as (the owner of the runs
/// it creates), and show it this once.
async fn rotate_secret(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let secret = new_secret();
    let created_at = state
        .store
        .set_webhook_secret(&auth.effective.id, &secret)
        .await?;
    Ok(Json(json!({
        "secret": secret,
        "createdAt": created_at,
        "message": "Store this secret now: it is shown only once. It signs every webhook \
                    delivery from now on (Puffle-Signature); calling this again replaces it.",
    })))
}

async fn run_deliveries(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    // 404 for a run that is not the caller's, like every other run endpoint.
    state
        .store
        .run(auth.workspace(), &auth.effective.id, &id)
        .await?;
    let deliveries = state.store.deliveries(&id).await?;
    let deliveries: Vec<Value> = deliveries.iter().map(delivery_json).collect();
    Ok(Json(json!({"deliveries": deliveries})))
}

fn delivery_json(d: &Delivery) -> Value {
    let next_attempt_at = (d.status == DeliveryStatus::Pending)
        .then(|| timestamp_from_unix_ms(d.next_attempt_at_ms))
        .flatten();
    json!({
        "id": d.id,
        "eventId": d.event_id,
        "type": d.event_type,
        "url": d.url,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "lastStatusCode": d.last_status_code,
        "lastError": d.last_error,
        "nextAttemptAt": next_attempt_at,
        "deliveredAt": d.delivered_at,
        "createdAt": d.created_at,
    })
}

/// A new run's `webhookUrl`, checked: a valid URL, and a signing secret to sign with (created
/// beforehand, so its owner can verify the very first delivery).
pub(super) async fn checked_url(
    state: &AppState,
    auth: &Auth,
    url: Option<&str>,
) -> ApiResult<Option<String>> {
    let Some(url) = url else {
        return Ok(None);
    };
    validate_url(url).map_err(|e| ApiError::invalid("webhookUrl", e))?;
    if state
        .store
        .webhook_secret(&auth.effective.id)
        .await?
        .is_none()
    {
        return Err(ApiError::invalid(
            "webhookUrl",
            "needs a webhook signing secret first: create one with POST \
             /api/user/webhook-secret (`puffle user webhook-secret`), which shows it once",
        ));
    }
    Ok(Some(url.to_string()))
}
