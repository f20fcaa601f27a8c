//! Run webhooks [ours]: when a run created with a `webhookUrl` ends, its owner's receiver gets
//! `POST {id, type, createdAt, data: {run}}`, signed with the owner's secret.
//!
//! The delivery row is written by the store in the transaction that ends the run (an outbox);
//! this module's loop, part of every worker pool, claims due deliveries under a lease, sends
//! them on a [`GuardedClient`] (the same destination guard as `custom_http`), and records every
//! attempt. A non-2xx answer or a transport failure is retried with an exponential backoff
//! (`webhook_retry_first`, doubling, at most `webhook_retry_max`) until `webhook_retry_for` has
//! passed since the delivery fell due; a refused destination fails at once, unsent.
//!
//! The body is rendered at the first attempt and stored, so every retry sends the same bytes
//! with the same `Puffle-Event-Id`; only `Puffle-Signature`'s timestamp changes. Each attempt
//! signs with the owner's secret of that moment, so a rotation applies to pending retries too.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use puffle_store::{AttemptOutcome, ClaimedDelivery, Delivery, DeliveryAttempt, Store, StoreError};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::{ms, now_ms};
use crate::providers::http::{GuardedClient, HttpPolicy, PostFailure};
use crate::run_view::run_json;
use crate::EngineConfig;

/// How long one attempt may wait for an answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `webhookUrl` accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Deliveries claimed (and sent concurrently) at once by one process.
const CLAIM_BATCH: usize = 16;
/// A claimed delivery stays leased this long: far longer than an attempt may take.
const LEASE: Duration = Duration::from_secs(60);
/// Prefix of a signing secret, so a leaked one is recognisable.
const SECRET_PREFIX: &str = "whsec_";
pub const EVENT_ID_HEADER: &str = "puffle-event-id";
pub const SIGNATURE_HEADER: &str = "puffle-signature";

/// A new signing secret from the operating system's random generator.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", to_hex(&bytes))
}

/// Check a run's `webhookUrl`: an absolute http(s) URL with a host, no credentials (the URL is
/// shown in delivery records and logs), at most [`MAX_URL_LEN`] bytes. Where it may point is
/// checked at delivery, by the same guard as `custom_http`.
pub fn validate_url(text: &str) -> Result<Url, String> {
    if text.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(text).map_err(|e| format!("is not an absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials (user:password@)".into());
    }
    Ok(url)
}

/// HMAC-SHA256 keyed with `secret` over `"<timestamp>.<body>"`.
fn signing_mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Puffle-Signature` of `body` sent at `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with the secret>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = signing_mac(secret, timestamp, body);
    format!("t={timestamp},v1={}", to_hex(&mac.finalize().into_bytes()))
}

/// Whether a `Puffle-Signature` header (`t=…,v1=…`, as [`signature`] makes) signs `body` with
/// `secret` at a time at most `tolerance_secs` from `now` (unix seconds). Several `v1` values
/// may be given (a sender rotating its secret signs with both); the comparison is constant-time.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1.push(value),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now.abs_diff(t) > tolerance_secs.unsigned_abs() {
        return false;
    }
    v1.iter().any(|hex_sig| {
        from_hex(hex_sig)
            .is_some_and(|expected| signing_mac(secret, t, body).verify_slice(&expected).is_ok())
    })
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The wait before attempt `attempts + 1`, after `attempts` (≥ 1) failed ones.
pub fn backoff(first: Duration, max: Duration, attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(30);
    first.saturating_mul(1u32 << doublings).min(max.max(first))
}

/// The delivery loop of one worker pool: runs until `shutdown` turns true, then lets the
/// attempts in flight (at most [`ATTEMPT_TIMEOUT`]) finish.
pub(crate) async fn deliver(
    store: Arc<dyn Store>,
    config: EngineConfig,
    worker: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match GuardedClient::new(HttpPolicy::from_engine(&config)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "run webhooks are not delivered by this process");
            return;
        }
    };
    // A new delivery waits at most this long for the loop to notice it.
    let poll = config
        .webhook_retry_first
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let sender = Arc::new(Sender {
        store,
        client,
        config,
    });
    while !*shutdown.borrow() {
        let now = now_ms();
        let claimed = match sender
            .store
            .claim_deliveries(&worker, CLAIM_BATCH, now, now + ms(LEASE))
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(error = %e, "claiming webhook deliveries failed");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let mut attempts = JoinSet::new();
        for claim in claimed {
            let sender = sender.clone();
            attempts.spawn(async move { sender.attempt(claim).await });
        }
        while attempts.join_next().await.is_some() {}
    }
}

struct Sender {
    store: Arc<dyn Store>,
    client: GuardedClient,
    config: EngineConfig,
}

/// What one attempt came to, before it is recorded.
struct Sent {
    status_code: Option<i64>,
    error: Option<String>,
    outcome: AttemptOutcome,
}

impl Sender {
    /// Make one attempt of `claim` and record it.
    async fn attempt(&self, claim: ClaimedDelivery) {
        let ClaimedDelivery {
            delivery,
            lease_token,
        } = claim;
        let (payload, sent) = match self.send(&delivery).await {
            Ok(done) => done,
            Err(e) => {
                // The store failed us: leave the lease to expire and try again then.
                tracing::error!(delivery = %delivery.id, error = %e, "a webhook attempt failed");
                return;
            }
        };
        match &sent.outcome {
            AttemptOutcome::Delivered => tracing::info!(
                delivery = %delivery.id, event = %delivery.event_id, run = %delivery.run_id,
                status = sent.status_code, attempt = delivery.attempts + 1, "webhook delivered"
            ),
            outcome => tracing::warn!(
                delivery = %delivery.id, event = %delivery.event_id, run = %delivery.run_id,
                status = sent.status_code, error = sent.error.as_deref(),
                attempt = delivery.attempts + 1,
                gave_up = matches!(outcome, AttemptOutcome::GaveUp),
                "webhook attempt not answered with 2xx"
            ),
        }
        let attempt = DeliveryAttempt {
            delivery_id: delivery.id.clone(),
            lease_token,
            payload,
            at: puffle_domain::now_timestamp(),
            status_code: sent.status_code,
            error: sent.error,
            outcome: sent.outcome,
        };
        match self.store.record_delivery_attempt(attempt).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                delivery = %delivery.id,
                "a webhook attempt outlived its lease; its outcome was not recorded"
            ),
            Err(e) => tracing::error!(
                delivery = %delivery.id, error = %e, "recording a webhook attempt failed"
            ),
        }
    }

    /// The body (stored or rendered now) and what sending it came to.
    async fn send(&self, delivery: &Delivery) -> Result<(String, Sent), StoreError> {
        let run = self.store.run_for_worker(&delivery.run_id).await?;
        let payload = match &delivery.payload {
            Some(p) => p.clone(),
            None => json!({
                "id": delivery.event_id,
                "type": delivery.event_type,
                "createdAt": delivery.created_at,
                "data": {"run": run_json(&run)},
            })
            .to_string(),
        };
        let Some(secret) = self.store.webhook_secret(&run.user_id).await? else {
            // Runs with a hook need a secret at creation, and none is ever deleted.
            let sent = self.failed(
                delivery,
                None,
                "the run's owner has no webhook signing secret".into(),
            );
            return Ok((payload, sent));
        };
        let url = match validate_url(&delivery.url) {
            Ok(url) => url,
            Err(e) => return Ok((payload, self.refused(format!("the webhook URL {e}")))),
        };
        let timestamp = now_ms() / 1000;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in [
            (EVENT_ID_HEADER, delivery.event_id.clone()),
            (
                SIGNATURE_HEADER,
                signature(&secret, timestamp, payload.as_bytes()),
            ),
        ] {
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.insert(name, v);
                }
                Err(_) => {
                    let sent = self.refused(format!("the {name} header could not be built"));
                    return Ok((payload, sent));
                }
            }
        }
        let answer = self
            .client
            .post(url, headers, payload.clone().into_bytes(), ATTEMPT_TIMEOUT)
            .await;
        let sent = match answer {
            Ok(status) if status.is_success() => Sent {
                status_code: Some(i64::from(status.as_u16())),
                error: None,
                outcome: AttemptOutcome::Delivered,
            },
            Ok(status) => self.failed(
                delivery,
                Some(i64::from(status.as_u16())),
                format!("the receiver answered {status}"),
            ),
            Err(PostFailure::Refused(why)) => self.refused(why),
            Err(PostFailure::Transport(why)) => self.failed(delivery, None, why),
        };
        Ok((payload, sent))
    }

    /// A failed attempt: retried after the backoff, unless the retry period is over.
    fn failed(&self, delivery: &Delivery, status_code: Option<i64>, error: String) -> Sent {
        let now = now_ms();
        let wait = backoff(
            self.config.webhook_retry_first,
            self.config.webhook_retry_max,
            delivery.attempts + 1,
        );
        let next = now.saturating_add(ms(wait));
        let give_up_at = delivery
            .first_due_at_ms
            .saturating_add(ms(self.config.webhook_retry_for));
        let outcome = if now >= give_up_at {
            AttemptOutcome::GaveUp
        } else {
            AttemptOutcome::Retry {
                // The last attempt falls on the end of the period, not after it.
                next_attempt_ms: next.min(give_up_at),
            }
        };
        Sent {
            status_code,
            error: Some(error),
            outcome,
        }
    }

    /// An attempt that can never succeed: the delivery fails at once.
    fn refused(&self, error: String) -> Sent {
        Sent {
            status_code: None,
            error: Some(error),
            outcome: AttemptOutcome::GaveUp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // What is signed is "<timestamp>.<body>".
        let sig = signature("Jefe", 1, b"x");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1.x");
        assert_eq!(
            sig,
            format!("t=1,v1={}", to_hex(&mac.finalize().into_bytes()))
        );
        // The primitive, against RFC 4231's test case 2.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            to_hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_the_cap() {
        let (first, max) = (Duration::from_secs(60), Duration::from_secs(3600));
        let waits: Vec<u64> = (1..=8).map(|n| backoff(first, max, n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(first, max, i64::MAX), max);
    }

    #[test]
    fn webhook_urls_must_be_absolute_http_without_credentials() {
        assert!(validate_url("https://hooks.example.com/puffle?x=1").is_ok());
        assert!(validate_url("http://127.0.0.1:9/x").is_ok());
        for bad in [
            "",
            "/relative",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "mailto:a@example.com",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(validate_url(&long).is_err());
    }

    #[test]
    fn secrets_are_prefixed_and_random() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 64);
        assert_ne!(a, b);
    }
}
