//! `puffle serve` as a newcomer runs it: an empty folder, the default database, a printed key and
//! a first curl; healthy; Ctrl-C/SIGTERM stops it cleanly; a second start reuses the database.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::support::{own_priority, thread_priorities};

/// Start `puffle serve` in `dir` on a free port; returns the child, its base URL and what it
/// printed on stderr up to the "listening" line.
fn serve(dir: &std::path::Path) -> (Child, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_puffle"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("PUFFLE_DATABASE_URL")
        .env_remove("PUFFLE_BOOTSTRAP_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("puffle serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = Vec::new();
    let mut base = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("a stderr line");
        if let Some(url) = line.strip_prefix("Puffle is listening on ") {
            base = Some(url.trim().to_string());
        }
        let done = line.starts_with("Try: ");
        lines.push(line);
        if done {
            break;
        }
    }
    let base = base.unwrap_or_else(|| panic!("no listening line in {lines:?}"));
    (child, base, lines)
}

fn terminate(child: Child) -> std::process::Output {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    child.wait_with_output().expect("serve exits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_an_empty_folder_prints_a_key_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    let (child, base, lines) = tokio::task::spawn_blocking(move || serve(&path))
        .await
        .expect("join");
    let key = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("export PUFFLE_API_KEY="))
        .unwrap_or_else(|| panic!("no key printed: {lines:?}"))
        .to_string();
    assert!(key.starts_with("pk_live_") && key.len() == 72, "{key}");
    assert_eq!(
        lines.iter().filter(|l| l.contains(&key)).count(),
        1,
        "the key is printed once"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("Try: curl")),
        "{lines:?}"
    );
    assert!(
        dir.path().join("puffle.db").exists(),
        "the default database is in the folder"
    );

    let client = reqwest::Client::new();
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let account = client
        .get(format!("{base}/api/account"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("account");
    assert_eq!(account.status(), 200);
    let account: serde_json::Value = account.json().await.expect("JSON");
    assert_eq!(account["workspace"]["name"], "default");
    assert_eq!(account["user"]["email"], "admin@localhost");
    assert_eq!(account["credits"]["balance"], 1000);

    // Background work yields to requests: the engine's threads and the SQLite writer run at a
    // lower priority than the threads answering the API.
    let threads = thread_priorities(child.id());
    let own = own_priority();
    let of = |name: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, nice)| *nice)
            .collect()
    };
    for background in ["puffle-engine", "puffle-writer", "puffle-wal-ckpt"] {
        let nices = of(background);
        assert!(!nices.is_empty(), "no {background} thread: {threads:?}");
        assert!(nices.iter().all(|n| *n >= 10), "{background}: {threads:?}");
    }
    let api = of("tokio-rt-worker");
    assert!(!api.is_empty(), "{threads:?}");
    assert!(
        api.iter().all(|n| *n == own),
        "API threads keep the priority: {threads:?}"
    );

    let out = tokio::task::spawn_blocking(move || terminate(child))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "clean exit on SIGTERM: {:?}",
        out.status
    );

    // Started again on the same folder: the same database, no new key, the old key works.
    let path = dir.path().to_path_buf();
    let (child, base, lines) = tokio::task::spawn_blocking(move || serve(&path))
        .await
        .expect("join");
    assert!(
        !lines.iter().any(|l| l.contains("pk_live_")),
        "no new key: {lines:?}"
    );
    let again = client
        .get(format!("{base}/api/account"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("account");
    assert_eq!(again.status(), 200);
    let out = tokio::task::spawn_blocking(move || terminate(child))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "clean exit on SIGTERM: {:?}",
        out.status
    );
}
