//! Running one enrichment for one lead: dispatch by binding, and the item metadata it yields.

use std::sync::Arc;

use puffle_domain::lead::Lead;
use puffle_store::Store;
use serde_json::Value;

use crate::catalog::{Binding, Enrichment};
use crate::providers::ai::AiConfig;
use crate::providers::cache::ResultCache;
use crate::providers::http::{GuardedClient, HttpPolicy};
use crate::providers::waterfall::Configured;
use crate::providers::{self, Execution};
use crate::throttle::Throttles;
use crate::{builtins, EngineConfig, Outcome};

/// A failure of the whole run rather than of one item (its provider is not usable at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFailure(pub String);

/// Executes enrichments; one per process, shared by every worker task.
pub struct Executor {
    /// `custom_ai`'s client (its endpoint is the operator's, not the user's).
    client: reqwest::Client,
    /// `custom_http`'s client, shared by every item so that connections are reused; or why it
    /// could not be built.
    http: Result<GuardedClient, String>,
    ai: Option<AiConfig>,
    /// The enrichments of `puffle.toml`.
    configured: Configured,
}

impl Executor {
    /// `throttles` limit every configured provider call; `store` holds their result cache.
    pub fn new(
        config: &EngineConfig,
        throttles: Arc<Throttles>,
        store: Arc<dyn Store>,
    ) -> Executor {
        Executor {
            client: reqwest::Client::new(),
            http: GuardedClient::new(HttpPolicy::from_engine(config)),
            ai: AiConfig::from_engine(config),
            configured: Configured::new(
                config.providers.clone(),
                throttles,
                Some(ResultCache::new(store)),
            ),
        }
    }

    /// `submission`: the job an async provider step submitted for this item already.
    pub async fn execute(
        &self,
        enrichment: &Enrichment,
        lead: &Lead,
        input: &Value,
        submission: Option<&puffle_store::Submission>,
    ) -> Result<Execution, RunFailure> {
        match enrichment.binding {
            Binding::Builtin => {
                let outcome = builtins::run_builtin(&enrichment.slug, lead, input)
                    .unwrap_or_else(|| Outcome::Fail(format!("no built-in named {}", enrichment.slug)));
                let raw = match &outcome {
                    Outcome::Hit(v) => Some(v.clone()),
                    _ => None,
                };
                Ok(Execution {
                    outcome,
                    input_snapshot: input.clone(),
                    raw,
                    provider: enrichment.slug.clone(),
                    details: None,
                })
            }
            Binding::Http => match &self.http {
                Ok(client) => Ok(providers::http::execute(client, lead, input).await),
                Err(message) => Err(RunFailure(message.clone())),
            },
            Binding::Ai => match &self.ai {
                Some(ai) => Ok(providers::ai::execute(&self.client, ai, lead, input).await),
                None => Err(RunFailure(
                    "custom_ai has no AI endpoint configured on this server (PUFFLE_AI_BASE_URL, PUFFLE_AI_MODEL)".into(),
                )),
            },
            Binding::Configured => {
                let config = self.configured.config();
                let Some(configured) = config.enrichment(&enrichment.slug) else {
                    return Err(RunFailure(format!(
                        "{} is no longer configured on this server",
                        enrichment.slug
                    )));
                };
                // A run created before a restart without the provider's secret cannot work.
                if let Some(reason) = config.disabled_reason(configured) {
                    return Err(RunFailure(format!("{} is not enabled: {reason}", enrichment.slug)));
                }
                let configured = configured.clone();
                Ok(self
                    .configured
                    .execute(&configured, lead, input, submission)
                    .await)
            }
            Binding::Unconfigured => Err(RunFailure(format!(
                "{} has no provider configured on this server",
                enrichment.slug
            ))),
        }
    }
}
