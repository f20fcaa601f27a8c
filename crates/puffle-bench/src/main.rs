//! The benchmark harness: `cargo run --release -p puffle-bench -- [--quick] [--backend sqlite|postgres]`.
//!
//! It builds the release `puffle`, starts it as separate processes on a fresh database, drives it
//! over HTTP like a client, measures each figure beside its baseline in the same run, writes
//! `bench/results/latest.json` and prints a Markdown table. No figure is ever a test assertion.

mod api;
mod db;
mod figures;
mod process;
mod report;
mod seed;
mod stats;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use serde_json::json;

use crate::api::Api;
use crate::db::Db;
use crate::figures::{engine_instant, engine_latency, items_page, load, run_create, run_watch};
use crate::figures::{Ctx, Scale};
use crate::process::{Fleet, Launcher};
use crate::report::{Figure, Report};

#[derive(Parser)]
#[command(
    about = "Benchmark a real `puffle` server over HTTP and report figures beside their baselines"
)]
struct Args {
    /// The small run (a 100,000-item big run, fewer samples): under 5 minutes.
    #[arg(long)]
    quick: bool,
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Measure only these figures (comma-separated); the setup they need still runs.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<FigureName>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum FigureName {
    ItemsPage,
    RunCreate,
    EngineInstant,
    EngineLatency,
    Memory,
    Status,
    Load,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A key of the documented shape (`pk_live_` + 64 lowercase hex) chosen by us, so the harness
/// need not scrape it from the server's output.
fn bench_key() -> String {
    let hex: String = (0..2)
        .map(|_| puffle_domain::new_id().replace('-', ""))
        .collect();
    format!("pk_live_{hex}")
}

fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    let meminfo = read("/proc/meminfo");
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|l| l.trim().to_string());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpuModel": model,
        "memTotal": mem,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

/// Run one figure; a failure is recorded and the benchmark goes on with the others.
fn keep<T>(errors: &mut Vec<String>, name: &str, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("{name}: not measured: {e:#}");
            errors.push(format!("{name}: {e:#}"));
            None
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let scale = Scale::new(args.quick);
    let wanted =
        |names: &[FigureName]| args.only.is_empty() || names.iter().any(|n| args.only.contains(n));
    let (backend, worker_processes) = match args.backend {
        Backend::Sqlite => ("sqlite", 0),
        // The fleet shape: the API without a worker pool, and one worker process.
        Backend::Postgres => ("postgres", 1),
    };
    let bin = process::build_release_binary()?;
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let scratch = match args.backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            puffle_store::scratch::ScratchDatabase::create(&puffle_store::scratch::server_url())
                .await
                .context(
                    "creating a scratch PostgreSQL database (is PostgreSQL on 127.0.0.1:5432?)",
                )?,
        ),
    };
    let database_url = match &scratch {
        Some(s) => s.url.clone(),
        None => format!("sqlite://{}", dir.path().join("puffle.db").display()),
    };
    let key = bench_key();
    let launcher = Launcher {
        bin,
        dir: dir.path().to_path_buf(),
        database_url: database_url.clone(),
        env: vec![
            ("PUFFLE_BOOTSTRAP_API_KEY".into(), key.clone()),
            (
                "PUFFLE_WORKER_CONCURRENCY".into(),
                engine_latency::CONCURRENCY.to_string(),
            ),
            // The loopback provider of engine_latency is refused unless allowed.
            ("PUFFLE_HTTP_ALLOW_HOSTS".into(), "127.0.0.1".into()),
            // The per-key request limit is off: the clients of `load` and `status` are one key
            // sending as fast as the server answers, which is what is measured.
            ("PUFFLE_RATE_LIMIT_PER_SECOND".into(), "0".into()),
        ],
    };
    eprintln!("starting puffle ({backend}) in {}", dir.path().display());
    let mut fleet = Fleet::start(launcher, worker_processes).with_context(|| {
        if backend == "postgres" {
            "starting puffle on PostgreSQL (the PostgreSQL backend may not be in this tree yet)"
        } else {
            "starting puffle"
        }
    })?;
    let db = Db::open(&database_url).await?;
    let mut ctx = Ctx {
        api: Api::new(&fleet.base, &key)?,
        db,
        scale,
        backend,
    };
    let mut figures: Vec<Figure> = Vec::new();
    let mut errors = Vec::new();

    eprintln!("seeding {} company leads…", scale.instant_run);
    let (instant_list, import_rate) =
        seed::company_list(&ctx.api, "bench instant", "a", scale.instant_run).await?;

    let executed = if wanted(&[
        FigureName::RunCreate,
        FigureName::EngineInstant,
        FigureName::Load,
    ]) {
        eprintln!("run_create + engine_instant…");
        keep(
            &mut errors,
            "run_create",
            run_create::create_and_execute(&ctx, &instant_list).await,
        )
    } else {
        None
    };
    let mut finished_run = None;
    if let Some(runs) = executed {
        if wanted(&[FigureName::RunCreate]) {
            let f = run_create::figure(&ctx, &instant_list, &runs).await;
            figures.extend(keep(&mut errors, "run_create", f));
        }
        if wanted(&[FigureName::EngineInstant]) {
            let f = engine_instant::figure(&ctx, &runs).await;
            figures.extend(keep(&mut errors, "engine_instant", f));
        }
        finished_run = runs.first().map(|r| r.run_id.clone());
    }

    if wanted(&[FigureName::EngineLatency]) {
        eprintln!("engine_latency…");
        let f = engine_latency::figure(&ctx).await;
        figures.extend(keep(&mut errors, "engine_latency", f));
    }

    if let Some(finished_run) = finished_run.filter(|_| wanted(&[FigureName::Load])) {
        eprintln!("load…");
        let f = load::figure(&ctx, &finished_run, &instant_list).await;
        figures.extend(keep(&mut errors, "load", f));
    }

    // The big run: its own list at full scale; the quick one reuses the 100,000-lead list.
    let big_run_wanted = wanted(&[
        FigureName::Memory,
        FigureName::Status,
        FigureName::ItemsPage,
    ]);
    let big_list = if !big_run_wanted {
        None
    } else if scale.big_run == scale.instant_run {
        Some(instant_list.clone())
    } else {
        eprintln!("seeding {} company leads for the big run…", scale.big_run);
        let seeded = seed::company_list(&ctx.api, "bench big", "b", scale.big_run).await;
        keep(&mut errors, "big run seed", seeded).map(|(list, _)| list)
    };
    if let Some(big_list) = big_list {
        // A fresh process, so the memory peak is the run's and not the seeding's.
        fleet = fleet.restart()?;
        ctx.api = Api::new(&fleet.base, &key)?;
        eprintln!("memory + status on a {}-item run…", scale.big_run);
        let watched = run_watch::figures(&ctx, &fleet, &big_list).await;
        if let Some((watched, run_id)) = keep(&mut errors, "memory/status", watched) {
            figures.extend(watched);
            eprintln!("items_page…");
            let f = items_page::figures(&ctx, &run_id, scale.big_run).await;
            figures.extend(keep(&mut errors, "items_page", f).unwrap_or_default());
        }
    }
    fleet.stop()?;

    let mode = if args.quick { "quick" } else { "full" };
    let mut command = "cargo run --release -p puffle-bench --".to_string();
    if args.quick {
        command.push_str(" --quick");
    }
    command.push_str(&format!(" --backend {backend}"));
    let report = Report {
        generated_at: puffle_domain::now_timestamp(),
        mode: mode.into(),
        backend: backend.into(),
        command,
        machine: machine(),
        scale: json!({"sizes": scale, "csvImportRowsPerSecond": import_rate}),
        figures,
        errors,
    };
    let results = process::workspace_root().join("bench/results");
    std::fs::create_dir_all(&results).context("creating bench/results")?;
    let text = serde_json::to_string_pretty(&report)?;
    for name in ["latest.json".to_string(), format!("{mode}-{backend}.json")] {
        std::fs::write(results.join(&name), &text)
            .with_context(|| format!("writing bench/results/{name}"))?;
    }
    print!("{}", report::markdown(&report));
    drop(scratch);
    Ok(())
}
