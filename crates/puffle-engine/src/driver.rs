//! A thread of its own for the loops that drive the database's writes: the claimer and the
//! outcome writer. Their transactions are a series of hand-offs to a database connection (a
//! statement goes out, its answer wakes the task, the next one goes out) and the connection is
//! held meanwhile — on SQLite, the one writer every claim and finish needs. On the engine's
//! shared threads an answer waited behind whatever task ran there (a batch's leads being parsed,
//! built-ins executing); on this thread, which does nothing else, it is taken up at once.

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A single-threaded runtime on a thread of its own; it stops (and drops what is still spawned
/// on it) when this is dropped.
pub(crate) struct DriverThread {
    handle: Handle,
    /// Dropped with this: the thread's runtime then stops.
    _stop: oneshot::Sender<()>,
}

impl DriverThread {
    /// Start the thread. It inherits the calling thread's scheduling priority.
    pub(crate) fn start() -> std::io::Result<DriverThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        // Not joined when stopped: a drop may happen on an async thread, which must not block;
        // the thread ends on its own once its runtime has dropped its tasks.
        std::thread::Builder::new()
            .name("puffle-driver".to_string())
            .spawn(move || {
                // Ends when the sender is dropped.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(DriverThread {
            handle,
            _stop: stop,
        })
    }

    /// Where to spawn the tasks that run on this thread.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_driver_thread_until_it_is_dropped() {
        let driver = DriverThread::start().expect("thread");
        let name = driver
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .expect("task");
        assert_eq!(name.as_deref(), Some("puffle-driver"));

        // A task still waiting when the driver goes is dropped, not left hanging.
        let (_keep, never) = oneshot::channel::<()>();
        let waiting = driver.handle().spawn(async move {
            let _ = never.await;
        });
        drop(driver);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert!(ended
            .expect("the task ended")
            .is_err_and(|e| e.is_cancelled()));
    }
}
