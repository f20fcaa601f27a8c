//! Run webhooks on SQLite: secrets, the hook of a run, and the delivery outbox. Claims run on the
//! single writer connection, so `UPDATE … RETURNING` of a batch is atomic without row locks.

use async_trait::async_trait;
use puffle_domain::{new_id, now_timestamp};
use sqlx::sqlite::SqliteConnection;

use super::SqliteStore;
use crate::webhooks::*;
use crate::Result;

/// Attach `url` to the run `run_id` (inside the transaction that creates the run). A run that is
/// already terminal gets its delivery from the migration's trigger at once.
pub(super) async fn attach(conn: &mut SqliteConnection, run_id: &str, url: &str) -> Result<()> {
    sqlx::query("INSERT INTO run_webhooks (run_id, url) VALUES (?, ?)")
        .bind(run_id)
        .bind(url)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn set_webhook_secret(&self, user_id: &str, secret: &str) -> Result<String> {
        let now = now_timestamp();
        sqlx::query(
            "INSERT INTO webhook_secrets (user_id, secret, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
             created_at = excluded.created_at",
        )
        .bind(user_id)
        .bind(secret)
        .bind(&now)
        .execute(&self.write)
        .await?;
        Ok(now)
    }

    async fn webhook_secret(&self, user_id: &str) -> Result<Option<String>> {
        // From the writer: a secret rotated a moment ago must sign the next attempt.
        Ok(
            sqlx::query_scalar("SELECT secret FROM webhook_secrets WHERE user_id = ?")
                .bind(user_id)
                .fetch_optional(&self.write)
                .await?,
        )
    }

    async fn deliveries(&self, run_id: &str) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE run_id = ? \
             ORDER BY created_at, id"
        ))
        .bind(run_id)
        .fetch_all(&self.read)
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
            "UPDATE webhook_deliveries SET lease_owner = ?, lease_token = ?, \
             lease_expires_at = ? WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= ? \
             AND (lease_expires_at IS NULL OR lease_expires_at <= ?) \
             ORDER BY next_attempt_at LIMIT ?) RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(worker)
        .bind(&token)
        .bind(lease_until_ms)
        .bind(now_ms)
        .bind(now_ms)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.write)
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
            "UPDATE webhook_deliveries SET status = ?, payload = COALESCE(payload, ?), \
             attempts = attempts + 1, last_status_code = ?, last_error = ?, \
             last_attempt_at = ?, next_attempt_at = COALESCE(?, next_attempt_at), \
             delivered_at = ?, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
             WHERE id = ? AND lease_token = ?",
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
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
