//! The SQLite backend: the embedded default. WAL mode; one writer connection (SQLite has one
//! writer anyway, and queuing writers in process avoids `SQLITE_BUSY`) beside a pool of readers.

use std::str::FromStr;
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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::keys::{hash_key, hashes_match};
use crate::priority;
use crate::rows::{lead_from, lead_type_from, list_from, user_from, LEAD_SELECT, LIST_SELECT};
use crate::{
    Caller, Imported, KeyInfo, LeadEdit, LeadPage, LeadQuery, LedgerEntry, ListPatch, MemberPage,
    NewList, NewUser, Result, Store, StoreError, UserWorkspace,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The name of the writer connection's thread.
const WRITER_THREAD: &str = "puffle-writer";

mod checkpoint;
mod runs;
mod throttle;
mod webhooks;

pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
    /// `None` for an in-memory database (it has no WAL).
    _checkpointer: Option<checkpoint::Checkpointer>,
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let in_memory = url.contains(":memory:");
        // Most of the WAL is checkpointed by a connection of its own; the writer's automatic
        // checkpoint copies only the rest and lets the WAL start over (see `checkpoint`).
        // The writer mostly records what the engine did: it runs as background work (see
        // `priority`), readers do not.
        // Neither pool pings a connection before each use (sqlx's default): a SQLite connection
        // is a file in this process, not a link that can drop, and the ping is one more hand-off
        // to its thread per transaction, with the writer held meanwhile.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .after_connect(|_, _| {
                Box::pin(async {
                    priority::lower_threads_named(WRITER_THREAD);
                    Ok(())
                })
            })
            .connect_with(
                options
                    .clone()
                    .thread_name(|_| WRITER_THREAD.to_string())
                    .pragma("wal_autocheckpoint", checkpoint::WRITER_CHECKPOINT_PAGES),
            )
            .await?;
        // An in-memory database lives in one connection: readers must share it.
        let (read, checkpointer) = if in_memory {
            (write.clone(), None)
        } else {
            let read = SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(false)
                .connect_with(options.clone().read_only(true))
                .await?;
            (read, Some(checkpoint::Checkpointer::start(options).await?))
        };
        Ok(SqliteStore {
            write,
            read,
            _checkpointer: checkpointer,
        })
    }
}

/// Fill in `lists` on each lead with one query.
async fn attach_lists(conn: &mut SqliteConnection, leads: &mut [Lead]) -> Result<()> {
    if leads.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "SELECT m.lead_id, l.id, l.name FROM memberships m JOIN lists l ON l.id = m.list_id \
         WHERE m.lead_id IN (",
    );
    let mut sep = q.separated(", ");
    for lead in leads.iter() {
        sep.push_bind(lead.id.clone());
    }
    q.push(") ORDER BY l.is_all DESC, l.id");
    let rows = q.build().persistent(false).fetch_all(&mut *conn).await?;
    for row in rows {
        let lead_id: String = row.try_get(0)?;
        if let Some(lead) = leads.iter_mut().find(|l| l.id == lead_id) {
            lead.lists.push(ListRef {
                id: row.try_get(1)?,
                name: row.try_get(2)?,
            });
        }
    }
    Ok(())
}

async fn load_lead(conn: &mut SqliteConnection, workspace: &str, id: &str) -> Result<Lead> {
    let row = sqlx::query(&format!("{LEAD_SELECT} WHERE workspace_id = ? AND id = ?"))
        .bind(workspace)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound("lead"))?;
    let mut leads = vec![lead_from(&row)?];
    attach_lists(conn, &mut leads).await?;
    Ok(leads.remove(0))
}

async fn load_list(conn: &mut SqliteConnection, workspace: &str, id: &str) -> Result<List> {
    let row = sqlx::query(&format!(
        "{LIST_SELECT} WHERE l.workspace_id = ? AND l.id = ?"
    ))
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound("list"))?;
    list_from(&row)
}

/// `NotFound` unless the list exists in the workspace (cheaper than loading it with its counts).
async fn ensure_list(conn: &mut SqliteConnection, workspace: &str, id: &str) -> Result<()> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM lists WHERE workspace_id = ? AND id = ?")
            .bind(workspace)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    found.map(|_| ()).ok_or(StoreError::NotFound("list"))
}

async fn is_all_list(conn: &mut SqliteConnection, list_id: &str) -> Result<bool> {
    let is_all: i64 = sqlx::query_scalar("SELECT is_all FROM lists WHERE id = ?")
        .bind(list_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(is_all != 0)
}

async fn all_list_id(conn: &mut SqliteConnection, workspace: &str) -> Result<String> {
    sqlx::query_scalar("SELECT id FROM lists WHERE workspace_id = ? AND is_all = 1")
        .bind(workspace)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::Internal(format!("workspace {workspace} has no all list")))
}

async fn insert_workspace(
    conn: &mut SqliteConnection,
    name: &str,
    credits: i64,
) -> Result<Workspace> {
    let now = now_timestamp();
    let ws = Workspace {
        id: new_id(),
        name: name.to_string(),
        created_at: now.clone(),
    };
    sqlx::query("INSERT INTO workspaces (id, name, balance, created_at) VALUES (?, ?, 0, ?)")
        .bind(&ws.id)
        .bind(&ws.name)
        .bind(&now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO lists (id, workspace_id, name, description, lead_type, is_all, created_at, \
         updated_at) VALUES (?, ?, ?, 'Every lead of the workspace', 'mixed', 1, ?, ?)",
    )
    .bind(new_id())
    .bind(&ws.id)
    .bind(ALL_LIST_NAME)
    .bind(&now)
    .bind(&now)
    .execute(&mut *conn)
    .await?;
    if credits != 0 {
        add_credits(conn, &ws.id, credits, "free_plan", None).await?;
    }
    Ok(ws)
}

async fn add_credits(
    conn: &mut SqliteConnection,
    workspace: &str,
    amount: i64,
    reason: &str,
    run_id: Option<&str>,
) -> Result<i64> {
    let current: Option<i64> = sqlx::query_scalar("SELECT balance FROM workspaces WHERE id = ?")
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
    sqlx::query("UPDATE workspaces SET balance = ? WHERE id = ?")
        .bind(balance)
        .bind(workspace)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO credit_ledger (id, workspace_id, amount, reason, run_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
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

async fn insert_user(
    conn: &mut SqliteConnection,
    workspace: &str,
    email: &str,
    role: Role,
) -> Result<User> {
    let taken: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE email = ?")
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
    if taken.is_some() {
        return Err(StoreError::Conflict(format!(
            "a user with email {email} already exists"
        )));
    }
    let user = User {
        id: new_id(),
        email: email.to_string(),
        role,
        workspace_id: workspace.to_string(),
        created_at: now_timestamp(),
    };
    sqlx::query(
        "INSERT INTO users (id, workspace_id, email, role, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&user.id)
    .bind(&user.workspace_id)
    .bind(&user.email)
    .bind(user.role.as_str())
    .bind(&user.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(user)
}

async fn insert_key(conn: &mut SqliteConnection, user_id: &str, key: &ApiKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, user_id, prefix, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
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

/// Dedupe keys are per lead type: a person and a company never merge.
pub(crate) fn typed_keys(kind: LeadType, fields: &LeadFields) -> Vec<String> {
    fields
        .dedupe_keys(kind)
        .into_iter()
        .map(|k| format!("{}:{k}", kind.as_str()))
        .collect()
}

/// Write a lead's fields, attributes and search text.
async fn save_lead(
    conn: &mut SqliteConnection,
    id: &str,
    fields: &LeadFields,
    attributes: &Map<String, Value>,
) -> Result<String> {
    let now = now_timestamp();
    let q = sqlx::query(
        "UPDATE leads SET fields = ?, attributes = ?, s_name = ?, s_title = ?, s_company = ?, \
         s_domain = ?, s_industry = ?, s_location = ?, s_emails = ?, updated_at = ? WHERE id = ?",
    );
    bind_lead_data(q, fields, attributes)?
        .bind(&now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(now)
}

async fn insert_lead(
    conn: &mut SqliteConnection,
    workspace: &str,
    id: &str,
    kind: LeadType,
    fields: &LeadFields,
    attributes: &Map<String, Value>,
) -> Result<()> {
    let now = now_timestamp();
    let q = sqlx::query(
        "INSERT INTO leads (id, workspace_id, type, fields, attributes, s_name, s_title, \
         s_company, s_domain, s_industry, s_location, s_emails, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(workspace)
    .bind(kind.as_str());
    bind_lead_data(q, fields, attributes)?
        .bind(&now)
        .bind(&now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Bind a lead's stored data in column order: fields, attributes, then the seven search columns.
fn bind_lead_data<'q>(
    q: SqliteQuery<'q>,
    fields: &LeadFields,
    attributes: &Map<String, Value>,
) -> Result<SqliteQuery<'q>> {
    let s: SearchText = fields.search_text();
    Ok(q.bind(serde_json::to_string(fields)?)
        .bind(serde_json::to_string(attributes)?)
        .bind(s.name)
        .bind(s.title)
        .bind(s.company)
        .bind(s.domain)
        .bind(s.industry)
        .bind(s.location)
        .bind(s.emails))
}

/// Claim `keys` for `lead_id`; keys another lead already holds stay with it.
async fn claim_keys(
    conn: &mut SqliteConnection,
    workspace: &str,
    lead_id: &str,
    keys: &[String],
) -> Result<()> {
    for key in keys {
        sqlx::query(
            "INSERT INTO lead_keys (workspace_id, key, lead_id) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(workspace)
        .bind(key)
        .bind(lead_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Insert a lead, or merge it into the lead it duplicates. Returns (id, created).
async fn upsert_lead(
    conn: &mut SqliteConnection,
    workspace: &str,
    all_list: &str,
    lead: NewLead,
) -> Result<(String, bool)> {
    let NewLead {
        kind,
        fields,
        attributes,
        list_ids,
    } = lead;
    let keys = typed_keys(kind, &fields);
    let existing = if keys.is_empty() {
        None
    } else {
        let mut q =
            QueryBuilder::<Sqlite>::new("SELECT lead_id FROM lead_keys WHERE workspace_id = ");
        q.push_bind(workspace).push(" AND key IN (");
        let mut sep = q.separated(", ");
        for k in &keys {
            sep.push_bind(k.clone());
        }
        q.push(") ORDER BY lead_id LIMIT 1");
        q.build_query_scalar::<String>()
            .fetch_optional(&mut *conn)
            .await?
    };
    let (id, created) = match existing {
        Some(id) => {
            let mut current = load_lead(conn, workspace, &id).await?;
            current.fields.fill_from(fields);
            fill_attributes(&mut current.attributes, attributes);
            save_lead(conn, &id, &current.fields, &current.attributes).await?;
            let keys = typed_keys(kind, &current.fields);
            claim_keys(conn, workspace, &id, &keys).await?;
            (id, false)
        }
        None => {
            let id = new_id();
            insert_lead(conn, workspace, &id, kind, &fields, &attributes).await?;
            claim_keys(conn, workspace, &id, &keys).await?;
            insert_membership(conn, all_list, &id, kind).await?;
            (id, true)
        }
    };
    for (i, list_id) in list_ids.iter().enumerate() {
        let list = load_list(conn, workspace, list_id).await.map_err(|e| {
            not_found_as_invalid(e, &format!("listIds[{i}]"), "no list with this id")
        })?;
        if !list.lead_type.admits(kind) {
            return Err(Invalid::new(
                format!("listIds[{i}]"),
                format!(
                    "list {} holds {} leads; this lead is a {}",
                    list.id,
                    list.lead_type.as_str(),
                    kind.as_str()
                ),
            )
            .into());
        }
        insert_membership(conn, &list.id, &id, kind).await?;
    }
    Ok((id, created))
}

/// A missing object named in a request body is the body's fault: 400 naming the field.
pub(crate) fn not_found_as_invalid(e: StoreError, field: &str, message: &str) -> StoreError {
    match e {
        StoreError::NotFound(_) => Invalid::new(field, message).into(),
        other => other,
    }
}

async fn insert_membership(
    conn: &mut SqliteConnection,
    list_id: &str,
    lead_id: &str,
    kind: LeadType,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO memberships (id, list_id, lead_id, lead_type, created_at) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (list_id, lead_id) DO NOTHING",
    )
    .bind(new_id())
    .bind(list_id)
    .bind(lead_id)
    .bind(kind.as_str())
    .bind(now_timestamp())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn touch_list(conn: &mut SqliteConnection, list_id: &str) -> Result<()> {
    sqlx::query("UPDATE lists SET updated_at = ? WHERE id = ?")
        .bind(now_timestamp())
        .bind(list_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) fn page_limit(limit: u32) -> i64 {
    i64::from(limit.max(1)) + 1
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.write).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn bootstrap(&self, email: &str, key: &ApiKey) -> Result<Option<(Workspace, User)>> {
        let mut tx = self.write.begin().await?;
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
        let mut tx = self.write.begin().await?;
        let workspace_id = match user.workspace {
            UserWorkspace::New { name, credits } => {
                insert_workspace(&mut tx, &name, credits).await?.id
            }
            UserWorkspace::Existing(id) => {
                let found: Option<String> =
                    sqlx::query_scalar("SELECT id FROM workspaces WHERE id = ?")
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
             WHERE k.prefix = ? AND k.revoked_at IS NULL",
        )
        .bind(key.public_prefix())
        .fetch_all(&self.read)
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
             WHERE workspace_id = ? AND id = ?",
        )
        .bind(workspace)
        .bind(user_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or(StoreError::NotFound("user"))?;
        user_from(&row)
    }

    async fn workspace(&self, workspace: &str) -> Result<Workspace> {
        let row = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE id = ?")
            .bind(workspace)
            .fetch_optional(&self.read)
            .await?
            .ok_or(StoreError::NotFound("workspace"))?;
        Ok(Workspace {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        })
    }

    async fn add_api_key(&self, user_id: &str, calling_key: &str, key: &ApiKey) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api_keys WHERE user_id = ? AND revoked_at IS NULL AND id <> ?",
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
            "SELECT id, prefix, created_at FROM api_keys WHERE user_id = ? AND revoked_at IS NULL \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional(&self.read)
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
        sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now_timestamp())
            .bind(key_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn grant_credits(&self, workspace: &str, amount: i64, reason: &str) -> Result<i64> {
        let mut tx = self.write.begin().await?;
        let balance = add_credits(&mut tx, workspace, amount, reason, None).await?;
        tx.commit().await?;
        Ok(balance)
    }

    async fn balance(&self, workspace: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT balance FROM workspaces WHERE id = ?")
            .bind(workspace)
            .fetch_optional(&self.read)
            .await?
            .ok_or(StoreError::NotFound("workspace"))
    }

    async fn ledger(&self, workspace: &str, limit: u32) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(
            "SELECT id, amount, reason, run_id, created_at FROM credit_ledger \
             WHERE workspace_id = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(workspace)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
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
        let mut tx = self.write.begin().await?;
        let all = all_list_id(&mut tx, workspace).await?;
        let (id, created) = upsert_lead(&mut tx, workspace, &all, lead).await?;
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
        let mut tx = self.write.begin().await?;
        let all = all_list_id(&mut tx, workspace).await?;
        let list = match list_id {
            Some(id) => Some(
                load_list(&mut tx, workspace, id)
                    .await
                    .map_err(|e| not_found_as_invalid(e, "listId", "no list with this id"))?,
            ),
            None => None,
        };
        let mut imported = Imported {
            list: None,
            lead_ids: Vec::with_capacity(leads.len()),
            created: 0,
            reused: 0,
        };
        for (i, lead) in leads.into_iter().enumerate() {
            let row = format!("leads[{i}]");
            let kind = lead.kind;
            if let Some(list) = &list {
                if !list.lead_type.admits(kind) {
                    return Err(Invalid::new(
                        format!("{row}.type"),
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
            let (id, created) = upsert_lead(&mut tx, workspace, &all, lead)
                .await
                .map_err(|e| match e {
                    StoreError::Invalid(inv) => StoreError::Invalid(inv.within(&row)),
                    other => other,
                })?;
            if let Some(list) = &list {
                insert_membership(&mut tx, &list.id, &id, kind).await?;
            }
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
        let mut q = QueryBuilder::<Sqlite>::new(LEAD_SELECT);
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
                q.push(format!(" AND instr({column}, "))
                    .push_bind(v.to_lowercase())
                    .push(") > 0");
            }
        }
        if let Some(text) = &query.q {
            let text = text.to_lowercase();
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
                sep.push(format!("instr({column}, "))
                    .push_bind_unseparated(text.clone())
                    .push_unseparated(") > 0");
            }
            q.push(")");
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(page_limit(query.limit));
        let mut conn = self.read.acquire().await?;
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
        let mut tx = self.write.begin().await?;
        let mut lead = load_lead(&mut tx, workspace, id).await?;
        edit(lead.kind, &mut lead.fields, &mut lead.attributes)?;
        let keys = typed_keys(lead.kind, &lead.fields);
        for key in &keys {
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT lead_id FROM lead_keys WHERE workspace_id = ? AND key = ? AND lead_id <> ?",
            )
            .bind(workspace)
            .bind(key)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(other) = holder {
                let what = key.split(':').nth(1).unwrap_or("identity");
                return Err(StoreError::Conflict(format!(
                    "lead {other} already has this {what}; leads are deduplicated by it"
                )));
            }
        }
        sqlx::query("DELETE FROM lead_keys WHERE lead_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        claim_keys(&mut tx, workspace, id, &keys).await?;
        save_lead(&mut tx, id, &lead.fields, &lead.attributes).await?;
        let lead = load_lead(&mut tx, workspace, id).await?;
        tx.commit().await?;
        Ok(lead)
    }

    async fn delete_lead(&self, workspace: &str, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM leads WHERE workspace_id = ? AND id = ?")
            .bind(workspace)
            .bind(id)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("lead"));
        }
        Ok(())
    }

    async fn lists(&self, workspace: &str, id: Option<&str>) -> Result<Vec<List>> {
        let mut q = QueryBuilder::<Sqlite>::new(LIST_SELECT);
        q.push(" WHERE l.workspace_id = ")
            .push_bind(workspace.to_string());
        if let Some(id) = id {
            q.push(" AND l.id = ").push_bind(id.to_string());
        }
        q.push(" ORDER BY l.id DESC");
        let rows = q.build().fetch_all(&self.read).await?;
        rows.iter().map(list_from).collect()
    }

    async fn create_list(&self, workspace: &str, list: NewList) -> Result<List> {
        let mut tx = self.write.begin().await?;
        let id = new_id();
        let now = now_timestamp();
        sqlx::query(
            "INSERT INTO lists (id, workspace_id, name, description, lead_type, created_at, \
             updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(workspace)
        .bind(&list.name)
        .bind(&list.description)
        .bind(list.lead_type.as_str())
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        add_members_in(&mut tx, workspace, &id, list.lead_type, &list.lead_ids).await?;
        let created = load_list(&mut tx, workspace, &id).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn update_list(&self, workspace: &str, id: &str, patch: ListPatch) -> Result<List> {
        let mut tx = self.write.begin().await?;
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
            "UPDATE lists SET name = ?, description = ?, lead_type = ?, updated_at = ? \
             WHERE id = ?",
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
        let mut tx = self.write.begin().await?;
        load_list(&mut tx, workspace, id).await?;
        if is_all_list(&mut tx, id).await? {
            return Err(Invalid::new("id", "the all list cannot be deleted").into());
        }
        sqlx::query("DELETE FROM lists WHERE id = ?")
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
        let mut conn = self.read.acquire().await?;
        ensure_list(&mut conn, workspace, list_id).await?;
        let mut total =
            QueryBuilder::<Sqlite>::new("SELECT count(*) FROM memberships WHERE list_id = ");
        total.push_bind(list_id.to_string());
        if let Some(kind) = kind {
            total.push(" AND lead_type = ").push_bind(kind.as_str());
        }
        let total: i64 = total.build_query_scalar().fetch_one(&mut *conn).await?;

        let mut q = QueryBuilder::<Sqlite>::new(
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
        let mut conn = self.read.acquire().await?;
        ensure_list(&mut conn, workspace, list_id).await?;
        let keys = sqlx::query_scalar(
            "SELECT DISTINCT j.key FROM memberships m JOIN leads l ON l.id = m.lead_id, \
             json_each(l.attributes) j WHERE m.list_id = ? ORDER BY j.key",
        )
        .bind(list_id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(keys)
    }

    async fn add_members(
        &self,
        workspace: &str,
        list_id: &str,
        lead_ids: &[String],
    ) -> Result<List> {
        let mut tx = self.write.begin().await?;
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
        let mut tx = self.write.begin().await?;
        load_list(&mut tx, workspace, list_id).await?;
        if is_all_list(&mut tx, list_id).await? {
            return Err(Invalid::new(
                "leadIds",
                "leads cannot be removed from the all list (delete the lead instead)",
            )
            .into());
        }
        for lead_id in lead_ids {
            sqlx::query("DELETE FROM memberships WHERE list_id = ? AND lead_id = ?")
                .bind(list_id)
                .bind(lead_id)
                .execute(&mut *tx)
                .await?;
        }
        touch_list(&mut tx, list_id).await?;
        let list = load_list(&mut tx, workspace, list_id).await?;
        tx.commit().await?;
        Ok(list)
    }
    async fn cache_get(&self, key: &str, now_ms: i64) -> Result<Option<Value>> {
        let answer: Option<String> = sqlx::query_scalar(
            "SELECT answer FROM provider_cache WHERE key = ? AND expires_at > ?",
        )
        .bind(key)
        .bind(now_ms)
        .fetch_optional(&self.read)
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
            "INSERT INTO provider_cache (key, provider, answer, expires_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET provider = excluded.provider, \
             answer = excluded.answer, expires_at = excluded.expires_at",
        )
        .bind(key)
        .bind(provider)
        .bind(answer.to_string())
        .bind(expires_at_ms)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn cache_prune(&self, now_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM provider_cache WHERE expires_at <= ?")
            .bind(now_ms)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Add leads to a list: every lead must exist in the workspace and fit the list's lead type,
/// else nothing is added (the caller's transaction rolls back).
async fn add_members_in(
    conn: &mut SqliteConnection,
    workspace: &str,
    list_id: &str,
    lead_type: ListLeadType,
    lead_ids: &[String],
) -> Result<()> {
    for (i, lead_id) in lead_ids.iter().enumerate() {
        let kind: Option<String> =
            sqlx::query_scalar("SELECT type FROM leads WHERE workspace_id = ? AND id = ?")
                .bind(workspace)
                .bind(lead_id)
                .fetch_optional(&mut *conn)
                .await?;
        let field = format!("leadIds[{i}]");
        let kind = lead_type_from(
            &kind.ok_or_else(|| Invalid::new(field.clone(), "no lead with this id"))?,
        )?;
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
        insert_membership(conn, list_id, lead_id, kind).await?;
    }
    Ok(())
}
