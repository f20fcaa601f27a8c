//! Latency samples and their percentiles.

use std::time::Duration;

use serde::Serialize;

/// The value at percentile `p` (0–100) of `sorted`, by the nearest-rank method: always one of the
/// samples, so a p99 of 100 samples is the second-largest one rather than an interpolation.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A summary of latencies in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(durations: &[Duration]) -> Option<Latency> {
        let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Some(Latency {
            samples: ms.len(),
            p50_ms: percentile(&ms, 50.0)?,
            p99_ms: percentile(&ms, 99.0)?,
            max_ms: *ms.last()?,
        })
    }
}

/// The median of a few measurements (e.g. seconds of repeated runs).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        // Out-of-range percentiles are clamped rather than indexing out of bounds.
        assert_eq!(percentile(&v, 250.0), Some(100.0));
    }

    #[test]
    fn latency_summary_sorts_and_converts_to_ms() {
        let d = [30, 10, 20].map(Duration::from_millis);
        let l = Latency::of(&d).unwrap();
        assert_eq!(l.samples, 3);
        assert_eq!(l.p50_ms, 20.0);
        assert_eq!(l.p99_ms, 30.0);
        assert_eq!(l.max_ms, 30.0);
        assert!(Latency::of(&[]).is_none());
    }

    #[test]
    fn median_of_unsorted() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
    }
}
