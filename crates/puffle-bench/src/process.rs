//! The processes under test: build the release `puffle`, start `serve` / `worker` with a log file
//! each, wait until they are ready, read their memory, stop them.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The workspace this crate lives in (two levels above its manifest).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Build the release `puffle` binary and return its path. Building it here, not trusting a stale
/// binary, is what makes the figures belong to the tree being benchmarked.
pub fn build_release_binary() -> Result<PathBuf> {
    let root = workspace_root();
    // `cargo run` sets CARGO to the cargo that runs us; use the same toolchain.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the release `puffle` binary…");
    let mut cmd = Command::new(cargo);
    // `cargo run` hands us its package's variables (CARGO_PKG_*, CARGO_MANIFEST_*, …); some
    // build scripts watch such variables, so passing them on would rebuild the dependencies
    // each time, here and again in the next plain build. Keep only the user's cargo settings.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_BIN_")
            || matches!(name.as_str(), "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE")
        {
            cmd.env_remove(&name);
        }
    }
    let status = cmd
        .args(["build", "--release", "-p", "puffle-cli"])
        .current_dir(&root)
        .status()
        .context("running cargo build --release -p puffle-cli")?;
    if !status.success() {
        bail!("cargo build --release -p puffle-cli failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join("puffle");
    if !bin.is_file() {
        bail!("the build succeeded but {} is not there", bin.display());
    }
    Ok(bin)
}

/// A child process we started; killed on drop so a failed benchmark leaves nothing behind.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak and current resident memory, from /proc.
    pub fn memory(&self) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .with_context(|| format!("reading /proc status of {}", self.name))?;
        Memory::parse(&status).with_context(|| format!("no VmHWM/VmRSS for {}", self.name))
    }

    /// SIGTERM (a clean shutdown), then SIGKILL if it has not exited within `grace`.
    pub fn stop(mut self, grace: Duration) -> Result<()> {
        // std has no SIGTERM; the `kill` utility spares a libc dependency.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().ok();
        self.child.wait().ok();
        bail!(
            "{} did not stop within {grace:?} of SIGTERM; killed",
            self.name
        )
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log holds a line starting with `prefix`; return the rest of that line.
    fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log_text();
            if let Some(rest) = log.lines().find_map(|l| l.strip_prefix(prefix)) {
                return Ok(rest.trim().to_string());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; its log:\n{}",
                    self.name,
                    tail(&log, 20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {timeout:?}; its log:\n{}",
                    self.name,
                    tail(&log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How to start `puffle` processes for one benchmark.
#[derive(Clone)]
pub struct Launcher {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub database_url: String,
    pub env: Vec<(String, String)>,
}

impl Launcher {
    fn spawn(&self, name: &str, args: &[&str]) -> Result<Proc> {
        let log = self.dir.join(format!("{name}.log"));
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .arg("--database-url")
            .arg(&self.database_url)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        // SAFETY: between fork and exec only async-signal-safe calls: setsid and prctl.
        unsafe {
            cmd.pre_exec(|| {
                // A session of its own, as a service manager starts each service. Linux shares
                // the CPU between sessions (autogroups) before it weighs their threads: in the
                // harness's session, the server's request threads would be weighed together with
                // the worker's and the harness's CPU use, which no deployment does.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Out of the terminal's process group, Ctrl-C no longer reaches it: it goes
                // when the harness goes. (Strictly, when the thread that started it ends: the
                // harness starts its processes from its main thread only.)
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} {}", self.bin.display(), args.join(" ")))?;
        Ok(Proc {
            name: name.into(),
            child,
            log,
        })
    }

    /// `puffle serve` on a free port; returns it once it listens, with its base URL.
    pub fn serve(&self, name: &str, no_worker: bool) -> Result<(Proc, String)> {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
        if no_worker {
            args.push("--no-worker");
        }
        let mut proc = self.spawn(name, &args)?;
        // Port 0: the server picks the port and prints it, so no two benchmarks can race for one.
        let base = proc.wait_for_line("Puffle is listening on ", Duration::from_secs(120))?;
        Ok((proc, base))
    }

    /// A `puffle worker` process beside the server (the PostgreSQL shape).
    pub fn worker(&self, name: &str) -> Result<Proc> {
        let mut proc = self.spawn(name, &["worker"])?;
        proc.wait_for_line("Puffle worker running", Duration::from_secs(60))?;
        Ok(proc)
    }
}

/// The processes under test: `serve`, plus `worker` processes when the server runs without one.
pub struct Fleet {
    launcher: Launcher,
    worker_processes: usize,
    pub serve: Proc,
    pub workers: Vec<Proc>,
    pub base: String,
}

impl Fleet {
    pub fn start(launcher: Launcher, worker_processes: usize) -> Result<Fleet> {
        let (serve, base) = launcher.serve("serve", worker_processes > 0)?;
        let workers = (0..worker_processes)
            .map(|i| launcher.worker(&format!("worker{i}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Fleet {
            launcher,
            worker_processes,
            serve,
            workers,
            base,
        })
    }

    /// Stop everything and start afresh on the same database (a new port, fresh memory peaks).
    pub fn restart(self) -> Result<Fleet> {
        let Fleet {
            launcher,
            worker_processes,
            serve,
            workers,
            ..
        } = self;
        for w in workers {
            w.stop(Duration::from_secs(30))?;
        }
        serve.stop(Duration::from_secs(30))?;
        Fleet::start(launcher, worker_processes)
    }

    pub fn stop(self) -> Result<()> {
        for w in self.workers {
            w.stop(Duration::from_secs(30))?;
        }
        self.serve.stop(Duration::from_secs(30))
    }

    /// Memory of every process, by name.
    pub fn memory(&self) -> Result<Vec<(String, Memory)>> {
        std::iter::once(&self.serve)
            .chain(&self.workers)
            .map(|p| Ok((p.name.clone(), p.memory()?)))
            .collect()
    }
}

/// Resident memory of a process, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Memory {
    pub peak_mib: f64,
    pub now_mib: f64,
}

impl Memory {
    /// Read VmHWM (peak resident set) and VmRSS from the text of /proc/<pid>/status.
    pub fn parse(status: &str) -> Option<Memory> {
        let field = |name: &str| -> Option<f64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kib: f64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib / 1024.0)
        };
        Some(Memory {
            peak_mib: field("VmHWM:")?,
            now_mib: field("VmRSS:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status_memory() {
        let status =
            "Name:\tpuffle\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(
            Memory::parse(status),
            Some(Memory {
                peak_mib: 50.0,
                now_mib: 40.0
            })
        );
        assert_eq!(Memory::parse("Name:\tpuffle\n"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
