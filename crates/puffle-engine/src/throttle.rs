//! Provider throttles: requests per second and per minute, requests in flight, and the pause a
//! provider asked for with `Retry-After` (DESIGN "The worker": throttles per provider).
//!
//! Every call to a provider is made between [`Throttles::acquire`] and dropping the [`Permit`]
//! it returns. The rate windows are sliding: in no interval of one second (one minute) does a
//! vendor receive more requests than `per_second` (`per_minute`). To hold at the vendor whatever
//! the delays between us and it, a call counts in the windows from when it is allowed until a
//! window's length after it *ended* (its answer read): the vendor received it before then, and
//! the next call leaves after it is allowed. A window is also [`WINDOW_MARGIN`] longer than its
//! nominal length.
//!
//! [`Throttles::new`] holds for one process. [`Throttles::fleet`] shares the limits of every
//! process using one PostgreSQL database: each slot is taken in the database (see
//! `puffle_store::ThrottleStore`), and a pause is recorded there for every worker to honour.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use puffle_store::{SlotLimits, Store, Take};
use tokio::sync::Notify;

/// Added to each rate window (see the module documentation).
pub const WINDOW_MARGIN: Duration = Duration::from_millis(20);

/// How long a waiter sleeps at most before looking again (a released slot also wakes it).
const RECHECK: Duration = Duration::from_millis(250);

/// The window margin of a fleet: a start is recorded on the database's clock a round trip or
/// two before the request leaves, and those round trips vary between processes and under load.
const FLEET_MARGIN: Duration = Duration::from_millis(100);

/// How long a fleet slot stays in flight without renewal: a process killed mid-call holds its
/// slots at most this long.
const LEASE: Duration = Duration::from_secs(30);

/// How often a process renews the leases of the slots it holds (well within [`LEASE`], so a
/// renewal or two may fail without a live call losing its slot).
const RENEW_EVERY: Duration = Duration::from_secs(8);

/// The longest pause between attempts when the database does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

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

/// One provider's calls that count in a rate window, and its pause.
#[derive(Debug, Default)]
struct State {
    /// Calls in flight, and calls that ended within the last minute (plus margin).
    calls: Vec<Call>,
    next_call: u64,
    paused_until: Option<Instant>,
}

/// One call as the rate windows see it.
#[derive(Debug)]
struct Call {
    id: u64,
    /// When it ended; unset while it is in flight.
    ended: Option<Instant>,
}

impl State {
    /// Take a slot now (the call's id, to [`State::end`] it), or say how long to wait before
    /// asking again.
    ///
    /// A call counts in a window from when it was allowed until a window's length after it
    /// ended — while in flight it counts as "now". Counting from the end rather than the start
    /// is what makes the limit hold at the vendor whatever the delays: the vendor received a call
    /// before we read its answer, and the next one leaves after we allowed it.
    fn try_take(&mut self, limits: &ProviderLimits, now: Instant) -> Result<u64, Duration> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Err(until - now);
            }
            self.paused_until = None;
        }
        let minute = Duration::from_secs(60) + WINDOW_MARGIN;
        self.calls
            .retain(|c| c.ended.is_none_or(|t| now.duration_since(t) < minute));
        let in_flight = self.calls.iter().filter(|c| c.ended.is_none()).count();
        if limits
            .max_in_flight
            .is_some_and(|max| in_flight >= max as usize)
        {
            return Err(RECHECK);
        }
        for (limit, window) in [
            (limits.per_second, Duration::from_secs(1) + WINDOW_MARGIN),
            (limits.per_minute, minute),
        ] {
            let Some(limit) = limit else { continue };
            let limit = limit.max(1) as usize;
            let mut counted: Vec<Instant> = self
                .calls
                .iter()
                .map(|c| c.ended.unwrap_or(now))
                .filter(|t| now.duration_since(*t) < window)
                .collect();
            if counted.len() >= limit {
                // A slot frees when the `limit`-th most recent call leaves the window.
                counted.sort_unstable();
                let blocking = counted[counted.len() - limit];
                return Err(window.saturating_sub(now.duration_since(blocking)));
            }
        }
        let id = self.next_call;
        self.next_call += 1;
        self.calls.push(Call { id, ended: None });
        Ok(id)
    }

    /// The call `id` ended at `now`: no longer in flight; it counts in the windows from now.
    fn end(&mut self, id: u64, now: Instant) {
        if let Some(call) = self.calls.iter_mut().find(|c| c.id == id) {
            call.ended = Some(now);
        }
    }
}

/// The throttles of every provider this process calls; shared by all its worker tasks.
#[derive(Debug, Default)]
pub struct Throttles {
    /// In process: everything. In a fleet: only pauses (a pause this process was told of holds
    /// here even while the database cannot be reached).
    states: Mutex<HashMap<String, State>>,
    released: Notify,
    /// Set when the slots are kept in a database the fleet shares.
    fleet: Option<Fleet>,
}

/// Slots kept in the shared database.
struct Fleet {
    store: Arc<dyn Store>,
    /// This process, as the holder of its slots.
    holder: String,
    /// The slots this process holds, whose leases it renews.
    held: Mutex<HashSet<String>>,
    /// Per provider, the turn to ask the database: this process's waiters queue here, so each
    /// process has at most one of them polling a provider's row however many tasks wait.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    fn held(&self) -> MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn turn(&self, provider: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        turns.entry(provider.to_string()).or_default().clone()
    }
}

impl Throttles {
    pub fn new() -> Arc<Throttles> {
        Arc::new(Throttles::default())
    }

    /// Throttles that hold for every process sharing `store`'s database; for a store no other
    /// process shares (SQLite), the in-process ones, which are exact there and cost nothing.
    /// Call it inside the Tokio runtime: it starts the task renewing this process's leases.
    pub fn fleet(store: Arc<dyn Store>) -> Arc<Throttles> {
        if !store.is_shared() {
            return Throttles::new();
        }
        let throttles = Arc::new(Throttles {
            fleet: Some(Fleet {
                store,
                holder: format!("throttles-{}", puffle_domain::new_id()),
                held: Mutex::new(HashSet::new()),
                turns: Mutex::new(HashMap::new()),
            }),
            ..Throttles::default()
        });
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(renew_leases(Arc::downgrade(&throttles)));
            }
            Err(_) => tracing::warn!(
                "fleet throttles made outside a runtime: leases are not renewed, so a call \
                 longer than {LEASE:?} may lose its slot"
            ),
        }
        throttles
    }

    fn states(&self) -> MutexGuard<'_, HashMap<String, State>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until `provider` may be called under `limits`, and hold one of its slots until the
    /// permit is dropped.
    pub async fn acquire(self: &Arc<Self>, provider: &str, limits: &ProviderLimits) -> Permit {
        if let Some(fleet) = &self.fleet {
            return self.acquire_shared(fleet, provider, limits).await;
        }
        loop {
            let released = self.released.notified();
            let wait = {
                let mut states = self.states();
                let state = states.entry(provider.to_string()).or_default();
                match state.try_take(limits, Instant::now()) {
                    Ok(call) => {
                        return Permit {
                            throttles: self.clone(),
                            provider: provider.to_string(),
                            slot: None,
                            call,
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

    /// A slot taken in the shared database. A database error is logged and the attempt repeated
    /// after a growing pause: the provider is never called without a slot.
    async fn acquire_shared(
        self: &Arc<Self>,
        fleet: &Fleet,
        provider: &str,
        limits: &ProviderLimits,
    ) -> Permit {
        let limits = SlotLimits {
            per_second: limits.per_second,
            per_minute: limits.per_minute,
            max_in_flight: limits.max_in_flight,
            margin: FLEET_MARGIN,
        };
        // Held until a slot is taken (the next waiter of this process asks at once). An unlimited
        // provider only reads its pause, which needs no turn.
        let turn = (!limits.is_unlimited()).then(|| fleet.turn(provider));
        let _turn = match &turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        let mut failures = 0u32;
        loop {
            let released = self.released.notified();
            let wait = match self.paused_here(provider) {
                Some(wait) => wait,
                None => match fleet
                    .store
                    .throttle_take(provider, &limits, &fleet.holder, LEASE)
                    .await
                {
                    Ok(Take::Taken(slot)) => {
                        if let Some(slot) = &slot {
                            fleet.held().insert(slot.clone());
                        }
                        return Permit {
                            throttles: self.clone(),
                            provider: provider.to_string(),
                            slot,
                            call: 0,
                        };
                    }
                    // Exact: a window's oldest start or a pause does not leave sooner; slots
                    // in flight are polled (or a release here wakes the waiter).
                    Ok(Take::Wait(wait)) => {
                        failures = 0;
                        wait
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(provider, error = %e, "could not take a provider slot in the database; retrying");
                        backoff(failures)
                    }
                },
            };
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// How long this process still holds `provider` back for a pause it recorded itself.
    fn paused_here(&self, provider: &str) -> Option<Duration> {
        let until = self.states().get(provider)?.paused_until?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Remember that `provider` asked not to be called for `delay` (its `Retry-After`): no slot is
    /// given for it until then (in a fleet: by any process; this one holds it back even if the
    /// database cannot be told).
    pub async fn pause(&self, provider: &str, delay: Duration) {
        let until = Instant::now() + delay;
        {
            let mut states = self.states();
            let state = states.entry(provider.to_string()).or_default();
            state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
        }
        let Some(fleet) = &self.fleet else { return };
        for attempt in 1..=3 {
            match fleet.store.throttle_pause(provider, delay).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(provider, error = %e, attempt, "could not record a provider's pause in the database");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    fn release(&self, provider: &str, call: u64) {
        if let Some(state) = self.states().get_mut(provider) {
            state.end(call, Instant::now());
        }
        self.released.notify_waiters();
    }
}

/// The pause before attempt `failures + 1` after as many database errors in a row.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(5);
    (Duration::from_millis(100) * 2u32.pow(exponent)).min(MAX_BACKOFF)
}

/// Renew the leases of the slots this process holds, until its throttles are gone.
async fn renew_leases(throttles: std::sync::Weak<Throttles>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let Some(throttles) = throttles.upgrade() else {
            return;
        };
        let Some(fleet) = &throttles.fleet else {
            return;
        };
        let slots: Vec<String> = fleet.held().iter().cloned().collect();
        if let Err(e) = fleet.store.throttle_renew(&slots, LEASE).await {
            tracing::warn!(error = %e, "could not renew provider slot leases; they expire unless a later renewal succeeds");
        }
    }
}

/// Release a fleet slot in the database, then wake this process's waiters. Should every attempt
/// fail, the slot comes back when its lease (no longer renewed) expires.
async fn release_shared(throttles: Arc<Throttles>, slot: String) {
    if let Some(fleet) = &throttles.fleet {
        for attempt in 1..=3 {
            match fleet.store.throttle_release(&slot).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "could not release a provider slot");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }
    throttles.released.notify_waiters();
}

/// One provider call's slot; dropping it frees the slot (the rate windows keep its start).
#[derive(Debug)]
pub struct Permit {
    throttles: Arc<Throttles>,
    provider: String,
    /// The slot in the fleet's database (`None` in process, or for an unlimited provider).
    slot: Option<String>,
    /// The call's id in this process's state (in process only).
    call: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(fleet) = &self.throttles.fleet else {
            self.throttles.release(&self.provider, self.call);
            return;
        };
        let Some(slot) = self.slot.take() else {
            return;
        };
        // Not renewed from now on: released below, or given back when its lease expires.
        fleet.held().remove(&slot);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(release_shared(self.throttles.clone(), slot));
        }
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
    fn a_full_window_says_how_long_until_its_oldest_call_leaves() {
        let mut state = State::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let l = limits(Some(2), None);
        let first = state.try_take(&l, t0).unwrap();
        let second = state.try_take(&l, t0 + ms(100)).unwrap();
        // Both in flight: they count as "now", so a full window from now.
        assert_eq!(
            state.try_take(&l, t0 + ms(200)),
            Err(ms(1000) + WINDOW_MARGIN)
        );
        state.end(first, t0 + ms(300));
        state.end(second, t0 + ms(400));
        // Counted from their ends: the older leaves the window at 300 ms + 1 s + margin.
        let wait = state.try_take(&l, t0 + ms(500)).unwrap_err();
        assert_eq!(wait, ms(800) + WINDOW_MARGIN);
        assert!(state.try_take(&l, t0 + ms(1299) + WINDOW_MARGIN).is_err());
        assert!(state.try_take(&l, t0 + ms(1300) + WINDOW_MARGIN).is_ok());
    }

    #[test]
    fn in_flight_and_pause_hold_slots_back() {
        let mut state = State::default();
        let t0 = Instant::now();
        let l = limits(None, Some(1));
        let call = state.try_take(&l, t0).unwrap();
        assert!(state.try_take(&l, t0).is_err());
        state.end(call, t0);
        state.paused_until = Some(t0 + Duration::from_secs(3));
        assert_eq!(state.try_take(&l, t0), Err(Duration::from_secs(3)));
        assert!(state.try_take(&l, t0 + Duration::from_secs(3)).is_ok());
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

    /// One process owns an embedded database: its throttles stay in memory, with no database
    /// round trip per call.
    #[tokio::test]
    async fn a_store_no_other_process_shares_keeps_throttles_in_process() {
        let store = puffle_store::open("sqlite::memory:").await.unwrap();
        assert!(Throttles::fleet(store).fleet.is_none());
    }
}
