//! The PostgreSQL backend: for a fleet of API and worker processes sharing one database. Every
//! operation is a transaction on a pooled connection; workers claim with `FOR UPDATE SKIP
//! LOCKED`, so any number of them can share the queue without blocking each other.
//!
//! SQLite gets its atomicity from its single writer; here many processes write at once, so the
//! invariants it got for free are held with locks: lead writes of a workspace take a
//! transaction-level advisory lock (dedupe looks up, then inserts), balance changes lock the
//! workspace row, list changes lock the list row, and bootstrap takes an advisory lock of its own.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use puffle_domain::account::{ApiKey, Role, User, Workspace};
use puffle_domain::credits::FREE_PLAN_CREDITS;
use puffle_domain::lead::{
    fill_attributes, Lead, LeadFields, ListRef, Membership, NewLead, SearchText,
};
use puffle_domain::list::{List, ListLeadType, ALL_LIST_NAME};
use puffle_domain::{new_id, now_timestamp, Invalid, LeadType};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row};

use crate::keys::{hash_key, hashes_match};
// Backend-neutral logic shared with the SQLite backend.
use crate::rows::{
    decode_err, lead_from, lead_type_from, list_from, user_from, LEAD_SELECT, LIST_SELECT,
};
use crate::sqlite::{not_found_as_invalid, page_limit, typed_keys};
use crate::{
    Caller, Imported, KeyInfo, LeadEdit, LeadPage, LeadQuery, LedgerEntry, ListPatch, MemberPage,
    NewList, NewUser, Result, Store, StoreError, UserWorkspace,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

mod runs;
mod throttle;
mod webhooks;

/// The channel `LISTEN`/`NOTIFY` wake-ups travel on: a new run (or newly due work) is announced
/// here so idle workers everywhere claim at once instead of at their next poll.
pub(crate) const WORK_CHANNEL: &str = "puffle_work";

pub struct PgStore {
    pool: PgPool,
    options: PgConnectOptions,
}

impl PgStore {
    pub async fn open(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size())
            .acquire_timeout(Duration::from_secs(30))
            // A connection that broke (a database restart) is found and replaced before use,
            // but only one that has sat idle: see `PING_IDLE_AFTER`.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options.clone())
            .await?;
        Ok(PgStore { pool, options })
    }
}

/// A pooled connection idle at least this long is pinged before it is handed out; one released
/// more recently is not. The pool already pings every connection as it is released, so a recent
/// one was alive a moment ago, and pinging it again put a second round trip in front of every
/// query: a status read made four where two answer it, each a wake-up of the API and of a
/// database backend that may wait for a busy core (the same bypass window HikariCP uses). If
/// the database restarts within the window, a query on such a connection fails once and the
/// pool drops the connection (its release ping fails).
const PING_IDLE_AFTER: Duration = Duration::from_millis(500);

/// Connections per process: `PUFFLE_DATABASE_POOL_SIZE`, default 10.
fn pool_size() -> u32 {
    std::env::var("PUFFLE_DATABASE_POOL_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(10)
}

/// Fill in `lists` on each lead with one query.
pub(crate) async fn attach_lists(conn: &mut PgConnection, leads: &mut [Lead]) -> Result<()> {
    if leads.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = leads.iter().map(|l| l.id.clone()).collect();
    let rows = sqlx::query(
        "SELECT m.lead_id, l.id, l.name FROM memberships m JOIN lists l ON l.id = m.list_id \
         WHERE m.lead_id = ANY($1) ORDER BY l.is_all DESC, l.id",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    // A page may hold many leads: index them instead of scanning per row.
    let index: HashMap<String, usize> =
        ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
    for row in rows {
        let lead_id: String = row.try_get(0)?;
        if let Some(&i) = index.get(&lead_id) {
            leads[i].lists.push(ListRef {
                id: row.try_get(1)?,
                name: row.try_get(2)?,
            });
        }
    }
    Ok(())
}

/// `NotFound` unless the list exists in the workspace (cheaper than loading it with its counts).
pub(crate) async fn ensure_list(conn: &mut PgConnection, workspace: &str, id: &str) -> Result<()> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM lists WHERE workspace_id = $1 AND id = $2")
            .bind(workspace)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    found.map(|_| ()).ok_or(StoreError::NotFound("list"))
}

/// Add `amount` (may be negative) to the workspace's balance and record it in the ledger;
/// returns the new balance. The workspace row stays locked until the caller's transaction ends,
/// so concurrent charges from other processes cannot both pass the balance check. (`NO KEY
/// UPDATE`, not `UPDATE`: inserts referencing the workspace only need a key-share lock and must
/// not wait for this.)
pub(crate) async fn add_credits(
    conn: &mut PgConnection,
    workspace: &str,
    amount: i64,
    reason: &str,
    run_id: Option<&str>,
) -> Result<i64> {
    let current: Option<i64> =
        sqlx::query_scalar("SELECT balance FROM workspaces WHERE id = $1 FOR NO KEY UPDATE")
            .bind(workspace)
            .fetch_optional(&mut *conn)
            .await?;
    let current = current.ok_or(StoreError::NotFound("workspace"))?;
    let balance = current
        .checked_add(amount)
        .ok_or_else(|| Invalid::new("amount", "would overflow the balance"))?;
    if balance < 0 {
        return Err(Invalid::new(
            "amount",
            format!("would leave a negative balance ({balance})"),
        )
        .into());
    }
    sqlx::query("UPDATE workspaces SET balance = $1 WHERE id = $2")
        .bind(balance)
        .bind(workspace)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO credit_ledger (id, workspace_id, amount, reason, run_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id())
    .bind(workspace)
    .bind(amount)
    .bind(reason)
    .bind(run_id)
    .bind(now_timestamp())
    .execute(&mut *conn)
    .await?;
    Ok(balance)
}

/// Serialize, across every process, the transactions that write lead identities of one
/// workspace: dedupe reads `lead_keys` and then inserts, and two imports of the same person
/// interleaving between those steps would create two leads. Released at commit or rollback.
async fn lock_workspace_leads(conn: &mut PgConnection, workspace: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("puffle:leads:{workspace}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Lock a list row for a change to it or its members (`NotFound` if it is not the workspace's):
/// a retype then cannot race a member insert that its check would have refused.
async fn lock_list(conn: &mut PgConnection, workspace: &str, id: &str) -> Result<()> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM lists WHERE workspace_id = $1 AND id = $2 FOR NO KEY UPDATE",
    )
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    found.map(|_| ()).ok_or(StoreError::NotFound("list"))
}

async fn load_lead(conn: &mut PgConnection, workspace: &str, id: &str) -> Result<Lead> {
    let row = sqlx::query(&format!(
        "{LEAD_SELECT} WHERE workspace_id = $1 AND id = $2"
    ))
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound("lead"))?;
    let mut leads = vec![lead_from(&row)?];
    attach_lists(conn, &mut leads).await?;
    Ok(leads.remove(0))
}

async fn load_list(conn: &mut PgConnection, workspace: &str, id: &str) -> Result<List> {
    let row = sqlx::query(&format!(
        "{LIST_SELECT} WHERE l.workspace_id = $1 AND l.id = $2"
    ))
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound("list"))?;
    list_from(&row)
}

async fn is_all_list(conn: &mut PgConnection, list_id: &str) -> Result<bool> {
    let is_all: i64 = sqlx::query_scalar("SELECT is_all FROM lists WHERE id = $1")
        .bind(list_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(is_all != 0)
}

async fn all_list_id(conn: &mut PgConnection, workspace: &str) -> Result<String> {
    sqlx::query_scalar("SELECT id FROM lists WHERE workspace_id = $1 AND is_all = 1")
        .bind(workspace)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::Internal(format!("workspace {workspace} has no all list")))
}

async fn insert_workspace(conn: &mut PgConnection, name: &str, credits: i64) -> Result<Workspace> {
    let now = now_timestamp();
    let ws = Workspace {
        id: new_id(),
        name: name.to_string(),
        created_at: now.clone(),
    };
    sqlx::query("INSERT INTO workspaces (id, name, balance, created_at) VALUES ($1, $2, 0, $3)")
        .bind(&ws.id)
        .bind(&ws.name)
        .bind(&now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO lists (id, workspace_id, name, description, lead_type, is_all, created_at, \
         updated_at) VALUES ($1, $2, $3, 'Every lead of the workspace', 'mixed', 1, $4, $4)",
    )
    .bind(new_id())
    .bind(&ws.id)
    .bind(ALL_LIST_NAME)
    .bind(&now)
    .execute(&mut *conn)
    .await?;
    if credits != 0 {
        add_credits(conn, &ws.id, credits, "free_plan", None).await?;
    }
    Ok(ws)
}

async fn insert_user(
    conn: &mut PgConnection,
    workspace: &str,
    email: &str,
    role: Role,
) -> Result<User> {
    let user = User {
        id: new_id(),
        email: email.to_string(),
        role,
        workspace_id: workspace.to_string(),
        created_at: now_timestamp(),
    };
    // ON CONFLICT rather than a look-up first: two processes creating the same email at once
    // must end in one user and one `Conflict`, not a unique-violation error.
    let done = sqlx::query(
        "INSERT INTO users (id, workspace_id, email, role, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (email) DO NOTHING",
    )
    .bind(&user.id)
    .bind(&user.workspace_id)
    .bind(&user.email)
    .bind(user.role.as_str())
    .bind(&user.created_at)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Conflict(format!(
            "a user with email {email} already exists"
        )));
    }
    Ok(user)
}

async fn insert_key(conn: &mut PgConnection, user_id: &str, key: &ApiKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, user_id, prefix, key_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(new_id())
    .bind(user_id)
    .bind(key.public_prefix())
    .bind(hash_key(key))
    .bind(now_timestamp())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Leads as column arrays, for one `unnest` statement however many rows (PostgreSQL caps a
/// statement at 65535 bind parameters; arrays are one parameter each).
#[derive(Default)]
struct LeadColumns {
    id: Vec<String>,
    kind: Vec<String>,
    fields: Vec<String>,
    attributes: Vec<String>,
    s_name: Vec<String>,
    s_title: Vec<String>,
    s_company: Vec<String>,
    s_domain: Vec<String>,
    s_industry: Vec<String>,
    s_location: Vec<String>,
    s_emails: Vec<String>,
    created_at: Vec<String>,
    updated_at: Vec<String>,
}

/// The arrays of [`LeadColumns`], in field order, named `u(...)`.
const LEAD_UNNEST: &str = "unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
     $14::text[]) AS u(id, type, fields, attributes, s_name, s_title, s_company, s_domain, \
     s_industry, s_location, s_emails, created_at, updated_at)";

impl LeadColumns {
    fn push(&mut self, id: &str, lead: &Pending) -> Result<()> {
        let s: SearchText = lead.fields.search_text();
        let s = SearchText {
            name: searchable(s.name),
            title: searchable(s.title),
            company: searchable(s.company),
            domain: searchable(s.domain),
            industry: searchable(s.industry),
            location: searchable(s.location),
            emails: searchable(s.emails),
        };
        self.id.push(id.to_string());
        self.kind.push(lead.kind.as_str().to_string());
        self.fields.push(serde_json::to_string(&lead.fields)?);
        self.attributes
            .push(serde_json::to_string(&lead.attributes)?);
        self.s_name.push(s.name);
        self.s_title.push(s.title);
        self.s_company.push(s.company);
        self.s_domain.push(s.domain);
        self.s_industry.push(s.industry);
        self.s_location.push(s.location);
        self.s_emails.push(s.emails);
        self.created_at.push(lead.created_at.clone());
        self.updated_at.push(lead.updated_at.clone());
        Ok(())
    }

    /// Run `sql` (which uses `$1` = workspace and [`LEAD_UNNEST`]) over these rows.
    async fn execute(self, conn: &mut PgConnection, sql: &str, workspace: &str) -> Result<()> {
        if self.id.is_empty() {
            return Ok(());
        }
        sqlx::query(sql)
            .bind(workspace)
            .bind(self.id)
            .bind(self.kind)
            .bind(self.fields)
            .bind(self.attributes)
            .bind(self.s_name)
            .bind(self.s_title)
            .bind(self.s_company)
            .bind(self.s_domain)
            .bind(self.s_industry)
            .bind(self.s_location)
            .bind(self.s_emails)
            .bind(self.created_at)
            .bind(self.updated_at)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn insert(self, conn: &mut PgConnection, workspace: &str) -> Result<()> {
        let sql = format!(
            "INSERT INTO leads (id, workspace_id, type, fields, attributes, s_name, s_title, \
             s_company, s_domain, s_industry, s_location, s_emails, created_at, updated_at) \
             SELECT u.id, $1, u.type, u.fields, u.attributes, u.s_name, u.s_title, u.s_company, \
             u.s_domain, u.s_industry, u.s_location, u.s_emails, u.created_at, u.updated_at \
             FROM {LEAD_UNNEST}"
        );
        self.execute(conn, &sql, workspace).await
    }

    /// Overwrite fields, attributes, search text and `updated_at` (type and creation stay).
    async fn update(self, conn: &mut PgConnection, workspace: &str) -> Result<()> {
        let sql = format!(
            "UPDATE leads AS l SET fields = u.fields, attributes = u.attributes, \
             s_name = u.s_name, s_title = u.s_title, s_company = u.s_company, \
             s_domain = u.s_domain, s_industry = u.s_industry, s_location = u.s_location, \
             s_emails = u.s_emails, updated_at = u.updated_at \
             FROM {LEAD_UNNEST} WHERE l.workspace_id = $1 AND l.id = u.id"
        );
        self.execute(conn, &sql, workspace).await
    }
}

/// Memberships to insert with one statement; a pair already present (here or in the table)
/// is left alone, as adding a member twice is a no-op.
#[derive(Default)]
struct MemberColumns {
    id: Vec<String>,
    list_id: Vec<String>,
    lead_id: Vec<String>,
    lead_type: Vec<String>,
    seen: HashSet<(String, String)>,
}

impl MemberColumns {
    fn push(&mut self, list_id: &str, lead_id: &str, kind: LeadType) {
        if !self.seen.insert((list_id.to_string(), lead_id.to_string())) {
            return;
        }
        self.id.push(new_id());
        self.list_id.push(list_id.to_string());
        self.lead_id.push(lead_id.to_string());
        self.lead_type.push(kind.as_str().to_string());
    }

    async fn insert(self, conn: &mut PgConnection) -> Result<()> {
        if self.id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO memberships (id, list_id, lead_id, lead_type, created_at) \
             SELECT u.id, u.list_id, u.lead_id, u.lead_type, $5 \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
               AS u(id, list_id, lead_id, lead_type) \
             ON CONFLICT (list_id, lead_id) DO NOTHING",
        )
        .bind(self.id)
        .bind(self.list_id)
        .bind(self.lead_id)
        .bind(self.lead_type)
        .bind(now_timestamp())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Record `lead_id` as the holder of `keys`; keys another lead already holds stay with it.
async fn claim_keys(
    conn: &mut PgConnection,
    workspace: &str,
    keys: Vec<String>,
    lead_ids: Vec<String>,
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO lead_keys (workspace_id, key, lead_id) \
         SELECT $1, u.key, u.lead_id FROM unnest($2::text[], $3::text[]) AS u(key, lead_id) \
         ON CONFLICT DO NOTHING",
    )
    .bind(workspace)
    .bind(keys)
    .bind(lead_ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A lead as an upsert leaves it: loaded from the database, or new in this batch.
struct Pending {
    kind: LeadType,
    fields: LeadFields,
    attributes: Map<String, Value>,
    created_at: String,
    updated_at: String,
    new: bool,
    /// Changed by this batch, so written back.
    dirty: bool,
}

/// Rows upserted per round of reads and writes: large enough that a 100,000-lead import is a
/// few hundred statements, small enough to keep each statement and its memory modest.
const UPSERT_CHUNK: usize = 2_000;

/// What a chunk of rows may collide with, read up front, then the decisions made on it.
///
/// The SQLite backend upserts row by row with a statement per step; a round trip per step
/// would make a large import crawl here. So a chunk reads every dedupe key its rows (and the
/// leads they match) could touch, decides row by row in memory with exactly SQLite's rules,
/// and writes each table with one statement. Later rows see earlier rows' effects because the
/// decisions are made in order on this state, and later chunks read what earlier ones wrote.
#[derive(Default)]
struct Upsert {
    /// Dedupe key → the lead holding it.
    holders: HashMap<String, String>,
    /// Keys newly held, in claim order (key, lead id).
    claimed_keys: Vec<String>,
    claimed_by: Vec<String>,
    leads: HashMap<String, Pending>,
    /// Ids of `leads` in the order first changed, so writes are deterministic.
    order: Vec<String>,
    members: MemberColumns,
}

impl Upsert {
    async fn read_holders(
        &mut self,
        conn: &mut PgConnection,
        workspace: &str,
        keys: Vec<String>,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let rows = sqlx::query(
            "SELECT key, lead_id FROM lead_keys WHERE workspace_id = $1 AND key = ANY($2)",
        )
        .bind(workspace)
        .bind(keys)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            self.holders.insert(row.try_get(0)?, row.try_get(1)?);
        }
        Ok(())
    }

    /// Load the leads holding keys, locked against concurrent attribute writes (in id order,
    /// so two lockers never wait on each other in a cycle), then the holders of their own keys,
    /// which a merge claims again.
    async fn read_leads(&mut self, conn: &mut PgConnection, workspace: &str) -> Result<()> {
        let mut ids: Vec<String> = self
            .holders
            .values()
            .filter(|id| !self.leads.contains_key(*id))
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let rows = sqlx::query(&format!(
            "{LEAD_SELECT} WHERE workspace_id = $1 AND id = ANY($2) ORDER BY id \
             FOR NO KEY UPDATE"
        ))
        .bind(workspace)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        let mut own_keys = Vec::new();
        for row in &rows {
            let lead = lead_from(row)?;
            own_keys.extend(
                typed_keys(lead.kind, &lead.fields)
                    .into_iter()
                    .filter(|k| !self.holders.contains_key(k)),
            );
            self.leads.insert(
                lead.id,
                Pending {
                    kind: lead.kind,
                    fields: lead.fields,
                    attributes: lead.attributes,
                    created_at: lead.created_at,
                    updated_at: lead.updated_at,
                    new: false,
                    dirty: false,
                },
            );
        }
        self.read_holders(conn, workspace, own_keys).await
    }

    fn claim(&mut self, lead_id: &str, keys: Vec<String>) {
        for key in keys {
            if !self.holders.contains_key(&key) {
                self.holders.insert(key.clone(), lead_id.to_string());
                self.claimed_keys.push(key);
                self.claimed_by.push(lead_id.to_string());
            }
        }
    }

    fn touch(&mut self, id: &str) {
        if let Some(lead) = self.leads.get_mut(id) {
            if !lead.dirty {
                lead.dirty = true;
                self.order.push(id.to_string());
            }
        }
    }

    /// The row's lead: the one holding the smallest-id of its keys' holders, merged with it, or a
    /// new one. Returns (id, created).
    fn upsert(&mut self, lead: NewLead, all_list: &str) -> Result<(String, bool)> {
        let NewLead {
            kind,
            fields,
            attributes,
            ..
        } = lead;
        let keys = typed_keys(kind, &fields);
        let holder = keys
            .iter()
            .filter_map(|k| self.holders.get(k))
            .min()
            .cloned();
        if let Some(id) = holder {
            let current = self.leads.get_mut(&id).ok_or_else(|| {
                StoreError::Internal(format!("lead {id} holds a dedupe key but was not read"))
            })?;
            current.fields.fill_from(fields);
            fill_attributes(&mut current.attributes, attributes);
            current.updated_at = now_timestamp();
            let merged = typed_keys(kind, &current.fields);
            self.touch(&id);
            self.claim(&id, merged);
            return Ok((id, false));
        }
        let id = new_id();
        let now = now_timestamp();
        self.leads.insert(
            id.clone(),
            Pending {
                kind,
                fields,
                attributes,
                created_at: now.clone(),
                updated_at: now,
                new: true,
                dirty: false,
            },
        );
        self.touch(&id);
        self.claim(&id, keys);
        self.members.push(all_list, &id, kind);
        Ok((id, true))
    }

    async fn write(self, conn: &mut PgConnection, workspace: &str) -> Result<()> {
        let mut inserts = LeadColumns::default();
        let mut updates = LeadColumns::default();
        for id in &self.order {
            if let Some(lead) = self.leads.get(id) {
                if lead.new {
                    inserts.push(id, lead)?;
                } else {
                    updates.push(id, lead)?;
                }
            }
        }
        inserts.insert(conn, workspace).await?;
        updates.update(conn, workspace).await?;
        claim_keys(conn, workspace, self.claimed_keys, self.claimed_by).await?;
        self.members.insert(conn).await
    }
}

/// The lead types of the workspace's lists among `ids`, locked so they cannot be retyped (or
/// deleted) before the members added under them commit. Unknown ids are simply absent.
async fn list_types(
    conn: &mut PgConnection,
    workspace: &str,
    ids: Vec<String>,
) -> Result<HashMap<String, ListLeadType>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT id, lead_type FROM lists WHERE workspace_id = $1 AND id = ANY($2) ORDER BY id \
         FOR SHARE",
    )
    .bind(workspace)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut types = HashMap::with_capacity(rows.len());
    for row in rows {
        let lead_type: String = row.try_get(1)?;
        types.insert(
            row.try_get(0)?,
            ListLeadType::parse(&lead_type)
                .ok_or_else(|| decode_err("list lead type", &lead_type))?,
        );
    }
    Ok(types)
}

/// Create or merge each lead (dedupe as in `create_lead`), adding it to the all list when new,
/// to the lists it names, and to `into` when given. The caller holds the workspace's lead lock.
/// A row's error goes through `at(row index, error)` so the caller can name the row.
async fn upsert_leads(
    conn: &mut PgConnection,
    workspace: &str,
    leads: Vec<NewLead>,
    into: Option<&List>,
    at: impl Fn(usize, StoreError) -> StoreError,
) -> Result<Vec<(String, bool)>> {
    let all_list = all_list_id(conn, workspace).await?;
    let mut out = Vec::with_capacity(leads.len());
    let mut rows = leads.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<NewLead> = rows.by_ref().take(UPSERT_CHUNK).collect();
        let base = out.len();
        let named: Vec<String> = chunk
            .iter()
            .flat_map(|l| l.list_ids.iter().cloned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        // Lists before leads: the same lock order as add_members.
        let types = list_types(conn, workspace, named).await?;
        let mut plan = Upsert::default();
        let keys = chunk
            .iter()
            .flat_map(|l| typed_keys(l.kind, &l.fields))
            .collect();
        plan.read_holders(conn, workspace, keys).await?;
        plan.read_leads(conn, workspace).await?;
        for (i, lead) in chunk.into_iter().enumerate() {
            let row = base + i;
            let (id, created) =
                upsert_row(&mut plan, lead, &all_list, into, &types).map_err(|e| at(row, e))?;
            out.push((id, created));
        }
        plan.write(conn, workspace).await?;
    }
    Ok(out)
}

/// One row of [`upsert_leads`], checks in the order the SQLite backend makes them.
fn upsert_row(
    plan: &mut Upsert,
    lead: NewLead,
    all_list: &str,
    into: Option<&List>,
    types: &HashMap<String, ListLeadType>,
) -> Result<(String, bool)> {
    let kind = lead.kind;
    if let Some(list) = into {
        if !list.lead_type.admits(kind) {
            return Err(Invalid::new(
                "type",
                format!(
                    "is {}, but list {} holds {} leads",
                    kind.as_str(),
                    list.id,
                    list.lead_type.as_str()
                ),
            )
            .into());
        }
    }
    let list_ids = lead.list_ids.clone();
    let (id, created) = plan.upsert(lead, all_list)?;
    for (i, list_id) in list_ids.iter().enumerate() {
        let field = format!("listIds[{i}]");
        let lead_type = types
            .get(list_id)
            .ok_or_else(|| Invalid::new(field.clone(), "no list with this id"))?;
        if !lead_type.admits(kind) {
            return Err(Invalid::new(
                field,
                format!(
                    "list {list_id} holds {} leads; this lead is a {}",
                    lead_type.as_str(),
                    kind.as_str()
                ),
            )
            .into());
        }
        plan.members.push(list_id, &id, kind);
    }
    if let Some(list) = into {
        plan.members.push(&list.id, &id, kind);
    }
    Ok((id, created))
}

async fn touch_list(conn: &mut PgConnection, list_id: &str) -> Result<()> {
    sqlx::query("UPDATE lists SET updated_at = $1 WHERE id = $2")
        .bind(now_timestamp())
        .bind(list_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Search text as PostgreSQL can store it: without NUL characters, which `text` cannot hold
/// (the JSON documents keep them, escaped). Filters drop them too, so they match alike.
fn searchable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "")
    } else {
        text
    }
}

/// `%text%` for `LIKE … ESCAPE '\'`: the text matches literally, wildcards and all.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars().filter(|c| *c != '\0') {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Add leads to a list: every lead must exist in the workspace and fit the list's lead type,
/// else nothing is added (the caller's transaction rolls back). The leads are key-share locked
/// so a concurrent delete waits rather than failing the insert on a foreign key.
async fn add_members_in(
    conn: &mut PgConnection,
    workspace: &str,
    list_id: &str,
    lead_type: ListLeadType,
    lead_ids: &[String],
) -> Result<()> {
    if lead_ids.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(
        "SELECT id, type FROM leads WHERE workspace_id = $1 AND id = ANY($2) ORDER BY id \
         FOR KEY SHARE",
    )
    .bind(workspace)
    .bind(lead_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut types = HashMap::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get(0)?;
        let kind: String = row.try_get(1)?;
        types.insert(id, lead_type_from(&kind)?);
    }
    let mut members = MemberColumns::default();
    for (i, lead_id) in lead_ids.iter().enumerate() {
        let field = format!("leadIds[{i}]");
        let kind = *types
            .get(lead_id)
            .ok_or_else(|| Invalid::new(field.clone(), "no lead with this id"))?;
        if !lead_type.admits(kind) {
            return Err(Invalid::new(
                field,
                format!(
                    "lead {lead_id} is a {}; this list holds {} leads",
                    kind.as_str(),
                    lead_type.as_str()
                ),
            )
            .into());
        }
        members.push(list_id, lead_id, kind);
    }
    members.insert(conn).await
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<()> {
        // The migrator takes an advisory lock, so processes starting together migrate once.
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn bootstrap(&self, email: &str, key: &ApiKey) -> Result<Option<(Workspace, User)>> {
        let mut tx = self.pool.begin().await?;
        // Several `puffle serve` may start on one empty database at once: one bootstraps, the
        // others wait here and then see its workspace.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('puffle:bootstrap', 0))")
            .execute(&mut *tx)
            .await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM workspaces")
            .fetch_one(&mut *tx)
            .await?;
        if count > 0 {
            return Ok(None);
        }
        let ws = insert_workspace(&mut tx, "default", FREE_PLAN_CREDITS).await?;
        let user = insert_user(&mut tx, &ws.id, email, Role::Admin).await?;
        insert_key(&mut tx, &user.id, key).await?;
        tx.commit().await?;
        Ok(Some((ws, user)))
    }

    async fn create_user(&self, user: NewUser, key: &ApiKey) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let workspace_id = match user.workspace {
            UserWorkspace::New { name, credits } => {
                insert_workspace(&mut tx, &name, credits).await?.id
            }
            UserWorkspace::Existing(id) => {
                let found: Option<String> =
                    sqlx::query_scalar("SELECT id FROM workspaces WHERE id = $1")
                        .bind(&id)
                        .fetch_optional(&mut *tx)
                        .await?;
                found.ok_or(StoreError::NotFound("workspace"))?
            }
        };
        let created = insert_user(&mut tx, &workspace_id, &user.email, user.role).await?;
        insert_key(&mut tx, &created.id, key).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn authenticate(&self, key: &ApiKey) -> Result<Option<Caller>> {
        let presented = hash_key(key);
        let rows = sqlx::query(
            "SELECT k.id AS key_id, k.key_hash, u.id, u.email, u.role, u.workspace_id, \
             u.created_at FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE k.prefix = $1 AND k.revoked_at IS NULL",
        )
        .bind(key.public_prefix())
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let stored: Vec<u8> = row.try_get("key_hash")?;
            if hashes_match(&presented, &stored) {
                return Ok(Some(Caller {
                    key_id: row.try_get("key_id")?,
                    user: user_from(&row)?,
                }));
            }
        }
        Ok(None)
    }

    async fn user(&self, workspace: &str, user_id: &str) -> Result<User> {
        let row = sqlx::query(
            "SELECT id, email, role, workspace_id, created_at FROM users \
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("user"))?;
        user_from(&row)
    }

    async fn workspace(&self, workspace: &str) -> Result<Workspace> {
        let row = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE id = $1")
            .bind(workspace)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("workspace"))?;
        Ok(Workspace {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        })
    }

    async fn add_api_key(&self, user_id: &str, calling_key: &str, key: &ApiKey) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Lock the user so two concurrent requests cannot both see "no other key" and both add.
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL AND id <> $2",
        )
        .bind(user_id)
        .bind(calling_key)
        .fetch_one(&mut *tx)
        .await?;
        if others > 0 {
            return Err(StoreError::Conflict(
                "this user already has another active API key; revoke it first".into(),
            ));
        }
        insert_key(&mut tx, user_id, key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn active_api_key(&self, user_id: &str) -> Result<Option<KeyInfo>> {
        let row = sqlx::query(
            "SELECT id, prefix, created_at FROM api_keys \
             WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id DESC LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(KeyInfo {
                id: r.try_get("id")?,
                prefix: r.try_get("prefix")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn revoke_api_key(&self, key_id: &str) -> Result<()> {
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_timestamp())
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn grant_credits(&self, workspace: &str, amount: i64, reason: &str) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let balance = add_credits(&mut tx, workspace, amount, reason, None).await?;
        tx.commit().await?;
        Ok(balance)
    }

    async fn balance(&self, workspace: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT balance FROM workspaces WHERE id = $1")
            .bind(workspace)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("workspace"))
    }

    async fn ledger(&self, workspace: &str, limit: u32) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(
            "SELECT id, amount, reason, run_id, created_at FROM credit_ledger \
             WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(workspace)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LedgerEntry {
                    id: r.try_get("id")?,
                    amount: r.try_get("amount")?,
                    reason: r.try_get("reason")?,
                    run_id: r.try_get("run_id")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn create_lead(&self, workspace: &str, lead: NewLead) -> Result<(Lead, bool)> {
        let mut tx = self.pool.begin().await?;
        lock_workspace_leads(&mut tx, workspace).await?;
        let (id, created) = upsert_leads(&mut tx, workspace, vec![lead], None, |_, e| e)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Internal("an upsert of one lead returned none".into()))?;
        let lead = load_lead(&mut tx, workspace, &id).await?;
        tx.commit().await?;
        Ok((lead, created))
    }

    async fn import_leads(
        &self,
        workspace: &str,
        leads: Vec<NewLead>,
        list_id: Option<&str>,
    ) -> Result<Imported> {
        let mut tx = self.pool.begin().await?;
        lock_workspace_leads(&mut tx, workspace).await?;
        let list = match list_id {
            Some(id) => {
                let not_found = |e| not_found_as_invalid(e, "listId", "no list with this id");
                lock_list(&mut tx, workspace, id).await.map_err(not_found)?;
                Some(load_list(&mut tx, workspace, id).await.map_err(not_found)?)
            }
            None => None,
        };
        let rows = upsert_leads(&mut tx, workspace, leads, list.as_ref(), |i, e| match e {
            StoreError::Invalid(inv) => StoreError::Invalid(inv.within(&format!("leads[{i}]"))),
            other => other,
        })
        .await?;
        let mut imported = Imported {
            list: None,
            lead_ids: Vec::with_capacity(rows.len()),
            created: 0,
            reused: 0,
        };
        for (id, created) in rows {
            if created {
                imported.created += 1;
            } else {
                imported.reused += 1;
            }
            imported.lead_ids.push(id);
        }
        if let Some(list) = list {
            touch_list(&mut tx, &list.id).await?;
            imported.list = Some(load_list(&mut tx, workspace, &list.id).await?);
        }
        tx.commit().await?;
        Ok(imported)
    }

    async fn leads(&self, workspace: &str, query: &LeadQuery) -> Result<LeadPage> {
        let mut q = QueryBuilder::<Postgres>::new(LEAD_SELECT);
        q.push(" WHERE workspace_id = ")
            .push_bind(workspace.to_string());
        if let Some(id) = &query.id {
            q.push(" AND id = ").push_bind(id.clone());
        }
        if let Some(kind) = query.kind {
            q.push(" AND type = ").push_bind(kind.as_str());
        }
        if let Some(after) = &query.after {
            q.push(" AND id > ").push_bind(after.clone());
        }
        // The s_* columns hold lowercase copies, so a case-sensitive LIKE on the lowercased
        // filter is the case-insensitive substring match the API promises.
        let narrow = [
            ("s_name", &query.name),
            ("s_title", &query.title),
            ("s_company", &query.company),
            ("s_domain", &query.domain),
            ("s_emails", &query.email),
            ("s_industry", &query.industry),
            ("s_location", &query.location),
        ];
        for (column, value) in narrow {
            if let Some(v) = value {
                q.push(format!(" AND {column} LIKE "))
                    .push_bind(contains_pattern(&v.to_lowercase()))
                    .push(" ESCAPE '\\'");
            }
        }
        if let Some(text) = &query.q {
            let pattern = contains_pattern(&text.to_lowercase());
            q.push(" AND (");
            let mut sep = q.separated(" OR ");
            for column in [
                "s_name",
                "s_title",
                "s_company",
                "s_domain",
                "s_industry",
                "s_location",
                "s_emails",
            ] {
                sep.push(format!("{column} LIKE "))
                    .push_bind_unseparated(pattern.clone())
                    .push_unseparated(" ESCAPE '\\'");
            }
            q.push(")");
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(page_limit(query.limit));
        let mut conn = self.pool.acquire().await?;
        let rows = q.build().fetch_all(&mut *conn).await?;
        let mut leads = rows.iter().map(lead_from).collect::<Result<Vec<_>>>()?;
        let next_cursor = if leads.len() > query.limit as usize {
            leads.truncate(query.limit as usize);
            leads.last().map(|l| l.id.clone())
        } else {
            None
        };
        attach_lists(&mut conn, &mut leads).await?;
        Ok(LeadPage { leads, next_cursor })
    }

    async fn update_lead(&self, workspace: &str, id: &str, edit: LeadEdit) -> Result<Lead> {
        let mut tx = self.pool.begin().await?;
        lock_workspace_leads(&mut tx, workspace).await?;
        // The row lock keeps a worker's attribute write from landing between our read and write.
        let locked: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM leads WHERE workspace_id = $1 AND id = $2 FOR NO KEY UPDATE",
        )
        .bind(workspace)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        locked.ok_or(StoreError::NotFound("lead"))?;
        let mut lead = load_lead(&mut tx, workspace, id).await?;
        edit(lead.kind, &mut lead.fields, &mut lead.attributes)?;
        let keys = typed_keys(lead.kind, &lead.fields);
        let taken = keys_held_by_others(&mut tx, workspace, id, &keys).await?;
        // Report the first key in order, as a one-by-one check would.
        if let Some((key, other)) = keys
            .iter()
            .find_map(|k| taken.get(k).map(|other| (k, other)))
        {
            let what = key.split(':').nth(1).unwrap_or("identity");
            return Err(StoreError::Conflict(format!(
                "lead {other} already has this {what}; leads are deduplicated by it"
            )));
        }
        sqlx::query("DELETE FROM lead_keys WHERE lead_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let holders = vec![id.to_string(); keys.len()];
        claim_keys(&mut tx, workspace, keys, holders).await?;
        let mut row = LeadColumns::default();
        row.push(
            id,
            &Pending {
                kind: lead.kind,
                fields: lead.fields,
                attributes: lead.attributes,
                created_at: lead.created_at,
                updated_at: now_timestamp(),
                new: false,
                dirty: true,
            },
        )?;
        row.update(&mut tx, workspace).await?;
        let lead = load_lead(&mut tx, workspace, id).await?;
        tx.commit().await?;
        Ok(lead)
    }

    async fn delete_lead(&self, workspace: &str, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // An import deciding to merge into this lead must not see it vanish half way.
        lock_workspace_leads(&mut tx, workspace).await?;
        let done = sqlx::query("DELETE FROM leads WHERE workspace_id = $1 AND id = $2")
            .bind(workspace)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("lead"));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn lists(&self, workspace: &str, id: Option<&str>) -> Result<Vec<List>> {
        let mut q = QueryBuilder::<Postgres>::new(LIST_SELECT);
        q.push(" WHERE l.workspace_id = ")
            .push_bind(workspace.to_string());
        if let Some(id) = id {
            q.push(" AND l.id = ").push_bind(id.to_string());
        }
        q.push(" ORDER BY l.id DESC");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(list_from).collect()
    }

    async fn create_list(&self, workspace: &str, list: NewList) -> Result<List> {
        let mut tx = self.pool.begin().await?;
        let id = new_id();
        let now = now_timestamp();
        sqlx::query(
            "INSERT INTO lists (id, workspace_id, name, description, lead_type, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&id)
        .bind(workspace)
        .bind(&list.name)
        .bind(&list.description)
        .bind(list.lead_type.as_str())
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        add_members_in(&mut tx, workspace, &id, list.lead_type, &list.lead_ids).await?;
        let created = load_list(&mut tx, workspace, &id).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn update_list(&self, workspace: &str, id: &str, patch: ListPatch) -> Result<List> {
        let mut tx = self.pool.begin().await?;
        lock_list(&mut tx, workspace, id).await?;
        let current = load_list(&mut tx, workspace, id).await?;
        if is_all_list(&mut tx, id).await? {
            if patch.name.as_deref().is_some_and(|n| n != ALL_LIST_NAME) {
                return Err(Invalid::new("name", "the all list cannot be renamed").into());
            }
            if patch.lead_type.is_some_and(|t| t != current.lead_type) {
                return Err(Invalid::new("leadType", "the all list cannot be retyped").into());
            }
        }
        if let Some(lead_type) = patch.lead_type {
            if !current.members_fit(lead_type) {
                return Err(StoreError::Conflict(format!(
                    "the list has {} person and {} company members; leadType {} would exclude some",
                    current.person_count,
                    current.company_count,
                    lead_type.as_str()
                )));
            }
        }
        let name = patch.name.unwrap_or(current.name);
        let description = patch.description.unwrap_or(current.description);
        let lead_type = patch.lead_type.unwrap_or(current.lead_type);
        sqlx::query(
            "UPDATE lists SET name = $1, description = $2, lead_type = $3, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(name)
        .bind(description)
        .bind(lead_type.as_str())
        .bind(now_timestamp())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let list = load_list(&mut tx, workspace, id).await?;
        tx.commit().await?;
        Ok(list)
    }

    async fn delete_list(&self, workspace: &str, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        load_list(&mut tx, workspace, id).await?;
        if is_all_list(&mut tx, id).await? {
            return Err(Invalid::new("id", "the all list cannot be deleted").into());
        }
        sqlx::query("DELETE FROM lists WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_members(
        &self,
        workspace: &str,
        list_id: &str,
        kind: Option<LeadType>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<MemberPage> {
        let mut conn = self.pool.acquire().await?;
        ensure_list(&mut conn, workspace, list_id).await?;
        let mut total =
            QueryBuilder::<Postgres>::new("SELECT count(*) FROM memberships WHERE list_id = ");
        total.push_bind(list_id.to_string());
        if let Some(kind) = kind {
            total.push(" AND lead_type = ").push_bind(kind.as_str());
        }
        let total: i64 = total.build_query_scalar().fetch_one(&mut *conn).await?;

        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT l.id, l.type, l.fields, l.attributes, l.created_at, l.updated_at, \
             m.id AS m_id, m.attributes AS m_attributes, m.created_at AS m_created_at \
             FROM memberships m JOIN leads l ON l.id = m.lead_id WHERE m.list_id = ",
        );
        q.push_bind(list_id.to_string());
        if let Some(kind) = kind {
            q.push(" AND m.lead_type = ").push_bind(kind.as_str());
        }
        if let Some(after) = after {
            q.push(" AND m.lead_id > ").push_bind(after.to_string());
        }
        q.push(" ORDER BY m.lead_id LIMIT ")
            .push_bind(page_limit(limit));
        let rows = q.build().fetch_all(&mut *conn).await?;
        let mut leads = Vec::with_capacity(rows.len());
        let mut memberships = Vec::with_capacity(rows.len());
        for row in &rows {
            leads.push(lead_from(row)?);
            let attributes: String = row.try_get("m_attributes")?;
            memberships.push(Membership {
                id: row.try_get("m_id")?,
                attributes: serde_json::from_str(&attributes)?,
                created_at: row.try_get("m_created_at")?,
            });
        }
        let next_cursor = if leads.len() > limit as usize {
            leads.truncate(limit as usize);
            memberships.truncate(limit as usize);
            leads.last().map(|l| l.id.clone())
        } else {
            None
        };
        attach_lists(&mut conn, &mut leads).await?;
        Ok(MemberPage {
            members: leads.into_iter().zip(memberships).collect(),
            total,
            next_cursor,
        })
    }

    async fn list_attribute_keys(&self, workspace: &str, list_id: &str) -> Result<Vec<String>> {
        let mut conn = self.pool.acquire().await?;
        ensure_list(&mut conn, workspace, list_id).await?;
        // `json_object_keys` fails on a document holding the escape `\u0000` (PostgreSQL text
        // cannot hold NUL), so those rare documents are read in Rust instead; a textual match is
        // enough to route them, as both paths give the same keys.
        let mut keys: BTreeSet<String> = sqlx::query_scalar(
            "SELECT DISTINCT j.key FROM memberships m JOIN leads l ON l.id = m.lead_id, \
             json_object_keys(CASE WHEN strpos(l.attributes, '\\u0000') = 0 \
                THEN l.attributes::json ELSE '{}' END) AS j(key) \
             WHERE m.list_id = $1",
        )
        .bind(list_id)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        let odd: Vec<String> = sqlx::query_scalar(
            "SELECT l.attributes FROM memberships m JOIN leads l ON l.id = m.lead_id \
             WHERE m.list_id = $1 AND strpos(l.attributes, '\\u0000') > 0",
        )
        .bind(list_id)
        .fetch_all(&mut *conn)
        .await?;
        for attributes in odd {
            let attributes: Map<String, Value> = serde_json::from_str(&attributes)?;
            keys.extend(attributes.into_iter().map(|(k, _)| k));
        }
        // A BTreeSet iterates in byte order, as SQLite sorts (whatever the database collation).
        Ok(keys.into_iter().collect())
    }

    async fn add_members(
        &self,
        workspace: &str,
        list_id: &str,
        lead_ids: &[String],
    ) -> Result<List> {
        let mut tx = self.pool.begin().await?;
        lock_list(&mut tx, workspace, list_id).await?;
        let list = load_list(&mut tx, workspace, list_id).await?;
        add_members_in(&mut tx, workspace, list_id, list.lead_type, lead_ids).await?;
        touch_list(&mut tx, list_id).await?;
        let list = load_list(&mut tx, workspace, list_id).await?;
        tx.commit().await?;
        Ok(list)
    }

    async fn remove_members(
        &self,
        workspace: &str,
        list_id: &str,
        lead_ids: &[String],
    ) -> Result<List> {
        let mut tx = self.pool.begin().await?;
        lock_list(&mut tx, workspace, list_id).await?;
        if is_all_list(&mut tx, list_id).await? {
            return Err(Invalid::new(
                "leadIds",
                "leads cannot be removed from the all list (delete the lead instead)",
            )
            .into());
        }
        sqlx::query("DELETE FROM memberships WHERE list_id = $1 AND lead_id = ANY($2)")
            .bind(list_id)
            .bind(lead_ids)
            .execute(&mut *tx)
            .await?;
        touch_list(&mut tx, list_id).await?;
        let list = load_list(&mut tx, workspace, list_id).await?;
        tx.commit().await?;
        Ok(list)
    }
    async fn cache_get(&self, key: &str, now_ms: i64) -> Result<Option<Value>> {
        let answer: Option<String> = sqlx::query_scalar(
            "SELECT answer FROM provider_cache WHERE key = $1 AND expires_at > $2",
        )
        .bind(key)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(answer.and_then(|a| serde_json::from_str(&a).ok()))
    }

    async fn cache_put(
        &self,
        key: &str,
        provider: &str,
        answer: &Value,
        expires_at_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO provider_cache (key, provider, answer, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO UPDATE SET provider = excluded.provider, \
             answer = excluded.answer, expires_at = excluded.expires_at",
        )
        .bind(key)
        .bind(provider)
        .bind(answer.to_string())
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn cache_prune(&self, now_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM provider_cache WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Which of `keys` leads other than `id` hold: key → holder.
async fn keys_held_by_others(
    conn: &mut PgConnection,
    workspace: &str,
    id: &str,
    keys: &[String],
) -> Result<HashMap<String, String>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT key, lead_id FROM lead_keys \
         WHERE workspace_id = $1 AND key = ANY($2) AND lead_id <> $3",
    )
    .bind(workspace)
    .bind(keys)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn like_patterns_match_wildcards_literally() {
        assert_eq!(contains_pattern("ab"), "%ab%");
        assert_eq!(contains_pattern("5%_a\\b"), "%5\\%\\_a\\\\b%");
        assert_eq!(contains_pattern(""), "%%");
    }
}
