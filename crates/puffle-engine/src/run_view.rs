//! A run as the API shows it (`GET /api/enrichment/{id}`'s `run`, spec §6). It lives here, not
//! in the server, because a run webhook's `data.run` must be the very same document.

use puffle_store::Run;
use serde_json::{json, Value};

pub fn run_json(run: &Run) -> Value {
    json!({
        "id": run.id,
        "status": run.status.as_str(),
        "mode": run.mode.as_str(),
        "enrichment": {
            "id": run.enrichment_snapshot.get("id").cloned().unwrap_or_else(|| json!(run.enrichment_slug)),
            "slug": run.enrichment_slug,
            "version": 1,
            "snapshot": run.enrichment_snapshot,
        },
        "scope": {
            "type": run.scope_type,
            "listId": run.list_id,
            "requested": run.scope_requested,
            "resolvedCount": run.resolved_count,
            "counts": run.counts,
        },
        "output": {
            "target": run.output_target.as_str(),
            "attributeKey": run.attribute_key,
            "writePolicy": run.write_policy.as_str(),
            "persistResults": run.persist_results,
        },
        "cost": {
            "preview": {
                "creditAction": run.credit_action,
                "costPerUnit": run.cost_per_unit,
                "totalCredits": run.total_credits,
            },
            "actual": {"totalCredits": run.total_credits},
        },
        "trigger": {
            "correlationId": run.id,
            "triggerRunId": null,
            "dispatchMetadata": run.display_request.as_ref().map(|d| json!({"displayRequest": d})),
        },
        "error": run.error,
        "timing": {
            "startedAt": run.started_at,
            "completedAt": run.completed_at,
            "cancelledAt": run.cancelled_at,
            "createdAt": run.created_at,
            "updatedAt": run.updated_at,
        },
    })
}
