//! Provider throttles in the store: what every backend must do, and (PostgreSQL) that two
//! handles on one database — two pools, as two processes would have — share one limit.

use std::sync::Arc;
use std::time::Duration;

use crate::{SlotLimits, Store, Take, ThrottleStore};

const LEASE: Duration = Duration::from_secs(60);

fn limits(per_second: Option<u32>, per_minute: Option<u32>, in_flight: Option<u32>) -> SlotLimits {
    SlotLimits {
        per_second,
        per_minute,
        max_in_flight: in_flight,
        margin: Duration::from_millis(20),
    }
}

async fn take(store: &dyn Store, provider: &str, l: &SlotLimits, lease: Duration) -> Take {
    store
        .throttle_take(provider, l, "holder-a", lease)
        .await
        .unwrap()
}

fn slot(taken: Take) -> String {
    match taken {
        Take::Taken(Some(slot)) => slot,
        other => panic!("expected a slot, got {other:?}"),
    }
}

fn wait(taken: Take) -> Duration {
    match taken {
        Take::Wait(d) => d,
        other => panic!("expected to wait, got {other:?}"),
    }
}

/// Rate windows, slots in flight, leases and pauses on one store handle.
pub async fn throttles_on_one_handle(store: &dyn Store) {
    // A full second window says how long until its oldest start leaves it.
    let l = limits(Some(3), None, None);
    for _ in 0..3 {
        slot(take(store, "rate", &l, LEASE).await);
    }
    let w = wait(take(store, "rate", &l, LEASE).await);
    assert!(
        w > Duration::ZERO && w <= Duration::from_millis(1020),
        "{w:?}"
    );
    // Releasing frees the slot in flight, not the start: the window stays full.
    let l1 = limits(None, None, Some(1));
    let first = slot(take(store, "busy", &l1, LEASE).await);
    wait(take(store, "busy", &l1, LEASE).await);
    store.throttle_release(&first).await.unwrap();
    store.throttle_release(&first).await.unwrap();
    let second = slot(take(store, "busy", &l1, LEASE).await);
    // A lease renewed in time keeps its slot; one left to expire gives it back.
    store.throttle_release(&second).await.unwrap();
    let short = slot(take(store, "busy", &l1, Duration::from_millis(1)).await);
    store
        .throttle_renew(std::slice::from_ref(&short), LEASE)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    wait(take(store, "busy", &l1, LEASE).await);
    store
        .throttle_renew(std::slice::from_ref(&short), Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    slot(take(store, "busy", &l1, LEASE).await);
    // A pause holds back every taker of its provider, limited or not, and no other provider;
    // a shorter pause does not cut a longer one short.
    store
        .throttle_pause("paused", Duration::from_secs(30))
        .await
        .unwrap();
    store
        .throttle_pause("paused", Duration::from_secs(1))
        .await
        .unwrap();
    let w = wait(take(store, "paused", &l1, LEASE).await);
    assert!(w > Duration::from_secs(25), "{w:?}");
    wait(take(store, "paused", &SlotLimits::default(), LEASE).await);
    assert_eq!(
        take(store, "free", &SlotLimits::default(), LEASE).await,
        Take::Taken(None)
    );
    slot(take(store, "other", &l1, LEASE).await);
}

/// Two handles on one PostgreSQL database, as two worker processes.
async fn two_handles() -> Option<(
    Arc<dyn Store>,
    Arc<dyn Store>,
    crate::scratch::ScratchDatabase,
)> {
    let (a, db) = super::postgres().await?;
    let b = crate::postgres::PgStore::open(&db.url).await.unwrap();
    Some((Arc::new(a), Arc::new(b), db))
}

/// `attempts` concurrent requests for a slot, alternating between the handles; how many got one.
async fn concurrent_takes(
    handles: [&Arc<dyn Store>; 2],
    provider: &str,
    l: SlotLimits,
    attempts: usize,
) -> usize {
    let tasks: Vec<_> = (0..attempts)
        .map(|i| {
            let store = handles[i % 2].clone();
            let provider = provider.to_string();
            tokio::spawn(async move {
                store
                    .throttle_take(&provider, &l, &format!("holder-{i}"), LEASE)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut taken = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Take::Taken(Some(_))) {
            taken += 1;
        }
    }
    taken
}

#[tokio::test]
async fn postgres_rate_and_in_flight_limits_hold_across_handles() {
    let Some((a, b, _db)) = two_handles().await else {
        return;
    };
    // A minute window: however the 40 attempts interleave, they fall in one window.
    let per_minute = limits(None, Some(5), None);
    assert_eq!(concurrent_takes([&a, &b], "rate", per_minute, 40).await, 5);
    let in_flight = limits(None, None, Some(3));
    assert_eq!(concurrent_takes([&a, &b], "busy", in_flight, 40).await, 3);
    // A slot released by one process is free for the other.
    let held = slot(take(a.as_ref(), "solo", &limits(None, None, Some(1)), LEASE).await);
    wait(take(b.as_ref(), "solo", &limits(None, None, Some(1)), LEASE).await);
    a.throttle_release(&held).await.unwrap();
    slot(take(b.as_ref(), "solo", &limits(None, None, Some(1)), LEASE).await);
}

#[tokio::test]
async fn postgres_a_vanished_holder_gives_its_slot_back_and_pauses_are_shared() {
    let Some((a, b, db)) = two_handles().await else {
        return;
    };
    let one = limits(None, None, Some(1));
    // The first process takes a slot under a short lease and dies without releasing it.
    slot(take(a.as_ref(), "vendor", &one, Duration::from_millis(200)).await);
    drop(a);
    wait(take(b.as_ref(), "vendor", &one, LEASE).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    slot(take(b.as_ref(), "vendor", &one, LEASE).await);
    // A pause one process records holds the other back.
    let c = crate::postgres::PgStore::open(&db.url).await.unwrap();
    c.throttle_pause("limited", Duration::from_secs(20))
        .await
        .unwrap();
    let w = wait(take(b.as_ref(), "limited", &SlotLimits::default(), LEASE).await);
    assert!(w > Duration::from_secs(15), "{w:?}");
}
