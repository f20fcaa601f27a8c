//! Provider throttles kept in the database, so that a fleet of worker processes shares one limit
//! per provider instead of each process having its own.
//!
//! A provider call holds a *slot*: a row recording when the call started and, while the call is
//! in flight, until when its holder's lease runs. Taking a slot is serialized per provider (one
//! provider row locked for the transaction) and counts the recent starts and the slots in flight;
//! a pause (`Retry-After`) is a column of the provider row that every taker reads. A slot whose
//! holder died is no longer in flight once its lease expires, so a killed worker's slots come
//! back by themselves. Times are unix milliseconds from the database's clock on PostgreSQL, so
//! machines whose clocks disagree still agree on the windows.

use std::time::Duration;

use async_trait::async_trait;

use crate::Result;

/// Starts older than this (and not in flight) are deleted; every window is shorter.
pub(crate) const KEEP_STARTS_MS: i64 = 120_000;

/// What one provider allows; `None` is unlimited. `margin` lengthens each rate window (the
/// caller's allowance for the time between a recorded start and the request's arrival).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotLimits {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub margin: Duration,
}

impl SlotLimits {
    pub fn is_unlimited(&self) -> bool {
        self.per_second.is_none() && self.per_minute.is_none() && self.max_in_flight.is_none()
    }

    /// The second and the minute window, each as (limit, length in ms) when in force; the limit
    /// is at least 1.
    pub(crate) fn windows(&self) -> [Option<(i64, i64)>; 2] {
        let margin = millis(self.margin);
        [(self.per_second, 1_000), (self.per_minute, 60_000)]
            .map(|(limit, ms)| limit.map(|l| (i64::from(l.max(1)), ms + margin)))
    }
}

/// The answer to a request for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// Call now. The slot's id, to release (`None` when the limits are unlimited: nothing was
    /// recorded, nothing to release).
    Taken(Option<String>),
    /// Ask again after this long (a pause, a full window, or every slot in flight).
    Wait(Duration),
}

/// What a taker sees of one provider at `now_ms`, with the provider's row locked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    pub now_ms: i64,
    pub paused_until_ms: Option<i64>,
    pub in_flight: i64,
    /// Per window of [`SlotLimits::windows`]: the `limit`-th most recent start within the
    /// window, if there are that many (the window is full until it leaves).
    pub blocking_starts: [Option<i64>; 2],
}

/// How long to wait when every slot is in flight: releases elsewhere in the fleet are not
/// announced, so a waiter looks again after this long.
pub(crate) const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(100);

/// The decision both backends make from what they observed: `None` is "take a slot now".
pub(crate) fn decide(limits: &SlotLimits, seen: &Observed) -> Option<Duration> {
    let ms = |v: i64| Duration::from_millis(u64::try_from(v.max(1)).unwrap_or(1));
    if let Some(until) = seen.paused_until_ms.filter(|u| *u > seen.now_ms) {
        return Some(ms(until - seen.now_ms));
    }
    if limits
        .max_in_flight
        .is_some_and(|max| seen.in_flight >= i64::from(max))
    {
        return Some(IN_FLIGHT_RECHECK);
    }
    limits
        .windows()
        .into_iter()
        .zip(seen.blocking_starts)
        .filter_map(|(window, start)| Some(start? + window?.1 - seen.now_ms))
        .max()
        .map(ms)
}

/// Provider throttles shared by every process using the database.
#[async_trait]
pub trait ThrottleStore: Send + Sync {
    /// Whether other processes may share this database (and so its throttles). An embedded
    /// database has one process: its throttles may as well stay in memory.
    fn is_shared(&self) -> bool;
    /// Take a slot of `provider` for a call starting now, held by `holder` for `lease` unless
    /// renewed or released; or say how long to wait. Exact across processes: takers of one
    /// provider are serialized.
    async fn throttle_take(
        &self,
        provider: &str,
        limits: &SlotLimits,
        holder: &str,
        lease: Duration,
    ) -> Result<Take>;
    /// Extend the lease of slots still in flight to `lease` from now.
    async fn throttle_renew(&self, slots: &[String], lease: Duration) -> Result<()>;
    /// The call of `slot` ended: it is no longer in flight, and counts in the rate windows from
    /// now (while in flight it counts as "now"). Counting a call until a window's length after
    /// its end is what makes a limit hold at the vendor whatever the delays between a slot being
    /// taken and the request arriving. Releasing twice, or an unknown slot, is no error.
    async fn throttle_release(&self, slot: &str) -> Result<()>;
    /// No slot of `provider` is given for `delay` from now (or longer, if an earlier pause runs
    /// longer).
    async fn throttle_pause(&self, provider: &str, delay: Duration) -> Result<()>;
}

/// A duration as whole milliseconds for SQL arithmetic (saturating; a lease or pause of
/// centuries is still a number).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: Option<u32>, max_in_flight: Option<u32>) -> SlotLimits {
        SlotLimits {
            per_second,
            per_minute: Some(100),
            max_in_flight,
            margin: Duration::from_millis(20),
        }
    }

    #[test]
    fn the_longest_of_the_waits_wins() {
        let l = limits(Some(2), Some(3));
        let mut seen = Observed {
            now_ms: 10_000,
            paused_until_ms: Some(9_000),
            in_flight: 2,
            blocking_starts: [None, None],
        };
        assert_eq!(decide(&l, &seen), None);
        seen.blocking_starts = [Some(9_500), Some(9_000)];
        // Second window: 9_500 + 1_020 - 10_000; minute window: 9_000 + 60_020 - 10_000.
        assert_eq!(decide(&l, &seen), Some(Duration::from_millis(59_020)));
        seen.paused_until_ms = Some(100_000);
        assert_eq!(decide(&l, &seen), Some(Duration::from_millis(90_000)));
        seen.paused_until_ms = None;
        seen.in_flight = 3;
        assert_eq!(decide(&l, &seen), Some(IN_FLIGHT_RECHECK));
    }
}
