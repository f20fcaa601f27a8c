//! The PostgreSQL backend: for a fleet of API and worker processes sharing one database. Every
//! operation is a transaction on a pooled connection; workers claim with `FOR UPDATE SKIP
//! LOCKED`, so any number of them can share the queue without blocking each other.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::Result;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

mod runs;

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
            // A connection that broke (a database restart) is found and replaced before use.
            .test_before_acquire(true)
            .connect_with(options.clone())
            .await?;
        Ok(PgStore { pool, options })
    }
}

/// Connections per process: `PUFFLE_DATABASE_POOL_SIZE`, default 10.
fn pool_size() -> u32 {
    std::env::var("PUFFLE_DATABASE_POOL_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(10)
}
