//! Puffle's persistence. [`Store`] is the one interface the layers above use; each backend
//! (SQLite now, PostgreSQL next) implements it and passes the same conformance tests. No SQL, and
//! no backend-specific assumption, leaves this crate.

mod keys;
mod postgres;
pub mod priority;
mod rows;
mod runs;
pub mod scratch;
mod sqlite;
mod throttle;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use puffle_domain::account::{ApiKey, Role, User, Workspace};
use puffle_domain::lead::{Lead, LeadFields, Membership, NewLead};
use puffle_domain::list::{List, ListLeadType};
use puffle_domain::{Invalid, LeadType};
use serde_json::{Map, Value};

pub use keys::hash_key;
pub use runs::{
    AttributeWrite, ClaimedItem, Finish, FinishOutcome, Item, ItemQuery, ItemTarget, NewRun,
    QueueStats, Run, RunStore, Submission, Targets, SCOPE_CHANGED, TOO_MANY_ACTIVE_RUNS,
};
pub use throttle::{SlotLimits, Take, ThrottleStore};
pub use webhooks::{
    AttemptOutcome, ClaimedDelivery, Delivery, DeliveryAttempt, DeliveryStatus, WebhookStore,
};

/// What a store operation can fail with. Every variant but `Internal` is the caller's doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist for this workspace (or never did).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Conflict(String),
    /// A state change that lost to another (or is not allowed in this state); `reason` is the
    /// machine-readable discriminator clients branch on.
    #[error("{message}")]
    StateConflict {
        reason: &'static str,
        message: String,
    },
    #[error("insufficient credits: {required} required, {balance} available")]
    InsufficientCredits { required: i64, balance: i64 },
    #[error("database error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Internal(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Internal(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Internal(format!("stored JSON is unreadable: {e}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Who is calling: the key's user, and the user the request acts as (the same unless an admin
/// impersonates).
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub user: User,
}

/// Where a new user goes: a workspace of their own (with starting credits) or an existing one.
#[derive(Debug, Clone)]
pub enum UserWorkspace {
    New { name: String, credits: i64 },
    Existing(String),
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub role: Role,
    pub workspace: UserWorkspace,
}

/// An API key as its owner may see it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub prefix: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: String,
    pub amount: i64,
    pub reason: String,
    pub run_id: Option<String>,
    pub created_at: String,
}

/// Filters of `GET /api/leads`: every text filter is a case-insensitive substring match.
#[derive(Debug, Clone, Default)]
pub struct LeadQuery {
    pub id: Option<String>,
    pub kind: Option<LeadType>,
    pub q: Option<String>,
    pub name: Option<String>,
    pub title: Option<String>,
    pub company: Option<String>,
    pub domain: Option<String>,
    pub email: Option<String>,
    pub industry: Option<String>,
    pub location: Option<String>,
    /// Only leads with an id greater than this.
    pub after: Option<String>,
    pub limit: u32,
}

/// A page of leads in id order; `next_cursor` is set when more follow.
#[derive(Debug, Clone)]
pub struct LeadPage {
    pub leads: Vec<Lead>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MemberPage {
    pub members: Vec<(Lead, Membership)>,
    pub total: i64,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewList {
    pub name: String,
    pub description: Option<String>,
    pub lead_type: ListLeadType,
    pub lead_ids: Vec<String>,
}

/// A change to a list; `None` leaves a field as it is (`description: Some(None)` clears it).
#[derive(Debug, Clone, Default)]
pub struct ListPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub lead_type: Option<ListLeadType>,
}

/// Result of importing leads: ids in input order, and how many were new or reused.
#[derive(Debug, Clone)]
pub struct Imported {
    pub list: Option<List>,
    pub lead_ids: Vec<String>,
    pub created: u64,
    pub reused: u64,
}

/// A change to a lead, applied to its current fields and attributes inside the store's
/// transaction (so concurrent edits never lose each other's fields).
pub type LeadEdit = Box<
    dyn FnOnce(LeadType, &mut LeadFields, &mut Map<String, Value>) -> Result<(), Invalid> + Send,
>;

/// Everything Puffle persists. Every method that takes a `workspace` only ever sees that
/// workspace's objects: anything else is `NotFound`.
#[async_trait]
pub trait Store: RunStore + WebhookStore + ThrottleStore + Send + Sync + 'static {
    /// Apply pending migrations.
    async fn migrate(&self) -> Result<()>;
    /// The database answers.
    async fn ping(&self) -> Result<()>;

    // Accounts and keys.

    /// On an empty database only: workspace `default`, the admin user, free-plan credits and
    /// `key`. Returns `None` (and changes nothing) when the database already has a workspace.
    async fn bootstrap(&self, email: &str, key: &ApiKey) -> Result<Option<(Workspace, User)>>;
    /// A new user with `key` as their API key. Duplicate email: `Conflict`.
    async fn create_user(&self, user: NewUser, key: &ApiKey) -> Result<User>;
    /// The caller behind an active key, or `None` for an unknown or revoked key.
    async fn authenticate(&self, key: &ApiKey) -> Result<Option<Caller>>;
    async fn user(&self, workspace: &str, user_id: &str) -> Result<User>;
    async fn workspace(&self, workspace: &str) -> Result<Workspace>;
    /// Add a key for `user_id`; `Conflict` if the user has an active key other than `calling_key`.
    async fn add_api_key(&self, user_id: &str, calling_key: &str, key: &ApiKey) -> Result<()>;
    /// The user's newest active key.
    async fn active_api_key(&self, user_id: &str) -> Result<Option<KeyInfo>>;
    async fn revoke_api_key(&self, key_id: &str) -> Result<()>;

    // Credits.

    async fn grant_credits(&self, workspace: &str, amount: i64, reason: &str) -> Result<i64>;
    async fn balance(&self, workspace: &str) -> Result<i64>;
    async fn ledger(&self, workspace: &str, limit: u32) -> Result<Vec<LedgerEntry>>;

    // Leads.

    /// Create a lead, or merge it into the workspace's lead it duplicates (`false` then).
    async fn create_lead(&self, workspace: &str, lead: NewLead) -> Result<(Lead, bool)>;
    /// Create or reuse every lead, all or nothing, optionally adding them to `list_id`.
    async fn import_leads(
        &self,
        workspace: &str,
        leads: Vec<NewLead>,
        list_id: Option<&str>,
    ) -> Result<Imported>;
    async fn leads(&self, workspace: &str, query: &LeadQuery) -> Result<LeadPage>;
    async fn update_lead(&self, workspace: &str, id: &str, edit: LeadEdit) -> Result<Lead>;
    async fn delete_lead(&self, workspace: &str, id: &str) -> Result<()>;

    // Lists.

    /// Lists newest first, or the one named by `id`.
    async fn lists(&self, workspace: &str, id: Option<&str>) -> Result<Vec<List>>;
    async fn create_list(&self, workspace: &str, list: NewList) -> Result<List>;
    async fn update_list(&self, workspace: &str, id: &str, patch: ListPatch) -> Result<List>;
    async fn delete_list(&self, workspace: &str, id: &str) -> Result<()>;
    async fn list_members(
        &self,
        workspace: &str,
        list_id: &str,
        kind: Option<LeadType>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<MemberPage>;
    /// Every attribute key any member of the list has, sorted.
    async fn list_attribute_keys(&self, workspace: &str, list_id: &str) -> Result<Vec<String>>;
    async fn add_members(
        &self,
        workspace: &str,
        list_id: &str,
        lead_ids: &[String],
    ) -> Result<List>;
    async fn remove_members(
        &self,
        workspace: &str,
        list_id: &str,
        lead_ids: &[String],
    ) -> Result<List>;

    // The result cache of configured providers (shared by every process on the database).

    /// The cached answer under `key`, unless it expired before `now_ms` (unix ms).
    async fn cache_get(&self, key: &str, now_ms: i64) -> Result<Option<Value>>;
    /// Store (or replace) the answer under `key` until `expires_at_ms`.
    async fn cache_put(
        &self,
        key: &str,
        provider: &str,
        answer: &Value,
        expires_at_ms: i64,
    ) -> Result<()>;
    /// Delete entries expired before `now_ms`; how many went.
    async fn cache_prune(&self, now_ms: i64) -> Result<u64>;
}

/// Open the database behind `url`: `sqlite://path` or `sqlite::memory:` (created if needed), or
/// `postgres://user@host/db` (the database must exist).
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(sqlite::SqliteStore::open(url).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PgStore::open(url).await?));
    }
    Err(StoreError::Internal(format!(
        "unsupported database URL scheme (expected sqlite:// or postgres://): {}",
        url.split(':').next().unwrap_or_default()
    )))
}

#[cfg(test)]
mod conformance;
