//! The database under the server, opened directly: the baselines are the SQL a feature cannot do
//! without, timed on the same database and the same table shapes as the server's.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, QueryBuilder, Row, Sqlite};

/// The columns a results page reads (the store's item columns).
const ITEM_COLUMNS: &str = "id, run_id, lead_id, list_id, membership_id, status, result, \
    skipped_reason, error, attempts, input_snapshot, lead_snapshot, raw_result, provider, \
    provider_submission_id, started_at, completed_at, created_at, updated_at";
/// Rows per multi-row INSERT, as the store's run creation uses.
const INSERT_CHUNK: usize = 1000;

pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    pub async fn open(url: &str) -> Result<Db> {
        if url.starts_with("postgres") {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect(url)
                .await
                .context("connecting to PostgreSQL")?;
            return Ok(Db::Postgres(pool));
        }
        // The server's settings (WAL, synchronous=NORMAL), so the raw limit is the same database's.
        let options = SqliteConnectOptions::from_str(url)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .with_context(|| format!("opening {url}"))?;
        Ok(Db::Sqlite(pool))
    }

    /// The id of the run's item at 0-based position `offset` in id order.
    pub async fn item_id_at(&self, run_id: &str, offset: i64) -> Result<String> {
        let id =
            match self {
                Db::Sqlite(p) => sqlx::query_scalar(
                    "SELECT id FROM enrichment_items WHERE run_id = ? ORDER BY id LIMIT 1 OFFSET ?",
                )
                .bind(run_id)
                .bind(offset)
                .fetch_optional(p)
                .await?,
                Db::Postgres(p) => {
                    sqlx::query_scalar(
                        "SELECT id::text FROM enrichment_items WHERE run_id::text = $1 \
                 ORDER BY id LIMIT 1 OFFSET $2",
                    )
                    .bind(run_id)
                    .bind(offset)
                    .fetch_optional(p)
                    .await?
                }
            };
        id.with_context(|| format!("run {run_id} has no item at position {offset}"))
    }

    /// One page the way the API reads it: keyset, the rows after `after`.
    pub async fn time_keyset_page(
        &self,
        run_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Duration> {
        let start = Instant::now();
        let n = match self {
            Db::Sqlite(p) => sqlx::query(&format!(
                "SELECT {ITEM_COLUMNS} FROM enrichment_items WHERE run_id = ? AND id > ? \
                 ORDER BY id LIMIT ?"
            ))
            .bind(run_id)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?
            .len(),
            Db::Postgres(p) => sqlx::query(&format!(
                "SELECT {ITEM_COLUMNS} FROM enrichment_items WHERE run_id::text = $1 \
                 AND id::text > $2 ORDER BY id LIMIT $3"
            ))
            .bind(run_id)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?
            .len(),
        };
        let took = start.elapsed();
        if n == 0 {
            bail!("the keyset page after {after} is empty");
        }
        Ok(took)
    }

    /// The same page by OFFSET: what keyset pagination exists to avoid.
    pub async fn time_offset_page(
        &self,
        run_id: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Duration> {
        let start = Instant::now();
        let n = match self {
            Db::Sqlite(p) => sqlx::query(&format!(
                "SELECT {ITEM_COLUMNS} FROM enrichment_items WHERE run_id = ? \
                 ORDER BY id LIMIT ? OFFSET ?"
            ))
            .bind(run_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(p)
            .await?
            .len(),
            Db::Postgres(p) => sqlx::query(&format!(
                "SELECT {ITEM_COLUMNS} FROM enrichment_items WHERE run_id::text = $1 \
                 ORDER BY id LIMIT $2 OFFSET $3"
            ))
            .bind(run_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(p)
            .await?
            .len(),
        };
        let took = start.elapsed();
        if n == 0 {
            bail!("the OFFSET {offset} page is empty");
        }
        Ok(took)
    }

    /// The plans of both page queries (SQLite's EXPLAIN QUERY PLAN), for the report.
    pub async fn page_plans(&self) -> Result<Vec<String>> {
        let Db::Sqlite(p) = self else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for sql in [
            "SELECT * FROM enrichment_items WHERE run_id = 'r' AND id > 'x' ORDER BY id LIMIT 101",
            "SELECT * FROM enrichment_items WHERE run_id = 'r' ORDER BY id LIMIT 101 OFFSET 999900",
        ] {
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(p)
                .await?;
            let plan: Vec<String> = rows
                .iter()
                .filter_map(|r| r.try_get::<String, _>("detail").ok())
                .collect();
            out.push(format!("{sql} => {}", plan.join("; ")));
        }
        Ok(out)
    }

    /// Create `name` with the shape of enrichment_items (its columns and indexes), empty.
    pub async fn clone_items_table(&self, name: &str) -> Result<()> {
        match self {
            Db::Sqlite(p) => {
                sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
                    .execute(p)
                    .await?;
                let ddl: Vec<String> = sqlx::query_scalar(
                    "SELECT sql FROM sqlite_master WHERE tbl_name = 'enrichment_items' \
                     AND sql IS NOT NULL ORDER BY type DESC",
                )
                .fetch_all(p)
                .await?;
                if ddl.is_empty() {
                    bail!("no enrichment_items table in the database");
                }
                // `ORDER BY type DESC`: the table before its indexes.
                for statement in ddl {
                    sqlx::query(&statement.replace("enrichment_items", name))
                        .execute(p)
                        .await
                        .with_context(|| format!("cloning: {statement}"))?;
                }
            }
            Db::Postgres(p) => {
                sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
                    .execute(p)
                    .await?;
                sqlx::query(&format!(
                    "CREATE TABLE {name} (LIKE enrichment_items INCLUDING ALL)"
                ))
                .execute(p)
                .await?;
            }
        }
        Ok(())
    }

    pub async fn drop_table(&self, name: &str) -> Result<()> {
        let sql = format!("DROP TABLE IF EXISTS {name}");
        match self {
            Db::Sqlite(p) => sqlx::query(&sql).execute(p).await.map(|_| ())?,
            Db::Postgres(p) => sqlx::query(&sql).execute(p).await.map(|_| ())?,
        }
        Ok(())
    }

    /// The least a run creation must write: read the list's members and insert one pending item
    /// per member (multi-row INSERTs in one transaction) into a same-shaped table. Returns rows
    /// and time.
    pub async fn time_create_items(
        &self,
        table: &str,
        run_id: &str,
        list_id: &str,
    ) -> Result<(usize, Duration)> {
        let now = puffle_domain::now_timestamp();
        let start = Instant::now();
        let n = match self {
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                let members: Vec<(String, String)> =
                    sqlx::query_as("SELECT id, lead_id FROM memberships WHERE list_id = ?")
                        .bind(list_id)
                        .fetch_all(&mut *tx)
                        .await?;
                for chunk in members.chunks(INSERT_CHUNK) {
                    let mut q = QueryBuilder::<Sqlite>::new(format!(
                        "INSERT INTO {table} (id, run_id, lead_id, list_id, membership_id, \
                         status, created_at, updated_at) "
                    ));
                    q.push_values(chunk, |mut b, (membership, lead)| {
                        b.push_bind(puffle_domain::new_id())
                            .push_bind(run_id)
                            .push_bind(lead)
                            .push_bind(list_id)
                            .push_bind(membership)
                            .push_bind("pending")
                            .push_bind(&now)
                            .push_bind(&now);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                members.len()
            }
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                let members: Vec<(String, String)> = sqlx::query_as(
                    "SELECT id::text, lead_id::text FROM memberships WHERE list_id::text = $1",
                )
                .bind(list_id)
                .fetch_all(&mut *tx)
                .await?;
                for chunk in members.chunks(INSERT_CHUNK) {
                    // Unverified until the PostgreSQL schema lands: assumes text ids and
                    // timestamps, as the SQLite schema has.
                    let mut q = QueryBuilder::<Postgres>::new(format!(
                        "INSERT INTO {table} (id, run_id, lead_id, list_id, membership_id, \
                         status, created_at, updated_at) "
                    ));
                    q.push_values(chunk, |mut b, (membership, lead)| {
                        b.push_bind(puffle_domain::new_id())
                            .push_bind(run_id)
                            .push_bind(lead)
                            .push_bind(list_id)
                            .push_bind(membership)
                            .push_bind("pending")
                            .push_bind(&now)
                            .push_bind(&now);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                members.len()
            }
        };
        Ok((n, start.elapsed()))
    }

    /// Fill `table` with a copy of a run's items, all `pending` again: the raw loop's input.
    pub async fn fill_pending_copy(&self, table: &str, run_id: &str) -> Result<i64> {
        let reset = format!(
            "UPDATE {table} SET status = 'pending', result = NULL, attempts = 0, \
             lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, started_at = NULL, \
             completed_at = NULL, due_at = 0, lead_snapshot = NULL, input_snapshot = NULL, \
             raw_result = NULL, provider = NULL"
        );
        let n = match self {
            Db::Sqlite(p) => {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(p)
                    .await?;
                let n = sqlx::query(&format!(
                    "INSERT INTO {table} SELECT * FROM enrichment_items WHERE run_id = ?"
                ))
                .bind(run_id)
                .execute(p)
                .await?
                .rows_affected();
                sqlx::query(&reset).execute(p).await?;
                n
            }
            Db::Postgres(p) => {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(p)
                    .await?;
                let n = sqlx::query(&format!(
                    "INSERT INTO {table} SELECT * FROM enrichment_items WHERE run_id::text = $1"
                ))
                .bind(run_id)
                .execute(p)
                .await?
                .rows_affected();
                sqlx::query(&reset).execute(p).await?;
                n
            }
        };
        Ok(n as i64)
    }

    /// The raw write limit: claim `batch` pending items (one UPDATE … RETURNING) and finish them
    /// (one UPDATE from a VALUES list carrying each item's result), each in its own transaction as
    /// the worker does, until none is left. Returns items finished and the time taken.
    pub async fn raw_claim_finish_loop(
        &self,
        table: &str,
        run_id: &str,
        batch: usize,
    ) -> Result<(u64, Duration)> {
        let start = Instant::now();
        let mut done = 0u64;
        loop {
            let now = puffle_domain::now_timestamp();
            let ids: Vec<String> = match self {
                Db::Sqlite(p) => {
                    let mut tx = p.begin().await?;
                    let ids = sqlx::query_scalar(&format!(
                        "UPDATE {table} SET status = 'running', lease_owner = 'bench', \
                         lease_token = 't', lease_expires_at = 9e15, started_at = ?, \
                         updated_at = ? WHERE id IN (SELECT id FROM {table} WHERE run_id = ? \
                         AND status = 'pending' AND due_at <= 9e15 ORDER BY id LIMIT ?) \
                         RETURNING id"
                    ))
                    .bind(&now)
                    .bind(&now)
                    .bind(run_id)
                    .bind(batch as i64)
                    .fetch_all(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    ids
                }
                Db::Postgres(p) => {
                    let mut tx = p.begin().await?;
                    let ids = sqlx::query_scalar(&format!(
                        "UPDATE {table} SET status = 'running', lease_owner = 'bench', \
                         lease_token = 't', started_at = now(), updated_at = now() \
                         WHERE id IN (SELECT id FROM {table} WHERE run_id = $1 \
                         AND status = 'pending' ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                         RETURNING id"
                    ))
                    .bind(run_id)
                    .bind(batch as i64)
                    .fetch_all(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    ids
                }
            };
            if ids.is_empty() {
                break;
            }
            let results: Vec<(String, String)> = ids
                .into_iter()
                .map(|id| {
                    // A result of the size company_domain writes, different per item.
                    let result = format!("{{\"domain\":\"{id}.example\"}}");
                    (id, result)
                })
                .collect();
            let finished =
                match self {
                    Db::Sqlite(p) => {
                        let mut tx = p.begin().await?;
                        let mut q = QueryBuilder::<Sqlite>::new(format!(
                            "UPDATE {table} SET status = 'completed', result = v.column2, \
                         attempts = attempts + 1, completed_at = "
                        ));
                        q.push_bind(&now).push(", updated_at = ").push_bind(&now).push(
                        ", lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL FROM (",
                    );
                        q.push_values(&results, |mut b, (id, result)| {
                            b.push_bind(id).push_bind(result);
                        });
                        q.push(format!(
                            ") AS v WHERE {table}.id = v.column1 AND {table}.status = 'running' \
                         AND {table}.lease_owner = 'bench'"
                        ));
                        let n = q.build().execute(&mut *tx).await?.rows_affected();
                        tx.commit().await?;
                        n
                    }
                    Db::Postgres(p) => {
                        let mut tx = p.begin().await?;
                        let (ids, values): (Vec<String>, Vec<String>) = results.into_iter().unzip();
                        // Cast the text results to the column's own type, whatever the migration chose.
                        // The lease guard comes from the fenced row source, as in the worker's own
                        // finish (see puffle-store), so the items are reached by primary key.
                        let n = sqlx::query(&format!(
                            "UPDATE {table} AS t SET status = 'completed', \
                         result = CAST(v.result AS {ty}), attempts = t.attempts + 1, \
                         completed_at = now(), updated_at = now(), lease_owner = NULL, \
                         lease_token = NULL, lease_expires_at = NULL \
                         FROM (SELECT u.*, 'running'::text AS held_status, \
                               'bench'::text AS held_by \
                               FROM unnest($1::text[], $2::text[]) AS u(id, result) OFFSET 0) v \
                         WHERE t.id = v.id AND t.status = v.held_status \
                         AND t.lease_owner = v.held_by",
                            ty = self.pg_column_type("result").await?,
                        ))
                        .bind(&ids)
                        .bind(&values)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        tx.commit().await?;
                        n
                    }
                };
            done += finished;
        }
        Ok((done, start.elapsed()))
    }

    async fn pg_column_type(&self, column: &str) -> Result<String> {
        let Db::Postgres(p) = self else {
            bail!("not a PostgreSQL database");
        };
        let ty: Option<String> = sqlx::query_scalar(
            "SELECT data_type FROM information_schema.columns \
             WHERE table_name = 'enrichment_items' AND column_name = $1",
        )
        .bind(column)
        .fetch_optional(p)
        .await?;
        ty.with_context(|| format!("enrichment_items.{column} not found"))
    }
}
