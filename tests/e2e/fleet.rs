//! A fleet on PostgreSQL: worker processes killed with SIGKILL at random lose no item and write
//! no result twice; a PostgreSQL restart mid-run is survived without anyone's help. (SQLite has
//! one process by design: these run in the PostgreSQL build of the suite only.)

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::support::*;

/// A `puffle worker` process against `database_url` with short leases (a killed worker's items
/// come back within about two seconds).
fn spawn_worker(database_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_puffle"))
        .args(["worker", "--database-url", database_url])
        .env("PUFFLE_HTTP_ALLOW_HOSTS", "127.0.0.1")
        .env("PUFFLE_LEASE_SECONDS", "2")
        .env("PUFFLE_WORKER_CONCURRENCY", "8")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("puffle worker starts")
}

/// Record, with triggers, every time an item becomes `completed` and every time a lead's
/// attributes change: "written exactly once" is then a count.
async fn install_write_audit(database_url: &str) {
    let mut db = PgConnection::connect(database_url).await.expect("connect");
    for sql in [
        "CREATE TABLE write_audit (kind TEXT NOT NULL, id TEXT NOT NULL)",
        "CREATE FUNCTION audit_completion() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO write_audit VALUES ('item', NEW.id); RETURN NEW; END $$",
        "CREATE TRIGGER audit_completion AFTER UPDATE ON enrichment_items FOR EACH ROW \
           WHEN (NEW.status = 'completed' AND OLD.status IS DISTINCT FROM 'completed') \
           EXECUTE FUNCTION audit_completion()",
        "CREATE FUNCTION audit_attributes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO write_audit VALUES ('lead', NEW.id); RETURN NEW; END $$",
        "CREATE TRIGGER audit_attributes AFTER UPDATE ON leads FOR EACH ROW \
           WHEN (NEW.attributes IS DISTINCT FROM OLD.attributes) \
           EXECUTE FUNCTION audit_attributes()",
    ] {
        sqlx::query(sql).execute(&mut db).await.expect(sql);
    }
}

/// How many times each id of `kind` was written.
async fn audited_writes(database_url: &str, kind: &str) -> HashMap<String, i64> {
    let mut db = PgConnection::connect(database_url).await.expect("connect");
    sqlx::query_as::<_, (String, i64)>(
        "SELECT id, count(*) FROM write_audit WHERE kind = $1 GROUP BY id",
    )
    .bind(kind)
    .fetch_all(&mut db)
    .await
    .expect("audit readable")
    .into_iter()
    .collect()
}

/// A vendor that answers every call for a domain with a value no other call gets
/// (`<domain>#<call number>`), after a short random delay.
async fn unique_answer_vendor() -> Provider {
    Provider::start(|r| {
        let domain = r.path().trim_start_matches("/co/").to_string();
        let delay = rand::thread_rng().gen_range(5..40);
        Reply::json(json!({"value": format!("{domain}#{}", r.index)}))
            .after(Duration::from_millis(delay))
    })
    .await
}

fn http_run(vendor: &Provider, leads: &[String]) -> Value {
    json!({"enrichmentId": "custom_http",
           "input": {"url": vendor.url("/co/") + "{{lead.domain}}", "resultPointer": "/value"},
           "scope": {"type": "explicit_leads", "leadIds": leads}})
}

/// Every item completed, its result is an answer the vendor gave for its own lead, and that same
/// answer is what the lead carries.
async fn assert_every_result_landed(app: &TestApp, run: &str, leads: &[String]) {
    let items = app.all_items(run).await;
    assert_eq!(items.len(), leads.len());
    let leads_by_id: HashMap<String, Value> = app
        .all_leads_as(&app.key)
        .await
        .into_iter()
        .map(|l| (l["id"].as_str().unwrap().to_string(), l))
        .collect();
    for item in &items {
        assert_eq!(item["status"], "completed", "{item}");
        let lead = &leads_by_id[item["leadId"].as_str().unwrap()];
        let domain = lead["domain"].as_str().unwrap();
        let result = item["result"].as_str().expect("a string result");
        assert!(
            result.starts_with(&format!("{domain}#")),
            "{result} for {domain}"
        );
        assert_eq!(lead["attributes"]["custom_http"], item["result"], "{lead}");
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_lose_nothing_and_write_nothing_twice() {
    if !on_postgres() {
        return;
    }
    let app = TestApp::spawn_with(|c| c.run_worker = false).await;
    install_write_audit(&app.database_url).await;
    let vendor = unique_answer_vendor().await;
    let leads = app.companies("fleet", 3000, None).await;
    app.grant(3000).await;
    let run = app.start_run(http_run(&vendor, &leads)).await;

    let mut workers: Vec<Child> = (0..3).map(|_| spawn_worker(&app.database_url)).collect();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    let done = loop {
        let pause = rand::thread_rng().gen_range(200..900);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let status = app.run_status(&run).await;
        if status["status"] != "pending" && status["status"] != "running" {
            break status;
        }
        assert!(Instant::now() < deadline, "run not done in time: {status}");
        let victim = rand::thread_rng().gen_range(0..workers.len());
        kill(&mut workers[victim]);
        kills += 1;
        workers[victim] = spawn_worker(&app.database_url);
    };
    workers.iter_mut().for_each(kill);

    assert!(kills >= 3, "the run ended before the fleet was disturbed");
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["scope"]["counts"]["completed"], 3000, "{done}");
    assert_every_result_landed(&app, &run, &leads).await;
    let item_writes = audited_writes(&app.database_url, "item").await;
    let lead_writes = audited_writes(&app.database_url, "lead").await;
    assert_eq!(item_writes.len(), 3000);
    assert!(
        item_writes.values().all(|n| *n == 1),
        "an item completed twice"
    );
    assert_eq!(lead_writes.len(), 3000);
    assert!(
        lead_writes.values().all(|n| *n == 1),
        "a result written twice"
    );
    eprintln!(
        "fleet: {kills} kills, vendor calls {} for 3000 items",
        vendor.count()
    );
}

/// A PostgreSQL server of the test's own (initdb in a temp dir, its own port), so restarting it
/// disturbs no other test. `None` when this machine cannot run one (not root, no binaries).
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> Option<PrivatePostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())?;
        let dir = tempfile::tempdir().ok()?;
        let chowned = Command::new("chown")
            .args(["-R", "postgres", &dir.path().display().to_string()])
            .status()
            .ok()?;
        if !chowned.success() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let pg = PrivatePostgres { dir, bin, port };
        let data = pg.data();
        pg.as_postgres("initdb", &["-D", &data, "-A", "trust", "-U", "postgres"])
            .then_some(())?;
        pg.ctl(&["start"]).then_some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Run a PostgreSQL program as the `postgres` user (the server refuses to run as root).
    fn as_postgres(&self, program: &str, args: &[&str]) -> bool {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn ctl(&self, action: &[&str]) -> bool {
        let data = self.data();
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, data);
        let log = format!("{data}.log");
        let mut args = vec!["-D", &data, "-o", &options, "-l", &log, "-w", "-m", "fast"];
        args.extend_from_slice(action);
        self.as_postgres("pg_ctl", &args)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.ctl(&["stop"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_a_postgresql_restart() {
    if !on_postgres() {
        return;
    }
    let Some(pg) = PrivatePostgres::start() else {
        eprintln!("skipped: cannot start a private PostgreSQL here (needs root and initdb)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let app = TestApp::spawn_on(dir, pg.url(), None, |c| {
        c.engine.http_allow_hosts = vec!["127.0.0.1".into()];
        c.engine.concurrency = 8;
        c.engine.lease = Duration::from_secs(2);
    })
    .await;
    let vendor = unique_answer_vendor().await;
    let leads = app.companies("restart", 800, None).await;
    let run = app.start_run(http_run(&vendor, &leads)).await;
    let mut worker = spawn_worker(&pg.url());

    // Restart once part of the run is done, while items are in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.run_status(&run).await["scope"]["counts"]["completed"]
        .as_i64()
        .unwrap_or(0)
        < 100
    {
        assert!(Instant::now() < deadline, "the run did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pg.ctl(&["restart"]), "PostgreSQL restarts");

    // Requests may fail while the server is away; afterwards everything must recover by itself.
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let r = app.get(&format!("/api/enrichment/{run}")).await;
        if r.status == 200 {
            let status = &r.body["run"]["status"];
            if status != "pending" && status != "running" {
                break r.body["run"].clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "run not done after the restart: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    kill(&mut worker);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["scope"]["counts"]["completed"], 800, "{done}");
    assert_every_result_landed(&app, &run, &leads).await;
}
