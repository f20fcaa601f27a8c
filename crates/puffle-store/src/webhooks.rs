//! Run webhooks [ours]: each user's signing secret, the URL a run reports to, and the outbox of
//! deliveries. Delivery rows are written by database triggers in the transaction that ends a run
//! (see `migrations/*/0004_run_webhooks.sql`); the worker process claims due ones under a lease,
//! like items, and records every attempt.

use async_trait::async_trait;

use crate::rows::{decode_err, StoredRow};
use crate::Result;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not yet answered with a 2xx; attempted again at `next_attempt_at_ms`.
    Pending,
    Delivered,
    /// Given up: refused destination, or no 2xx for the whole retry period.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

/// One event for one run, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub run_id: String,
    /// `enrichment.run.completed`, `.failed` or `.cancelled`.
    pub event_type: String,
    pub url: String,
    pub status: DeliveryStatus,
    /// The body sent, fixed at the first attempt (`None` before it).
    pub payload: Option<String>,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<String>,
    /// Unix ms.
    pub next_attempt_at_ms: i64,
    /// Unix ms when the delivery first fell due: retries stop a retry period after it.
    pub first_due_at_ms: i64,
    pub delivered_at: Option<String>,
    /// When the run ended (the event's `createdAt`).
    pub created_at: String,
}

/// A delivery a worker holds the lease of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub delivery: Delivery,
    /// The attempt is recorded only if this lease is still the current one.
    pub lease_token: String,
}

/// What became of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this unix ms.
    Retry {
        next_attempt_ms: i64,
    },
    /// Stop trying: the delivery is `failed`.
    GaveUp,
}

/// One attempt, to record on the delivery it was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub delivery_id: String,
    pub lease_token: String,
    /// The body sent (kept if the delivery has none yet).
    pub payload: String,
    /// When the attempt was made (RFC 3339).
    pub at: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub outcome: AttemptOutcome,
}

/// Secrets and deliveries of run webhooks.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Create or replace `user_id`'s signing secret; returns when it was created.
    async fn set_webhook_secret(&self, user_id: &str, secret: &str) -> Result<String>;
    /// `user_id`'s signing secret, if they created one.
    async fn webhook_secret(&self, user_id: &str) -> Result<Option<String>>;
    /// The deliveries of a run, oldest first.
    async fn deliveries(&self, run_id: &str) -> Result<Vec<Delivery>>;
    /// Lease up to `max` pending deliveries that are due and not leased by a live worker.
    async fn claim_deliveries(
        &self,
        worker: &str,
        max: usize,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<ClaimedDelivery>>;
    /// Record an attempt and release the lease; `false` (nothing written) if the lease was lost.
    async fn record_delivery_attempt(&self, attempt: DeliveryAttempt) -> Result<bool>;
}

pub(crate) const DELIVERY_COLUMNS: &str = "id, event_id, run_id, type, url, status, payload, \
    attempts, last_status_code, last_error, last_attempt_at, next_attempt_at, first_due_at, \
    delivered_at, created_at";

pub(crate) fn delivery_from(row: &impl StoredRow) -> Result<Delivery> {
    let status = row.text("status")?;
    Ok(Delivery {
        id: row.text("id")?,
        event_id: row.text("event_id")?,
        run_id: row.text("run_id")?,
        event_type: row.text("type")?,
        url: row.text("url")?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| decode_err("status", &status))?,
        payload: row.text_opt("payload")?,
        attempts: row.int("attempts")?,
        last_status_code: row.int_opt("last_status_code")?,
        last_error: row.text_opt("last_error")?,
        last_attempt_at: row.text_opt("last_attempt_at")?,
        next_attempt_at_ms: row.int("next_attempt_at")?,
        first_due_at_ms: row.int("first_due_at")?,
        delivered_at: row.text_opt("delivered_at")?,
        created_at: row.text("created_at")?,
    })
}

/// The columns an attempt sets, in bind order: status, payload, attempts + 1, last status code,
/// last error, last attempt at, next attempt at, delivered at.
pub(crate) struct AttemptColumns {
    pub status: &'static str,
    pub next_attempt_ms: Option<i64>,
    pub delivered_at: Option<String>,
}

impl AttemptColumns {
    pub(crate) fn of(attempt: &DeliveryAttempt) -> AttemptColumns {
        match attempt.outcome {
            AttemptOutcome::Delivered => AttemptColumns {
                status: DeliveryStatus::Delivered.as_str(),
                next_attempt_ms: None,
                delivered_at: Some(attempt.at.clone()),
            },
            AttemptOutcome::Retry { next_attempt_ms } => AttemptColumns {
                status: DeliveryStatus::Pending.as_str(),
                next_attempt_ms: Some(next_attempt_ms),
                delivered_at: None,
            },
            AttemptOutcome::GaveUp => AttemptColumns {
                status: DeliveryStatus::Failed.as_str(),
                next_attempt_ms: None,
                delivered_at: None,
            },
        }
    }
}
