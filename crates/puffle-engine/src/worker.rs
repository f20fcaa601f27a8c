//! The worker pool: claims due items in batches under a lease, executes them concurrently,
//! and records their outcomes in batches.
//!
//! Guarantees (spec §6, DESIGN "The worker"): a claim is one statement per run; the lease is
//! extended by a heartbeat while the process lives and expires when it dies, so another worker
//! rescues the item; every outcome is written only if this worker still holds the lease; on
//! shutdown nothing new is claimed, in-flight items get a grace period, and the rest go back to
//! `pending` without spending an attempt.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use puffle_domain::lead::Lead;
use puffle_domain::run::{OutputTarget, RunStatus, SkipReason, WritePolicy};
use puffle_store::{AttributeWrite, ClaimedItem, Finish, FinishOutcome, Run, Store};
use rand::Rng;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::catalog::{Binding, Catalog, Enrichment};
use crate::clock::{ms, now_ms};
use crate::driver::DriverThread;
use crate::executor::{Executor, RunFailure};
use crate::{EngineConfig, EngineMetrics, Outcome};

/// Most items claimed in one statement. Quick engine_instant runs alternating the sizes (2026-12-04,
/// the worker pool on its own runtime): 512 gave 33–37k items/s on SQLite against 26–34k for
/// 256 and 25–26k for 1,024, and 15.4–16.4k on PostgreSQL against 14.0–14.7k for 256.
const CLAIM_BATCH: usize = 512;
/// Most outcomes written in one transaction.
const FINISH_BATCH: usize = 512;
/// Outcomes waiting to be recorded beyond which nothing more is claimed. Where the database
/// records outcomes more slowly than items execute, finished items would otherwise pile up in
/// memory for the whole run (the PostgreSQL worker grew from 38 to 64 MiB over a 1M-item run);
/// two batches keep the writer busy while the next one forms.
const RECORDING_MAX: usize = 2 * FINISH_BATCH;
/// How stale a run's status may be when one of its claimed items starts: an item claimed
/// ahead does not start once its run is cancelled or failed (it is skipped, as if pending).
const RUN_RECHECK: Duration = Duration::from_millis(100);
/// Claimed batches whose leads load at once: loading one overlaps claiming the next.
const LOADS_IN_FLIGHT: usize = 2;
/// How long an idle worker sleeps when nothing wakes it (new runs wake it at once).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// A running worker pool; dropping it does not stop it, [`WorkerPool::shutdown`] does.
pub struct WorkerPool {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Run webhooks are delivered by every worker pool (see [`crate::webhooks`]).
    webhooks: JoinHandle<()>,
}

impl WorkerPool {
    /// Start a pool of `config.concurrency` slots. `wake` is notified when a run is created (in
    /// this process, or, on a shared database, by any process of the fleet).
    pub fn start(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        config: EngineConfig,
        wake: Arc<Notify>,
    ) -> WorkerPool {
        Self::start_observed(store, catalog, config, wake, Arc::default())
    }

    /// [`WorkerPool::start`], counting items and provider calls into `metrics`.
    pub fn start_observed(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        config: EngineConfig,
        wake: Arc<Notify>,
        metrics: Arc<EngineMetrics>,
    ) -> WorkerPool {
        store.subscribe_work(Arc::downgrade(&wake));
        let (shutdown, rx) = watch::channel(false);
        // One set of provider throttles for the pool: every item calling a provider shares them.
        let throttles = crate::throttle::Throttles::fleet(store.clone());
        let worker_id = format!("worker-{}", puffle_domain::new_id());
        let webhooks = tokio::spawn(crate::webhooks::deliver(
            store.clone(),
            config.clone(),
            worker_id.clone(),
            rx.clone(),
        ));
        let shared = Arc::new(Shared {
            executor: Executor::new(&config, throttles, store.clone()),
            store,
            catalog,
            config,
            worker_id,
            held: Mutex::new(HashSet::new()),
            recording: Mutex::new(HashSet::new()),
            next_retry_ms: Mutex::new(None),
            finished: Notify::new(),
            metrics,
        });
        let task = tokio::spawn(run(shared, wake, rx));
        WorkerPool {
            shutdown,
            task,
            webhooks,
        }
    }

    /// Stop claiming, give in-flight items the grace period, hand the rest back.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the worker pool ended abnormally");
        }
        if let Err(e) = self.webhooks.await {
            tracing::error!(error = %e, "the webhook delivery loop ended abnormally");
        }
    }
}

struct Shared {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    executor: Executor,
    config: EngineConfig,
    worker_id: String,
    /// Items this worker holds whose outcome has not been handed to the writer yet.
    held: Mutex<HashSet<String>>,
    /// Items whose outcome the writer has, until it is recorded (or given up on): their leases
    /// are still this worker's to keep alive.
    recording: Mutex<HashSet<String>>,
    /// The earliest time (unix ms) a retry this worker scheduled falls due, so an idle worker
    /// wakes for it instead of waiting for the next poll.
    next_retry_ms: Mutex<Option<i64>>,
    /// Notified when an item is finished or its outcome recorded: the claimer may have room to
    /// claim again.
    finished: Notify,
    metrics: Arc<EngineMetrics>,
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recording(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.recording.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every item whose lease this worker keeps alive: held, or with its outcome on the way.
    fn leased(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.held().iter().cloned().collect();
        ids.extend(self.recording().iter().cloned());
        ids
    }

    fn retry_scheduled(&self, due_ms: i64) {
        let mut next = self.next_retry_ms.lock().unwrap_or_else(|p| p.into_inner());
        *next = Some(next.map_or(due_ms, |n| n.min(due_ms)));
    }

    /// How long an idle worker may sleep: until the next retry it scheduled, at most `IDLE_POLL`.
    fn idle_for(&self, now_ms: i64) -> Duration {
        let mut next = self.next_retry_ms.lock().unwrap_or_else(|p| p.into_inner());
        match *next {
            Some(due) if due <= now_ms => {
                *next = None;
                Duration::ZERO
            }
            Some(due) => IDLE_POLL.min(Duration::from_millis((due - now_ms) as u64)),
            None => IDLE_POLL,
        }
    }
}

/// What an item needs to execute: its run and the catalog entry the run names.
struct RunSpec {
    run: Run,
    enrichment: Option<Enrichment>,
}

/// A claimed item with everything it needs to execute.
struct Prepared {
    item: ClaimedItem,
    spec: Arc<RunSpec>,
    lead: Option<Lead>,
    membership: Option<serde_json::Map<String, serde_json::Value>>,
}

impl RunSpec {
    /// Built-ins are pure CPU work of microseconds: their items run inline, without a task or
    /// a slot.
    fn is_inline(&self) -> bool {
        self.enrichment
            .as_ref()
            .is_some_and(|e| e.binding == Binding::Builtin)
    }
}

async fn run(shared: Arc<Shared>, wake: Arc<Notify>, shutdown: watch::Receiver<bool>) {
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Finish>();
    // The claimer and the outcome writer run on a thread of their own (see `crate::driver`);
    // should it fail to start, beside the rest.
    let engine = Handle::current();
    let driver = DriverThread::start()
        .inspect_err(|e| tracing::warn!(error = %e, "no thread of its own for the claimer"))
        .ok();
    let drive_on = driver.as_ref().map_or(&engine, DriverThread::handle);
    let writer = drive_on.spawn(write_outcomes(shared.clone(), done_rx, shutdown.clone()));
    let heartbeat = tokio::spawn(heartbeat(shared.clone()));
    let rescuer = tokio::spawn(rescue(shared.clone(), wake.clone()));
    // The claimer stays ahead of the slots: a slot that frees up starts the next item at once
    // instead of waiting for a claim's round trip (the claimed items' leases are heartbeated like
    // the running ones). How far ahead is bounded by `claim_ahead`.
    let (ready_tx, ready_rx) = mpsc::unbounded_channel::<Vec<Prepared>>();
    let claimer = drive_on.spawn(claim_ahead(
        shared.clone(),
        wake,
        ready_tx,
        shutdown.clone(),
        engine.clone(),
    ));
    start_items(&shared, ready_rx, done_tx, shutdown).await;
    if let Err(e) = claimer.await {
        tracing::error!(error = %e, "the claim loop ended abnormally");
    }
    if let Err(e) = writer.await {
        tracing::error!(error = %e, "the outcome writer ended abnormally");
    }
    // Whatever is still held was claimed but not finished (or its outcome was not recorded).
    let unfinished: Vec<String> = shared.held().drain().collect();
    if !unfinished.is_empty() {
        tracing::info!(items = unfinished.len(), "handing unfinished items back");
        release(&shared, &unfinished).await;
    }
    heartbeat.abort();
    rescuer.abort();
    drop(driver);
}

/// Resolves once the pool is shutting down (at once if it already is).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Claim batches of due items and hand them, with their runs and leads, to the slots; their
/// leads load on `engine`. Ends at shutdown; a batch not handed over stays held and is
/// released by [`run`].
async fn claim_ahead(
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    ready: mpsc::UnboundedSender<Vec<Prepared>>,
    mut shutdown: watch::Receiver<bool>,
    engine: Handle,
) {
    let slots = shared.config.concurrency.max(1);
    // Items held (claimed, not yet finished) stay within twice the slots: as many again wait for
    // one, enough to cover a claim's round trip; a claim is made once a quarter of the slots'
    // worth is free, so claims stay batched.
    let ahead = slots;
    // Waiting for room, look again now and then even without a wake-up.
    let recheck_every = rescue_every(&shared.config);
    let mut runs: HashMap<String, Arc<RunSpec>> = HashMap::new();
    let mut last_batch_inline = false;
    let mut loads = JoinSet::new();

    while !*shutdown.borrow() {
        // Built-ins hold no slot and finish within microseconds of being handed over: one batch
        // of them waits while another executes.
        let (limit, least) = if last_batch_inline {
            (2 * CLAIM_BATCH, CLAIM_BATCH)
        } else {
            (slots + ahead, (slots / 4).max(1))
        };
        let want = claim_size(shared.held().len(), shared.recording().len(), limit, least);
        if want == 0 {
            tokio::select! {
                _ = shared.finished.notified() => {}
                _ = tokio::time::sleep(recheck_every) => {}
                _ = stopping(&mut shutdown) => {}
            }
            continue;
        }
        let now = now_ms();
        let lease_until = now + ms(shared.config.lease);
        let claimed = match shared
            .store
            .claim_items(&shared.worker_id, want, now, lease_until)
            .await
        {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "claiming items failed; retrying shortly");
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stopping(&mut shutdown) => {}
                }
                continue;
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(shared.idle_for(now_ms())) => {}
                _ = stopping(&mut shutdown) => {}
            }
            continue;
        }
        shared.held().extend(claimed.iter().map(|i| i.id.clone()));
        if runs.len() > 1024 {
            runs.clear();
        }
        if let Err(e) = load_runs(&shared, &claimed, &mut runs).await {
            tracing::error!(error = %e, "loading claimed items' runs failed");
            let ids: Vec<String> = claimed.into_iter().map(|i| i.id).collect();
            release(&shared, &ids).await;
            continue;
        }
        let batch: Vec<(ClaimedItem, Arc<RunSpec>)> = claimed
            .into_iter()
            .filter_map(|item| {
                let spec = runs.get(&item.run_id)?.clone();
                Some((item, spec))
            })
            .collect();
        last_batch_inline = batch.iter().all(|(_, spec)| spec.is_inline());
        // The leads load while the next batch is claimed.
        if loads.len() >= LOADS_IN_FLIGHT {
            if let Some(Err(e)) = loads.join_next().await {
                tracing::error!(error = %e, "loading a claimed batch ended abnormally");
            }
        }
        loads.spawn_on(prepare(shared.clone(), batch, ready.clone()), &engine);
    }
    while let Some(done) = loads.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "loading a claimed batch ended abnormally");
        }
    }
}

/// How many items to claim now (0: wait), with `held` items claimed and not finished, `recording`
/// finished and not yet recorded, at most `limit` held and claims of at least `least`.
fn claim_size(held: usize, recording: usize, limit: usize, least: usize) -> usize {
    let room = limit.saturating_sub(held);
    if room < least || recording >= RECORDING_MAX {
        return 0;
    }
    room.min(CLAIM_BATCH)
}

/// Read the runs of claimed items not read yet into `runs`.
async fn load_runs(
    shared: &Shared,
    claimed: &[ClaimedItem],
    runs: &mut HashMap<String, Arc<RunSpec>>,
) -> puffle_store::Result<()> {
    for item in claimed {
        if !runs.contains_key(&item.run_id) {
            let run = shared.store.run_for_worker(&item.run_id).await?;
            let enrichment = shared.catalog.get(&run.enrichment_slug).cloned();
            runs.insert(item.run_id.clone(), Arc::new(RunSpec { run, enrichment }));
        }
    }
    Ok(())
}

/// Load a claimed batch's leads (and memberships) and hand it to the slots; if they cannot be
/// loaded, hand the items back.
async fn prepare(
    shared: Arc<Shared>,
    batch: Vec<(ClaimedItem, Arc<RunSpec>)>,
    ready: mpsc::UnboundedSender<Vec<Prepared>>,
) {
    let context = match load_context(&shared, &batch).await {
        Ok(context) => context,
        Err(e) => {
            tracing::error!(error = %e, "loading claimed items' leads failed");
            let ids: Vec<String> = batch.into_iter().map(|(i, _)| i.id).collect();
            release(&shared, &ids).await;
            return;
        }
    };
    let prepared = batch
        .into_iter()
        .map(|(item, spec)| {
            let lead = context.leads.get(&item.lead_id).cloned();
            let membership = item
                .membership_id
                .as_ref()
                .and_then(|m| context.memberships.get(m))
                .cloned();
            Prepared {
                item,
                spec,
                lead,
                membership,
            }
        })
        .collect();
    // A closed channel means shutdown: the items stay held and are handed back by [`run`].
    let _ = ready.send(prepared);
}

/// Start the prepared items as slots free up (built-ins inline), until shutdown; then give
/// the items in flight the grace period.
async fn start_items(
    shared: &Arc<Shared>,
    mut ready: mpsc::UnboundedReceiver<Vec<Prepared>>,
    done_tx: mpsc::UnboundedSender<Finish>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut stopped_runs = StoppedRuns::default();
    'batches: loop {
        while tasks.try_join_next().is_some() {}
        let batch = tokio::select! {
            batch = ready.recv() => match batch {
                Some(batch) => batch,
                None => break,
            },
            _ = stopping(&mut shutdown) => break,
        };
        for prepared in batch {
            if *shutdown.borrow() {
                break 'batches;
            }
            let permit = if prepared.spec.is_inline() {
                None
            } else {
                tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => Some(permit),
                        Err(_) => break 'batches,
                    },
                    _ = stopping(&mut shutdown) => break 'batches,
                }
            };
            // The item may have waited for its slot: look at its run again before starting.
            if let Some(reason) = stopped_runs.check(shared, &prepared.spec.run.id).await {
                hand_over(shared, &done_tx, not_started(prepared.item, reason));
                continue;
            }
            let Some(permit) = permit else {
                let finish = execute_prepared(shared, prepared).await;
                hand_over(shared, &done_tx, finish);
                continue;
            };
            let shared = shared.clone();
            let done = done_tx.clone();
            tasks.spawn(async move {
                let finish = execute_prepared(&shared, prepared).await;
                hand_over(&shared, &done, finish);
                drop(permit);
            });
        }
    }

    // Shutdown: nothing new starts; in-flight items get the grace period.
    let grace = shared.config.shutdown_grace;
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// The status of the runs whose items are starting, read again when older than [`RUN_RECHECK`].
#[derive(Default)]
struct StoppedRuns {
    checked: HashMap<String, (tokio::time::Instant, Option<SkipReason>)>,
}

impl StoppedRuns {
    /// Why items of `run_id` must not start any more, if they must not.
    async fn check(&mut self, shared: &Shared, run_id: &str) -> Option<SkipReason> {
        if let Some((at, stopped)) = self.checked.get(run_id) {
            if stopped.is_some() || at.elapsed() < RUN_RECHECK {
                return *stopped;
            }
        }
        if self.checked.len() > 1024 {
            self.checked.clear();
        }
        // A run that cannot be read is not held back: its items run as claimed.
        let stopped = match shared.store.run_for_worker(run_id).await {
            Ok(run) if run.status == RunStatus::Cancelled => Some(SkipReason::RunCancelled),
            Ok(run) if run.status == RunStatus::Failed => Some(SkipReason::RunFailed),
            _ => None,
        };
        self.checked
            .insert(run_id.to_string(), (tokio::time::Instant::now(), stopped));
        stopped
    }
}

/// The outcome of a claimed item that did not start: skipped, no attempt, no snapshot.
fn not_started(item: ClaimedItem, reason: SkipReason) -> Finish {
    Finish {
        item_id: item.id,
        lease_token: item.lease_token,
        run_id: item.run_id,
        outcome: FinishOutcome::Skipped(reason),
        executed: false,
        input_snapshot: None,
        lead_snapshot: None,
        raw_result: None,
        provider: None,
    }
}

async fn execute_prepared(shared: &Shared, prepared: Prepared) -> Finish {
    let Prepared {
        item,
        spec,
        lead,
        membership,
    } = prepared;
    execute_item(shared, &spec, item, lead, membership).await
}

async fn release(shared: &Shared, ids: &[String]) {
    if let Err(e) = shared.store.release_items(&shared.worker_id, ids).await {
        tracing::error!(error = %e, "handing items back failed; their leases will expire instead");
    }
    let mut held = shared.held();
    for id in ids {
        held.remove(id);
    }
}

/// What a claimed batch needs besides its runs: the leads, and the current attributes of the
/// memberships that `fill_empty` runs writing to memberships must check.
struct Context {
    leads: HashMap<String, Lead>,
    memberships: HashMap<String, serde_json::Map<String, serde_json::Value>>,
}

async fn load_context(
    shared: &Shared,
    batch: &[(ClaimedItem, Arc<RunSpec>)],
) -> puffle_store::Result<Context> {
    let mut by_workspace: HashMap<&str, Vec<String>> = HashMap::new();
    let mut memberships = Vec::new();
    for (item, spec) in batch {
        by_workspace
            .entry(&spec.run.workspace_id)
            .or_default()
            .push(item.lead_id.clone());
        let checks_membership = spec.run.write_policy == WritePolicy::FillEmpty
            && spec.run.output_target == OutputTarget::Membership;
        if let (true, Some(m)) = (checks_membership, &item.membership_id) {
            memberships.push(m.clone());
        }
    }
    let mut leads = HashMap::new();
    for (workspace, ids) in by_workspace {
        for lead in shared.store.leads_by_id(workspace, &ids).await? {
            leads.insert(lead.id.clone(), lead);
        }
    }
    let memberships = shared.store.membership_attributes(&memberships).await?;
    Ok(Context { leads, memberships })
}

/// `membership`: the current attributes of the item's membership, when `fill_empty` must
/// check them.
async fn execute_item(
    shared: &Shared,
    spec: &RunSpec,
    item: ClaimedItem,
    lead: Option<Lead>,
    membership: Option<serde_json::Map<String, serde_json::Value>>,
) -> Finish {
    let run = &spec.run;
    let finish = |outcome, executed| Finish {
        item_id: item.id.clone(),
        lease_token: item.lease_token.clone(),
        run_id: item.run_id.clone(),
        outcome,
        executed,
        input_snapshot: None,
        lead_snapshot: None,
        raw_result: None,
        provider: None,
    };
    let Some(lead) = lead else {
        return finish(FinishOutcome::Skipped(SkipReason::LeadDeleted), false);
    };
    // The item has started: whatever happens now, it shows the lead as the enrichment saw it.
    let lead_snapshot = serde_json::to_string(&lead).ok();
    let skip = |reason| Finish {
        lead_snapshot: lead_snapshot.clone(),
        ..finish(FinishOutcome::Skipped(reason), false)
    };
    if !run.subject.admits(lead.kind) {
        return skip(SkipReason::SubjectMismatch);
    }
    let Some(enrichment) = &spec.enrichment else {
        let message = format!(
            "enrichment {} is no longer in this server's catalog",
            run.enrichment_slug
        );
        return fail_run(shared, run, &message, skip(SkipReason::RunFailed)).await;
    };
    let has_value = |attrs: &serde_json::Map<String, serde_json::Value>| {
        attrs.get(&run.attribute_key).is_some_and(|v| !v.is_null())
    };
    let current = match run.output_target {
        OutputTarget::Lead => Some(&lead.attributes),
        OutputTarget::Membership => membership.as_ref(),
    };
    if run.write_policy == WritePolicy::FillEmpty && current.is_some_and(has_value) {
        return skip(SkipReason::AlreadyHasValue);
    }
    let started = std::time::Instant::now();
    let submission = item.submission.as_ref();
    let execution = match shared
        .executor
        .execute(enrichment, &lead, &run.input, submission)
        .await
    {
        Ok(execution) => {
            let error = match &execution.outcome {
                Outcome::Fail(_) => Some("failed"),
                Outcome::Retry { .. } => Some("retryable"),
                _ => None,
            };
            shared
                .metrics
                .provider_called(&execution.provider, started.elapsed(), error);
            execution
        }
        Err(RunFailure(message)) => {
            return fail_run(shared, run, &message, skip(SkipReason::RunFailed)).await;
        }
    };
    let attempt = u32::try_from(item.attempts + 1).unwrap_or(u32::MAX);
    let (outcome, executed) = match execution.outcome {
        Outcome::Hit(value) => {
            let write = run.persist_results.then(|| AttributeWrite {
                target: run.output_target,
                workspace_id: run.workspace_id.clone(),
                lead_id: lead.id.clone(),
                membership_id: item.membership_id.clone(),
                key: run.attribute_key.clone(),
                value: value.clone(),
            });
            (
                FinishOutcome::Completed {
                    result: Some(value),
                    write,
                },
                true,
            )
        }
        Outcome::Miss => (
            FinishOutcome::Completed {
                result: None,
                write: None,
            },
            true,
        ),
        Outcome::MissingInput => (FinishOutcome::Skipped(SkipReason::MissingInput), false),
        Outcome::Fail(message) => (
            FinishOutcome::Failed {
                message,
                details: execution.details,
            },
            true,
        ),
        Outcome::Retry { message, .. } if attempt >= shared.config.max_attempts => (
            FinishOutcome::Failed {
                message: format!("Gave up after {attempt} attempts: {message}"),
                details: execution.details,
            },
            true,
        ),
        Outcome::Retry { after, message } => {
            let due_at_ms = now_ms() + ms(backoff(&shared.config, attempt, after));
            shared.retry_scheduled(due_at_ms);
            (FinishOutcome::Retry { due_at_ms, message }, true)
        }
        // Async provider step: the item waits as pending, no attempt spent (an attempt is
        // counted once, when the job's answer is final).
        Outcome::Waiting {
            submission_id,
            after,
            callback_used,
        } => {
            let now = now_ms();
            let due_at_ms = now + ms(after);
            shared.retry_scheduled(due_at_ms);
            let submitted_at_ms = submission
                .filter(|s| s.id == submission_id)
                .map_or(now, |s| s.submitted_at_ms);
            let waiting = FinishOutcome::Waiting {
                submission_id,
                submitted_at_ms,
                due_at_ms,
                callback_used,
            };
            (waiting, false)
        }
    };
    Finish {
        input_snapshot: Some(execution.input_snapshot),
        lead_snapshot,
        raw_result: execution.raw,
        provider: Some(execution.provider),
        ..finish(outcome, executed)
    }
}

/// Count an item's outcome and give it to the writer; forget the item only then, so shutdown
/// never releases an item whose outcome is on its way.
fn hand_over(shared: &Shared, done: &mpsc::UnboundedSender<Finish>, finish: Finish) {
    count_outcome(shared, &finish);
    let id = finish.item_id.clone();
    shared.recording().insert(id.clone());
    let _ = done.send(finish);
    shared.held().remove(&id);
    shared.finished.notify_one();
}

fn count_outcome(shared: &Shared, finish: &Finish) {
    shared.metrics.item_finished(match finish.outcome {
        FinishOutcome::Completed { .. } => "completed",
        FinishOutcome::Failed { .. } => "failed",
        FinishOutcome::Skipped(_) => "skipped",
        FinishOutcome::Retry { .. } => "retry",
        FinishOutcome::Waiting { .. } => "waiting",
    });
}

/// The run cannot work at all: fail it (its pending items are skipped) and end this item.
async fn fail_run(shared: &Shared, run: &Run, message: &str, item: Finish) -> Finish {
    if let Err(e) = shared.store.fail_run(&run.id, message).await {
        tracing::error!(error = %e, run = %run.id, "failing the run failed");
    }
    item
}

/// Exponential backoff with ±25% jitter, capped at `retry_max`, never sooner than Retry-After.
fn backoff(config: &EngineConfig, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    let exponential = config
        .retry_base
        .saturating_mul(factor)
        .min(config.retry_max);
    let jittered = exponential.mul_f64(rand::thread_rng().gen_range(0.75..1.25));
    jittered.max(retry_after.unwrap_or_default())
}

/// Write outcomes in batches. A failed write (the database restarting, say) is retried for as
/// long as the worker lives: its heartbeat keeps the items' leases alive, so giving up would
/// leave them `running` for good. Once shutting down, a write that keeps failing is abandoned
/// and the items run again when their leases expire.
async fn write_outcomes(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Finish>,
    shutdown: watch::Receiver<bool>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < FINISH_BATCH {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let mut tries: u32 = 0;
        loop {
            tries += 1;
            match shared
                .store
                .finish_items(&shared.worker_id, &batch, now_ms())
                .await
            {
                Ok(_) => break,
                Err(e) if *shutdown.borrow() && tries >= 5 => {
                    tracing::error!(error = %e, items = batch.len(),
                        "recording outcomes failed; the items will run again when their leases expire");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt = tries, "recording outcomes failed; retrying");
                    let pause = Duration::from_millis(200 * u64::from(tries.min(25)));
                    tokio::time::sleep(pause).await;
                }
            }
        }
        let mut recording = shared.recording();
        for finish in &batch {
            recording.remove(&finish.item_id);
        }
        drop(recording);
        // The claimer may be waiting for the writer to catch up.
        shared.finished.notify_one();
    }
}

fn rescue_every(config: &EngineConfig) -> Duration {
    (config.lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(30))
}

/// Now and then, put the items of workers that lost their leases back in line, and wake the
/// claimer for them. A task of its own: on PostgreSQL the search for expired leases also steps
/// over the index entries that finished items left behind, which can take a while late in a
/// big run, and claims must not wait for it.
async fn rescue(shared: Arc<Shared>, wake: Arc<Notify>) {
    let every = rescue_every(&shared.config);
    loop {
        match shared.store.rescue_expired(now_ms()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(items = n, "rescued items whose worker lost its lease");
                wake.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "rescuing expired leases failed"),
        }
        tokio::time::sleep(every).await;
    }
}

async fn heartbeat(shared: Arc<Shared>) {
    let every = (shared.config.lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let until = now_ms() + ms(shared.config.lease);
        let leased = shared.leased();
        if let Err(e) = shared
            .store
            .heartbeat(&shared.worker_id, &leased, until)
            .await
        {
            tracing::warn!(error = %e, "extending leases failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_wait_for_room_and_for_the_outcome_writer() {
        // Room among the held items: claims are capped and batched.
        assert_eq!(claim_size(0, 0, 4 * CLAIM_BATCH, 1), CLAIM_BATCH);
        assert_eq!(claim_size(90, 0, 128, 16), 38);
        assert_eq!(claim_size(120, 0, 128, 16), 0);
        // A writer behind by RECORDING_MAX outcomes stops claims, whatever the room; below it,
        // they go on.
        assert_eq!(
            claim_size(0, RECORDING_MAX, 2 * CLAIM_BATCH, CLAIM_BATCH),
            0
        );
        assert_eq!(claim_size(0, RECORDING_MAX - 1, 128, 16), 128);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let config = EngineConfig {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            ..EngineConfig::default()
        };
        let first = backoff(&config, 1, None);
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
        let third = backoff(&config, 3, None);
        assert!(third >= Duration::from_millis(300) && third <= Duration::from_millis(500));
        assert!(backoff(&config, 30, None) <= Duration::from_millis(1250));
        assert!(backoff(&config, 1, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
    }
}
