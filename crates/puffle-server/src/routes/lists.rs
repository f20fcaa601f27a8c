//! `/api/lists` (spec §4): lists, memberships, JSON import.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use puffle_domain::lead::LeadInput;
use puffle_domain::list::{ListLeadType, ALL_LIST_NAME, DEFAULT_LIST_NAME};
use puffle_domain::{new_id, LeadType};
use puffle_store::{ListPatch, NewList};
use serde::Deserialize;
use serde_json::{json, Value};

use super::leads::{cursor, IdBody, LEAD_TYPES};
use crate::app::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{double_option, ApiJson, Params};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/lists",
            get(get_lists)
                .post(create_list)
                .patch(update_list)
                .delete(delete_list),
        )
        .route(
            "/api/lists/{id}/leads",
            get(list_leads).post(add_leads).delete(remove_leads),
        )
        .route("/api/lists/import", post(import))
        .route(
            "/api/lists/{id}/import.csv",
            post(super::csv::import_csv).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/api/lists/{id}/export.csv", get(super::csv::export_csv))
}

async fn get_lists(
    State(state): State<AppState>,
    auth: Auth,
    params: Params,
) -> ApiResult<Json<Value>> {
    let id = params.str("id");
    let lists = state.store.lists(auth.workspace(), id.as_deref()).await?;
    Ok(Json(json!({"lists": lists})))
}

/// A list name: not empty, and not the reserved name of the protected list.
fn list_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    if name == ALL_LIST_NAME {
        return Err(ApiError::invalid(
            "name",
            "\"all\" is reserved for the list of every lead",
        ));
    }
    Ok(name.to_string())
}

/// The ids of a membership request: at most `max` (`Config::max_ids_per_request`), duplicates
/// counted once.
fn lead_ids(ids: Vec<String>, required: bool, max: usize) -> ApiResult<Vec<String>> {
    if required && ids.is_empty() {
        return Err(ApiError::invalid("leadIds", "must name at least one lead"));
    }
    if ids.len() > max {
        return Err(ApiError::invalid(
            "leadIds",
            format!("may name at most {max} leads per request"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    Ok(ids
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateList {
    name: Option<String>,
    description: Option<String>,
    lead_type: Option<ListLeadType>,
    #[serde(default)]
    lead_ids: Vec<String>,
}

async fn create_list(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateList>,
) -> ApiResult<Json<Value>> {
    let list = NewList {
        name: list_name(body.name.as_deref().unwrap_or(DEFAULT_LIST_NAME))?,
        description: body.description,
        lead_type: body.lead_type.unwrap_or(ListLeadType::Person),
        lead_ids: lead_ids(body.lead_ids, false, state.config.max_ids_per_request)?,
    };
    let list = state.store.create_list(auth.workspace(), list).await?;
    Ok(Json(json!({"list": list})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateList {
    id: String,
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    description: Option<Option<String>>,
    lead_type: Option<ListLeadType>,
}

async fn update_list(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<UpdateList>,
) -> ApiResult<Json<Value>> {
    let name = match body.name.as_deref() {
        // Naming the all list by its own name is no rename.
        Some(ALL_LIST_NAME) => Some(ALL_LIST_NAME.to_string()),
        Some(n) => Some(list_name(n)?),
        None => None,
    };
    let patch = ListPatch {
        name,
        description: body.description,
        lead_type: body.lead_type,
    };
    let list = state
        .store
        .update_list(auth.workspace(), &body.id, patch)
        .await?;
    Ok(Json(json!({"list": list})))
}

async fn delete_list(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<IdBody>,
) -> ApiResult<Json<Value>> {
    state.store.delete_list(auth.workspace(), &body.id).await?;
    Ok(Json(json!({"success": true})))
}

async fn list_leads(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let kind = params.choice("type", LEAD_TYPES, LeadType::parse)?;
    let limit = params.limit("limit", 50, 500, false)?;
    let after = cursor(&params)?;
    let page = state
        .store
        .list_members(auth.workspace(), &id, kind, after.as_deref(), limit)
        .await?;
    let leads: Vec<Value> = page
        .members
        .into_iter()
        .map(|(lead, membership)| {
            let mut v = json!(lead);
            v["membership"] = json!(membership);
            v
        })
        .collect();
    Ok(Json(json!({
        "leads": leads,
        "total": page.total,
        "hasMore": page.next_cursor.is_some(),
        "nextCursor": page.next_cursor,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeadIds {
    lead_ids: Vec<String>,
}

async fn add_leads(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<LeadIds>,
) -> ApiResult<Json<Value>> {
    let ids = lead_ids(body.lead_ids, true, state.config.max_ids_per_request)?;
    let list = state.store.add_members(auth.workspace(), &id, &ids).await?;
    Ok(Json(json!({"list": list})))
}

async fn remove_leads(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<LeadIds>,
) -> ApiResult<Json<Value>> {
    let ids = lead_ids(body.lead_ids, true, state.config.max_ids_per_request)?;
    let list = state
        .store
        .remove_members(auth.workspace(), &id, &ids)
        .await?;
    Ok(Json(json!({"list": list})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Import {
    leads: Vec<LeadInput>,
    list_id: Option<String>,
    #[serde(default)]
    preview: bool,
}

async fn import(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<Import>,
) -> ApiResult<Json<Value>> {
    let max = state.config.max_import_leads;
    if body.leads.is_empty() || body.leads.len() > max {
        return Err(ApiError::invalid(
            "leads",
            format!("must hold 1 to {max} leads, got {}", body.leads.len()),
        ));
    }
    let leads = body
        .leads
        .into_iter()
        .enumerate()
        .map(|(i, lead)| {
            lead.into_new_lead(new_id)
                .map_err(|e| e.within(&format!("leads[{i}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if body.preview {
        let people = leads.iter().filter(|l| l.kind == LeadType::Person).count();
        return Ok(Json(json!({"preview": {
            "leadCount": leads.len(),
            "personCount": people,
            "companyCount": leads.len() - people,
        }})));
    }
    let imported = state
        .store
        .import_leads(auth.workspace(), leads, body.list_id.as_deref())
        .await?;
    Ok(Json(json!({
        "list": imported.list,
        "leadIds": imported.lead_ids,
        "created": imported.created,
        "reused": imported.reused,
    })))
}
