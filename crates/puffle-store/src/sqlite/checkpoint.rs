//! WAL checkpoints mostly off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, on the one
//! writer connection: every claim and finish queued behind that commit waits while tens of MiB
//! of pages are copied and the database file is synced (measured: 110–150 ms stalls every ~2 s
//! under `engine_latency`'s load, the slots idle meanwhile). A passive checkpoint on a connection
//! of its own copies those pages while the writer goes on appending.
//!
//! It cannot replace the writer's checkpoint: beside a busy writer a passive checkpoint never
//! reaches the WAL's end, and only a checkpoint that did lets the WAL start over. Alone (the
//! writer's threshold raised to 256 MiB), it was measured slower: quick `engine_instant`
//! 15.5k–16.7k items/s against 18.8k. The writer keeps its automatic checkpoint, which now
//! finds little left to copy, and restarts the WAL as before.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::SqlitePool;
use tokio::task::JoinHandle;

/// How often the WAL is checkpointed: often enough that one checkpoint copies a few MiB under
/// load, rarely enough that an idle server does next to nothing.
const EVERY: Duration = Duration::from_millis(500);

/// The writer's automatic checkpoint: every 16,384 pages (64 MiB) instead of SQLite's 1,000, so
/// that item and lead pages rewritten between checkpoints are copied once.
pub const WRITER_CHECKPOINT_PAGES: &str = "16384";

/// The name of the checkpointing connection's thread (a background thread: see `priority`).
const THREAD: &str = "puffle-wal-ckpt";

/// Checkpoints the WAL of one database until dropped.
pub struct Checkpointer {
    task: JoinHandle<()>,
}

impl Checkpointer {
    pub async fn start(options: SqliteConnectOptions) -> sqlx::Result<Checkpointer> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .after_connect(|_, _| {
                Box::pin(async {
                    crate::priority::lower_threads_named(THREAD);
                    Ok(())
                })
            })
            .connect_with(options.thread_name(|_| THREAD.to_string()))
            .await?;
        Ok(Checkpointer {
            task: tokio::spawn(checkpoint_every(pool, EVERY)),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn checkpoint_every(pool: SqlitePool, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // A passive checkpoint never waits for readers or the writer; what it cannot copy now
        // it copies next time.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "checkpointing the SQLite WAL failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::{Duration, Instant};

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    use crate::sqlite::SqliteStore;

    /// What is committed reaches the database file itself within a few checkpoint periods, long
    /// before the writer's own checkpoint (16,384 pages) would copy it: the file alone, copied
    /// aside without its WAL, holds the row. (With the checkpointer's period set to an hour,
    /// this fails.)
    #[tokio::test]
    async fn commits_reach_the_database_file_without_the_writers_checkpoint() {
        let dir = std::env::temp_dir().join(format!("puffle-wal-{}", puffle_domain::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("puffle.db");
        let store = SqliteStore::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE probe (x TEXT)")
            .execute(&store.write)
            .await
            .unwrap();
        sqlx::query("INSERT INTO probe VALUES ('committed')")
            .execute(&store.write)
            .await
            .unwrap();

        let copy = dir.join("copy.db");
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            std::fs::copy(&db, &copy).unwrap();
            // A copy taken mid-checkpoint may not open yet: try again.
            let opened = SqliteConnectOptions::from_str(&format!("sqlite://{}", copy.display()))
                .unwrap()
                .connect()
                .await;
            let seen: Option<String> = match opened {
                Ok(mut conn) => {
                    let row = sqlx::query_scalar("SELECT x FROM probe")
                        .fetch_optional(&mut conn)
                        .await
                        .ok()
                        .flatten();
                    let _ = conn.close().await;
                    row
                }
                Err(_) => None,
            };
            if seen.is_some() || Instant::now() > deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.as_deref(), Some("committed"));
    }
}
