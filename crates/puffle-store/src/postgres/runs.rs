//! Enrichment runs and items on PostgreSQL, shared by a fleet of API and worker processes.
//!
//! SQLite serializes every write; here many transactions run at once, so one locking rule holds
//! everywhere and keeps them free of deadlocks: **whoever holds a run's row never waits for an
//! item, lead or membership row that a finish may hold.**
//!
//! - Claims, cancels, releases, rescues and run failures take run rows first (in id order when
//!   they wait for them, or with `SKIP LOCKED`, which never waits, when they may do without
//!   some), then items: claims, releases and rescues with `SKIP LOCKED`; a failing run's
//!   running items too. A cancel waits only for pending items, and those only a claim of the
//!   same run (which holds the run first) or a single-statement callback write ever holds.
//! - A finish takes its items, then leads and memberships (each in id order), and its run rows
//!   last, in id order, only to move the counts: the rows every claim of the run needs are held
//!   for a statement or two instead of the whole batch.
//!
//! Holding a run's row also makes its status a stable answer for the rest of the transaction: a
//! cancel cannot slip in between a requeue's "is the run still active?" and its write (which
//! would leave a `pending` item in a cancelled run forever), and the status counts on the row
//! change with the items they count. A finish reads the status once it holds the row and ends
//! the retries of a run that ended meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Weak;
use std::time::Duration;

use async_trait::async_trait;
use puffle_domain::lead::Lead;
use puffle_domain::run::{ItemStatus, OutputTarget, RunStatus, SkipReason};
use puffle_domain::{id_prefix, new_id, now_timestamp, Invalid};
use serde_json::{json, Map, Value};
use sqlx::postgres::{PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row};
use tokio::sync::Notify;

use super::{add_credits, attach_lists, ensure_list, PgStore, WORK_CHANNEL};
use crate::rows::{
    decode_err, item_from, lead_from, parse_enum, run_from, to_text, FinishRow, ITEM_COLUMNS,
    RUN_COLUMNS,
};
use crate::runs::*;
use crate::{Result, StoreError};

/// Active runs considered per claim (round-robin by least recently claimed).
const CLAIM_RUNS: i64 = 16;
/// Items per `INSERT … SELECT FROM unnest(…)`: big enough that a 100,000-lead run is a handful
/// of statements, small enough to keep each message a few megabytes.
const INSERT_CHUNK: usize = 20_000;

async fn load_run(conn: &mut PgConnection, id: &str) -> Result<Run> {
    let row = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM enrichment_runs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound("enrichment run"))?;
    run_from(&row)
}

/// Lock the rows of `runs` in id order (waiting for other holders) and return their statuses.
/// Every transaction that waits for several run rows takes them this way, so none can wait in a
/// cycle.
async fn lock_runs(conn: &mut PgConnection, runs: &[String]) -> Result<HashMap<String, String>> {
    if runs.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT id, status FROM enrichment_runs WHERE id = ANY($1) ORDER BY id \
         FOR NO KEY UPDATE",
    )
    .bind(runs)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// The skip reason a requeued item gets instead of `pending` when its run ended meanwhile.
fn ended_run_reason(status: Option<&str>) -> Option<SkipReason> {
    match status {
        Some("cancelled") => Some(SkipReason::RunCancelled),
        Some("failed") => Some(SkipReason::RunFailed),
        _ => None,
    }
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

    /// One statement for every run touched; a `pending`/`running` run left with no pending or
    /// running item becomes `completed` in the same statement. The caller holds the run rows
    /// already (see the module comment), so this never waits.
    async fn apply(self, conn: &mut PgConnection, now: &str) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(self.0.len());
        let mut cols: [Vec<i64>; 5] = Default::default();
        for (run, d) in self.0 {
            ids.push(run);
            for (col, v) in cols.iter_mut().zip(d) {
                col.push(v);
            }
        }
        let [p, r, c, s, f] = cols;
        sqlx::query(
            "UPDATE enrichment_runs AS run SET n_pending = run.n_pending + d.p, \
             n_running = run.n_running + d.r, n_completed = run.n_completed + d.c, \
             n_skipped = run.n_skipped + d.s, n_failed = run.n_failed + d.f, updated_at = $7, \
             status = CASE WHEN run.status IN ('pending', 'running') \
                 AND run.n_pending + d.p = 0 AND run.n_running + d.r = 0 \
                 THEN 'completed' ELSE run.status END, \
             completed_at = CASE WHEN run.status IN ('pending', 'running') \
                 AND run.n_pending + d.p = 0 AND run.n_running + d.r = 0 \
                 THEN $7 ELSE run.completed_at END \
             FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[]) \
                 AS d(id, p, r, c, s, f) \
             WHERE run.id = d.id",
        )
        .bind(&ids)
        .bind(&p)
        .bind(&r)
        .bind(&c)
        .bind(&s)
        .bind(&f)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Skip every item of a run in status `from` (pending, or running when the run fails) with
/// `reason`; returns how many. A running item's lease ends with it, so its holder's finish is
/// dropped by the lease guard. The caller holds the run's row, so nobody else changes its pending
/// items meanwhile; a running item locked right now is being finished (see the module comment),
/// so it is left to that finish, which sees the run ended once it gets the run's row.
async fn skip_items(
    conn: &mut PgConnection,
    run_id: &str,
    from: ItemStatus,
    reason: SkipReason,
    now: &str,
) -> Result<i64> {
    let set = "UPDATE enrichment_items SET status = 'skipped', skipped_reason = $1, \
               error = NULL, completed_at = $2, updated_at = $2, lease_owner = NULL, \
               lease_token = NULL, lease_expires_at = NULL";
    let sql = if from == ItemStatus::Running {
        format!(
            "{set} WHERE status = $4 AND id IN (SELECT id FROM enrichment_items \
             WHERE run_id = $3 AND status = $4 FOR NO KEY UPDATE SKIP LOCKED)"
        )
    } else {
        format!("{set} WHERE run_id = $3 AND status = $4")
    };
    let done = sqlx::query(&sql)
        .bind(reason.as_str())
        .bind(now)
        .bind(run_id)
        .bind(from.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() as i64)
}

/// Write results onto leads' (or memberships') attributes: one locking read and one multi-row
/// update per table. Several results for one lead in a batch apply in order.
async fn write_attributes(
    conn: &mut PgConnection,
    writes: Vec<AttributeWrite>,
    now: &str,
) -> Result<()> {
    let (to_memberships, to_leads): (Vec<_>, Vec<_>) = writes
        .into_iter()
        .partition(|w| w.target == OutputTarget::Membership && w.membership_id.is_some());
    let lead_writes = to_leads.into_iter().map(|w| (w.lead_id, w.key, w.value));
    merge_attributes_into(conn, "leads", lead_writes.collect(), Some(now)).await?;
    let membership_writes = to_memberships
        .into_iter()
        .filter_map(|w| Some((w.membership_id?, w.key, w.value)));
    merge_attributes_into(conn, "memberships", membership_writes.collect(), None).await
}

/// Set `key = value` in the `attributes` of rows of `table` (`leads` or `memberships`). Rows that
/// no longer exist (deleted meanwhile) are left alone. The rows are read with a lock (in id
/// order) because the merge happens here: an API edit or another worker's result committed
/// between an unlocked read and the write would be lost.
async fn merge_attributes_into(
    conn: &mut PgConnection,
    table: &str,
    writes: Vec<(String, String, Value)>,
    touch: Option<&str>,
) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = writes
        .iter()
        .map(|(id, _, _)| id.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows = sqlx::query(&format!(
        "SELECT id, attributes FROM {table} WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut merged: HashMap<String, Map<String, Value>> = HashMap::with_capacity(rows.len());
    for row in rows {
        let text: String = row.try_get(1)?;
        merged.insert(row.try_get(0)?, serde_json::from_str(&text)?);
    }
    for (id, key, value) in writes {
        if let Some(attributes) = merged.get_mut(&id) {
            attributes.insert(key, value);
        }
    }
    let mut ids = Vec::with_capacity(merged.len());
    let mut docs = Vec::with_capacity(merged.len());
    for (id, attributes) in merged {
        ids.push(id);
        docs.push(serde_json::to_string(&attributes)?);
    }
    let touch_sql = if touch.is_some() {
        ", updated_at = $3"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE {table} AS t SET attributes = v.attributes{touch_sql} \
         FROM unnest($1::text[], $2::text[]) AS v(id, attributes) WHERE t.id = v.id"
    );
    let mut update = sqlx::query(&sql).bind(&ids).bind(&docs);
    if let Some(now) = touch {
        update = update.bind(now);
    }
    update.execute(&mut *conn).await?;
    Ok(())
}

/// The finishes as one array per column, for one `UPDATE … FROM unnest(…)`.
#[derive(Default)]
struct FinishColumns {
    id: Vec<String>,
    status: Vec<&'static str>,
    result: Vec<Option<String>>,
    skipped: Vec<Option<&'static str>>,
    error: Vec<Option<String>>,
    attempts: Vec<i64>,
    input_snapshot: Vec<Option<String>>,
    lead_snapshot: Vec<Option<String>>,
    raw_result: Vec<Option<String>>,
    provider: Vec<Option<String>>,
    due_at: Vec<Option<i64>>,
    completed_at: Vec<Option<String>>,
    token: Vec<String>,
    submission_id: Vec<Option<String>>,
    submitted_at: Vec<Option<i64>>,
    clear_callback: Vec<bool>,
}

impl FinishColumns {
    fn of(rows: &[FinishRow]) -> FinishColumns {
        let mut c = FinishColumns::default();
        for r in rows {
            c.id.push(r.item_id.clone());
            c.status.push(r.status.as_str());
            c.result.push(r.result.clone());
            c.skipped.push(r.skipped.map(SkipReason::as_str));
            c.error.push(r.error.clone());
            c.attempts.push(r.attempts);
            c.input_snapshot.push(r.input_snapshot.clone());
            c.lead_snapshot.push(r.lead_snapshot.clone());
            c.raw_result.push(r.raw_result.clone());
            c.provider.push(r.provider.clone());
            c.due_at.push(r.due_at);
            c.completed_at.push(r.completed_at.clone());
            c.token.push(r.lease_token.clone());
            c.submission_id.push(r.submission_id.clone());
            c.submitted_at.push(r.submitted_at);
            c.clear_callback.push(r.clear_callback);
        }
        c
    }
}

/// Record the finishes `worker` still holds the lease of; returns the ids recorded. The guard
/// (running, this owner, this claim's token) drops the outcome of a lease that expired and was
/// rescued: the current holder decides that item.
///
/// The guard's status and owner come from the fenced (`OFFSET 0`) row source, not as constants,
/// so that the only way into `enrichment_items` is its primary key, one lookup per outcome. As
/// constants they matched the partial index of running items by owner, whose row estimate is
/// whatever the last ANALYZE saw (often none): the planner then scanned this worker's leases
/// and, for each, every outcome of the batch again (`auto_explain`: 260 ms per 512 outcomes,
/// the whole engine waiting on it).
async fn record_finishes(
    conn: &mut PgConnection,
    worker: &str,
    rows: &[FinishRow],
    now: &str,
) -> Result<HashSet<String>> {
    let c = FinishColumns::of(rows);
    let recorded: Vec<String> = sqlx::query_scalar(
        "UPDATE enrichment_items AS e SET status = v.status, result = v.result, \
         skipped_reason = v.skipped, error = v.error, attempts = e.attempts + v.attempts, \
         input_snapshot = coalesce(v.input_snapshot, e.input_snapshot), \
         lead_snapshot = coalesce(v.lead_snapshot, e.lead_snapshot), raw_result = v.raw_result, \
         started_at = CASE WHEN coalesce(v.lead_snapshot, e.lead_snapshot) IS NULL THEN NULL \
             ELSE e.started_at END, \
         provider = coalesce(v.provider, e.provider), due_at = coalesce(v.due_at, e.due_at), \
         completed_at = v.completed_at, updated_at = $14, \
         provider_submission_id = coalesce(v.submission_id, e.provider_submission_id), \
         provider_submitted_at = coalesce(v.submitted_at, e.provider_submitted_at), \
         provider_callback = CASE WHEN v.clear_callback THEN NULL ELSE e.provider_callback END, \
         lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
         FROM (SELECT u.*, 'running'::text AS held_status, $15::text AS held_by \
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                   $6::int8[], $7::text[], $8::text[], $9::text[], $10::text[], $11::int8[], \
                   $12::text[], $13::text[], $16::text[], $17::int8[], $18::bool[]) \
               AS u(id, status, result, skipped, error, attempts, input_snapshot, \
                    lead_snapshot, raw_result, provider, due_at, completed_at, token, \
                    submission_id, submitted_at, clear_callback) \
               OFFSET 0) AS v \
         WHERE e.id = v.id AND e.status = v.held_status AND e.lease_owner = v.held_by \
             AND e.lease_token = v.token \
         RETURNING e.id",
    )
    .bind(&c.id)
    .bind(&c.status)
    .bind(&c.result)
    .bind(&c.skipped)
    .bind(&c.error)
    .bind(&c.attempts)
    .bind(&c.input_snapshot)
    .bind(&c.lead_snapshot)
    .bind(&c.raw_result)
    .bind(&c.provider)
    .bind(&c.due_at)
    .bind(&c.completed_at)
    .bind(&c.token)
    .bind(now)
    .bind(worker)
    .bind(&c.submission_id)
    .bind(&c.submitted_at)
    .bind(&c.clear_callback)
    .fetch_all(&mut *conn)
    .await?;
    Ok(recorded.into_iter().collect())
}

/// A retry (or a wait for a provider) recorded in a run that was cancelled or failed before this
/// finish got the run's row ends as skipped instead, as a requeue would end it: a pending item
/// must never be left in an ended run. Rare (the run ended while the batch was executing), so
/// one more statement only when it happens; `rows` then say what was written.
async fn end_retries_of_ended_runs(
    conn: &mut PgConnection,
    rows: &mut [FinishRow],
    run_status: &HashMap<String, String>,
    now: &str,
) -> Result<()> {
    let mut ids = Vec::new();
    let mut reasons = Vec::new();
    for row in rows.iter_mut().filter(|r| r.status == ItemStatus::Pending) {
        if let Some(reason) = ended_run_reason(run_status.get(&row.run_id).map(String::as_str)) {
            (row.status, row.skipped, row.error) = (ItemStatus::Skipped, Some(reason), None);
            ids.push(row.item_id.clone());
            reasons.push(reason.as_str());
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE enrichment_items AS e SET status = 'skipped', skipped_reason = u.reason, \
         error = NULL, completed_at = $3, updated_at = $3 \
         FROM unnest($1::text[], $2::text[]) AS u(id, reason) WHERE e.id = u.id",
    )
    .bind(&ids)
    .bind(&reasons)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Which leased items go back to pending, besides being `running` in one of the locked runs.
enum RequeueGuard<'a> {
    /// These items, if `worker` holds them (a release).
    HeldBy {
        worker: &'a str,
        item_ids: &'a [String],
    },
    /// Every lease that expired before this instant (a rescue).
    ExpiredBefore(i64),
}

/// Put leased items of `runs` back to pending (no attempt spent), or skip them if their run was
/// cancelled or failed meanwhile. The caller holds the run rows, so `run_status` stays true until
/// commit. Returns how many moved, with their count changes added to `deltas`.
async fn requeue(
    conn: &mut PgConnection,
    deltas: &mut CountDeltas,
    run_status: &HashMap<String, String>,
    guard: RequeueGuard<'_>,
    now: &str,
) -> Result<u64> {
    let (runs, skips): (Vec<&str>, Vec<Option<&str>>) = run_status
        .iter()
        .map(|(id, status)| {
            let skip = ended_run_reason(Some(status)).map(SkipReason::as_str);
            (id.as_str(), skip)
        })
        .unzip();
    let mut q = QueryBuilder::<Postgres>::new(
        "UPDATE enrichment_items AS e SET \
         status = CASE WHEN s.skip IS NULL THEN 'pending' ELSE 'skipped' END, \
         skipped_reason = s.skip, \
         error = CASE WHEN s.skip IS NULL THEN e.error ELSE NULL END, \
         completed_at = CASE WHEN s.skip IS NULL THEN NULL ELSE ",
    );
    q.push_bind(now)
        .push(" END, updated_at = ")
        .push_bind(now)
        .push(
            ", lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
             FROM unnest(",
        )
        .push_bind(runs.clone())
        .push("::text[], ")
        .push_bind(skips)
        .push("::text[]) AS s(run_id, skip), (SELECT i.id, i.run_id FROM enrichment_items AS i ");
    match guard {
        // Owner and status from a fenced row source, so the items are found by primary key
        // (see `heartbeat`); the join with `s` keeps those of the locked runs.
        RequeueGuard::HeldBy { worker, item_ids } => {
            q.push("JOIN (SELECT u.id, ")
                .push_bind(worker)
                .push("::text AS owner, 'running'::text AS held FROM unnest(")
                .push_bind(item_ids)
                .push(
                    "::text[]) AS u(id) OFFSET 0) AS h ON i.id = h.id \
                     WHERE i.lease_owner = h.owner AND i.status = h.held",
                );
        }
        RequeueGuard::ExpiredBefore(now_ms) => {
            q.push("WHERE i.run_id = ANY(")
                .push_bind(runs)
                .push(") AND i.status = 'running' AND i.lease_expires_at < ")
                .push_bind(now_ms);
        }
    }
    // SKIP LOCKED: a leased item locked right now is being finished, and its finish decides it
    // (see the module comment); a rescue comes back for it if that finish rolls back. The rows
    // `free` locked are running and stay so, hence `e` matched by primary key alone.
    q.push(
        " FOR NO KEY UPDATE OF i SKIP LOCKED) AS free \
         WHERE e.id = free.id AND s.run_id = free.run_id",
    );
    q.push(" RETURNING e.run_id, e.status");
    let rows = q.build().fetch_all(&mut *conn).await?;
    for row in &rows {
        let run: String = row.try_get(0)?;
        let to = parse_enum(row, "status", ItemStatus::parse)?;
        deltas.moved(&run, ItemStatus::Running, to, 1);
    }
    Ok(rows.len() as u64)
}

/// Insert a run's row; `None` if the user already has a run with its idempotency key (the
/// insert waits for a concurrent duplicate to commit or roll back, then conflicts or proceeds).
async fn insert_run(
    conn: &mut PgConnection,
    id: &str,
    run: &NewRun,
    status: RunStatus,
    now: &str,
) -> Result<Option<String>> {
    let count = run.targets.len() as i64;
    let inserted: Option<String> = sqlx::query_scalar(&format!(
        "INSERT INTO enrichment_runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, NULL, $12, 0, 0, 0, 0, \
         NULL, $23, NULL, $24, $24) \
         ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING id"
    ))
    .bind(id)
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
    .bind((count == 0).then_some(now))
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(inserted)
}

/// Charge the run's price, refusing a short balance. The workspace row is locked before the
/// balance is read, so two runs created at once by two processes cannot both spend it.
/// Refuse a new run if the workspace has `limit` active runs already. Holding the workspace row
/// (the lock `charge` takes too, so the order is the same) serialises concurrent creates of one
/// workspace across the fleet, so the limit is exact.
///
/// The lock and the count are two statements: under READ COMMITTED a statement that waited for
/// the lock still reads with the snapshot it took before waiting, so a count in the same statement
/// would miss the run the previous holder just committed (and four racing creates all passed).
async fn check_active_runs(conn: &mut PgConnection, workspace: &str, limit: u32) -> Result<()> {
    let locked: Option<String> =
        sqlx::query_scalar("SELECT id FROM workspaces WHERE id = $1 FOR NO KEY UPDATE")
            .bind(workspace)
            .fetch_optional(&mut *conn)
            .await?;
    if locked.is_none() {
        return Err(StoreError::NotFound("workspace"));
    }
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM enrichment_runs \
         WHERE workspace_id = $1 AND status IN ('pending', 'running')",
    )
    .bind(workspace)
    .fetch_one(&mut *conn)
    .await?;
    if active >= i64::from(limit) {
        return Err(too_many_active_runs(limit));
    }
    Ok(())
}

async fn charge(conn: &mut PgConnection, run: &NewRun, run_id: &str) -> Result<()> {
    if run.total_credits <= 0 {
        return Ok(());
    }
    let balance: Option<i64> =
        sqlx::query_scalar("SELECT balance FROM workspaces WHERE id = $1 FOR NO KEY UPDATE")
            .bind(&run.workspace_id)
            .fetch_optional(&mut *conn)
            .await?;
    let balance = balance.ok_or(StoreError::NotFound("workspace"))?;
    if balance < run.total_credits {
        return Err(StoreError::InsufficientCredits {
            required: run.total_credits,
            balance,
        });
    }
    add_credits(
        conn,
        &run.workspace_id,
        -run.total_credits,
        "enrichment_run",
        Some(run_id),
    )
    .await?;
    Ok(())
}

/// One pending item per target, in target order. Resolved leads go a chunk of rows per
/// statement (arrays, not one bound value per column per row); a whole list goes in one
/// `INSERT … SELECT`, its ids minted in the statement: one prefix, numbered in lead-id order.
async fn insert_items(
    conn: &mut PgConnection,
    run_id: &str,
    targets: &Targets,
    now: &str,
) -> Result<()> {
    let leads = match targets {
        Targets::Leads(leads) => leads,
        Targets::ListMembers { list_id, count } => {
            let inserted = sqlx::query(
                "INSERT INTO enrichment_items (id, run_id, lead_id, list_id, membership_id, \
                 status, created_at, updated_at) \
                 SELECT $1 || lpad(to_hex(row_number() OVER (ORDER BY lead_id)), 8, '0'), $2, \
                   lead_id, list_id, id, 'pending', $3, $3 \
                 FROM memberships WHERE list_id = $4 ORDER BY lead_id LIMIT $5",
            )
            .bind(id_prefix())
            .bind(run_id)
            .bind(now)
            .bind(list_id)
            .bind(*count as i64)
            .execute(&mut *conn)
            .await?;
            all_members_inserted(*count, inserted.rows_affected())?;
            return Ok(());
        }
    };
    for chunk in leads.chunks(INSERT_CHUNK) {
        let ids: Vec<String> = chunk.iter().map(|_| new_id()).collect();
        let leads: Vec<&str> = chunk.iter().map(|t| t.lead_id.as_str()).collect();
        let lists: Vec<Option<&str>> = chunk.iter().map(|t| t.list_id.as_deref()).collect();
        let memberships: Vec<Option<&str>> =
            chunk.iter().map(|t| t.membership_id.as_deref()).collect();
        sqlx::query(
            "INSERT INTO enrichment_items (id, run_id, lead_id, list_id, membership_id, status, \
             created_at, updated_at) \
             SELECT t.id, $5, t.lead_id, t.list_id, t.membership_id, 'pending', $6, $6 \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
                 AS t(id, lead_id, list_id, membership_id)",
        )
        .bind(&ids)
        .bind(&leads)
        .bind(&lists)
        .bind(&memberships)
        .bind(run_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Resolve explicit lead ids with two queries (not two per lead). The first offending position
/// is reported, a missing lead before a missing membership, as on SQLite.
async fn resolve_lead_ids(
    conn: &mut PgConnection,
    workspace: &str,
    ids: &[String],
    list_id: Option<&str>,
) -> Result<Vec<ItemTarget>> {
    let mut seen = HashSet::new();
    let unique: Vec<(usize, &String)> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| seen.insert(id.as_str()))
        .collect();
    let wanted: Vec<&str> = unique.iter().map(|(_, id)| id.as_str()).collect();
    let existing: HashSet<String> =
        sqlx::query_scalar("SELECT id FROM leads WHERE workspace_id = $1 AND id = ANY($2)")
            .bind(workspace)
            .bind(&wanted)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let memberships: HashMap<String, String> = match list_id {
        None => HashMap::new(),
        Some(list) => {
            let rows = sqlx::query(
                "SELECT lead_id, id FROM memberships WHERE list_id = $1 AND lead_id = ANY($2)",
            )
            .bind(list)
            .bind(&wanted)
            .fetch_all(&mut *conn)
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_>>()?
        }
    };
    let mut targets = Vec::with_capacity(unique.len());
    for (i, id) in unique {
        let field = format!("scope.leadIds[{i}]");
        if !existing.contains(id) {
            return Err(Invalid::new(field, "no lead with this id").into());
        }
        let membership_id = match list_id {
            None => None,
            Some(list) => Some(memberships.get(id).cloned().ok_or_else(|| {
                Invalid::new(field, format!("lead {id} is not a member of list {list}"))
            })?),
        };
        targets.push(ItemTarget {
            lead_id: id.clone(),
            list_id: list_id.map(str::to_string),
            membership_id,
        });
    }
    Ok(targets)
}

/// Which runs a claim takes items from.
#[derive(Clone, Copy)]
enum ClaimFrom {
    /// The least recently claimed active runs that no other transaction holds right now (`SKIP
    /// LOCKED`: claimers spread over runs instead of queueing).
    FreeRuns,
    /// The least recently claimed active run, waiting for whoever holds it: when every
    /// candidate was held, this beats coming back empty-handed and idling a poll interval while
    /// work is waiting. Holding nothing else, the wait cannot be part of a cycle.
    FirstRun,
}

/// Claim in one statement, so the run rows are held for that statement alone: lock the runs
/// (see `ClaimFrom`), lease up to an equal share of each run's due pending items (earlier runs
/// first, `max` in all, each with a lease token of its own), and move the claimed counts and
/// the round-robin mark of every run considered. A run that gave nothing (its pending items are
/// not due yet) still goes to the back of the line, so it cannot keep a slot from others.
///
/// The picked items are held (and still pending) once `picked` has locked them, so the update
/// matches them by primary key alone: with a status test on `e` as well, the planner may read
/// the estimate of pending items an old ANALYZE left (often none) and scan them all for each
/// picked item (`auto_explain`: 12.9 s for 512).
async fn claim_from_runs(
    conn: &mut PgConnection,
    from: ClaimFrom,
    worker: &str,
    max: usize,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<Vec<ClaimedItem>> {
    let (runs, skip_locked) = match from {
        ClaimFrom::FreeRuns => (CLAIM_RUNS, " SKIP LOCKED"),
        ClaimFrom::FirstRun => (1, ""),
    };
    let rows = sqlx::query(&format!(
        "WITH locked AS MATERIALIZED (SELECT id, last_claimed_at FROM enrichment_runs \
             WHERE status IN ('pending', 'running') AND n_pending > 0 \
             ORDER BY last_claimed_at, id LIMIT $1 FOR NO KEY UPDATE{skip_locked}), \
         ranked AS (SELECT id, row_number() OVER (ORDER BY last_claimed_at, id) AS pos, \
             count(*) OVER () AS n FROM locked), \
         leased AS (UPDATE enrichment_items AS e SET status = 'running', lease_owner = $2, \
             lease_token = gen_random_uuid()::text, lease_expires_at = $3, \
             started_at = coalesce(e.started_at, $4), updated_at = $4 \
             FROM (SELECT p.id FROM ranked AS r \
                   CROSS JOIN LATERAL (SELECT i.id FROM enrichment_items AS i \
                       WHERE i.run_id = r.id AND i.status = 'pending' AND i.due_at <= $5 \
                       ORDER BY i.id LIMIT ($6 + r.n - 1) / r.n \
                       FOR NO KEY UPDATE SKIP LOCKED) AS p \
                   ORDER BY r.pos, p.id LIMIT $6) AS picked \
             WHERE e.id = picked.id \
             RETURNING e.id, e.lease_token, e.run_id, e.lead_id, e.list_id, e.membership_id, \
                 e.attempts, e.provider_submission_id, e.provider_submitted_at, \
                 e.provider_callback), \
         counted AS (UPDATE enrichment_runs AS run SET n_pending = run.n_pending - d.n, \
             n_running = run.n_running + d.n, \
             status = CASE WHEN d.n > 0 AND run.status = 'pending' THEN 'running' \
                 ELSE run.status END, \
             started_at = CASE WHEN d.n > 0 THEN coalesce(run.started_at, $4) \
                 ELSE run.started_at END, \
             last_claimed_at = $5, updated_at = $4 \
             FROM (SELECT r.id, count(l.id) AS n FROM ranked AS r \
                   LEFT JOIN leased AS l ON l.run_id = r.id GROUP BY r.id) AS d \
             WHERE run.id = d.id) \
         SELECT l.* FROM leased AS l JOIN ranked AS r ON r.id = l.run_id ORDER BY r.pos, l.id"
    ))
    .bind(runs)
    .bind(worker)
    .bind(lease_until_ms)
    .bind(now_timestamp())
    .bind(now_ms)
    .bind(max as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ClaimedItem {
                id: r.try_get("id")?,
                lease_token: r.try_get("lease_token")?,
                run_id: r.try_get("run_id")?,
                lead_id: r.try_get("lead_id")?,
                list_id: r.try_get("list_id")?,
                membership_id: r.try_get("membership_id")?,
                attempts: r.try_get("attempts")?,
                submission: crate::rows::submission_of(r)?,
            })
        })
        .collect()
}

/// Back-off bounds of the wake-up listener's reconnection.
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(250);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(30);
/// How often an idle listener checks that someone still wants its wake-ups.
const LISTEN_LIVENESS: Duration = Duration::from_secs(2);

/// Forward `WORK_CHANNEL` notifications to `wake` until nobody else holds it, surviving database
/// restarts: a lost connection is rebuilt with a capped back-off, and `wake` is poked after each
/// reconnection because notifications sent meanwhile are lost.
async fn listen_for_work(pool: PgPool, wake: Weak<Notify>) {
    let mut retry = LISTEN_RETRY_MIN;
    while wake.strong_count() > 0 {
        let mut listener = match subscribe(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "cannot listen for new work");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LISTEN_RETRY_MAX);
                continue;
            }
        };
        retry = LISTEN_RETRY_MIN;
        if !poke(&wake) {
            return;
        }
        match forward(&mut listener, &wake).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "lost the connection listening for new work"),
        }
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(WORK_CHANNEL).await?;
    Ok(listener)
}

/// Wake one waiting worker; false once nobody holds `wake` any more.
fn poke(wake: &Weak<Notify>) -> bool {
    match wake.upgrade() {
        Some(notify) => {
            notify.notify_one();
            true
        }
        None => false,
    }
}

/// Pass notifications on until `wake` is gone (`Ok`) or the connection fails (`Err`; the
/// listener is then rebuilt from scratch rather than trusted to recover).
async fn forward(listener: &mut PgListener, wake: &Weak<Notify>) -> Result<()> {
    loop {
        // Reading a notification is cancel-safe (a partial message stays buffered), so the
        // timeout only serves to notice that the worker pool went away.
        match tokio::time::timeout(LISTEN_LIVENESS, listener.try_recv()).await {
            Err(_elapsed) if wake.strong_count() == 0 => return Ok(()),
            Err(_elapsed) => {}
            Ok(Ok(Some(_))) => {
                if !poke(wake) {
                    return Ok(());
                }
            }
            // The connection dropped and the listener reconnected (and listens again) on its
            // own; whatever was announced in between is lost, so wake a worker to look.
            Ok(Ok(None)) => {
                tracing::warn!("reconnected the connection listening for new work");
                if !poke(wake) {
                    return Ok(());
                }
            }
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

#[async_trait]
impl RunStore for PgStore {
    async fn run_by_idempotency_key(&self, user_id: &str, key: &str) -> Result<Option<Run>> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM enrichment_runs \
             WHERE user_id = $1 AND idempotency_key = $2"
        ))
        .bind(user_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_from).transpose()
    }

    async fn resolve_targets(
        &self,
        workspace: &str,
        lead_ids: &[String],
        list_id: Option<&str>,
    ) -> Result<Vec<ItemTarget>> {
        let mut conn = self.pool.acquire().await?;
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
        resolve_lead_ids(&mut conn, workspace, lead_ids, list_id).await
    }

    async fn create_run(&self, run: NewRun) -> Result<(Run, bool)> {
        if let Some(key) = &run.idempotency_key {
            if let Some(existing) = self.run_by_idempotency_key(&run.user_id, key).await? {
                return Ok((existing, true));
            }
        }
        let mut tx = self.pool.begin().await?;
        if let Some(limit) = run.max_active_runs.filter(|_| !run.targets.is_empty()) {
            check_active_runs(&mut tx, &run.workspace_id, limit).await?;
        }
        let id = new_id();
        let now = now_timestamp();
        let status = if run.targets.is_empty() {
            RunStatus::Completed
        } else {
            RunStatus::Pending
        };
        if insert_run(&mut tx, &id, &run, status, &now)
            .await?
            .is_none()
        {
            // A concurrent duplicate (maybe in another process) committed first: answer with
            // its run, charging and creating nothing.
            tx.rollback().await?;
            let key = run.idempotency_key.as_deref().unwrap_or_default();
            let existing = self.run_by_idempotency_key(&run.user_id, key).await?;
            let existing = existing.ok_or_else(|| {
                StoreError::Internal("an idempotency conflict without a run".into())
            })?;
            return Ok((existing, true));
        }
        charge(&mut tx, &run, &id).await?;
        insert_items(&mut tx, &id, &run.targets, &now).await?;
        if let Some(url) = &run.webhook_url {
            super::webhooks::attach(&mut tx, &id, url).await?;
        }
        if !run.targets.is_empty() {
            // Delivered at commit, to every listening worker of the fleet.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WORK_CHANNEL)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        let created = load_run(&mut tx, &id).await?;
        tx.commit().await?;
        Ok((created, false))
    }

    async fn run(&self, workspace: &str, user_id: &str, id: &str) -> Result<Run> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM enrichment_runs \
             WHERE id = $1 AND workspace_id = $2 AND user_id = $3"
        ))
        .bind(id)
        .bind(workspace)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("enrichment run"))?;
        run_from(&row)
    }

    async fn items(&self, run_id: &str, query: &ItemQuery) -> Result<(Vec<Item>, bool)> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
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
        let rows = q.build().fetch_all(&self.pool).await?;
        let mut items = rows.iter().map(item_from).collect::<Result<Vec<_>>>()?;
        let more = items.len() > query.limit as usize;
        items.truncate(query.limit as usize);
        Ok((items, more))
    }

    async fn cancel_run(&self, workspace: &str, user_id: &str, id: &str) -> Result<Run> {
        let mut tx = self.pool.begin().await?;
        // Lock the run first (see the module comment): no claim or requeue of its items can
        // interleave with the cancel.
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM enrichment_runs WHERE id = $1 AND workspace_id = $2 \
             AND user_id = $3 FOR NO KEY UPDATE",
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
            "UPDATE enrichment_runs SET status = 'cancelled', cancelled_at = $1, \
             completed_at = $1, updated_at = $1 WHERE id = $2 AND status = $3",
        )
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
        if max == 0 {
            return Ok(Vec::new());
        }
        // One statement each, no transaction around them: nothing is held between them.
        let mut conn = self.pool.acquire().await?;
        let mut claimed = Vec::new();
        for from in [ClaimFrom::FreeRuns, ClaimFrom::FirstRun] {
            claimed = claim_from_runs(&mut conn, from, worker, max, now_ms, lease_until_ms).await?;
            if !claimed.is_empty() {
                break;
            }
        }
        Ok(claimed)
    }

    async fn run_for_worker(&self, id: &str) -> Result<Run> {
        let mut conn = self.pool.acquire().await?;
        load_run(&mut conn, id).await
    }

    async fn leads_by_id(&self, workspace: &str, ids: &[String]) -> Result<Vec<Lead>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(
            "SELECT id, type, fields, attributes, created_at, updated_at FROM leads \
             WHERE workspace_id = $1 AND id = ANY($2)",
        )
        .bind(workspace)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        let mut leads = rows.iter().map(lead_from).collect::<Result<Vec<_>>>()?;
        attach_lists(&mut conn, &mut leads).await?;
        Ok(leads)
    }

    async fn membership_attributes(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Map<String, Value>>> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let rows = sqlx::query("SELECT id, attributes FROM memberships WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let text: String = row.try_get(1)?;
            out.insert(row.try_get(0)?, serde_json::from_str(&text)?);
        }
        Ok(out)
    }

    async fn finish_items(&self, worker: &str, finishes: &[Finish], now_ms: i64) -> Result<u64> {
        let _ = now_ms;
        if finishes.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let now = now_timestamp();
        let rows: Vec<FinishRow> = finishes.iter().map(|f| FinishRow::new(f, &now)).collect();
        let recorded = record_finishes(&mut tx, worker, &rows, &now).await?;
        let mut rows: Vec<FinishRow> = rows
            .into_iter()
            .filter(|r| recorded.contains(&r.item_id))
            .collect();
        let writes = rows.iter_mut().filter_map(|r| r.write.take()).collect();
        write_attributes(&mut tx, writes, &now).await?;
        // The run rows last (see the module comment): held from here to the commit only.
        let run_ids: Vec<String> = rows
            .iter()
            .map(|r| r.run_id.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let run_status = lock_runs(&mut tx, &run_ids).await?;
        end_retries_of_ended_runs(&mut tx, &mut rows, &run_status, &now).await?;
        let mut deltas = CountDeltas::default();
        for r in &rows {
            deltas.moved(&r.run_id, ItemStatus::Running, r.status, 1);
        }
        deltas.apply(&mut tx, &now).await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
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
        // SKIP LOCKED: an item locked right now is being finished, released or rescued, so its
        // lease is about to end anyway; waiting for it could only deadlock with that writer.
        // The owner and status come from the fenced row source, as in `record_finishes`: as
        // constants they let the planner pick the index of leases by owner, which still lists
        // every item this worker ever held until a vacuum (`auto_explain`: 317 ms, 110,752
        // index entries for 1,024 leases).
        sqlx::query(
            "UPDATE enrichment_items SET lease_expires_at = $1 WHERE id IN ( \
                 SELECT i.id FROM (SELECT u.id, $2::text AS owner, 'running'::text AS held \
                     FROM unnest($3::text[]) AS u(id) OFFSET 0) AS h \
                 JOIN enrichment_items AS i ON i.id = h.id \
                 WHERE i.lease_owner = h.owner AND i.status = h.held \
                 FOR NO KEY UPDATE OF i SKIP LOCKED)",
        )
        .bind(lease_until_ms)
        .bind(worker)
        .bind(item_ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_items(&self, worker: &str, item_ids: &[String]) -> Result<()> {
        if item_ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let runs: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT run_id FROM enrichment_items WHERE id = ANY($1)")
                .bind(item_ids)
                .fetch_all(&mut *tx)
                .await?;
        let run_status = lock_runs(&mut tx, &runs).await?;
        let now = now_timestamp();
        let mut deltas = CountDeltas::default();
        let guard = RequeueGuard::HeldBy { worker, item_ids };
        requeue(&mut tx, &mut deltas, &run_status, guard, &now).await?;
        deltas.apply(&mut tx, &now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rescue_expired(&self, now_ms: i64) -> Result<u64> {
        // First the cheap question, as an index scan in lease order (`LIMIT 1` makes it one):
        // every claim and heartbeat leaves an index entry with an older expiry behind (the
        // column is indexed, so no update is HOT), and only an index scan marks the entries of
        // dead rows so that later scans skip them. Asked as a bitmap scan, which the planner
        // picks for the range alone, the probe revisited every item the worker ever leased,
        // each time (`auto_explain`: up to 1.3 s late in a 100,000-item run).
        let expired: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM enrichment_items WHERE status = 'running' \
             AND lease_expires_at < $1 ORDER BY lease_expires_at LIMIT 1",
        )
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        if expired.is_none() {
            return Ok(0);
        }
        let runs: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT run_id FROM enrichment_items WHERE status = 'running' \
             AND lease_expires_at < $1",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut tx = self.pool.begin().await?;
        let run_status = lock_runs(&mut tx, &runs).await?;
        let now = now_timestamp();
        let mut deltas = CountDeltas::default();
        let guard = RequeueGuard::ExpiredBefore(now_ms);
        let rescued = requeue(&mut tx, &mut deltas, &run_status, guard, &now).await?;
        deltas.apply(&mut tx, &now).await?;
        tx.commit().await?;
        Ok(rescued)
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        // Counts are columns of the active runs; the oldest pending item of each is the first
        // entry of its (run_id, status, id) index, ids being in creation order.
        let row = sqlx::query(
            "SELECT COALESCE(SUM(n_pending), 0)::int8 AS pending, \
             COALESCE(SUM(n_running), 0)::int8 AS running, \
             MIN((SELECT created_at FROM enrichment_items i WHERE i.run_id = r.id \
                  AND i.status = 'pending' ORDER BY i.id LIMIT 1)) AS oldest \
             FROM enrichment_runs r WHERE r.status IN ('pending', 'running')",
        )
        .fetch_one(&self.pool)
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
            "UPDATE enrichment_items SET provider_callback = $1, \
             due_at = CASE WHEN status = 'pending' THEN $2 ELSE due_at END, updated_at = $3 \
             WHERE provider = $4 AND provider_submission_id = $5 \
             AND status IN ('pending', 'running')",
        )
        .bind(body)
        .bind(now_ms)
        .bind(now_timestamp())
        .bind(provider)
        .bind(submission_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn fail_run(&self, run_id: &str, message: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = now_timestamp();
        let done = sqlx::query(
            "UPDATE enrichment_runs SET status = 'failed', error = $1, completed_at = $2, \
             updated_at = $2 WHERE id = $3 AND status IN ('pending', 'running')",
        )
        .bind(json!({"message": message, "details": null}).to_string())
        .bind(&now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            // Every item not yet ended is skipped, running ones too: a failed run is terminal
            // and its counts show no item still running once the finishes under way (which
            // `skip_items` leaves to themselves) have committed.
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

    fn subscribe_work(&self, wake: Weak<Notify>) {
        // A connection of its own, outside the pool: a LISTEN holds it for good, and the pool's
        // connections must stay free for queries.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(self.options.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(listen_for_work(listen_pool, wake));
            }
            Err(_) => tracing::warn!(
                "no async runtime to listen for new work on; workers will rely on polling"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    //! What matters once several processes share the database; the behaviour both backends
    //! share is covered by the conformance suite.

    use std::sync::Arc;
    use std::time::Instant;

    use puffle_domain::account::ApiKey;
    use puffle_domain::lead::LeadInput;

    use super::*;
    use crate::conformance::sample_run;
    use crate::scratch::{server_url, ScratchDatabase};
    use crate::Store;

    /// A fresh database with the schema and a bootstrapped workspace, or `None` (with a message)
    /// when no PostgreSQL server answers.
    async fn scratch() -> Option<(ScratchDatabase, PgStore, String, String)> {
        let db = match ScratchDatabase::create(&server_url()).await {
            Ok(db) => db,
            Err(e) => {
                eprintln!("skipping: no PostgreSQL server at {} ({e})", server_url());
                return None;
            }
        };
        let store = PgStore::open(&db.url).await.unwrap();
        store.migrate().await.unwrap();
        let (ws, user) = store
            .bootstrap("admin@localhost", &ApiKey::from_random([7; 32]))
            .await
            .unwrap()
            .unwrap();
        Some((db, store, ws.id, user.id))
    }

    /// Another "process": a store with a pool of its own on the same database.
    async fn second_process(db: &ScratchDatabase) -> PgStore {
        PgStore::open(&db.url).await.unwrap()
    }

    fn targets(n: usize) -> Vec<ItemTarget> {
        (0..n)
            .map(|_| ItemTarget {
                lead_id: new_id(),
                list_id: None,
                membership_id: None,
            })
            .collect()
    }

    fn completed(item: &ClaimedItem, write: Option<AttributeWrite>) -> Finish {
        Finish {
            item_id: item.id.clone(),
            lease_token: item.lease_token.clone(),
            run_id: item.run_id.clone(),
            outcome: FinishOutcome::Completed {
                result: Some(json!("x.io")),
                write,
            },
            executed: true,
            input_snapshot: None,
            lead_snapshot: None,
            raw_result: None,
            provider: Some("test".into()),
        }
    }

    /// Claim and finish in batches until nothing is left; returns every item id claimed.
    async fn drain(store: Arc<PgStore>, worker: String) -> Vec<String> {
        let mut mine = Vec::new();
        loop {
            let claimed = store
                .claim_items(&worker, 25, 1_000, 600_000)
                .await
                .unwrap();
            if claimed.is_empty() {
                return mine;
            }
            let finishes: Vec<Finish> = claimed.iter().map(|c| completed(c, None)).collect();
            let recorded = store.finish_items(&worker, &finishes, 2_000).await.unwrap();
            assert_eq!(recorded as usize, claimed.len());
            mine.extend(claimed.into_iter().map(|c| c.id));
        }
    }

    #[tokio::test]
    async fn a_fleet_claims_every_item_once() {
        let Some((db, a, ws, user)) = scratch().await else {
            return;
        };
        let b = second_process(&db).await;
        let (big, _) = a
            .create_run(sample_run(&ws, &user, targets(3000), None))
            .await
            .unwrap();
        let (small, _) = a
            .create_run(sample_run(&ws, &user, targets(40), None))
            .await
            .unwrap();
        let (a, b) = (Arc::new(a), Arc::new(b));
        let mut workers = Vec::new();
        for w in 0..8 {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            workers.push(tokio::spawn(drain(store, format!("w{w}"))));
        }
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap());
        }
        let unique: HashSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "an item was claimed twice");
        assert_eq!(all.len(), 3040);
        for (run, n) in [(&big, 3000), (&small, 40)] {
            let now = a.run_for_worker(&run.id).await.unwrap();
            assert_eq!(now.status, RunStatus::Completed);
            assert_eq!(now.counts.completed, n);
            assert_eq!(now.counts.total(), n);
        }
    }

    #[tokio::test]
    async fn a_rescued_item_is_recorded_by_its_new_holder_only() {
        let Some((_db, store, ws, user)) = scratch().await else {
            return;
        };
        let input: LeadInput =
            serde_json::from_value(json!({"type": "company", "domain": "acme.io"})).unwrap();
        let (lead, _) = store
            .create_lead(&ws, input.into_new_lead(new_id).unwrap())
            .await
            .unwrap();
        let target = ItemTarget {
            lead_id: lead.id.clone(),
            list_id: None,
            membership_id: None,
        };
        let (run, _) = store
            .create_run(sample_run(&ws, &user, vec![target], None))
            .await
            .unwrap();
        let write = |value: &str| AttributeWrite {
            target: OutputTarget::Lead,
            workspace_id: ws.clone(),
            lead_id: lead.id.clone(),
            membership_id: None,
            key: "company_domain".into(),
            value: json!(value),
        };
        // The same worker name claims twice: only the token tells the two leases apart.
        let first = store.claim_items("w1", 1, 1_000, 2_000).await.unwrap();
        assert_eq!(store.rescue_expired(5_000).await.unwrap(), 1);
        let second = store.claim_items("w1", 1, 5_000, 60_000).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_ne!(first[0].lease_token, second[0].lease_token);

        let stale = completed(&first[0], Some(write("stale.io")));
        assert_eq!(store.finish_items("w1", &[stale], 6_000).await.unwrap(), 0);
        let current = completed(&second[0], Some(write("fresh.io")));
        assert_eq!(
            store.finish_items("w1", &[current], 6_000).await.unwrap(),
            1
        );
        let again = completed(&second[0], Some(write("twice.io")));
        assert_eq!(store.finish_items("w1", &[again], 6_000).await.unwrap(), 0);

        let lead = store.leads_by_id(&ws, &[lead.id]).await.unwrap().remove(0);
        assert_eq!(lead.attributes["company_domain"], json!("fresh.io"));
        let run = store.run_for_worker(&run.id).await.unwrap();
        assert_eq!(
            (run.status, run.counts.completed),
            (RunStatus::Completed, 1)
        );
    }

    #[tokio::test]
    async fn concurrent_duplicates_from_two_processes_make_one_run() {
        let Some((db, a, ws, user)) = scratch().await else {
            return;
        };
        let b = Arc::new(second_process(&db).await);
        let a = Arc::new(a);
        let before = a.balance(&ws).await.unwrap();
        let mut calls = Vec::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let mut run = sample_run(&ws, &user, targets(50), Some("same-key"));
            (run.cost_per_unit, run.total_credits) = (1, 50);
            calls.push(tokio::spawn(async move { store.create_run(run).await }));
        }
        let mut ids = HashSet::new();
        let mut created = 0;
        for call in calls {
            let (run, reused) = call.await.unwrap().unwrap();
            created += usize::from(!reused);
            ids.insert(run.id);
        }
        assert_eq!((created, ids.len()), (1, 1));
        assert_eq!(a.balance(&ws).await.unwrap(), before - 50);
        let items: i64 = sqlx::query_scalar("SELECT count(*) FROM enrichment_items")
            .fetch_one(&a.pool)
            .await
            .unwrap();
        assert_eq!(items, 50);
    }

    #[tokio::test]
    async fn cancelling_under_load_strands_nothing() {
        let Some((db, a, ws, user)) = scratch().await else {
            return;
        };
        let b = Arc::new(second_process(&db).await);
        let a = Arc::new(a);
        let (run, _) = a
            .create_run(sample_run(&ws, &user, targets(2000), None))
            .await
            .unwrap();
        // Workers that retry everything they claim, while the run is cancelled under them.
        let mut workers = Vec::new();
        for w in 0..6 {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            workers.push(tokio::spawn(async move {
                let worker = format!("w{w}");
                for _ in 0..40 {
                    let claimed = store
                        .claim_items(&worker, 20, 1_000, 600_000)
                        .await
                        .unwrap();
                    let retries: Vec<Finish> = claimed
                        .iter()
                        .map(|c| Finish {
                            outcome: FinishOutcome::Retry {
                                due_at_ms: 0,
                                message: "503".into(),
                            },
                            ..completed(c, None)
                        })
                        .collect();
                    store.finish_items(&worker, &retries, 2_000).await.unwrap();
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let cancelled = a.cancel_run(&ws, &user, &run.id).await.unwrap();
        assert_eq!(cancelled.status, RunStatus::Cancelled);
        for w in workers {
            w.await.unwrap();
        }
        let run = a.run_for_worker(&run.id).await.unwrap();
        assert_eq!((run.counts.pending, run.counts.running), (0, 0));
        assert_eq!(run.counts.skipped, 2000);
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM enrichment_items WHERE status IN ('pending', 'running')",
        )
        .fetch_one(&a.pool)
        .await
        .unwrap();
        assert_eq!(pending, 0);
    }

    #[tokio::test]
    async fn a_new_run_wakes_workers_of_other_processes() {
        let Some((db, a, ws, user)) = scratch().await else {
            return;
        };
        let b = second_process(&db).await;
        let wake = Arc::new(Notify::new());
        b.subscribe_work(Arc::downgrade(&wake));
        // The first wake-up says "listening" (anything announced before may have been missed).
        tokio::time::timeout(Duration::from_secs(10), wake.notified())
            .await
            .expect("the listener starts");
        a.create_run(sample_run(&ws, &user, targets(1), None))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("a run created by another process wakes this one");
    }

    #[tokio::test]
    async fn the_listener_survives_losing_its_connection() {
        let Some((db, a, ws, user)) = scratch().await else {
            return;
        };
        let b = second_process(&db).await;
        let wake = Arc::new(Notify::new());
        b.subscribe_work(Arc::downgrade(&wake));
        let wait = |what: &'static str| {
            let wake = wake.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), wake.notified())
                    .await
                    .expect(what)
            }
        };
        wait("the listener starts").await;
        // What a database restart does to every session: the server ends the connection.
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_all(&a.pool)
        .await
        .unwrap();
        assert_eq!(ended, vec![true]);
        wait("the listener reconnects and says so").await;
        a.create_run(sample_run(&ws, &user, targets(1), None))
            .await
            .unwrap();
        wait("a new run is heard on the new connection").await;
    }

    #[tokio::test]
    async fn a_run_of_100000_leads_is_created_in_one_go() {
        let Some((_db, store, ws, user)) = scratch().await else {
            return;
        };
        let many = targets(100_000);
        let started = Instant::now();
        let (run, _) = store
            .create_run(sample_run(&ws, &user, many, None))
            .await
            .unwrap();
        println!("create_run of 100,000 targets took {:?}", started.elapsed());
        assert_eq!((run.resolved_count, run.counts.pending), (100_000, 100_000));
        let query = ItemQuery {
            limit: 100,
            ..ItemQuery::default()
        };
        let (page, more) = store.items(&run.id, &query).await.unwrap();
        assert!(more && page.len() == 100);
        let started = Instant::now();
        let claimed = store.claim_items("w1", 50, 1_000, 60_000).await.unwrap();
        println!("a claim of 50 from it took {:?}", started.elapsed());
        assert_eq!(claimed.len(), 50);
    }
}
