//! How the engine runs: worker pool size, leases, retries, and what providers may reach.

use std::sync::Arc;
use std::time::Duration;

use crate::providers::configured::ProvidersConfig;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Items executed at once by this process's worker pool (at least 1).
    pub concurrency: usize,
    /// How long a claimed item stays leased without a heartbeat before another worker may take it.
    pub lease: Duration,
    /// Executions per item before a retryable failure becomes `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt (with jitter), never below the provider's Retry-After.
    pub retry_base: Duration,
    /// Longest retry delay (a provider's Retry-After may ask for more, and is honoured).
    pub retry_max: Duration,
    /// On shutdown, how long in-flight items may take to finish before they are handed back.
    pub shutdown_grace: Duration,
    /// Hosts (names or IPs) `custom_http` may reach even though they are loopback/private
    /// (`PUFFLE_HTTP_ALLOW_HOSTS`).
    pub http_allow_hosts: Vec<String>,
    /// OpenAI-compatible endpoint for `custom_ai` (`PUFFLE_AI_BASE_URL`, e.g. `http://localhost:11434/v1`).
    pub ai_base_url: Option<String>,
    /// Its key (`PUFFLE_AI_API_KEY`); never logged or shown.
    pub ai_api_key: Option<String>,
    /// Default model (`PUFFLE_AI_MODEL`).
    pub ai_model: Option<String>,
    /// Providers and enrichments from `puffle.toml` (`--config`); empty without a file.
    pub providers: Arc<ProvidersConfig>,
    /// Run webhooks [ours]: the wait after a delivery's first failed attempt; it doubles per
    /// attempt up to `webhook_retry_max` (`PUFFLE_WEBHOOK_RETRY_FIRST_MS`; tests make it short).
    pub webhook_retry_first: Duration,
    /// The longest wait between two attempts of a delivery.
    pub webhook_retry_max: Duration,
    /// A delivery without a 2xx answer is retried for this long after it fell due, then `failed`.
    pub webhook_retry_for: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            concurrency: 16,
            lease: Duration::from_secs(60),
            max_attempts: 3,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
            http_allow_hosts: Vec::new(),
            ai_base_url: None,
            ai_api_key: None,
            ai_model: None,
            providers: Arc::default(),
            webhook_retry_first: Duration::from_secs(60),
            webhook_retry_max: Duration::from_secs(3600),
            webhook_retry_for: Duration::from_secs(24 * 3600),
        }
    }
}
