//! Provider throttles on PostgreSQL, shared by every worker process of the fleet.
//!
//! Takers of one provider are serialized by locking its `throttle_providers` row for the
//! transaction (an upsert, so the first taker creates it). With the row held, the database's
//! clock is read (`clock_timestamp()`, the time now, not the transaction's start: a taker that
//! queued behind others must not record a start earlier than theirs) and the recent starts and
//! slots in flight are counted. Cost: one transaction of four statements per slot taken (committed
//! without waiting for the log flush), one statement per release.

use std::time::Duration;

use async_trait::async_trait;
use puffle_domain::new_id;

use super::PgStore;
use crate::throttle::{decide, millis, Observed, SlotLimits, Take, ThrottleStore, KEEP_STARTS_MS};
use crate::Result;

/// The database's clock now, in unix milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

#[async_trait]
impl ThrottleStore for PgStore {
    fn is_shared(&self) -> bool {
        true
    }

    async fn throttle_take(
        &self,
        provider: &str,
        limits: &SlotLimits,
        holder: &str,
        lease: Duration,
    ) -> Result<Take> {
        if limits.is_unlimited() {
            // Nothing to count, nothing to serialize: only a pause holds the call back.
            let row: Option<(Option<i64>, i64)> = sqlx::query_as(&format!(
                "SELECT paused_until_ms, {NOW_MS} FROM throttle_providers WHERE provider = $1"
            ))
            .bind(provider)
            .fetch_optional(&self.pool)
            .await?;
            let seen = row.map_or_else(Observed::default, |(paused, now)| Observed {
                now_ms: now,
                paused_until_ms: paused,
                ..Observed::default()
            });
            return Ok(decide(limits, &seen).map_or(Take::Taken(None), Take::Wait));
        }
        let mut tx = self.pool.begin().await?;
        // No wait for the write-ahead log's flush at commit: the slot is visible to every other
        // taker at commit all the same, and the call starts a flush sooner (a loaded disk's
        // fsync took 100 ms and more, eating the window margin). A database crash may forget the
        // last few slots, as a restart forgets nothing else that matters here.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let (paused_until_ms, now_ms): (Option<i64>, i64) = sqlx::query_as(&format!(
            "INSERT INTO throttle_providers (provider) VALUES ($1) \
             ON CONFLICT (provider) DO UPDATE SET paused_until_ms = throttle_providers.paused_until_ms \
             RETURNING paused_until_ms, {NOW_MS}"
        ))
        .bind(provider)
        .fetch_one(&mut *tx)
        .await?;
        // An absent window looks back 0 ms: no start is newer than now.
        let [second, minute] = limits.windows().map(|w| w.unwrap_or((1, 0)));
        // A slot in flight counts as now, a released one from when its call ended (see
        // `ThrottleStore::throttle_release`). Old slots are pruned in the same statement; its
        // counts see the rows as they were,
        // which is the same answer (a pruned row is neither recent nor in flight).
        let (in_flight, second_start, minute_start): (i64, Option<i64>, Option<i64>) =
            sqlx::query_as(
                "WITH pruned AS ( \
                   DELETE FROM throttle_slots WHERE provider = $1 AND started_at_ms < $2 - $3 \
                   AND (lease_expires_ms IS NULL OR lease_expires_ms < $2)), \
                 counted AS ( \
                   SELECT CASE WHEN lease_expires_ms > $2 THEN $2 ELSE started_at_ms END AS t \
                   FROM throttle_slots WHERE provider = $1) \
                 SELECT \
                   (SELECT count(*) FROM throttle_slots \
                    WHERE provider = $1 AND lease_expires_ms > $2), \
                   (SELECT t FROM counted WHERE t > $2 - $5 ORDER BY t DESC OFFSET $4 - 1 LIMIT 1), \
                   (SELECT t FROM counted WHERE t > $2 - $7 ORDER BY t DESC OFFSET $6 - 1 LIMIT 1)",
            )
            .bind(provider)
            .bind(now_ms)
            .bind(KEEP_STARTS_MS)
            .bind(second.0)
            .bind(second.1)
            .bind(minute.0)
            .bind(minute.1)
            .fetch_one(&mut *tx)
            .await?;
        let seen = Observed {
            now_ms,
            paused_until_ms,
            in_flight,
            blocking_starts: [second_start, minute_start],
        };
        if let Some(wait) = decide(limits, &seen) {
            // Commit rather than roll back: keep the pruning.
            tx.commit().await?;
            return Ok(Take::Wait(wait));
        }
        // The start is read from the clock again, as late as it can be: the closer it is to the
        // request leaving, the less of the window margin the round trips use up. A later start
        // than `now_ms` only makes the windows counted above stricter, and no other taker can
        // start in between (the provider's row is held).
        let id = new_id();
        sqlx::query(&format!(
            "INSERT INTO throttle_slots (id, provider, holder, started_at_ms, lease_expires_ms) \
             SELECT $1, $2, $3, t.now, t.now + $4 FROM (SELECT {NOW_MS} AS now) t"
        ))
        .bind(&id)
        .bind(provider)
        .bind(holder)
        .bind(millis(lease))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Take::Taken(Some(id)))
    }

    async fn throttle_renew(&self, slots: &[String], lease: Duration) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "UPDATE throttle_slots SET lease_expires_ms = {NOW_MS} + $2 \
             WHERE id = ANY($1) AND lease_expires_ms IS NOT NULL"
        ))
        .bind(slots)
        .bind(millis(lease))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn throttle_release(&self, slot: &str) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE throttle_slots SET lease_expires_ms = NULL, \
             started_at_ms = GREATEST(started_at_ms, {NOW_MS}) \
             WHERE id = $1 AND lease_expires_ms IS NOT NULL"
        ))
        .bind(slot)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn throttle_pause(&self, provider: &str, delay: Duration) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO throttle_providers (provider, paused_until_ms) VALUES ($1, {NOW_MS} + $2) \
             ON CONFLICT (provider) DO UPDATE SET paused_until_ms = \
             GREATEST(throttle_providers.paused_until_ms, EXCLUDED.paused_until_ms)"
        ))
        .bind(provider)
        .bind(millis(delay))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
