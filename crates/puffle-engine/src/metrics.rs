//! In-process counters for Prometheus: what the worker pool did (items by outcome) and how its
//! providers behaved (latency and errors by provider). Rendered by the server's `/metrics`.
//!
//! Hand-rolled rather than a metrics crate: a handful of series, read by one endpoint, and the
//! exposition format is a few lines of text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: from a cached built-in to a slow provider.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative latency histogram (Prometheus semantics: each bucket counts observations ≤ its
/// bound; `+Inf` is the total count).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        for (bound, n) in LATENCY_BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Append the `_bucket`, `_sum` and `_count` samples of `name` with `labels`
    /// (`key="value",…`, already escaped).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in LATENCY_BUCKETS.iter().zip(self.buckets.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {:.6}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Escape a label value for the exposition format.
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Default)]
struct Inner {
    /// Items the pool finished, by outcome (`completed`, `failed`, `skipped`, `retry`).
    items: BTreeMap<&'static str, u64>,
    /// Provider call latency by provider.
    provider_latency: BTreeMap<String, Histogram>,
    /// Provider errors by (provider, kind: `failed` | `retryable`).
    provider_errors: BTreeMap<(String, &'static str), u64>,
}

/// The worker pool's counters; one per process, shared with the server that renders them.
#[derive(Default)]
pub struct EngineMetrics {
    inner: Mutex<Inner>,
}

impl EngineMetrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters that are still counters.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn item_finished(&self, outcome: &'static str) {
        *self.inner().items.entry(outcome).or_default() += 1;
    }

    pub fn provider_called(&self, provider: &str, took: Duration, error: Option<&'static str>) {
        let mut inner = self.inner();
        inner
            .provider_latency
            .entry(provider.to_string())
            .or_default()
            .observe(took.as_secs_f64());
        if let Some(kind) = error {
            *inner
                .provider_errors
                .entry((provider.to_string(), kind))
                .or_default() += 1;
        }
    }

    /// The Prometheus text of every series.
    pub fn render(&self, out: &mut String) {
        let inner = self.inner();
        out.push_str(
            "# HELP puffle_items_total Items the worker pool finished, by outcome.\n\
             # TYPE puffle_items_total counter\n",
        );
        for (outcome, n) in &inner.items {
            let _ = writeln!(out, "puffle_items_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str(
            "# HELP puffle_provider_duration_seconds Time an enrichment's provider took, by provider.\n\
             # TYPE puffle_provider_duration_seconds histogram\n",
        );
        for (provider, h) in &inner.provider_latency {
            h.render(
                out,
                "puffle_provider_duration_seconds",
                &format!("provider=\"{}\"", label(provider)),
            );
        }
        out.push_str(
            "# HELP puffle_provider_errors_total Provider calls that failed, by provider and kind.\n\
             # TYPE puffle_provider_errors_total counter\n",
        );
        for ((provider, kind), n) in &inner.provider_errors {
            let _ = writeln!(
                out,
                "puffle_provider_errors_total{{provider=\"{}\",kind=\"{kind}\"}} {n}",
                label(provider)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.003);
        h.observe(0.2);
        h.observe(60.0);
        let mut out = String::new();
        h.render(&mut out, "x", "r=\"a\"");
        assert!(out.contains("x_bucket{r=\"a\",le=\"0.001\"} 0\n"), "{out}");
        assert!(out.contains("x_bucket{r=\"a\",le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{r=\"a\",le=\"0.25\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{r=\"a\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{r=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{r=\"a\"} 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
