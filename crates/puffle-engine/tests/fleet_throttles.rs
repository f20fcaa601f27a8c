//! Provider throttles shared by a fleet: two `Throttles::fleet`, each over its own pool on one
//! PostgreSQL database (as two worker processes), call one loopback vendor that records when each
//! request arrives and how many are in flight. The limits must hold at the vendor.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use puffle_engine::throttle::{ProviderLimits, Throttles};
use puffle_store::scratch::{server_url, ScratchDatabase};
use puffle_store::Store;

/// What the vendor saw: arrival times, requests in flight now and at most.
#[derive(Default)]
struct Seen {
    arrivals: Vec<Instant>,
    in_flight: u32,
    max_in_flight: u32,
}

/// A vendor on loopback answering after `hold`; returns its URL and what it saw. It runs on a
/// thread and runtime of its own, like a remote server: the callers' tasks do not delay its
/// clock readings.
async fn vendor(hold: Duration) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = seen.clone();
    let app = Router::new().route(
        "/",
        get(move || {
            let seen = state.clone();
            async move {
                {
                    let mut s = seen.lock().unwrap();
                    s.arrivals.push(Instant::now());
                    s.in_flight += 1;
                    s.max_in_flight = s.max_in_flight.max(s.in_flight);
                }
                tokio::time::sleep(hold).await;
                seen.lock().unwrap().in_flight -= 1;
                "ok"
            }
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await
        })
    });
    (url, seen)
}

/// The tests of this file run one at a time: each measures timing at its vendor, and the others'
/// load would only add noise.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two migrated store handles (two pools) on a fresh database, or `None` without a server.
async fn two_processes() -> Option<(Arc<dyn Store>, Arc<dyn Store>, ScratchDatabase)> {
    let server = server_url();
    let db = match ScratchDatabase::create(&server).await {
        Ok(db) => db,
        Err(e) if std::env::var_os("PUFFLE_TEST_REQUIRE_POSTGRES").is_some() => {
            panic!("no PostgreSQL at {server}: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no PostgreSQL at {server} ({e})");
            return None;
        }
    };
    let a = puffle_store::open(&db.url).await.unwrap();
    a.migrate().await.unwrap();
    let b = puffle_store::open(&db.url).await.unwrap();
    Some((a, b, db))
}

/// `calls` requests to `url`, alternating between the two processes' throttles, all at once.
async fn call_from_both(
    stores: [&Arc<dyn Store>; 2],
    limits: ProviderLimits,
    url: &str,
    calls: usize,
) {
    let throttles = stores.map(|s| Throttles::fleet(s.clone()));
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let (throttles, client, url) =
                (throttles[i % 2].clone(), client.clone(), url.to_string());
            tokio::spawn(async move {
                let _permit = throttles.acquire("vendor", &limits).await;
                client
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_for_the_whole_fleet_at_the_vendor() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some((a, b, _db)) = two_processes().await else {
        return;
    };
    let (url, seen) = vendor(Duration::ZERO).await;
    let limits = ProviderLimits {
        per_second: Some(5),
        per_minute: None,
        max_in_flight: None,
    };
    call_from_both([&a, &b], limits, &url, 40).await;
    let mut arrivals = seen.lock().unwrap().arrivals.clone();
    arrivals.sort();
    assert_eq!(arrivals.len(), 40);
    // Six arrivals within less than a second would be six in one window of one second.
    for (i, six) in arrivals.windows(6).enumerate() {
        let span = six[5] - six[0];
        assert!(
            span >= Duration::from_secs(1),
            "arrivals {i}..={} came within {span:?}",
            i + 5
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_limited_across_the_fleet() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some((a, b, _db)) = two_processes().await else {
        return;
    };
    let (url, seen) = vendor(Duration::from_millis(50)).await;
    let limits = ProviderLimits {
        per_second: None,
        per_minute: None,
        max_in_flight: Some(2),
    };
    call_from_both([&a, &b], limits, &url, 20).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.arrivals.len(), 20);
    assert!(seen.max_in_flight <= 2, "{} in flight", seen.max_in_flight);
}

/// With the database gone, no permit is handed out (the provider is never called without a
/// slot); the throttles keep retrying instead of panicking.
#[tokio::test]
async fn no_permit_without_the_database() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some((a, _b, db)) = two_processes().await else {
        return;
    };
    let throttles = Throttles::fleet(a);
    let limits = ProviderLimits {
        per_second: Some(100),
        per_minute: None,
        max_in_flight: None,
    };
    drop(throttles.acquire("vendor", &limits).await);
    drop(db);
    let attempt =
        tokio::time::timeout(Duration::from_secs(1), throttles.acquire("vendor", &limits)).await;
    assert!(attempt.is_err(), "a permit was given without a slot");
}

/// A `Retry-After` one process was given holds back the other: its call reaches the vendor only
/// after the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_recorded_by_one_process_holds_back_the_other() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some((a, b, _db)) = two_processes().await else {
        return;
    };
    let (url, seen) = vendor(Duration::ZERO).await;
    let (told, other) = (Throttles::fleet(a), Throttles::fleet(b));
    let paused_at = Instant::now();
    told.pause("vendor", Duration::from_secs(1)).await;
    for limits in [
        ProviderLimits::default(),
        ProviderLimits {
            max_in_flight: Some(1),
            ..ProviderLimits::default()
        },
    ] {
        let _permit = other.acquire("vendor", &limits).await;
        reqwest::get(&url)
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
    let arrivals = seen.lock().unwrap().arrivals.clone();
    assert_eq!(arrivals.len(), 2);
    for arrived in arrivals {
        assert!(
            arrived - paused_at >= Duration::from_secs(1),
            "called during the pause"
        );
    }
}
