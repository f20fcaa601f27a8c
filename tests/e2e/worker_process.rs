//! `puffle worker`: a worker process with no HTTP API executes the runs an API-only server
//! (`run_worker = false`, i.e. `puffle serve --no-worker`) accepts, and stops cleanly on SIGTERM.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_runs_what_an_api_only_server_accepts() {
    let app = TestApp::spawn_with(|c| c.run_worker = false).await;
    let leads = app.companies("worker", 30, None).await;
    let run = app
        .start_run(json!({"enrichmentId": "company_domain",
            "scope": {"type": "explicit_leads", "leadIds": leads}}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.run_status(&run).await["status"],
        "pending",
        "no worker runs in the API process"
    );

    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_puffle"))
        .args(["worker", "--database-url", &app.database_url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("puffle worker starts");
    // Until the run ends, the worker must keep running (if it dies, say why).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        if let Some(status) = worker.try_wait().expect("worker status") {
            let out = worker.wait_with_output().expect("worker output");
            panic!(
                "puffle worker exited early ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let run = app.run_status(&run).await;
        if run["status"] != "pending" && run["status"] != "running" {
            break run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run not done after 30 s: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "completed", "{done}");
    // A worker process only executes runs: all of it yields to interactive work.
    let threads = thread_priorities(worker.id());
    assert!(threads.iter().all(|(_, nice)| *nice >= 10), "{threads:?}");
    assert_eq!(done["scope"]["counts"]["completed"], 30);
    let lead = app.get_lead(&leads[0]).await.expect("lead exists");
    assert!(
        lead["attributes"]["company_domain"]["domain"].is_string(),
        "{lead}"
    );

    let term = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || worker.wait_with_output())
        .await
        .expect("join")
        .expect("worker exits");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        status.status.success(),
        "exit {:?}: {stderr}",
        status.status
    );
    assert!(stderr.contains("Shutting down"), "{stderr}");
}
