//! The result cache of configured providers (`cache_ttl_seconds`): answers kept in the database
//! (so a fleet shares them) under a key per provider and normalized request.
//!
//! The key is a SHA-256 over the provider's name, the method, the URL with its query parameters
//! sorted, the body, the header names with a SHA-256 of each value (a secret never lies in the
//! table in clear, not even inside the key's input), and the step's `result_pointer` and
//! `miss_when` (the cached entry is the step's judged outcome, so another judgement is another
//! entry). Hits and misses are cached; failures and retryable answers are not.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use puffle_store::Store;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::configured::{BuiltRequest, ProviderConfig, Step, StepOutcome};
use crate::clock::now_ms;

/// How often expired entries are deleted (by whichever process puts an entry after this long).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The cache, backed by the store.
#[derive(Clone)]
pub struct ResultCache {
    store: Arc<dyn Store>,
    last_prune: Arc<Mutex<Option<Instant>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache key of a built request (see the module documentation).
pub fn key(provider: &ProviderConfig, step: &Step, request: &BuiltRequest) -> String {
    let mut url = request.url.clone();
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(&pairs);
    }
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), hex(&Sha256::digest(value.as_bytes()))))
        .collect();
    headers.sort();
    let miss_when: Vec<String> = step.miss_when.iter().map(|r| format!("{r:?}")).collect();
    let material = json!([
        provider.name,
        request.method.as_str(),
        url.as_str(),
        request.body.as_deref().map(String::from_utf8_lossy),
        headers,
        step.result_pointer,
        miss_when,
    ]);
    hex(&Sha256::digest(material.to_string().as_bytes()))
}

impl ResultCache {
    pub fn new(store: Arc<dyn Store>) -> ResultCache {
        ResultCache {
            store,
            last_prune: Arc::default(),
        }
    }

    /// The cached outcome and answer under `key`. A database error is logged and read as "not
    /// cached": the provider is asked instead.
    pub async fn get(&self, key: &str) -> Option<(StepOutcome, Option<Value>)> {
        let entry = match self.store.cache_get(key, now_ms()).await {
            Ok(entry) => entry?,
            Err(e) => {
                tracing::warn!(error = %e, "reading the provider result cache failed");
                return None;
            }
        };
        let outcome = match entry.get("outcome").and_then(Value::as_str) {
            Some("hit") => StepOutcome::Hit(entry.get("value").cloned()?),
            Some("miss") => StepOutcome::Miss,
            _ => return None,
        };
        Some((outcome, entry.get("answer").cloned()))
    }

    /// Keep a hit or a miss for `ttl`; anything else is not cached.
    pub async fn put(
        &self,
        key: &str,
        provider: &str,
        outcome: &StepOutcome,
        answer: Option<&Value>,
        ttl: Duration,
    ) {
        let entry = match outcome {
            StepOutcome::Hit(v) => json!({"outcome": "hit", "value": v, "answer": answer}),
            StepOutcome::Miss => json!({"outcome": "miss", "answer": answer}),
            _ => return,
        };
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        if let Err(e) = self.store.cache_put(key, provider, &entry, until).await {
            tracing::warn!(error = %e, provider, "writing the provider result cache failed");
        }
        let due = {
            let mut last = self.last_prune.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            match self.store.cache_prune(now).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(entries = n, "pruned expired provider cache entries"),
                Err(e) => tracing::warn!(error = %e, "pruning the provider result cache failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::configured::{build_request, StepKind};
    use crate::template::Context;

    fn provider(secret: &str) -> ProviderConfig {
        let text = "[providers.v]\nbase_url = \"https://api.vendor.test\"\nheaders = { Authorization = \"Bearer ${K}\" }\n";
        let secret = secret.to_string();
        let config =
            crate::config_file::parse("t.toml", text, &move |_| Some(secret.clone())).unwrap();
        (*config.providers["v"]).clone()
    }

    fn step(query: &[(&str, &str)]) -> Step {
        Step {
            kind: StepKind::Http,
            provider: "v".into(),
            method: reqwest::Method::GET,
            path: "/find".into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: None,
            result_pointer: None,
            miss_when: vec![],
            asynchronous: None,
        }
    }

    fn key_of(p: &ProviderConfig, s: &Step) -> String {
        let ctx = Context::from_values(json!({}), json!({}));
        let built = build_request(p, s, &ctx).unwrap_or_else(|_| panic!("builds"));
        key(p, s, &built)
    }

    #[test]
    fn keys_ignore_query_order_and_differ_by_request_and_secret() {
        let p = provider("secret-one");
        let ab = key_of(&p, &step(&[("a", "1"), ("b", "2")]));
        assert_eq!(ab, key_of(&p, &step(&[("b", "2"), ("a", "1")])));
        assert_ne!(ab, key_of(&p, &step(&[("a", "1"), ("b", "3")])));
        assert_ne!(
            ab,
            key_of(&provider("secret-two"), &step(&[("a", "1"), ("b", "2")]))
        );
        assert_eq!(ab.len(), 64);
        assert!(!ab.contains("secret"));
    }
}
