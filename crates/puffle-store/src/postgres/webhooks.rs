//! Run webhooks on PostgreSQL: secrets, the hook of a run, and the delivery outbox. A claim
//! locks the due rows it takes with `FOR UPDATE SKIP LOCKED`, so workers of a fleet never wait
//! for, nor take, each other's deliveries.

use async_trait::async_trait;
use puffle_domain::{new_id, now_timestamp};
use sqlx::postgres::PgConnection;

use super::PgStore;
use crate::webhooks::*;
use crate::Result;

/// Attach `url` to the run `run_id` (inside the transaction that creates the run). A run that is
/// already terminal gets its delivery from the migration's trigger at once.
pub(super) async fn attach(conn: &mut PgConnection, run_id: &str, url: &str) -> Result<()> {
    sqlx::query("INSERT INTO run_webhooks (run_id, url) VALUES ($1, $2)")
        .bind(run_id)
        .bind(url)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn set_webhook_secret(&self, user_id: &str, secret: &str) -> Result<String> {
        let now = now_timestamp();
        sqlx::query(
            "INSERT INTO webhook_secrets (user_id, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
             created_at = excluded.created_at",
        )
        .bind(user_id)
        .bind(secret)
        .bind(&now)
        .execute(&self.pool)
        .await?;
        Ok(now)
    }

    async fn webhook_secret(&self, user_id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT secret FROM webhook_secrets WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn deliveries(&self, run_id: &str) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE run_id = $1 \
             ORDER BY created_at, id"
        ))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from).collect()
    }

    async fn claim_deliveries(
        &self,
        worker: &str,
        max: usize,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<ClaimedDelivery>> {
        let token = new_id();
        let rows = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_token = $2, \
             lease_expires_at = $3 WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $4 \
             AND (lease_expires_at IS NULL OR lease_expires_at <= $4) \
             ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED) \
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(worker)
        .bind(&token)
        .bind(lease_until_ms)
        .bind(now_ms)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedDelivery {
                    delivery: delivery_from(row)?,
                    lease_token: token.clone(),
                })
            })
            .collect()
    }

    async fn record_delivery_attempt(&self, attempt: DeliveryAttempt) -> Result<bool> {
        let set = AttemptColumns::of(&attempt);
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, payload = COALESCE(payload, $2), \
             attempts = attempts + 1, last_status_code = $3, last_error = $4, \
             last_attempt_at = $5, next_attempt_at = COALESCE($6, next_attempt_at), \
             delivered_at = $7, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
             WHERE id = $8 AND lease_token = $9",
        )
        .bind(set.status)
        .bind(&attempt.payload)
        .bind(attempt.status_code)
        .bind(&attempt.error)
        .bind(&attempt.at)
        .bind(set.next_attempt_ms)
        .bind(&set.delivered_at)
        .bind(&attempt.delivery_id)
        .bind(&attempt.lease_token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
