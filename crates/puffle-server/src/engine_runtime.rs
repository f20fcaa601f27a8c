//! The worker pool of a server runs on a runtime of its own, so the API's requests never queue
//! behind the engine's tasks on the same threads: while a big run executes, a status read is
//! answered as soon as the operating system runs one of the API's threads.

use puffle_engine::WorkerPool;
use tokio::runtime::Runtime;

/// A worker pool and the runtime its tasks run on.
pub struct EngineRuntime {
    pool: Option<WorkerPool>,
    runtime: Option<Runtime>,
}

impl EngineRuntime {
    /// Build the runtime (`threads` workers) and start the pool on it.
    pub fn start(threads: usize, start: impl FnOnce() -> WorkerPool) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("puffle-engine")
            .on_thread_start(puffle_store::priority::lower_this_thread)
            .enable_all()
            .build()?;
        let pool = {
            let _inside = runtime.enter();
            start()
        };
        Ok(EngineRuntime {
            pool: Some(pool),
            runtime: Some(runtime),
        })
    }

    /// Stop the pool (see [`WorkerPool::shutdown`]); its runtime stops as this is dropped.
    pub async fn shutdown(mut self) {
        if let Some(pool) = self.pool.take() {
            pool.shutdown().await;
        }
    }
}

impl Drop for EngineRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its threads stop, which an async caller must not do;
        // whatever is left of the pool has nothing to finish that a restart would not redo.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
