//! Enrichment runs and items on SQLite. Claims and finishes run on the single writer
//! connection, so a claim (`UPDATE … RETURNING` of a batch) is atomic without row locks.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use puffle_domain::lead::{Lead, ListRef};
use puffle_domain::run::{ItemStatus, OutputTarget, RunStatus, SkipReason};
use puffle_domain::{id_prefix, new_id, now_timestamp, Invalid};
use serde_json::{json, Map, Value};
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{add_credits, ensure_list, SqliteStore};
use crate::rows::{
    decode_err, item_from, lead_from, run_from, submission, to_text, FinishRow, ITEM_COLUMNS,
    RUN_COLUMNS,
};
use crate::runs::*;
use crate::{Result, StoreError};

/// Insert a new run's items, `pending`, in target order.
async fn insert_items(
    conn: &mut SqliteConnection,
    run_id: &str,
    targets: &Targets,
    now: &str,
) -> Result<()> {
    match targets {
        Targets::Leads(leads) => {
            for chunk in leads.chunks(INSERT_CHUNK) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO enrichment_items (id, run_id, lead_id, list_id, membership_id, \
                     status, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut b, t| {
                    b.push_bind(new_id())
                        .push_bind(run_id)
                        .push_bind(&t.lead_id)
                        .push_bind(&t.list_id)
                        .push_bind(&t.membership_id)
                        .push_bind("pending")
                        .push_bind(now)
                        .push_bind(now);
                });
                q.build().persistent(false).execute(&mut *conn).await?;
            }
        }
        Targets::ListMembers { list_id, count } => {
            // Ids minted in the statement: one prefix, numbered in lead-id order.
            let inserted = sqlx::query(
                "INSERT INTO enrichment_items (id, run_id, lead_id, list_id, membership_id, \
                 status, created_at, updated_at) \
                 SELECT printf('%s%08x', ?1, row_number() OVER (ORDER BY lead_id)), ?2, lead_id, \
                   list_id, id, 'pending', ?3, ?3 \
                 FROM memberships WHERE list_id = ?4 ORDER BY lead_id LIMIT ?5",
            )
            .bind(id_prefix())
            .bind(run_id)
            .bind(now)
            .bind(list_id)
            .bind(*count as i64)
            .execute(&mut *conn)
            .await?;
            all_members_inserted(*count, inserted.rows_affected())?;
        }
    }
    Ok(())
}

// Statements whose length follows the batch are built with `persistent(false)`: the
// per-connection statement cache would keep one prepared statement per batch size seen, large
// ones hundreds of KiB each, and the server's memory would grow with every new size. The finish,
// on the engine's hot path, instead comes in a few fixed sizes (`finish_shape`) that stay
// prepared: preparing its statement for a full batch costs about as much as running it.

/// The largest finish statement, in rows: a full batch of the worker's outcomes.
const FINISH_SHAPE_MAX: usize = 512;

/// The values of one row of the finish statement (`v.column1` to `v.column16`).
const FINISH_COLUMNS: usize = 16;

/// The rows of the finish statement recording `n` outcomes (at most [`FINISH_SHAPE_MAX`]): the
/// next power of two, the rest padded with rows that match no item. One statement per batch,
/// so one hand-off to the writer's thread, while the writer's statement cache holds at most
/// one prepared statement per size (ten), however the batches vary.
fn finish_shape(n: usize) -> usize {
    n.next_power_of_two().min(FINISH_SHAPE_MAX)
}

/// The UPDATE recording `chunk`'s outcomes (at most [`FINISH_SHAPE_MAX`]), each only if `worker`
/// still holds the item under the lease it was claimed with; `returning`: answer the ids of the
/// items recorded.
fn finish_update<'a>(
    chunk: &'a [FinishRow],
    worker: &'a str,
    now: &'a str,
    returning: bool,
) -> QueryBuilder<'a, Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new(
        "UPDATE enrichment_items SET status = v.column2, result = v.column3, \
         skipped_reason = v.column4, error = v.column5, attempts = attempts + v.column6, \
         input_snapshot = coalesce(v.column7, input_snapshot), \
         lead_snapshot = coalesce(v.column8, lead_snapshot), raw_result = v.column9, \
         started_at = CASE WHEN coalesce(v.column8, lead_snapshot) IS NULL THEN NULL \
           ELSE started_at END, \
         provider = coalesce(v.column10, provider), due_at = coalesce(v.column11, due_at), \
         completed_at = v.column12, \
         provider_submission_id = coalesce(v.column14, provider_submission_id), \
         provider_submitted_at = coalesce(v.column15, provider_submitted_at), \
         provider_callback = CASE WHEN v.column16 THEN NULL ELSE provider_callback END, \
         updated_at = ",
    );
    q.push_bind(now)
        .push(", lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL FROM (");
    // Padding rows are all NULL: their id matches no item.
    let padding = finish_shape(chunk.len()) - chunk.len();
    let rows = chunk
        .iter()
        .map(Some)
        .chain(std::iter::repeat_n(None, padding));
    q.push_values(rows, |mut b, r| {
        let Some(r) = r else {
            for _ in 0..FINISH_COLUMNS {
                b.push_bind(None::<String>);
            }
            return;
        };
        b.push_bind(&r.item_id)
            .push_bind(r.status.as_str())
            .push_bind(&r.result)
            .push_bind(r.skipped.map(SkipReason::as_str))
            .push_bind(&r.error)
            .push_bind(r.attempts)
            .push_bind(&r.input_snapshot)
            .push_bind(&r.lead_snapshot)
            .push_bind(&r.raw_result)
            .push_bind(&r.provider)
            .push_bind(r.due_at)
            .push_bind(&r.completed_at)
            .push_bind(&r.lease_token)
            .push_bind(&r.submission_id)
            .push_bind(r.submitted_at)
            .push_bind(r.clear_callback);
    });
    // Only items this worker still holds: a lost lease means the current holder decides.
    q.push(
        ") AS v WHERE enrichment_items.id = v.column1 \
         AND enrichment_items.status = 'running' \
         AND enrichment_items.lease_owner = ",
    )
    .push_bind(worker)
    .push(" AND enrichment_items.lease_token = v.column13");
    if returning {
        q.push(" RETURNING enrichment_items.id");
    }
    q
}

/// Rows per multi-row INSERT of items (7 bound values each, far below SQLite's limit).
const INSERT_CHUNK: usize = 1000;
/// Active runs considered per claim (round-robin by least recently claimed).
const CLAIM_RUNS: i64 = 16;
/// Finishes per transaction, above the worker's batch of 512 (its UPDATEs take 16 bound values
/// per row, at most [`FINISH_SHAPE_MAX`] rows each: far below SQLite's limit of 32,766).
const FINISH_CHUNK: usize = 1024;

async fn load_run(conn: &mut SqliteConnection, id: &str) -> Result<Run> {
    let row = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM enrichment_runs WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound("enrichment run"))?;
    run_from(&row)
}

/// Per-run changes of the status counts, applied once per transaction.
#[derive(Default)]
struct CountDeltas(HashMap<String, [i64; 5]>);

impl CountDeltas {
    fn slot(status: ItemStatus) -> usize {
        match status {
            ItemStatus::Pending => 0,
            ItemStatus::Running => 1,
            ItemStatus::Completed => 2,
            ItemStatus::Skipped => 3,
            ItemStatus::Failed => 4,
        }
    }

    fn moved(&mut self, run: &str, from: ItemStatus, to: ItemStatus, n: i64) {
        let d = self.0.entry(run.to_string()).or_default();
        d[Self::slot(from)] -= n;
        d[Self::slot(to)] += n;
    }

    /// Apply the counts; a run of `pending`/`running` status left with no pending or running
    /// item is completed by the same statement.
    async fn apply(self, conn: &mut SqliteConnection, now: &str) -> Result<()> {
        for (run, d) in self.0 {
            sqlx::query(
                "UPDATE enrichment_runs SET n_pending = n_pending + ?1, \
                 n_running = n_running + ?2, n_completed = n_completed + ?3, \
                 n_skipped = n_skipped + ?4, n_failed = n_failed + ?5, updated_at = ?6, \
                 status = CASE WHEN status IN ('pending', 'running') \
                   AND n_pending + ?1 = 0 AND n_running + ?2 = 0 THEN 'completed' \
                   ELSE status END, \
                 completed_at = CASE WHEN status IN ('pending', 'running') \
                   AND n_pending + ?1 = 0 AND n_running + ?2 = 0 THEN ?6 \
                   ELSE completed_at END \
                 WHERE id = ?7",
            )
            .bind(d[0])
            .bind(d[1])
            .bind(d[2])
            .bind(d[3])
            .bind(d[4])
            .bind(now)
            .bind(&run)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// Skip every item of a run in status `from` (pending, or running when the run fails) with
/// `reason`; returns how many. A running item's lease ends with it, so its holder's finish is
/// dropped by the lease guard.
async fn skip_items(
    conn: &mut SqliteConnection,
    run_id: &str,
    from: ItemStatus,
    reason: SkipReason,
    now: &str,
) -> Result<i64> {
    let done = sqlx::query(
        "UPDATE enrichment_items SET status = 'skipped', skipped_reason = ?, error = NULL, \
         completed_at = ?, updated_at = ?, lease_owner = NULL, lease_token = NULL, \
         lease_expires_at = NULL WHERE run_id = ? AND status = ?",
    )
    .bind(reason.as_str())
    .bind(now)
    .bind(now)
    .bind(run_id)
    .bind(from.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() as i64)
}

/// Write results onto leads' (or memberships') attributes: one update per table.
/// Several results for one lead in a batch apply in order.
async fn write_attributes(
    conn: &mut SqliteConnection,
    writes: Vec<&AttributeWrite>,
    now: &str,
) -> Result<()> {
    let (to_memberships, to_leads): (Vec<_>, Vec<_>) = writes
        .into_iter()
        .partition(|w| w.target == OutputTarget::Membership && w.membership_id.is_some());
    let lead_writes = to_leads.into_iter().map(|w| (&w.lead_id, &w.key, &w.value));
    merge_attributes_into(conn, "leads", lead_writes, Some(now)).await?;
    let membership_writes = to_memberships
        .into_iter()
        .filter_map(|w| Some((w.membership_id.as_ref()?, &w.key, &w.value)));
    merge_attributes_into(conn, "memberships", membership_writes, None).await
}

/// Set `key = value` in the `attributes` of rows of `table` (`leads` or `memberships`) with
/// `json_set`, so the rows are not read back into the process. Rows that no longer exist
/// (deleted meanwhile) are left alone. The writes go as one JSON array of `[id, path, value]`;
/// a row written more than once goes through one statement per write, in order: one
/// `UPDATE … FROM` applies a single match per row.
async fn merge_attributes_into<'a>(
    conn: &mut SqliteConnection,
    table: &str,
    writes: impl IntoIterator<Item = (&'a String, &'a String, &'a Value)>,
    touch: Option<&str>,
) -> Result<()> {
    let mut rounds: Vec<Vec<(&str, String, String)>> = Vec::new();
    let mut writes_of: HashMap<&str, usize> = HashMap::new();
    for (id, key, value) in writes {
        let round = writes_of.entry(id).or_default();
        if rounds.len() == *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push((id, json_label_path(key), value.to_string()));
        *round += 1;
    }
    let touched = if touch.is_some() {
        ", updated_at = ?2"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE {table} SET attributes = json_set(attributes, v.path, json(v.value)){touched} \
         FROM (SELECT value ->> 0 AS id, value ->> 1 AS path, value ->> 2 AS value \
           FROM json_each(?1)) AS v \
         WHERE {table}.id = v.id"
    );
    for round in rounds {
        let mut q = sqlx::query(&sql).bind(serde_json::to_string(&round)?);
        if let Some(now) = touch {
            q = q.bind(now);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The SQLite JSON path of one top-level object key, whatever characters the key holds: the
/// label is quoted, and written as a JSON string body in which `"` (which would end the quoted
/// label) and `\` are `\u` escapes; SQLite compares labels unescaped.
fn json_label_path(key: &str) -> String {
    let mut path = String::with_capacity(key.len() + 4);
    path.push_str("$.\"");
    for c in key.chars() {
        match c {
            '"' | '\\' | '\u{0}'..='\u{1f}' => path.push_str(&format!("\\u{:04x}", c as u32)),
            c => path.push(c),
        }
    }
    path.push('"');
    path
}

impl FinishRow {
    /// A row going back to pending whose run is `run_status` (`cancelled` or `failed`) ends
    /// skipped instead.
    fn end_for_stopped_run(&mut self, run_status: &str, now: &str) {
        let reason = match run_status {
            "cancelled" => SkipReason::RunCancelled,
            "failed" => SkipReason::RunFailed,
            _ => return,
        };
        if self.status == ItemStatus::Pending {
            self.status = ItemStatus::Skipped;
            self.skipped = Some(reason);
            self.error = None;
            self.completed_at = Some(now.to_string());
        }
    }
}

/// Put a leased item back to pending (no attempt spent), or skip it if its run was cancelled
/// or failed meanwhile. `guard` is the extra condition the row must meet.
async fn requeue(
    conn: &mut SqliteConnection,
    deltas: &mut CountDeltas,
    item_id: &str,
    run_id: &str,
    guard: (&str, &str),
    now: &str,
) -> Result<bool> {
    let run_status: Option<String> =
        sqlx::query_scalar("SELECT status FROM enrichment_runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&mut *conn)
            .await?;
    let skip = match run_status.as_deref() {
        Some("cancelled") => Some(SkipReason::RunCancelled),
        Some("failed") => Some(SkipReason::RunFailed),
        _ => None,
    };
    let (sql, to) = match skip {
        Some(_) => (
            format!(
                "UPDATE enrichment_items SET status = 'skipped', skipped_reason = ?, error = NULL, \
                 completed_at = ?, updated_at = ?, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
                 WHERE id = ? AND status = 'running' AND {} ?",
                guard.0
            ),
            ItemStatus::Skipped,
        ),
        None => (
            format!(
                "UPDATE enrichment_items SET status = 'pending', skipped_reason = ?, \
                 completed_at = ?, updated_at = ?, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
                 WHERE id = ? AND status = 'running' AND {} ?",
                guard.0
            ),
            ItemStatus::Pending,
        ),
    };
    let done = sqlx::query(&sql)
        .bind(skip.map(SkipReason::as_str))
        .bind(skip.map(|_| now))
        .bind(now)
        .bind(item_id)
        .bind(guard.1)
        .execute(&mut *conn)
        .await?;
    let moved = done.rows_affected() == 1;
    if moved {
        deltas.moved(run_id, ItemStatus::Running, to, 1);
    }
    Ok(moved)
}

/// Record `rows` in one transaction: their items, attribute writes and run counts. Answers
/// how many were recorded; without `returning`, `None` (and nothing written) unless all were.
async fn record_finishes(
    pool: &SqlitePool,
    worker: &str,
    rows: &mut [FinishRow],
    now: &str,
    returning: bool,
) -> Result<Option<u64>> {
    // A row going back to pending needs its run read inside the transaction first. All others
    // are final: their statements are built before the writer is taken, so it does not wait
    // for the binding meanwhile.
    let mut retries_checked = None;
    if rows.iter().any(|r| r.status == ItemStatus::Pending) {
        let mut tx = pool.begin().await?;
        end_retries_of_stopped_runs(&mut tx, rows, now).await?;
        retries_checked = Some(tx);
    }
    let rows = &*rows;
    let mut updates: Vec<_> = rows
        .chunks(FINISH_SHAPE_MAX)
        .map(|chunk| finish_update(chunk, worker, now, returning))
        .collect();
    let mut tx = match retries_checked {
        Some(tx) => tx,
        None => pool.begin().await?,
    };
    let mut ids: HashSet<String> = HashSet::new();
    let mut affected = 0;
    for update in &mut updates {
        let update = update.build();
        if returning {
            for row in update.fetch_all(&mut *tx).await? {
                ids.insert(row.try_get(0)?);
            }
        } else {
            affected += update.execute(&mut *tx).await?.rows_affected();
        }
    }
    if !returning && affected != rows.len() as u64 {
        tx.rollback().await?;
        return Ok(None);
    }
    let recorded = returning.then_some(ids);
    let mut deltas = CountDeltas::default();
    let mut writes = Vec::new();
    for r in rows.iter() {
        if recorded.as_ref().is_none_or(|ids| ids.contains(&r.item_id)) {
            deltas.moved(&r.run_id, ItemStatus::Running, r.status, 1);
            writes.extend(r.write.as_ref());
        }
    }
    let n = recorded.map_or(rows.len(), |ids| ids.len());
    write_attributes(&mut tx, writes, now).await?;
    deltas.apply(&mut tx, now).await?;
    tx.commit().await?;
    Ok(Some(n as u64))
}

/// A retry (or a wait) of an item whose run was cancelled or failed meanwhile ends the item
/// instead. The runs are read only when a row would go back to pending.
async fn end_retries_of_stopped_runs(
    conn: &mut SqliteConnection,
    rows: &mut [FinishRow],
    now: &str,
) -> Result<()> {
    let run_ids: HashSet<&str> = rows
        .iter()
        .filter(|r| r.status == ItemStatus::Pending)
        .map(|r| r.run_id.as_str())
        .collect();
    if run_ids.is_empty() {
        return Ok(());
    }
    let ids = serde_json::to_string(&run_ids)?;
    let stopped: HashMap<String, String> = sqlx::query_as(
        "SELECT id, status FROM enrichment_runs WHERE id IN (SELECT value FROM json_each(?)) \
         AND status IN ('cancelled', 'failed')",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    for row in rows.iter_mut() {
        if let Some(status) = stopped.get(&row.run_id) {
            row.end_for_stopped_run(status, now);
        }
    }
    Ok(())
}

/// Lease up to `?7` due pending items of run `?5` to worker `?1` under token `?2` (until `?3`,
/// at `?4`, due by `?6`), move the run's counts by as many (`changes()`: the rows the first
/// UPDATE leased), and answer how many were leased and the items as JSON objects, all in one
/// row. One statement text, so one hand-off to the writer's thread, which is held meanwhile; a
/// row per item would cross from it one by one.
const CLAIM_FROM_RUN: &str = "\
    UPDATE enrichment_items SET status = 'running', lease_owner = ?1, lease_token = ?2, \
      lease_expires_at = ?3, started_at = coalesce(started_at, ?4), updated_at = ?4 \
    WHERE id IN (SELECT id FROM enrichment_items WHERE run_id = ?5 \
      AND status = 'pending' AND due_at <= ?6 ORDER BY id LIMIT ?7); \
    UPDATE enrichment_runs SET n_pending = n_pending - changes(), \
      n_running = n_running + changes(), \
      status = CASE WHEN changes() > 0 AND status = 'pending' THEN 'running' ELSE status END, \
      started_at = CASE WHEN changes() > 0 THEN coalesce(started_at, ?4) ELSE started_at END, \
      last_claimed_at = ?6, updated_at = ?4 \
    WHERE id = ?5; \
    SELECT count(*), json_group_array(json_object('id', id, 'lead_id', lead_id, 'list_id', list_id, \
      'membership_id', membership_id, 'attempts', attempts, \
      'provider_submission_id', provider_submission_id, \
      'provider_submitted_at', provider_submitted_at, \
      'provider_callback', provider_callback)) \
    FROM enrichment_items WHERE run_id = ?5 AND status = 'running' AND lease_token = ?2";

/// One item as [`CLAIM_FROM_RUN`] answers it.
#[derive(serde::Deserialize)]
struct LeasedRow {
    id: String,
    lead_id: String,
    list_id: Option<String>,
    membership_id: Option<String>,
    attempts: i64,
    provider_submission_id: Option<String>,
    provider_submitted_at: Option<i64>,
    provider_callback: Option<String>,
}

/// The items of `run` leased under `token`, from the JSON row [`CLAIM_FROM_RUN`] answered
/// (read straight into their fields: no map per item).
fn claimed_items(run: &str, token: &str, rows: &str) -> Result<Vec<ClaimedItem>> {
    let rows: Vec<LeasedRow> = serde_json::from_str(rows)?;
    Ok(rows
        .into_iter()
        .map(|r| ClaimedItem {
            id: r.id,
            lease_token: token.to_string(),
            run_id: run.to_string(),
            lead_id: r.lead_id,
            list_id: r.list_id,
            membership_id: r.membership_id,
            attempts: r.attempts,
            submission: submission(
                r.provider_submission_id,
                r.provider_submitted_at,
                r.provider_callback,
            ),
        })
        .collect())
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn run_by_idempotency_key(&self, user_id: &str, key: &str) -> Result<Option<Run>> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM enrichment_runs WHERE user_id = ? AND idempotency_key = ?"
        ))
        .bind(user_id)
        .bind(key)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(run_from).transpose()
    }

    async fn resolve_targets(
        &self,
        workspace: &str,
        ids: &[String],
        list_id: Option<&str>,
    ) -> Result<Vec<ItemTarget>> {
        let mut conn = self.read.acquire().await?;
        if let Some(list) = list_id {
            ensure_list(&mut conn, workspace, list)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound(_) => {
                        Invalid::new("scope.listId", "no list with this id").into()
                    }
                    other => other,
                })?;
        }
        let mut targets = Vec::with_capacity(ids.len());
        let mut seen = std::collections::HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            if !seen.insert(id.as_str()) {
                continue;
            }
            let field = format!("scope.leadIds[{i}]");
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM leads WHERE workspace_id = ? AND id = ?")
                    .bind(workspace)
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?;
            if exists.is_none() {
                return Err(Invalid::new(field, "no lead with this id").into());
            }
            let membership_id = match list_id {
                None => None,
                Some(list) => {
                    let m: Option<String> = sqlx::query_scalar(
                        "SELECT id FROM memberships WHERE list_id = ? AND lead_id = ?",
                    )
                    .bind(list)
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?;
                    Some(m.ok_or_else(|| {
                        Invalid::new(field, format!("lead {id} is not a member of list {list}"))
                    })?)
                }
            };
            targets.push(ItemTarget {
                lead_id: id.clone(),
                list_id: list_id.map(str::to_string),
                membership_id,
            });
        }
        Ok(targets)
    }

    async fn create_run(&self, run: NewRun) -> Result<(Run, bool)> {
        let mut tx = self.write.begin().await?;
        if let Some(key) = &run.idempotency_key {
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT id FROM enrichment_runs WHERE user_id = ? AND idempotency_key = ?",
            )
            .bind(&run.user_id)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = existing {
                return Ok((load_run(&mut tx, &id).await?, true));
            }
        }
        if let Some(limit) = run.max_active_runs.filter(|_| !run.targets.is_empty()) {
            // The write transaction is the only writer, so the count cannot change under it.
            let active: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM enrichment_runs WHERE workspace_id = ? \
                 AND status IN ('pending', 'running')",
            )
            .bind(&run.workspace_id)
            .fetch_one(&mut *tx)
            .await?;
            if active >= i64::from(limit) {
                return Err(too_many_active_runs(limit));
            }
        }
        if run.total_credits > 0 {
            let balance: i64 = sqlx::query_scalar("SELECT balance FROM workspaces WHERE id = ?")
                .bind(&run.workspace_id)
                .fetch_one(&mut *tx)
                .await?;
            if balance < run.total_credits {
                return Err(StoreError::InsufficientCredits {
                    required: run.total_credits,
                    balance,
                });
            }
        }
        let id = new_id();
        let now = now_timestamp();
        let count = run.targets.len() as i64;
        let status = if count == 0 {
            RunStatus::Completed
        } else {
            RunStatus::Pending
        };
        sqlx::query(&format!(
            "INSERT INTO enrichment_runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
             ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, NULL, ?, NULL, ?, ?)"
        ))
        .bind(&id)
        .bind(&run.workspace_id)
        .bind(&run.user_id)
        .bind(status.as_str())
        .bind(run.mode.as_str())
        .bind(&run.enrichment_slug)
        .bind(run.enrichment_snapshot.to_string())
        .bind(run.subject.as_str())
        .bind(&run.scope_type)
        .bind(&run.list_id)
        .bind(run.scope_requested.to_string())
        .bind(count)
        .bind(run.output_target.as_str())
        .bind(&run.attribute_key)
        .bind(run.write_policy.as_str())
        .bind(i64::from(run.persist_results))
        .bind(run.input.to_string())
        .bind(&run.credit_action)
        .bind(run.cost_per_unit)
        .bind(run.total_credits)
        .bind(&run.idempotency_key)
        .bind(to_text(&run.display_request))
        .bind(Option::<String>::None)
        .bind(count)
        .bind((count == 0).then_some(&now))
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        if run.total_credits > 0 {
            add_credits(
                &mut tx,
                &run.workspace_id,
                -run.total_credits,
                "enrichment_run",
                Some(&id),
            )
            .await?;
        }
        insert_items(&mut tx, &id, &run.targets, &now).await?;
        if let Some(url) = &run.webhook_url {
            super::webhooks::attach(&mut tx, &id, url).await?;
        }
        let created = load_run(&mut tx, &id).await?;
        tx.commit().await?;
        Ok((created, false))
    }

    async fn run(&self, workspace: &str, user_id: &str, id: &str) -> Result<Run> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM enrichment_runs \
             WHERE id = ? AND workspace_id = ? AND user_id = ?"
        ))
        .bind(id)
        .bind(workspace)
        .bind(user_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or(StoreError::NotFound("enrichment run"))?;
        run_from(&row)
    }

    async fn items(&self, run_id: &str, query: &ItemQuery) -> Result<(Vec<Item>, bool)> {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {ITEM_COLUMNS} FROM enrichment_items WHERE run_id = "
        ));
        q.push_bind(run_id.to_string());
        if let Some(status) = query.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(lead) = &query.lead_id {
            q.push(" AND lead_id = ").push_bind(lead.clone());
        }
        if let Some(after) = &query.after {
            q.push(" AND id > ").push_bind(after.clone());
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(query.limit) + 1);
        let rows = q.build().fetch_all(&self.read).await?;
        let mut items = rows.iter().map(item_from).collect::<Result<Vec<_>>>()?;
        let more = items.len() > query.limit as usize;
        items.truncate(query.limit as usize);
        Ok((items, more))
    }

    async fn cancel_run(&self, workspace: &str, user_id: &str, id: &str) -> Result<Run> {
        let mut tx = self.write.begin().await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM enrichment_runs WHERE id = ? AND workspace_id = ? AND user_id = ?",
        )
        .bind(id)
        .bind(workspace)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let status = status.ok_or(StoreError::NotFound("enrichment run"))?;
        let parsed = RunStatus::parse(&status).ok_or_else(|| decode_err("status", &status))?;
        if !parsed.is_cancellable() {
            return Err(StoreError::StateConflict {
                reason: "run_not_cancellable",
                message: format!(
                    "The run is {status}; only pending or running runs can be cancelled."
                ),
            });
        }
        let now = now_timestamp();
        let done = sqlx::query(
            "UPDATE enrichment_runs SET status = 'cancelled', cancelled_at = ?, completed_at = ?, \
             updated_at = ? WHERE id = ? AND status = ?",
        )
        .bind(&now)
        .bind(&now)
        .bind(&now)
        .bind(id)
        .bind(&status)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::StateConflict {
                reason: "run_status_changed",
                message: "The run's status changed while cancelling; read it again.".into(),
            });
        }
        let skipped = skip_items(
            &mut tx,
            id,
            ItemStatus::Pending,
            SkipReason::RunCancelled,
            &now,
        )
        .await?;
        let mut deltas = CountDeltas::default();
        deltas.moved(id, ItemStatus::Pending, ItemStatus::Skipped, skipped);
        deltas.apply(&mut tx, &now).await?;
        let run = load_run(&mut tx, id).await?;
        tx.commit().await?;
        Ok(run)
    }

    async fn claim_items(
        &self,
        worker: &str,
        max: usize,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<ClaimedItem>> {
        let mut tx = self.write.begin().await?;
        let runs: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM enrichment_runs WHERE status IN ('pending', 'running') \
             AND n_pending > 0 ORDER BY last_claimed_at, id LIMIT ?",
        )
        .bind(CLAIM_RUNS)
        .fetch_all(&mut *tx)
        .await?;
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_timestamp();
        let token = new_id();
        let share = max.div_ceil(runs.len()).max(1);
        // Each run's items as a JSON text, read once the writer is free again.
        let mut leased: Vec<(&String, String)> = Vec::new();
        let mut claimed = 0;
        for run in &runs {
            // A run left without a share is still marked as just claimed from, as the others.
            let want = share.min(max - claimed);
            let (n, rows): (i64, String) = sqlx::query_as(CLAIM_FROM_RUN)
                .bind(worker)
                .bind(&token)
                .bind(lease_until_ms)
                .bind(&now)
                .bind(run)
                .bind(now_ms)
                .bind(want as i64)
                .fetch_one(&mut *tx)
                .await?;
            claimed += n as usize;
            leased.push((run, rows));
        }
        tx.commit().await?;
        let mut items = Vec::with_capacity(claimed);
        for (run, rows) in leased {
            items.extend(claimed_items(run, &token, &rows)?);
        }
        Ok(items)
    }

    async fn run_for_worker(&self, id: &str) -> Result<Run> {
        let mut conn = self.read.acquire().await?;
        load_run(&mut conn, id).await
    }

    async fn leads_by_id(&self, workspace: &str, ids: &[String]) -> Result<Vec<Lead>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One row holding every lead (with its lists) as JSON: a row per lead would cross from
        // the database thread one by one.
        let rows: String = sqlx::query_scalar(
            "SELECT json_group_array(json_object('id', id, 'type', type, 'fields', fields, \
               'attributes', attributes, 'created_at', created_at, 'updated_at', updated_at, \
               'lists', (SELECT json_group_array(json_array(id, name)) FROM ( \
                 SELECT l.id, l.name FROM memberships m JOIN lists l ON l.id = m.list_id \
                 WHERE m.lead_id = leads.id ORDER BY l.is_all DESC, l.id)))) \
             FROM leads WHERE workspace_id = ? AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(workspace)
        .bind(serde_json::to_string(ids)?)
        .fetch_one(&self.read)
        .await?;
        let rows: Vec<Map<String, Value>> = serde_json::from_str(&rows)?;
        rows.iter()
            .map(|row| {
                let mut lead = lead_from(row)?;
                let lists: Vec<(String, String)> = match row.get("lists") {
                    Some(lists) => serde_json::from_value(lists.clone())?,
                    None => Vec::new(),
                };
                lead.lists = lists
                    .into_iter()
                    .map(|(id, name)| ListRef { id, name })
                    .collect();
                Ok(lead)
            })
            .collect()
    }

    async fn membership_attributes(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Map<String, Value>>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut q =
                QueryBuilder::<Sqlite>::new("SELECT id, attributes FROM memberships WHERE id IN (");
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(id.clone());
            }
            q.push(")");
            for row in q.build().persistent(false).fetch_all(&self.read).await? {
                let text: String = row.try_get(1)?;
                out.insert(row.try_get(0)?, serde_json::from_str(&text)?);
            }
        }
        Ok(out)
    }

    async fn finish_items(&self, worker: &str, finishes: &[Finish], now_ms: i64) -> Result<u64> {
        let _ = now_ms;
        let now = now_timestamp();
        let mut rows: Vec<FinishRow> = finishes.iter().map(|f| FinishRow::new(f, &now)).collect();
        let mut recorded = 0;
        for chunk in rows.chunks_mut(FINISH_CHUNK) {
            // Every item recorded is the common case, told by the count alone: no row per item
            // crosses from the database thread. Otherwise (a lease was lost) the transaction
            // is undone and done again naming the items that were recorded.
            let all = record_finishes(&self.write, worker, chunk, &now, false).await?;
            recorded += match all {
                Some(n) => n,
                None => record_finishes(&self.write, worker, chunk, &now, true)
                    .await?
                    .unwrap_or(0),
            };
        }
        Ok(recorded)
    }

    async fn heartbeat(
        &self,
        worker: &str,
        item_ids: &[String],
        lease_until_ms: i64,
    ) -> Result<()> {
        if item_ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE enrichment_items SET lease_expires_at = ? \
             WHERE id IN (SELECT value FROM json_each(?)) AND lease_owner = ? \
             AND status = 'running'",
        )
        .bind(lease_until_ms)
        .bind(serde_json::to_string(item_ids)?)
        .bind(worker)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn release_items(&self, worker: &str, item_ids: &[String]) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let now = now_timestamp();
        let mut deltas = CountDeltas::default();
        for id in item_ids {
            let run: Option<String> =
                sqlx::query_scalar("SELECT run_id FROM enrichment_items WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(run) = run {
                requeue(
                    &mut tx,
                    &mut deltas,
                    id,
                    &run,
                    ("lease_owner =", worker),
                    &now,
                )
                .await?;
            }
        }
        deltas.apply(&mut tx, &now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rescue_expired(&self, now_ms: i64) -> Result<u64> {
        let mut tx = self.write.begin().await?;
        let expired = sqlx::query(
            "SELECT id, run_id FROM enrichment_items WHERE status = 'running' \
             AND lease_expires_at < ?",
        )
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let now = now_timestamp();
        let mut deltas = CountDeltas::default();
        let mut rescued = 0;
        let cutoff = now_ms.to_string();
        for row in &expired {
            let id: String = row.try_get(0)?;
            let run: String = row.try_get(1)?;
            let guard = ("lease_expires_at <", cutoff.as_str());
            if requeue(&mut tx, &mut deltas, &id, &run, guard, &now).await? {
                rescued += 1;
            }
        }
        deltas.apply(&mut tx, &now).await?;
        tx.commit().await?;
        Ok(rescued)
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        // Counts are columns of the run (partial index of active runs); the oldest pending item
        // of each active run is the first entry of its (run_id, status, id) index, ids being
        // in creation order.
        let row = sqlx::query(
            "SELECT COALESCE(SUM(n_pending), 0) AS pending, COALESCE(SUM(n_running), 0) AS running, \
             MIN((SELECT created_at FROM enrichment_items i WHERE i.run_id = r.id \
                  AND i.status = 'pending' ORDER BY i.id LIMIT 1)) AS oldest \
             FROM enrichment_runs r WHERE r.status IN ('pending', 'running')",
        )
        .fetch_one(&self.read)
        .await?;
        Ok(QueueStats {
            pending: row.try_get("pending")?,
            running: row.try_get("running")?,
            oldest_pending_created_at: row.try_get("oldest")?,
        })
    }

    async fn record_provider_callback(
        &self,
        provider: &str,
        submission_id: &str,
        body: &str,
        now_ms: i64,
    ) -> Result<bool> {
        // A waiting item becomes due now; one being polled right now keeps the body for its
        // next claim (see docs/providers.md).
        let done = sqlx::query(
            "UPDATE enrichment_items SET provider_callback = ?, \
             due_at = CASE WHEN status = 'pending' THEN ? ELSE due_at END, updated_at = ? \
             WHERE provider = ? AND provider_submission_id = ? \
             AND status IN ('pending', 'running')",
        )
        .bind(body)
        .bind(now_ms)
        .bind(now_timestamp())
        .bind(provider)
        .bind(submission_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn fail_run(&self, run_id: &str, message: &str) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let now = now_timestamp();
        let done = sqlx::query(
            "UPDATE enrichment_runs SET status = 'failed', error = ?, completed_at = ?, \
             updated_at = ? WHERE id = ? AND status IN ('pending', 'running')",
        )
        .bind(json!({"message": message, "details": null}).to_string())
        .bind(&now)
        .bind(&now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            // Every item not yet ended is skipped, running ones too: a failed run is terminal
            // and its counts show no item still running.
            let mut deltas = CountDeltas::default();
            for from in [ItemStatus::Pending, ItemStatus::Running] {
                let skipped =
                    skip_items(&mut tx, run_id, from, SkipReason::RunFailed, &now).await?;
                deltas.moved(run_id, from, ItemStatus::Skipped, skipped);
            }
            deltas.apply(&mut tx, &now).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    /// The attributes of `id` as stored, parsed.
    async fn attributes(conn: &mut SqliteConnection, id: &str) -> Value {
        let text: String = sqlx::query_scalar("SELECT attributes FROM leads WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn finish_statements_come_in_ten_shapes_padded_by_less_than_half() {
        let mut shapes = HashSet::new();
        for n in 1..=FINISH_SHAPE_MAX {
            let shape = finish_shape(n);
            assert!(
                shape.is_power_of_two() && shape >= n && shape < 2 * n,
                "n = {n}: {shape}"
            );
            shapes.insert(shape);
        }
        assert_eq!(shapes.len(), 10, "1, 2, 4, … 512");
    }

    #[tokio::test]
    async fn attribute_writes_keep_other_keys_apply_in_order_and_take_any_key() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE leads (id TEXT PRIMARY KEY, attributes TEXT, updated_at TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO leads VALUES ('l1', '{\"kept\":[1,null]}', 'then'), ('l2', '{}', 'then')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let odd_keys = [
            "say \"hi\"",
            "back\\slash",
            "a.b[0]",
            "tab\there",
            "$",
            "ünï😀",
            "",
        ];
        let mut writes = vec![
            ("l1".to_string(), "k".to_string(), json!(1)),
            ("l2".to_string(), "k".to_string(), json!({"nested": null})),
            ("gone".to_string(), "k".to_string(), json!(0)),
            ("l1".to_string(), "k".to_string(), json!("last wins")),
        ];
        for (i, key) in odd_keys.iter().enumerate() {
            writes.push(("l2".to_string(), key.to_string(), json!(i)));
        }
        merge_attributes_into(
            &mut conn,
            "leads",
            writes.iter().map(|(i, k, v)| (i, k, v)),
            Some("now"),
        )
        .await
        .unwrap();
        // A second write to an odd key replaces its value instead of adding a second label.
        let again: Vec<(String, String, Value)> = odd_keys
            .iter()
            .map(|k| ("l2".to_string(), k.to_string(), json!(format!("again {k}"))))
            .collect();
        merge_attributes_into(
            &mut conn,
            "leads",
            again.iter().map(|(i, k, v)| (i, k, v)),
            None,
        )
        .await
        .unwrap();

        assert_eq!(
            attributes(&mut conn, "l1").await,
            json!({"kept": [1, null], "k": "last wins"})
        );
        let l2 = attributes(&mut conn, "l2").await;
        assert_eq!(l2["k"], json!({"nested": null}));
        for key in odd_keys {
            assert_eq!(l2[key], json!(format!("again {key}")), "{key:?} in {l2}");
        }
        let labels: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM leads, json_each(leads.attributes) WHERE leads.id = 'l2'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            labels as usize,
            odd_keys.len() + 1,
            "one label per key: {l2}"
        );
        let touched: String = sqlx::query_scalar("SELECT updated_at FROM leads WHERE id = 'l1'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(touched, "now");
    }
}
