//! Provider throttles: requests per second and per minute, requests in flight, and the pause a
//! provider asked for with `Retry-After` (DESIGN "The worker": throttles per provider).
//!
//! Every call to a provider is made between [`Throttles::acquire`] and dropping the [`Permit`]
//! it returns. The rate windows are sliding: in no interval of one second (one minute) are more
//! requests started than `per_second` (`per_minute`), which is what a vendor counting on its side
//! sees. A window is [`WINDOW_MARGIN`] longer than its nominal length so that scheduling jitter
//! between our clock and the vendor's arrival times cannot make two requests look closer than we
//! spaced them.
//!
//! This implementation holds for one process. A fleet shares its limits through the database.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Added to each rate window (see the module documentation).
pub const WINDOW_MARGIN: Duration = Duration::from_millis(20);

/// How long a waiter sleeps at most before looking again (a released slot also wakes it).
const RECHECK: Duration = Duration::from_millis(250);

/// What one provider allows; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderLimits {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub max_in_flight: Option<u32>,
}

impl ProviderLimits {
    pub fn is_unlimited(&self) -> bool {
        self.per_second.is_none() && self.per_minute.is_none() && self.max_in_flight.is_none()
    }
}

/// One provider's recent starts, requests in flight and pause.
#[derive(Debug, Default)]
struct State {
    /// Start times within the last minute (plus margin), oldest first.
    starts: VecDeque<Instant>,
    in_flight: u32,
    paused_until: Option<Instant>,
}

impl State {
    /// Take a slot now, or say how long to wait before asking again.
    fn try_take(&mut self, limits: &ProviderLimits, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Err(until - now);
            }
            self.paused_until = None;
        }
        let minute = Duration::from_secs(60) + WINDOW_MARGIN;
        while self
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= minute)
        {
            self.starts.pop_front();
        }
        if limits
            .max_in_flight
            .is_some_and(|max| self.in_flight >= max)
        {
            return Err(RECHECK);
        }
        for (limit, window) in [
            (limits.per_second, Duration::from_secs(1) + WINDOW_MARGIN),
            (limits.per_minute, minute),
        ] {
            let Some(limit) = limit else { continue };
            let limit = limit.max(1) as usize;
            let recent = self
                .starts
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) < window)
                .count();
            if recent >= limit {
                // The slot frees when the `limit`-th most recent start leaves the window.
                let oldest_counted = self.starts[self.starts.len() - limit];
                return Err(window.saturating_sub(now.duration_since(oldest_counted)));
            }
        }
        self.starts.push_back(now);
        self.in_flight += 1;
        Ok(())
    }
}

/// The throttles of every provider this process calls; shared by all its worker tasks.
#[derive(Debug, Default)]
pub struct Throttles {
    states: Mutex<HashMap<String, State>>,
    released: Notify,
}

impl Throttles {
    pub fn new() -> Arc<Throttles> {
        Arc::new(Throttles::default())
    }

    fn states(&self) -> MutexGuard<'_, HashMap<String, State>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until `provider` may be called under `limits`, and hold one of its slots until the
    /// permit is dropped.
    pub async fn acquire(self: &Arc<Self>, provider: &str, limits: &ProviderLimits) -> Permit {
        loop {
            let released = self.released.notified();
            let wait = {
                let mut states = self.states();
                let state = states.entry(provider.to_string()).or_default();
                match state.try_take(limits, Instant::now()) {
                    Ok(()) => {
                        return Permit {
                            throttles: self.clone(),
                            provider: provider.to_string(),
                        }
                    }
                    Err(wait) => wait,
                }
            };
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep(wait.min(RECHECK)) => {}
            }
        }
    }

    /// Remember that `provider` asked not to be called for `delay` (its `Retry-After`): no slot is
    /// given for it until then.
    pub async fn pause(&self, provider: &str, delay: Duration) {
        let until = Instant::now() + delay;
        let mut states = self.states();
        let state = states.entry(provider.to_string()).or_default();
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
    }

    fn release(&self, provider: &str) {
        if let Some(state) = self.states().get_mut(provider) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        self.released.notify_waiters();
    }
}

/// One provider call's slot; dropping it frees the slot (the rate windows keep its start).
#[derive(Debug)]
pub struct Permit {
    throttles: Arc<Throttles>,
    provider: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.throttles.release(&self.provider);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: Option<u32>, max_in_flight: Option<u32>) -> ProviderLimits {
        ProviderLimits {
            per_second,
            per_minute: None,
            max_in_flight,
        }
    }

    #[test]
    fn a_full_window_says_how_long_until_its_oldest_start_leaves() {
        let mut state = State::default();
        let t0 = Instant::now();
        let l = limits(Some(2), None);
        assert_eq!(state.try_take(&l, t0), Ok(()));
        assert_eq!(state.try_take(&l, t0 + Duration::from_millis(100)), Ok(()));
        let wait = state
            .try_take(&l, t0 + Duration::from_millis(500))
            .unwrap_err();
        assert_eq!(wait, Duration::from_millis(500) + WINDOW_MARGIN);
        let later = t0 + Duration::from_secs(1) + WINDOW_MARGIN;
        assert_eq!(state.try_take(&l, later), Ok(()));
    }

    #[test]
    fn in_flight_and_pause_hold_slots_back() {
        let mut state = State::default();
        let t0 = Instant::now();
        let l = limits(None, Some(1));
        assert_eq!(state.try_take(&l, t0), Ok(()));
        assert!(state.try_take(&l, t0).is_err());
        state.in_flight = 0;
        state.paused_until = Some(t0 + Duration::from_secs(3));
        assert_eq!(state.try_take(&l, t0), Err(Duration::from_secs(3)));
        assert_eq!(state.try_take(&l, t0 + Duration::from_secs(3)), Ok(()));
    }

    #[tokio::test]
    async fn permits_are_released_on_drop_and_wake_waiters() {
        let throttles = Throttles::new();
        let l = limits(None, Some(1));
        let first = throttles.acquire("vendor", &l).await;
        let waiter = {
            let throttles = throttles.clone();
            tokio::spawn(async move {
                let _p = throttles.acquire("vendor", &l).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the waiter got the freed slot")
            .expect("no panic");
        // Another provider is not held back by this one.
        let _a = throttles.acquire("vendor", &l).await;
        let _b = throttles.acquire("other", &l).await;
    }
}
