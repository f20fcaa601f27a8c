//! Persistence of enrichment runs and items: what the API creates and reads, and what workers
//! claim and finish.

use async_trait::async_trait;
use puffle_domain::lead::Lead;
use puffle_domain::run::{
    Counts, ItemStatus, OutputTarget, RunMode, RunStatus, SkipReason, Subject, WritePolicy,
};
use serde_json::Value;

use crate::Result;

/// One lead of a resolved scope, with its membership when the scope names a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemTarget {
    pub lead_id: String,
    pub list_id: Option<String>,
    pub membership_id: Option<String>,
}

/// The leads a new run takes, one item each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// These leads, resolved beforehand (explicit lead ids, a filtered list).
    Leads(Vec<ItemTarget>),
    /// The first `count` members of `list_id` in lead-id order, read by the statement that
    /// inserts the items: a list of a million members never passes through memory. Fewer members
    /// than `count` by then (removed meanwhile) refuse the run with [`SCOPE_CHANGED`].
    ListMembers { list_id: String, count: usize },
}

impl Targets {
    /// How many items the run gets.
    pub fn len(&self) -> usize {
        match self {
            Targets::Leads(leads) => leads.len(),
            Targets::ListMembers { count, .. } => *count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep only the first `n` leads (a preview's).
    pub fn truncate(&mut self, n: usize) {
        match self {
            Targets::Leads(leads) => leads.truncate(n),
            Targets::ListMembers { count, .. } => *count = (*count).min(n),
        }
    }
}

/// The `reason` of a run refused because its list lost members while the run was created.
pub const SCOPE_CHANGED: &str = "scope_changed";

/// After inserting a [`Targets::ListMembers`] run's items: `inserted` short of `count` means
/// members left the list after it was counted, and the run is refused with [`SCOPE_CHANGED`].
pub(crate) fn all_members_inserted(count: usize, inserted: u64) -> crate::Result<()> {
    if inserted == count as u64 {
        return Ok(());
    }
    Err(crate::StoreError::StateConflict {
        reason: SCOPE_CHANGED,
        message: "members left the list while the run was being created; send the request \
                  again"
            .into(),
    })
}

/// A run to create, fully validated and resolved.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub workspace_id: String,
    pub user_id: String,
    pub mode: RunMode,
    pub enrichment_slug: String,
    pub enrichment_snapshot: Value,
    pub subject: Subject,
    pub scope_type: String,
    pub list_id: Option<String>,
    pub scope_requested: Value,
    pub targets: Targets,
    pub output_target: OutputTarget,
    pub attribute_key: String,
    pub write_policy: WritePolicy,
    pub persist_results: bool,
    pub input: Value,
    pub credit_action: String,
    pub cost_per_unit: i64,
    /// What the run charges: `cost_per_unit × targets` (0 for previews).
    pub total_credits: i64,
    pub idempotency_key: Option<String>,
    pub display_request: Option<Value>,
    /// Refuse the run (`409`, reason [`TOO_MANY_ACTIVE_RUNS`]) when its workspace already has
    /// this many runs pending or running; `None`: no limit.
    pub max_active_runs: Option<u32>,
    /// [ours] Where the run's end is announced (a validated absolute http(s) URL).
    pub webhook_url: Option<String>,
}

/// The `reason` of a run refused because its workspace has too many active runs.
pub const TOO_MANY_ACTIVE_RUNS: &str = "too_many_active_runs";

/// The refusal of a run over its workspace's limit of active runs.
pub(crate) fn too_many_active_runs(limit: u32) -> crate::StoreError {
    crate::StoreError::StateConflict {
        reason: TOO_MANY_ACTIVE_RUNS,
        message: format!(
            "this workspace already has {limit} enrichment runs pending or running, the most \
             this server runs at once; wait for one to end, or cancel one"
        ),
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: String,
    pub workspace_id: String,
    pub user_id: String,
    pub status: RunStatus,
    pub mode: RunMode,
    pub enrichment_slug: String,
    pub enrichment_snapshot: Value,
    pub subject: Subject,
    pub scope_type: String,
    pub list_id: Option<String>,
    pub scope_requested: Value,
    pub resolved_count: i64,
    pub counts: Counts,
    pub output_target: OutputTarget,
    pub attribute_key: String,
    pub write_policy: WritePolicy,
    pub persist_results: bool,
    pub input: Value,
    pub credit_action: String,
    pub cost_per_unit: i64,
    pub total_credits: i64,
    pub idempotency_key: Option<String>,
    pub display_request: Option<Value>,
    pub error: Option<Value>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub cancelled_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// An item as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub run_id: String,
    pub lead_id: String,
    pub list_id: Option<String>,
    pub membership_id: Option<String>,
    pub status: ItemStatus,
    pub result: Option<Value>,
    pub skipped_reason: Option<SkipReason>,
    pub error: Option<Value>,
    pub attempts: i64,
    pub input_snapshot: Option<Value>,
    pub lead_snapshot: Option<Value>,
    pub raw_result: Option<Value>,
    pub provider: Option<String>,
    pub provider_submission_id: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Default)]
pub struct ItemQuery {
    pub status: Option<ItemStatus>,
    pub lead_id: Option<String>,
    /// Only items with an id greater than this.
    pub after: Option<String>,
    pub limit: u32,
}

/// An item a worker holds the lease of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedItem {
    pub id: String,
    /// Identifies this lease; the outcome is recorded only if it is still the current one.
    pub lease_token: String,
    pub run_id: String,
    pub lead_id: String,
    pub list_id: Option<String>,
    pub membership_id: Option<String>,
    pub attempts: i64,
    /// Set when an async provider step submitted a job for this item: poll, do not submit.
    pub submission: Option<Submission>,
}

/// The job an async provider step submitted for an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The vendor's job id (`metadata.providerSubmissionId`).
    pub id: String,
    /// When it was submitted (unix ms), for `max_wait_seconds`.
    pub submitted_at_ms: i64,
    /// The body of a callback the vendor posted, not yet read by a worker.
    pub callback: Option<String>,
}

/// Where and how a result is written.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeWrite {
    pub target: OutputTarget,
    pub workspace_id: String,
    pub lead_id: String,
    pub membership_id: Option<String>,
    pub key: String,
    pub value: Value,
}

/// What a worker records for an item it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub item_id: String,
    /// The `lease_token` of the claim this outcome comes from.
    pub lease_token: String,
    pub run_id: String,
    pub outcome: FinishOutcome,
    /// The enrichment was executed (counts as an attempt).
    pub executed: bool,
    pub input_snapshot: Option<Value>,
    /// The lead as JSON text: serialized once, straight from the lead, since it is only stored.
    pub lead_snapshot: Option<String>,
    pub raw_result: Option<Value>,
    pub provider: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FinishOutcome {
    Completed {
        result: Option<Value>,
        write: Option<AttributeWrite>,
    },
    Failed {
        message: String,
        details: Option<Value>,
    },
    Skipped(SkipReason),
    /// Back to `pending`, due at `due_at_ms` (unix ms); `skipped`/`run_cancelled` instead if the
    /// run was cancelled meanwhile.
    Retry {
        due_at_ms: i64,
        message: String,
    },
    /// An async provider step submitted a job (or polled it, still pending): back to `pending`,
    /// due at `due_at_ms`, without spending an attempt, remembering the job. `callback_used`: a
    /// stored callback was read (and is cleared). Skipped like a retry if the run ended meanwhile.
    Waiting {
        submission_id: String,
        submitted_at_ms: i64,
        due_at_ms: i64,
        callback_used: bool,
    },
}

/// The work queue at a glance, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Items waiting (including those waiting for a retry), over every active run.
    pub pending: i64,
    /// Items a worker holds.
    pub running: i64,
    /// `createdAt` of the oldest pending item, if any is pending.
    pub oldest_pending_created_at: Option<String>,
}

/// Enrichment runs: the API side and the worker side.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// The run an earlier request of this user created with `key`, if any.
    async fn run_by_idempotency_key(&self, user_id: &str, key: &str) -> Result<Option<Run>>;
    /// Resolve explicit `lead_ids` (each must exist; with `list_id`, each must be a member).
    /// Unknown ids are `Invalid` naming `scope.leadIds[i]`; an unknown list is `Invalid` naming
    /// `scope.listId`.
    async fn resolve_targets(
        &self,
        workspace: &str,
        lead_ids: &[String],
        list_id: Option<&str>,
    ) -> Result<Vec<ItemTarget>>;
    /// Charge, create the run and its items, in one transaction. Returns the run and whether it
    /// was reused (same user and idempotency key). Short balance: `InsufficientCredits`.
    async fn create_run(&self, run: NewRun) -> Result<(Run, bool)>;
    /// The run, if it belongs to this effective user.
    async fn run(&self, workspace: &str, user_id: &str, id: &str) -> Result<Run>;
    /// A page of the run's items in id order, and whether more follow.
    async fn items(&self, run_id: &str, query: &ItemQuery) -> Result<(Vec<Item>, bool)>;
    /// Cancel a pending or running run; pending items become skipped/`run_cancelled`.
    async fn cancel_run(&self, workspace: &str, user_id: &str, id: &str) -> Result<Run>;

    // Worker side.

    /// Lease up to `max` due pending items, round-robin across active runs.
    async fn claim_items(
        &self,
        worker: &str,
        max: usize,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<ClaimedItem>>;
    /// A run by id, for the worker (no ownership check).
    async fn run_for_worker(&self, id: &str) -> Result<Run>;
    /// Leads by id within a workspace; missing (deleted) ones are absent.
    async fn leads_by_id(&self, workspace: &str, ids: &[String]) -> Result<Vec<Lead>>;
    /// The attributes of memberships by id (for `fill_empty` on membership output).
    async fn membership_attributes(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, serde_json::Map<String, Value>>>;
    /// Record outcomes of items `worker` holds, in one transaction. An item whose lease is no
    /// longer the one named by `lease_token` is left alone (its outcome is dropped). Returns how
    /// many were recorded.
    async fn finish_items(&self, worker: &str, finishes: &[Finish], now_ms: i64) -> Result<u64>;
    /// Extend the leases of `item_ids` that `worker` still holds. Named, not all of the
    /// worker's: an item it never learned it leased (a claim whose answer was lost with its
    /// connection) or failed to hand back must expire and be rescued, not be kept for good.
    async fn heartbeat(&self, worker: &str, item_ids: &[String], lease_until_ms: i64)
        -> Result<()>;
    /// Give items back (pending again, no attempt spent).
    async fn release_items(&self, worker: &str, item_ids: &[String]) -> Result<()>;
    /// Make items whose lease expired claimable again. Returns how many.
    async fn rescue_expired(&self, now_ms: i64) -> Result<u64>;
    /// Fail a run: it becomes `failed` with `message`; its pending items are skipped/`run_failed`.
    async fn fail_run(&self, run_id: &str, message: &str) -> Result<()>;
    /// Keep the body of a provider's callback for the item waiting on job `submission_id` of
    /// `provider` and make it due at `now_ms`; `false` when no such item waits.
    async fn record_provider_callback(
        &self,
        provider: &str,
        submission_id: &str,
        body: &str,
        now_ms: i64,
    ) -> Result<bool>;
    /// Queue depth and the oldest pending item, over the whole database. Cheap: reads the
    /// counts kept on active runs and one index entry per active run.
    async fn queue_stats(&self) -> Result<QueueStats> {
        // Backends that have not implemented it yet report it as unavailable, not as an empty
        // queue (which would be a lie on a dashboard).
        Err(crate::StoreError::Internal(
            "queue_stats is not implemented by this backend".into(),
        ))
    }
    /// Notify `wake` whenever another process announces new work (a backend shared by a fleet
    /// listens for it; an embedded one has no other process, and does nothing). Stops once
    /// `wake` has no other owner.
    fn subscribe_work(&self, wake: std::sync::Weak<tokio::sync::Notify>) {
        let _ = wake;
    }
}
