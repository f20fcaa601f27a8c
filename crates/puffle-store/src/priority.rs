//! Background work yields to requests: threads that only execute runs (the engine's runtime, the
//! SQLite writer and checkpointer) run at a lower scheduling priority, so that when they compete
//! with the API for a core the API runs first. They lose nothing when the machine has cores to
//! spare; measured on 2 cores, a status read during a big run waited for one far less often.
//!
//! Linux only (elsewhere these do nothing): there the nice value belongs to each thread, and a
//! thread inherits it from the thread that starts it.

/// The nice value of background threads (0 is the default; 19 the lowest priority).
pub const BACKGROUND_NICE: i32 = 10;

/// Lower the calling thread's priority to [`BACKGROUND_NICE`].
pub fn lower_this_thread() {
    lower(0);
}

/// Lower the priority of this process's threads named `name` (as the system shows it: at most
/// 15 bytes) to [`BACKGROUND_NICE`].
pub fn lower_threads_named(name: &str) {
    lower_threads_where(|comm| comm == name);
}

/// Lower the priority of every thread of this process (and so of the threads they start): for a
/// process that only executes runs, such as `puffle worker`.
pub fn lower_this_process() {
    lower_threads_where(|_| true);
}

fn lower_threads_where(pick: impl Fn(&str) -> bool) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let picked = std::fs::read_to_string(task.path().join("comm"))
            .is_ok_and(|comm| pick(comm.trim_end()));
        let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
        if let (true, Some(tid)) = (picked, tid) {
            lower(tid);
        }
    }
}

/// Lower thread `tid`'s priority (0: the calling thread) to [`BACKGROUND_NICE`], unless it is
/// that low already; failure leaves it as it was.
#[cfg(target_os = "linux")]
fn lower(tid: u32) {
    // SAFETY: getpriority and setpriority only read their arguments. On Linux, PRIO_PROCESS
    // with a thread id names that one thread.
    unsafe {
        if libc::getpriority(libc::PRIO_PROCESS, tid) < BACKGROUND_NICE {
            libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn lower(_tid: u32) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice_of(tid: u32) -> i32 {
        // SAFETY: as above; getpriority only reads its arguments.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
    }

    #[test]
    fn threads_are_lowered_by_name_and_others_keep_their_priority() {
        let named = std::thread::Builder::new()
            .name("prio-test-bg".into())
            .spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(300));
                nice_of(0)
            })
            .expect("spawn");
        let before = nice_of(0);
        let lowered = before.max(BACKGROUND_NICE);
        std::thread::sleep(std::time::Duration::from_millis(50));
        lower_threads_named("prio-test-bg");
        assert_eq!(named.join().expect("join"), lowered);
        assert_eq!(nice_of(0), before, "the calling thread is untouched");

        let own = std::thread::spawn(|| {
            lower_this_thread();
            nice_of(0)
        });
        assert_eq!(own.join().expect("join"), lowered);
        assert_eq!(nice_of(0), before);
    }
}
