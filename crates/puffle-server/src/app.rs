//! Building the router and running the server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use puffle_domain::account::ApiKey;
use puffle_domain::credits::Prices;
use puffle_engine::{Catalog, EngineConfig, WorkerPool};
use puffle_store::Store;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::engine_runtime::EngineRuntime;
use crate::limits::{RateLimit, RateLimiter};

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free one (see [`Running::addr`]).
    pub bind: String,
    pub database_url: String,
    /// Largest JSON body accepted; larger ones are `413 payload_too_large`.
    pub max_body_bytes: usize,
    /// Largest CSV import body accepted.
    pub max_csv_bytes: usize,
    /// Most rows one CSV import may hold.
    pub max_csv_rows: usize,
    /// Most leads one JSON import (`POST /api/lists/import`) may hold.
    pub max_import_leads: usize,
    /// Most lead ids one membership request (`/api/lists/{id}/leads`) may name.
    pub max_ids_per_request: usize,
    /// Most items one enrichment run may have (the resolved scope, and `scope.leadIds`).
    pub max_items_per_run: usize,
    /// Most runs one workspace may have pending or running at once (`0`: no limit).
    pub max_active_runs: u32,
    /// Deepest nesting of arrays and objects in a JSON body (serde_json stops at 128 anyway).
    pub max_json_depth: usize,
    /// Largest request target plus headers, in bytes; larger is `431`.
    pub max_header_bytes: usize,
    /// Requests per API key: a token bucket (`per_second: 0` turns it off).
    pub rate_limit: RateLimit,
    /// The key to bootstrap an empty database with; a random one when `None`.
    pub bootstrap_api_key: Option<ApiKey>,
    /// Run a worker pool in this process (`puffle serve --no-worker` turns it off).
    pub run_worker: bool,
    /// Worker pool, retries and provider settings.
    pub engine: EngineConfig,
}

impl Config {
    pub fn new(bind: impl Into<String>, database_url: impl Into<String>) -> Self {
        Config {
            bind: bind.into(),
            database_url: database_url.into(),
            max_body_bytes: 10 * 1024 * 1024,
            max_csv_bytes: 256 * 1024 * 1024,
            max_csv_rows: 100_000,
            max_import_leads: 500,
            max_ids_per_request: 1000,
            max_items_per_run: 1_000_000,
            max_active_runs: 100,
            max_json_depth: 64,
            max_header_bytes: 32 * 1024,
            // Generous: a script paging as fast as it can on loopback stays below it; a runaway
            // loop does not.
            rate_limit: RateLimit {
                per_second: 200.0,
                burst: 2000.0,
            },
            bootstrap_api_key: None,
            run_worker: true,
            engine: EngineConfig::default(),
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub prices: Arc<Prices>,
    pub config: Arc<Config>,
    pub metrics: Arc<crate::routes::Metrics>,
    pub rate_limiter: Arc<RateLimiter>,
    pub catalog: Arc<Catalog>,
    /// Notified when a run is created, so an idle worker starts at once.
    pub wake: Arc<Notify>,
}

/// A server that is listening.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The key of the admin created on an empty database (`None` if it was not empty).
    pub bootstrap_key: Option<ApiKey>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    workers: Option<EngineRuntime>,
}

impl Running {
    /// Stop accepting connections, let in-flight requests finish, and return.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self.task.await;
        // In-flight requests are answered first; then the workers finish or hand back items.
        if let Some(workers) = self.workers {
            workers.shutdown().await;
        }
        served.context("server task panicked")??;
        Ok(())
    }
}

/// Open the database, migrate, bootstrap an empty one, and start serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let store = puffle_store::open(&config.database_url)
        .await
        .with_context(|| "opening the database")?;
    store.migrate().await.context("applying migrations")?;
    let bootstrap_key = bootstrap(store.as_ref(), config.bootstrap_api_key.clone()).await?;
    let listener = tokio::net::TcpListener::bind(&config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    let catalog = Arc::new(Catalog::new(&config.engine));
    let wake = Arc::new(Notify::new());
    let metrics = Arc::new(crate::routes::Metrics::default());
    let workers = if config.run_worker {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = EngineRuntime::start(threads, || {
            WorkerPool::start_observed(
                store.clone(),
                catalog.clone(),
                config.engine.clone(),
                wake.clone(),
                metrics.engine.clone(),
            )
        })
        .context("starting the worker pool's runtime")?;
        Some(runtime)
    } else {
        None
    };
    let state = AppState {
        store,
        prices: Arc::new(Prices::default()),
        rate_limiter: Arc::new(RateLimiter::new(config.rate_limit)),
        config: Arc::new(config),
        metrics,
        catalog,
        wake,
    };
    let router = crate::routes::router(state);
    let (shutdown, mut rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    Ok(Running {
        addr,
        bootstrap_key,
        shutdown,
        task,
        workers,
    })
}

/// Create the first workspace and admin on an empty database; the key is returned to be shown
/// once.
async fn bootstrap(store: &dyn Store, key: Option<ApiKey>) -> anyhow::Result<Option<ApiKey>> {
    let key = key.unwrap_or_else(new_api_key);
    let created = store
        .bootstrap("admin@localhost", &key)
        .await
        .context("bootstrapping the empty database")?;
    Ok(created.map(|_| key))
}

/// A fresh API key from the operating system's random generator.
pub fn new_api_key() -> ApiKey {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    ApiKey::from_random(bytes)
}
