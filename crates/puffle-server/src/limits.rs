//! Limits that protect the server from a single caller: request header size, a token bucket
//! per API key, and the JSON nesting depth handed to the body extractor. Each is configurable
//! (see [`crate::Config`]) and answered with the spec's error envelope.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use puffle_domain::account::ApiKey;

use crate::app::AppState;
use crate::error::ApiError;

/// How fast one API key may call: `burst` requests at once, refilled at `per_second`.
/// `per_second == 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// Buckets beyond this many are pruned of full (idle) ones, so a stream of distinct keys cannot
/// grow memory without bound.
const MAX_BUCKETS: usize = 10_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by the key's public prefix (unique per key, and not a secret to hold in
/// memory).
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.limit.per_second > 0.0 && self.limit.burst >= 1.0
    }

    /// Take a token for `key` at `now`, or say how long until one is available.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let RateLimit { per_second, burst } = self.limit;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < burst
            });
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

/// Limits every request passes before its handler: header size, then the caller's rate. The
/// JSON depth limit rides along as an extension for [`crate::extract::ApiJson`].
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let max_header_bytes = state.config.max_header_bytes;
    let size = header_bytes(&req);
    if size > max_header_bytes {
        return ApiError::HeadersTooLarge(format!(
            "The request target and headers take {size} bytes; this server accepts at most {max_header_bytes}."
        ))
        .into_response();
    }
    // Only well-formed keys get a bucket: anything else is a 401 that costs no database work.
    if let Some(key) = crate::auth::bearer_token(req.headers()).and_then(ApiKey::parse) {
        if let Err(wait) = state.rate_limiter.take(key.public_prefix(), Instant::now()) {
            // Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return ApiError::RateLimited {
                retry_after: seconds.max(1),
            }
            .into_response();
        }
    }
    req.extensions_mut()
        .insert(JsonDepth(state.config.max_json_depth));
    next.run(req).await
}

/// Bytes of the request line's target and the headers, as sent (names, values, separators).
fn header_bytes(req: &Request) -> usize {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    target
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
}

/// The deepest nesting of arrays and objects a JSON body may have.
#[derive(Debug, Clone, Copy)]
pub struct JsonDepth(pub usize);

/// The deepest nesting of `[`/`{` in a JSON text, counted without parsing (strings skipped), so
/// that a hostile body is refused before serde recurses into it.
pub fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take("a", t0), Ok(()));
        }
        let wait = limiter.take("a", t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another key has its own bucket.
        assert_eq!(limiter.take("b", t0), Ok(()));
        // Half a second later one token is back, not more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limiter.take("a", t1), Ok(()));
        assert!(limiter.take("a", t1).is_err());
    }

    #[test]
    fn a_zero_rate_means_no_limit() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.0,
            burst: 0.0,
        });
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(limiter.take("a", t0), Ok(()));
        }
    }

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth(b"1"), 0);
        assert_eq!(json_depth(br#"{"a": [1, {"b": 2}]}"#), 3);
        assert_eq!(json_depth(br#"{"a": "[[[[{{{{\"[["}"#), 1);
        assert_eq!(json_depth(br#"["\\", [[]]]"#), 3);
        assert_eq!(json_depth(&[b'['; 10_000]), 10_000);
    }

    /// The depth of a parsed value, counted the slow, obvious way.
    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            "\\PC{0,6}".prop_map(serde_json::Value::String),
            "[\\[\\]{}\"\\\\]{0,6}".prop_map(serde_json::Value::String),
            any::<i32>().prop_map(|n| serde_json::json!(n)),
        ];
        leaf.prop_recursive(6, 40, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z{\\[\"]{0,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn scanned_depth_is_the_parsed_depth(v in any_json()) {
            let text = serde_json::to_string(&v).unwrap();
            proptest::prop_assert_eq!(json_depth(text.as_bytes()), depth(&v));
        }

        #[test]
        fn scanning_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let _ = json_depth(&bytes);
        }
    }
}
