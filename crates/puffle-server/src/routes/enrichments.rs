//! Enrichments (spec §5, §6): the catalog, starting runs, their status and items, cancelling.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use puffle_domain::is_id;
use puffle_domain::run::{Filter, ItemStatus, OutputTarget, RunMode, Scope, WritePolicy};
use puffle_engine::catalog::Enrichment;
use puffle_engine::run_view::run_json;
use puffle_store::{Item, ItemQuery, ItemTarget, NewRun, Run, Targets};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{from_value, from_value_at, ApiJson, Params};

/// A preview run works on at most this many leads of its scope.
const PREVIEW_LEADS: usize = 10;
/// Most leads one explicit scope may name.
const MAX_EXPLICIT_LEADS: usize = 100_000;
/// Members read per page while evaluating a filtered_list scope.
const FILTER_PAGE: u32 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/enrichments", get(catalog))
        .route("/api/enrichment", post(create_run))
        .route("/api/enrichment/{id}", get(run_status))
        .route("/api/enrichment/{id}/items", get(run_items))
        .route("/api/enrichment/{id}/cancel", post(cancel_run))
}

async fn catalog(
    State(state): State<AppState>,
    _auth: Auth,
    params: Params,
) -> ApiResult<Json<Value>> {
    let entries: Vec<&Enrichment> = match params.str("id") {
        Some(id) => vec![state
            .catalog
            .get(&id)
            .ok_or_else(|| ApiError::not_found("enrichment"))?],
        None => state.catalog.search(params.str("q").as_deref()),
    };
    Ok(Json(json!({"enrichments": entries})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateRun {
    enrichment_id: String,
    mode: Option<RunMode>,
    /// Parsed by [`parse_scope`], which names the offending field inside it.
    scope: Value,
    input: Option<Map<String, Value>>,
    output: Option<OutputSpec>,
    write_policy: Option<WritePolicy>,
    display_request: Option<Map<String, Value>>,
    idempotency_key: Option<String>,
    /// [ours] Announce the run's end here (see `webhooks`).
    webhook_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExplicitScope {
    lead_ids: Vec<String>,
    list_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListScope {
    list_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilteredScope {
    list_id: String,
    filter: Filter,
}

/// The scope, with errors naming the field inside it (`scope.filter.where[0].op`).
fn parse_scope(scope: &Value) -> ApiResult<Scope> {
    let kind = scope
        .get("type")
        .ok_or_else(|| ApiError::invalid("scope.type", "is required"))?;
    let kinds = "explicit_leads, list, filtered_list";
    Ok(match kind.as_str() {
        Some("explicit_leads") => {
            let s: ExplicitScope = from_value_at(scope.clone(), "scope")?;
            Scope::ExplicitLeads {
                lead_ids: s.lead_ids,
                list_id: s.list_id,
            }
        }
        Some("list") => {
            let s: ListScope = from_value_at(scope.clone(), "scope")?;
            Scope::List { list_id: s.list_id }
        }
        Some("filtered_list") => {
            let s: FilteredScope = from_value_at(scope.clone(), "scope")?;
            Scope::FilteredList {
                list_id: s.list_id,
                filter: s.filter,
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "scope.type",
                format!("must be one of {kinds}, got {kind}"),
            ))
        }
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutputSpec {
    target: Option<OutputTarget>,
    attribute_key: Option<String>,
    write_policy: Option<WritePolicy>,
}

/// The answer to the request that created `run` (replayed as is for a repeated idempotency key,
/// so `status` is the run's status at creation: `completed` for an empty scope, else `pending`).
fn created_response(run: &Run, reused: bool) -> Json<Value> {
    let status = if run.resolved_count == 0 {
        "completed"
    } else {
        "pending"
    };
    Json(json!({
        "enrichmentRunId": run.id,
        "runId": run.id,
        "status": status,
        "leadCount": run.resolved_count,
        "triggerRunId": null,
        "reusedExistingRun": reused,
    }))
}

async fn create_run(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    // A repeated idempotency key answers with the first run, whatever the rest of the body.
    let key = body
        .get("idempotencyKey")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    if let Some(key) = &key {
        if let Some(run) = state
            .store
            .run_by_idempotency_key(&auth.effective.id, key)
            .await?
        {
            return Ok(created_response(&run, true));
        }
    }
    let request: CreateRun = from_value(body)?;
    let scope = parse_scope(&request.scope)?;
    let webhook_url =
        super::webhooks::checked_url(&state, &auth, request.webhook_url.as_deref()).await?;
    let enrichment = state
        .catalog
        .get(&request.enrichment_id)
        .ok_or_else(|| {
            ApiError::invalid(
                "enrichmentId",
                format!(
                    "no enrichment {:?} (see GET /api/enrichments)",
                    request.enrichment_id
                ),
            )
        })?
        .clone();
    if let Some(reason) = &enrichment.disabled_reason {
        return Err(ApiError::invalid(
            "enrichmentId",
            format!("is not enabled: {reason}"),
        ));
    }
    let input = Value::Object(request.input.unwrap_or_default());
    enrichment
        .validate_input(&input)
        .map_err(ApiError::Invalid)?;

    let output = request.output.unwrap_or(OutputSpec {
        target: None,
        attribute_key: None,
        write_policy: None,
    });
    let write_policy = match (request.write_policy, output.write_policy) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(
                "writePolicy",
                format!(
                    "{} disagrees with output.writePolicy {}",
                    a.as_str(),
                    b.as_str()
                ),
            ))
        }
        (a, b) => a.or(b).unwrap_or(WritePolicy::Overwrite),
    };
    let policy = &enrichment.output_override_policy;
    let target = match output.target {
        Some(t) if policy["allowTarget"] != json!(true) && t != OutputTarget::Lead => {
            return Err(ApiError::invalid(
                "output.target",
                "this enrichment does not allow overriding its target",
            ))
        }
        Some(t) => t,
        None => OutputTarget::Lead,
    };
    if target == OutputTarget::Membership && scope.list_id().is_none() {
        return Err(ApiError::invalid(
            "output.target",
            "membership output needs a scope with a listId",
        ));
    }
    let attribute_key = match output.attribute_key {
        Some(k)
            if policy["allowAttributeKey"] != json!(true)
                && k != enrichment.default_output_attribute_key =>
        {
            return Err(ApiError::invalid(
                "output.attributeKey",
                "this enrichment does not allow overriding its attribute key",
            ))
        }
        Some(k) if k.trim().is_empty() || k.len() > 200 => {
            return Err(ApiError::invalid(
                "output.attributeKey",
                "must be 1 to 200 characters",
            ))
        }
        Some(k) => k,
        None => enrichment.default_output_attribute_key.clone(),
    };

    let mode = request.mode.unwrap_or(RunMode::Persisted);
    let mut targets = resolve_scope(&state, auth.workspace(), &scope).await?;
    if mode == RunMode::Preview {
        targets.truncate(PREVIEW_LEADS);
    }
    let max_items = state.config.max_items_per_run;
    if targets.len() > max_items {
        return Err(ApiError::invalid(
            "scope",
            format!(
                "resolves to {} leads; a run may have at most {max_items} items on this server",
                targets.len()
            ),
        ));
    }
    let cost_per_unit = state.prices.price(&enrichment.credit_action).unwrap_or(0);
    let total_credits = match mode {
        RunMode::Preview => 0,
        RunMode::Persisted => cost_per_unit
            .checked_mul(targets.len() as i64)
            .ok_or_else(|| ApiError::invalid("scope", "is too large to price"))?,
    };
    let snapshot = serde_json::to_value(&enrichment)
        .map_err(|e| ApiError::Internal(format!("catalog entry does not serialize: {e}")))?;
    let run = NewRun {
        workspace_id: auth.workspace().to_string(),
        user_id: auth.effective.id.clone(),
        mode,
        enrichment_slug: enrichment.slug.clone(),
        enrichment_snapshot: snapshot,
        subject: enrichment.subject,
        scope_type: scope.type_name().to_string(),
        list_id: scope.list_id().map(str::to_string),
        scope_requested: request.scope,
        targets,
        output_target: target,
        attribute_key,
        write_policy,
        persist_results: mode == RunMode::Persisted,
        input,
        credit_action: enrichment.credit_action.clone(),
        cost_per_unit,
        total_credits,
        idempotency_key: request.idempotency_key.filter(|k| !k.is_empty()),
        display_request: request.display_request.map(Value::Object),
        max_active_runs: Some(state.config.max_active_runs).filter(|&n| n > 0),
        webhook_url,
    };
    let (run, reused) = state.store.create_run(run).await?;
    if !reused {
        state.wake.notify_one();
    }
    Ok(created_response(&run, reused))
}

/// The leads a scope names at this moment, with their memberships where a list is involved. A
/// whole list is only counted here: the store reads its members as it inserts the items.
async fn resolve_scope(state: &AppState, workspace: &str, scope: &Scope) -> ApiResult<Targets> {
    match scope {
        Scope::ExplicitLeads { lead_ids, list_id } => {
            let max = state.config.max_items_per_run.min(MAX_EXPLICIT_LEADS);
            if lead_ids.len() > max {
                return Err(ApiError::invalid(
                    "scope.leadIds",
                    format!("may name at most {max} leads"),
                ));
            }
            Ok(Targets::Leads(
                state
                    .store
                    .resolve_targets(workspace, lead_ids, list_id.as_deref())
                    .await?,
            ))
        }
        Scope::List { list_id } => {
            let list = state.store.lists(workspace, Some(list_id)).await?;
            let list = list
                .first()
                .ok_or_else(|| ApiError::invalid("scope.listId", "no list with this id"))?;
            Ok(Targets::ListMembers {
                list_id: list_id.clone(),
                count: usize::try_from(list.lead_count).unwrap_or(0),
            })
        }
        Scope::FilteredList { list_id, filter } => {
            filter.validate()?;
            // Fails with the right error when the list is unknown.
            state
                .store
                .resolve_targets(workspace, &[], Some(list_id))
                .await?;
            let limit = filter.limit.map_or(usize::MAX, |l| l as usize);
            let mut targets = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = state
                    .store
                    .list_members(workspace, list_id, None, after.as_deref(), FILTER_PAGE)
                    .await?;
                for (lead, membership) in &page.members {
                    if targets.len() < limit && filter.matches(lead) {
                        targets.push(ItemTarget {
                            lead_id: lead.id.clone(),
                            list_id: Some(list_id.clone()),
                            membership_id: Some(membership.id.clone()),
                        });
                    }
                }
                match page.next_cursor {
                    Some(next) if targets.len() < limit => after = Some(next),
                    _ => break,
                }
            }
            Ok(Targets::Leads(targets))
        }
    }
}

fn item_json(item: &Item) -> Value {
    json!({
        "id": item.id,
        "runId": item.run_id,
        "leadId": item.lead_id,
        "listId": item.list_id,
        "membershipId": item.membership_id,
        "status": item.status.as_str(),
        "result": item.result,
        "skippedReason": item.skipped_reason.map(|r| r.as_str()),
        "error": item.error,
        "attempts": item.attempts,
        "metadata": {
            "inputSnapshot": item.input_snapshot,
            "leadSnapshot": item.lead_snapshot,
            "result": item.raw_result,
            "provider": item.provider,
            "providerSubmissionId": item.provider_submission_id,
        },
        "timing": {
            "startedAt": item.started_at,
            "completedAt": item.completed_at,
            "createdAt": item.created_at,
            "updatedAt": item.updated_at,
        },
    })
}

async fn run_status(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let run = state
        .store
        .run(auth.workspace(), &auth.effective.id, &id)
        .await?;
    Ok(Json(json!({"run": run_json(&run)})))
}

async fn run_items(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let status = params.choice("status", &ItemStatus::choices(), ItemStatus::parse)?;
    let limit = params.limit("limit", 50, 100, true)?;
    let after =
        match params.str("cursor") {
            Some(c) if !is_id(&c) => return Err(ApiError::invalid(
                "cursor",
                "is not a cursor this API returned (expected page.nextCursor of a previous page)",
            )),
            other => other,
        };
    // 404 before anything else reveals whether the run has items.
    state
        .store
        .run(auth.workspace(), &auth.effective.id, &id)
        .await?;
    let query = ItemQuery {
        status,
        lead_id: params.str("leadId"),
        after,
        limit,
    };
    let (items, has_more) = state.store.items(&id, &query).await?;
    let next_cursor = if has_more {
        items.last().map(|i| i.id.clone())
    } else {
        None
    };
    let items: Vec<Value> = items.iter().map(item_json).collect();
    Ok(Json(json!({
        "items": items,
        "page": {"limit": limit, "nextCursor": next_cursor, "hasMore": has_more},
    })))
}

async fn cancel_run(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let run = state
        .store
        .cancel_run(auth.workspace(), &auth.effective.id, &id)
        .await?;
    Ok(Json(json!({"run": {
        "id": run.id,
        "status": run.status.as_str(),
        "cancelledAt": run.cancelled_at,
    }})))
}
