//! The engine's own tokio runtime, whose threads run at a lower CPU priority than the API's.
//!
//! One `puffle serve` process answers requests and executes runs. A large run keeps every core
//! busy; on the API's runtime its tasks would queue requests behind batches of items, and at the
//! same priority its threads would take the CPU from the threads answering them. On its own
//! runtime at a lower priority (nice +10), the engine gets every cycle the API leaves idle and
//! yields as soon as a request needs one: the engine's throughput is the same when the API is
//! quiet, the API's latency the same when the engine is busy.

use tokio::runtime::{Builder, Runtime};

/// How much less CPU weight the engine's threads get than the API's (Linux nice value).
const ENGINE_NICE: i32 = 10;

/// A multi-threaded runtime with as many threads as cores, each at a lower priority.
pub fn engine_runtime() -> std::io::Result<Runtime> {
    Builder::new_multi_thread()
        .thread_name("puffle-engine")
        .on_thread_start(lower_this_threads_priority)
        .enable_all()
        .build()
}

/// Lower the calling thread's priority (on Linux the nice value is per thread). Failing to is
/// harmless: the engine then runs at the API's priority, as it would without its own runtime.
#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    // SAFETY: setpriority takes plain integers and reads no memory of ours; `who = 0` with
    // PRIO_PROCESS names the calling thread.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, ENGINE_NICE) };
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}
