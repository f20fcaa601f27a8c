//! `/api/leads` (spec §3): query, create (with dedupe), patch, delete.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use puffle_domain::lead::{merge_attributes, LeadInput};
use puffle_domain::{is_id, new_id, Invalid, LeadType};
use puffle_store::LeadQuery;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{from_value, ApiJson, Params};

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/leads",
        get(query_leads)
            .post(create_lead)
            .patch(update_lead)
            .delete(delete_lead),
    )
}

pub const LEAD_TYPES: &str = "person, company";

/// A `cursor` parameter: the id of the last object of the previous page.
pub fn cursor(params: &Params) -> ApiResult<Option<String>> {
    match params.str("cursor") {
        Some(c) if !is_id(&c) => Err(ApiError::invalid(
            "cursor",
            "is not a cursor this API returned (expected the nextCursor of a previous page)",
        )),
        other => Ok(other),
    }
}

async fn query_leads(
    State(state): State<AppState>,
    auth: Auth,
    params: Params,
) -> ApiResult<Json<Value>> {
    let query = LeadQuery {
        id: params.str("id"),
        kind: params.choice("type", LEAD_TYPES, LeadType::parse)?,
        q: params.str("q"),
        name: params.str("name"),
        title: params.str("title").or_else(|| params.str("role")),
        company: params.str("company"),
        domain: params.str("domain"),
        email: params.str("email"),
        industry: params.str("industry"),
        location: params.str("location"),
        after: cursor(&params)?,
        limit: params.limit("limit", 50, 500, false)?,
    };
    let page = state.store.leads(auth.workspace(), &query).await?;
    Ok(Json(
        json!({"leads": page.leads, "nextCursor": page.next_cursor}),
    ))
}

async fn create_lead(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(input): ApiJson<LeadInput>,
) -> ApiResult<Json<Value>> {
    let lead = input.into_new_lead(new_id)?;
    let (lead, created) = state.store.create_lead(auth.workspace(), lead).await?;
    Ok(Json(json!({"lead": lead, "created": created})))
}

/// PATCH body: `id`, then any lead field. A field set to `null` is cleared; `attributes`
/// merges by key.
async fn update_lead(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(mut body): ApiJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let id = match body.remove("id") {
        Some(Value::String(id)) => id,
        Some(_) => return Err(ApiError::invalid("id", "must be a string")),
        None => return Err(ApiError::invalid("id", "is required")),
    };
    if body.contains_key("listIds") {
        return Err(ApiError::invalid(
            "listIds",
            "cannot be changed here; use POST/DELETE /api/lists/{id}/leads",
        ));
    }
    let new_type = match body.remove("type") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<LeadType>(v)
                .map_err(|_| ApiError::invalid("type", format!("must be one of {LEAD_TYPES}")))?,
        ),
    };
    let attributes = match body.remove("attributes") {
        None => None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => {
            return Err(ApiError::invalid(
                "attributes",
                "must be an object (set a key to null to remove it)",
            ))
        }
    };
    let cleared: Vec<String> = body
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    body.retain(|_, v| !v.is_null());
    let input: LeadInput = from_value(Value::Object(body))?;
    let edit = Box::new(
        move |kind: LeadType, fields: &mut _, attrs: &mut Map<String, Value>| {
            if new_type.is_some_and(|t| t != kind) {
                return Err(Invalid::new("type", "cannot change once a lead exists"));
            }
            for field in &cleared {
                puffle_domain::lead::LeadFields::clear(fields, field);
            }
            let renamed = input.name.is_some();
            input.apply_to(fields, new_id)?;
            if renamed {
                fields.derive_name_parts(kind);
            }
            if let Some(patch) = attributes {
                merge_attributes(attrs, patch);
            }
            Ok(())
        },
    );
    let lead = state.store.update_lead(auth.workspace(), &id, edit).await?;
    Ok(Json(json!({"lead": lead})))
}

#[derive(Deserialize)]
pub struct IdBody {
    pub id: String,
}

async fn delete_lead(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<IdBody>,
) -> ApiResult<Json<Value>> {
    state.store.delete_lead(auth.workspace(), &body.id).await?;
    Ok(Json(json!({"success": true})))
}
