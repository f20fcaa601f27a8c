//! Reading stored rows into domain values, the same for both backends: their tables have the
//! same columns with the same meaning (text, 64-bit integers, JSON documents as text), so only
//! the row type differs, and [`StoredRow`] hides it.

use puffle_domain::account::{Role, User};
use puffle_domain::lead::Lead;
use puffle_domain::list::{List, ListLeadType};
use puffle_domain::run::{
    Counts, ItemStatus, OutputTarget, RunMode, RunStatus, SkipReason, Subject, WritePolicy,
};
use puffle_domain::LeadType;
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::runs::{AttributeWrite, Finish, FinishOutcome, Item, Run};
use crate::{Result, StoreError};

/// A row of either backend, read by column name.
pub(crate) trait StoredRow {
    fn text(&self, column: &str) -> Result<String>;
    fn text_opt(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i64>;
    fn int_opt(&self, column: &str) -> Result<Option<i64>>;
}

macro_rules! stored_row {
    ($row:ty) => {
        impl StoredRow for $row {
            fn text(&self, column: &str) -> Result<String> {
                Ok(self.try_get(column)?)
            }
            fn text_opt(&self, column: &str) -> Result<Option<String>> {
                Ok(self.try_get(column)?)
            }
            fn int(&self, column: &str) -> Result<i64> {
                Ok(self.try_get(column)?)
            }
            fn int_opt(&self, column: &str) -> Result<Option<i64>> {
                Ok(self.try_get(column)?)
            }
        }
    };
}
stored_row!(SqliteRow);
stored_row!(PgRow);

/// A row the database wrote as a JSON object (`json_object('column', column, …)`), so that a
/// batch of rows arrives as one value instead of one row each.
impl StoredRow for serde_json::Map<String, Value> {
    fn text(&self, column: &str) -> Result<String> {
        required(column, self.text_opt(column)?)
    }
    fn text_opt(&self, column: &str) -> Result<Option<String>> {
        match self.get(column) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(decode_err(column, &other.to_string())),
        }
    }
    fn int(&self, column: &str) -> Result<i64> {
        required(column, self.int_opt(column)?)
    }
    fn int_opt(&self, column: &str) -> Result<Option<i64>> {
        match self.get(column) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| decode_err(column, &v.to_string())),
        }
    }
}

/// A column that must not be null.
fn required<T>(column: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| StoreError::Internal(format!("column {column} is null")))
}

/// Lists with their member counts. Callers append `WHERE`/`ORDER BY`.
pub(crate) const LIST_SELECT: &str = "SELECT l.id, l.name, l.description, l.lead_type, \
     l.created_at, l.updated_at, l.is_all, \
     (SELECT count(*) FROM memberships m WHERE m.list_id = l.id) AS lead_count, \
     (SELECT count(*) FROM memberships m WHERE m.list_id = l.id AND m.lead_type = 'person') \
        AS person_count, \
     (SELECT count(*) FROM memberships m WHERE m.list_id = l.id AND m.lead_type = 'company') \
        AS company_count \
     FROM lists l";

pub(crate) const LEAD_SELECT: &str =
    "SELECT id, type, fields, attributes, created_at, updated_at FROM leads";

pub(crate) const RUN_COLUMNS: &str = "id, workspace_id, user_id, status, mode, enrichment_slug, \
    enrichment_snapshot, subject, scope_type, list_id, scope_requested, resolved_count, \
    output_target, attribute_key, write_policy, persist_results, input, credit_action, \
    cost_per_unit, total_credits, idempotency_key, display_request, error, n_pending, n_running, \
    n_completed, n_skipped, n_failed, started_at, completed_at, cancelled_at, created_at, updated_at";

pub(crate) const ITEM_COLUMNS: &str = "id, run_id, lead_id, list_id, membership_id, status, \
    result, skipped_reason, error, attempts, input_snapshot, lead_snapshot, raw_result, provider, \
    provider_submission_id, started_at, completed_at, created_at, updated_at";

/// The job of a claimed item (`provider_submission_id`, `provider_submitted_at`,
/// `provider_callback`), if an async step submitted one.
pub(crate) fn submission_of(row: &impl StoredRow) -> Result<Option<crate::runs::Submission>> {
    Ok(submission(
        row.text_opt("provider_submission_id")?,
        row.int_opt("provider_submitted_at")?,
        row.text_opt("provider_callback")?,
    ))
}

/// The job from its three columns: none without a job id.
pub(crate) fn submission(
    id: Option<String>,
    submitted_at_ms: Option<i64>,
    callback: Option<String>,
) -> Option<crate::runs::Submission> {
    Some(crate::runs::Submission {
        id: id?,
        submitted_at_ms: submitted_at_ms.unwrap_or(0),
        callback,
    })
}

pub(crate) fn decode_err(what: &str, value: &str) -> StoreError {
    StoreError::Internal(format!("stored {what} {value:?} is not valid"))
}

/// A stored enum value (`status`, `mode`, …), parsed.
pub(crate) fn parse_enum<T>(
    row: &impl StoredRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T> {
    let text = row.text(column)?;
    parse(&text).ok_or_else(|| decode_err(column, &text))
}

/// A JSON document stored as text (NULL: `None`).
pub(crate) fn json_column(row: &impl StoredRow, column: &str) -> Result<Option<Value>> {
    let text = row.text_opt(column)?;
    Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
}

/// A JSON document as the text to store.
pub(crate) fn to_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(Value::to_string)
}

pub(crate) fn lead_type_from(s: &str) -> Result<LeadType> {
    LeadType::parse(s).ok_or_else(|| decode_err("lead type", s))
}

pub(crate) fn user_from(row: &impl StoredRow) -> Result<User> {
    Ok(User {
        id: row.text("id")?,
        email: row.text("email")?,
        role: parse_enum(row, "role", Role::parse)?,
        workspace_id: row.text("workspace_id")?,
        created_at: row.text("created_at")?,
    })
}

pub(crate) fn list_from(row: &impl StoredRow) -> Result<List> {
    Ok(List {
        id: row.text("id")?,
        name: row.text("name")?,
        description: row.text_opt("description")?,
        lead_type: parse_enum(row, "lead_type", ListLeadType::parse)?,
        lead_count: row.int("lead_count")?,
        person_count: row.int("person_count")?,
        company_count: row.int("company_count")?,
        created_at: row.text("created_at")?,
        updated_at: row.text("updated_at")?,
    })
}

/// A lead row before its lists are attached.
pub(crate) fn lead_from(row: &impl StoredRow) -> Result<Lead> {
    Ok(Lead {
        id: row.text("id")?,
        kind: lead_type_from(&row.text("type")?)?,
        fields: serde_json::from_str(&row.text("fields")?)?,
        attributes: serde_json::from_str(&row.text("attributes")?)?,
        lists: Vec::new(),
        created_at: row.text("created_at")?,
        updated_at: row.text("updated_at")?,
    })
}

pub(crate) fn run_from(row: &impl StoredRow) -> Result<Run> {
    Ok(Run {
        id: row.text("id")?,
        workspace_id: row.text("workspace_id")?,
        user_id: row.text("user_id")?,
        status: parse_enum(row, "status", RunStatus::parse)?,
        mode: parse_enum(row, "mode", RunMode::parse)?,
        enrichment_slug: row.text("enrichment_slug")?,
        enrichment_snapshot: json_column(row, "enrichment_snapshot")?.unwrap_or(Value::Null),
        subject: parse_enum(row, "subject", Subject::parse)?,
        scope_type: row.text("scope_type")?,
        list_id: row.text_opt("list_id")?,
        scope_requested: json_column(row, "scope_requested")?.unwrap_or(Value::Null),
        resolved_count: row.int("resolved_count")?,
        counts: Counts {
            pending: row.int("n_pending")?,
            running: row.int("n_running")?,
            completed: row.int("n_completed")?,
            skipped: row.int("n_skipped")?,
            failed: row.int("n_failed")?,
        },
        output_target: parse_enum(row, "output_target", OutputTarget::parse)?,
        attribute_key: row.text("attribute_key")?,
        write_policy: parse_enum(row, "write_policy", WritePolicy::parse)?,
        persist_results: row.int("persist_results")? != 0,
        input: json_column(row, "input")?.unwrap_or(Value::Null),
        credit_action: row.text("credit_action")?,
        cost_per_unit: row.int("cost_per_unit")?,
        total_credits: row.int("total_credits")?,
        idempotency_key: row.text_opt("idempotency_key")?,
        display_request: json_column(row, "display_request")?,
        error: json_column(row, "error")?,
        started_at: row.text_opt("started_at")?,
        completed_at: row.text_opt("completed_at")?,
        cancelled_at: row.text_opt("cancelled_at")?,
        created_at: row.text("created_at")?,
        updated_at: row.text("updated_at")?,
    })
}

pub(crate) fn item_from(row: &impl StoredRow) -> Result<Item> {
    Ok(Item {
        id: row.text("id")?,
        run_id: row.text("run_id")?,
        lead_id: row.text("lead_id")?,
        list_id: row.text_opt("list_id")?,
        membership_id: row.text_opt("membership_id")?,
        status: parse_enum(row, "status", ItemStatus::parse)?,
        result: json_column(row, "result")?,
        skipped_reason: row
            .text_opt("skipped_reason")?
            .map(|s| SkipReason::parse(&s).ok_or_else(|| decode_err("skipped_reason", &s)))
            .transpose()?,
        error: json_column(row, "error")?,
        attempts: row.int("attempts")?,
        input_snapshot: json_column(row, "input_snapshot")?,
        lead_snapshot: json_column(row, "lead_snapshot")?,
        raw_result: json_column(row, "raw_result")?,
        provider: row.text_opt("provider")?,
        provider_submission_id: row.text_opt("provider_submission_id")?,
        started_at: row.text_opt("started_at")?,
        completed_at: row.text_opt("completed_at")?,
        created_at: row.text("created_at")?,
        updated_at: row.text("updated_at")?,
    })
}

/// One finish, ready to bind: its JSON as text, its outcome spread over the item's columns.
pub(crate) struct FinishRow {
    pub item_id: String,
    pub lease_token: String,
    pub run_id: String,
    pub status: ItemStatus,
    pub result: Option<String>,
    pub skipped: Option<SkipReason>,
    pub error: Option<String>,
    pub attempts: i64,
    pub input_snapshot: Option<String>,
    pub lead_snapshot: Option<String>,
    pub raw_result: Option<String>,
    pub provider: Option<String>,
    pub due_at: Option<i64>,
    pub completed_at: Option<String>,
    pub write: Option<AttributeWrite>,
    /// A `Waiting` outcome: the job id and when it was submitted.
    pub submission_id: Option<String>,
    pub submitted_at: Option<i64>,
    /// The stored callback was read: clear it.
    pub clear_callback: bool,
}

impl FinishRow {
    /// The row of `f` recorded at `now`, as if the item's run were still active (each backend
    /// ends a retry of a run stopped meanwhile once it has read the run).
    pub fn new(f: &Finish, now: &str) -> FinishRow {
        let error = |message: &str, details: &Option<Value>| {
            Some(json!({"message": message, "details": details}).to_string())
        };
        let mut waiting = None;
        let (status, result, skipped, error, write, due_at) = match &f.outcome {
            FinishOutcome::Completed { result, write } => (
                ItemStatus::Completed,
                to_text(result),
                None,
                None,
                write.clone(),
                None,
            ),
            FinishOutcome::Failed { message, details } => (
                ItemStatus::Failed,
                None,
                None,
                error(message, details),
                None,
                None,
            ),
            FinishOutcome::Skipped(reason) => {
                (ItemStatus::Skipped, None, Some(*reason), None, None, None)
            }
            FinishOutcome::Retry { due_at_ms, message } => (
                ItemStatus::Pending,
                None,
                None,
                error(message, &None),
                None,
                Some(*due_at_ms),
            ),
            FinishOutcome::Waiting {
                submission_id,
                submitted_at_ms,
                due_at_ms,
                callback_used,
            } => {
                waiting = Some((submission_id, *submitted_at_ms, *callback_used));
                (
                    ItemStatus::Pending,
                    None,
                    None,
                    None,
                    None,
                    Some(*due_at_ms),
                )
            }
        };
        FinishRow {
            item_id: f.item_id.clone(),
            lease_token: f.lease_token.clone(),
            run_id: f.run_id.clone(),
            status,
            result,
            skipped,
            error,
            attempts: i64::from(f.executed),
            input_snapshot: to_text(&f.input_snapshot),
            lead_snapshot: f.lead_snapshot.clone(),
            raw_result: to_text(&f.raw_result),
            provider: f.provider.clone(),
            due_at,
            completed_at: status.is_terminal().then(|| now.to_string()),
            write,
            submission_id: waiting.map(|w| w.0.clone()),
            submitted_at: waiting.map(|w| w.1),
            clear_callback: waiting.is_some_and(|w| w.2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_object_row_reads_like_a_database_row() {
        let row: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"id": "i1", "attempts": 2, "list_id": null, "bad": 1.5, "name": 7}"#,
        )
        .unwrap();
        assert_eq!(row.text("id").unwrap(), "i1");
        assert_eq!(row.int("attempts").unwrap(), 2);
        assert_eq!(row.text_opt("list_id").unwrap(), None);
        assert_eq!(row.int_opt("missing").unwrap(), None);
        // A null or mistyped column is an error, never a panic or a silent default.
        assert!(row.text("list_id").is_err());
        assert!(row.int("bad").is_err());
        assert!(row.text_opt("name").is_err());
    }
}
