//! Provider throttles on SQLite. An embedded database serves one process, whose throttles stay in
//! memory (the engine asks [`ThrottleStore::is_shared`]); these operations exist so that both
//! backends mean the same thing by them and pass the same tests. Every write goes through the one
//! writer connection, so a transaction there is serialized with every other taker; the clock is
//! the process's (there is no other process to disagree with).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use puffle_domain::new_id;

use super::SqliteStore;
use crate::throttle::{decide, millis, Observed, SlotLimits, Take, ThrottleStore, KEEP_STARTS_MS};
use crate::Result;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

#[async_trait]
impl ThrottleStore for SqliteStore {
    fn is_shared(&self) -> bool {
        false
    }

    async fn throttle_take(
        &self,
        provider: &str,
        limits: &SlotLimits,
        holder: &str,
        lease: Duration,
    ) -> Result<Take> {
        let mut tx = self.write.begin().await?;
        let now_ms = now_ms();
        let paused_until_ms: Option<Option<i64>> =
            sqlx::query_scalar("SELECT paused_until_ms FROM throttle_providers WHERE provider = ?")
                .bind(provider)
                .fetch_optional(&mut *tx)
                .await?;
        let mut seen = Observed {
            now_ms,
            paused_until_ms: paused_until_ms.flatten(),
            ..Observed::default()
        };
        if !limits.is_unlimited() {
            sqlx::query(
                "DELETE FROM throttle_slots WHERE provider = ? AND started_at_ms < ? \
                 AND (lease_expires_ms IS NULL OR lease_expires_ms < ?)",
            )
            .bind(provider)
            .bind(now_ms - KEEP_STARTS_MS)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            seen.in_flight = sqlx::query_scalar(
                "SELECT count(*) FROM throttle_slots WHERE provider = ? AND lease_expires_ms > ?",
            )
            .bind(provider)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await?;
            for (i, window) in limits.windows().into_iter().enumerate() {
                let Some((limit, length)) = window else {
                    continue;
                };
                // A slot in flight counts as now (see `ThrottleStore::throttle_release`).
                seen.blocking_starts[i] = sqlx::query_scalar(
                    "SELECT t FROM (SELECT CASE WHEN lease_expires_ms > ?1 THEN ?1 \
                     ELSE started_at_ms END AS t FROM throttle_slots WHERE provider = ?2) \
                     WHERE t > ?3 ORDER BY t DESC LIMIT 1 OFFSET ?4",
                )
                .bind(now_ms)
                .bind(provider)
                .bind(now_ms - length)
                .bind(limit - 1)
                .fetch_optional(&mut *tx)
                .await?;
            }
        }
        if let Some(wait) = decide(limits, &seen) {
            tx.commit().await?;
            return Ok(Take::Wait(wait));
        }
        if limits.is_unlimited() {
            tx.commit().await?;
            return Ok(Take::Taken(None));
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO throttle_slots (id, provider, holder, started_at_ms, lease_expires_ms) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(provider)
        .bind(holder)
        .bind(now_ms)
        .bind(now_ms.saturating_add(millis(lease)))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Take::Taken(Some(id)))
    }

    async fn throttle_renew(&self, slots: &[String], lease: Duration) -> Result<()> {
        let until = now_ms().saturating_add(millis(lease));
        let mut tx = self.write.begin().await?;
        for slot in slots {
            sqlx::query(
                "UPDATE throttle_slots SET lease_expires_ms = ? \
                 WHERE id = ? AND lease_expires_ms IS NOT NULL",
            )
            .bind(until)
            .bind(slot)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn throttle_release(&self, slot: &str) -> Result<()> {
        sqlx::query(
            "UPDATE throttle_slots SET lease_expires_ms = NULL, started_at_ms = max(started_at_ms, ?) \
             WHERE id = ? AND lease_expires_ms IS NOT NULL",
        )
        .bind(now_ms())
        .bind(slot)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn throttle_pause(&self, provider: &str, delay: Duration) -> Result<()> {
        sqlx::query(
            "INSERT INTO throttle_providers (provider, paused_until_ms) VALUES (?, ?) \
             ON CONFLICT (provider) DO UPDATE SET paused_until_ms = \
             max(coalesce(throttle_providers.paused_until_ms, 0), excluded.paused_until_ms)",
        )
        .bind(provider)
        .bind(now_ms().saturating_add(millis(delay)))
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
