//! Throwaway PostgreSQL databases for tests and benchmarks: each one is created empty and
//! dropped (with any connection still open to it) when its guard goes.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::Result;

/// The server the test suite uses: `PUFFLE_TEST_POSTGRES_URL`, by default the local one.
pub fn server_url() -> String {
    std::env::var("PUFFLE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own on the server at `server_url`; dropped on drop.
pub struct ScratchDatabase {
    pub url: String,
    name: String,
    admin: PgConnectOptions,
}

impl ScratchDatabase {
    pub async fn create(server_url: &str) -> Result<ScratchDatabase> {
        let admin: PgConnectOptions = server_url.parse()?;
        let name = format!("puffle_test_{}", puffle_domain::new_id().replace('-', ""));
        let mut conn = admin.connect().await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let url = admin.clone().database(&name).to_url_lossy().to_string();
        Ok(ScratchDatabase { url, name, admin })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // Drop runs outside any async context we may block, so use a thread of its own.
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut conn = admin.connect().await.ok()?;
                sqlx::query(&sql).execute(&mut conn).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
