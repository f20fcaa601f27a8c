//! Operator commands: `serve`, `migrate`, `admin …`. They talk to the database, not the API.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use puffle_domain::account::{parse_account_email, ApiKey, Role};
use puffle_store::{NewUser, Store, UserWorkspace};
use serde_json::json;

const DEFAULT_DATABASE_URL: &str = "sqlite://puffle.db";

/// A line for the operator on stderr. Unlike `eprintln!`, a closed stderr (a daemon, a pipe whose
/// reader left) is not a reason to panic: the line is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[derive(Args)]
pub struct DatabaseArgs {
    /// Database to use: sqlite://path (created if missing) or postgres://…
    #[arg(long, env = "PUFFLE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "PUFFLE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Largest request body accepted, in bytes (larger: 413 payload_too_large).
    #[arg(long, env = "PUFFLE_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most rows one CSV import may hold.
    #[arg(long, env = "PUFFLE_MAX_CSV_ROWS", default_value_t = 100_000)]
    pub max_csv_rows: usize,
    /// Most leads one JSON import (POST /api/lists/import) may hold.
    #[arg(long, env = "PUFFLE_MAX_IMPORT_LEADS", default_value_t = 500)]
    pub max_import_leads: usize,
    /// Most lead ids one membership request may name.
    #[arg(long, env = "PUFFLE_MAX_IDS_PER_REQUEST", default_value_t = 1000)]
    pub max_ids_per_request: usize,
    /// Most items one enrichment run may have (at most 4294967295: a run numbers its items in
    /// 32 bits).
    #[arg(long, env = "PUFFLE_MAX_ITEMS_PER_RUN", default_value_t = 1_000_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(..=u64::from(u32::MAX)))]
    pub max_items_per_run: usize,
    /// Most enrichment runs one workspace may have pending or running at once (0: no limit).
    #[arg(long, env = "PUFFLE_MAX_ACTIVE_RUNS", default_value_t = 100)]
    pub max_active_runs: u32,
    /// Deepest nesting of arrays and objects in a JSON body.
    #[arg(long, env = "PUFFLE_MAX_JSON_DEPTH", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=128))]
    pub max_json_depth: u16,
    /// Largest request target plus headers, in bytes (larger: 431).
    #[arg(long, env = "PUFFLE_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Requests per second one API key may make on average (0: no limit).
    #[arg(long, env = "PUFFLE_RATE_LIMIT_PER_SECOND", default_value_t = 200.0)]
    pub rate_limit_per_second: f64,
    /// Requests one API key may make at once before the per-second rate applies.
    #[arg(long, env = "PUFFLE_RATE_LIMIT_BURST", default_value_t = 2000)]
    pub rate_limit_burst: u32,
    /// Serve the API only: run no worker pool in this process.
    #[arg(long)]
    pub no_worker: bool,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// How logs are written (to stderr).
#[derive(Args)]
pub struct LogArgs {
    /// `text` for people, `json` (one object per line) for log collectors.
    #[arg(long, env = "PUFFLE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings of the worker pool and of the providers it calls.
#[derive(Args)]
pub struct EngineArgs {
    /// Items this process executes at once.
    #[arg(long, env = "PUFFLE_WORKER_CONCURRENCY", default_value_t = 16)]
    pub worker_concurrency: usize,
    /// Executions per item before a retryable failure is final.
    #[arg(long, env = "PUFFLE_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Seconds a claimed item stays leased without a heartbeat before another worker may take it.
    #[arg(long, env = "PUFFLE_LEASE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_seconds: u64,
    /// Hosts custom_http may reach although they are loopback or private (comma-separated names or IPs).
    #[arg(long, env = "PUFFLE_HTTP_ALLOW_HOSTS", value_delimiter = ',')]
    pub http_allow_hosts: Vec<String>,
    /// OpenAI-compatible endpoint for custom_ai (e.g. http://127.0.0.1:11434/v1).
    #[arg(long, env = "PUFFLE_AI_BASE_URL")]
    pub ai_base_url: Option<String>,
    /// Default model for custom_ai.
    #[arg(long, env = "PUFFLE_AI_MODEL")]
    pub ai_model: Option<String>,
    /// puffle.toml: configured providers and the enrichments bound to them (docs/providers.md).
    #[arg(long = "config", env = "PUFFLE_CONFIG")]
    pub config_file: Option<std::path::PathBuf>,
    /// Milliseconds before a failed run-webhook delivery is tried again; the wait doubles per
    /// attempt, up to an hour, for 24 hours.
    #[arg(long, env = "PUFFLE_WEBHOOK_RETRY_FIRST_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub webhook_retry_first_ms: u64,
}

impl EngineArgs {
    /// The engine's configuration; a bad `--config` file is an error naming its line and field.
    fn config(self) -> anyhow::Result<puffle_server::EngineConfig> {
        let providers = match self.config_file.as_deref() {
            None => Default::default(),
            Some(path) if path.as_os_str().is_empty() => Default::default(),
            Some(path) => {
                let loaded = puffle_engine::config_file::load(path)?;
                for e in &loaded.enrichments {
                    if let Some(reason) = loaded.disabled_reason(e) {
                        tracing::warn!(enrichment = %e.slug, "configured enrichment disabled: {reason}");
                    }
                }
                std::sync::Arc::new(loaded)
            }
        };
        Ok(puffle_server::EngineConfig {
            concurrency: self.worker_concurrency.max(1),
            max_attempts: self.max_attempts,
            lease: std::time::Duration::from_secs(self.lease_seconds),
            http_allow_hosts: self
                .http_allow_hosts
                .into_iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
            ai_base_url: self.ai_base_url.filter(|u| !u.is_empty()),
            // The key is read from the environment only, so it never shows in a process list.
            ai_api_key: std::env::var("PUFFLE_AI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            ai_model: self.ai_model.filter(|m| !m.is_empty()),
            providers,
            webhook_retry_first: std::time::Duration::from_millis(self.webhook_retry_first_ms),
            ..puffle_server::EngineConfig::default()
        })
    }
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create a user (and, without --workspace-id, a workspace of their own); prints the new API key.
    CreateUser {
        #[command(flatten)]
        db: DatabaseArgs,
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = ["admin", "member"], default_value = "member")]
        role: String,
        /// Put the user in this existing workspace instead of a new one.
        #[arg(long)]
        workspace_id: Option<String>,
        /// Credits granted to a new workspace.
        #[arg(long, default_value_t = puffle_domain::credits::FREE_PLAN_CREDITS)]
        credits: i64,
    },
    /// Add (or, with a negative amount, remove) credits of a workspace; prints the new balance.
    GrantCredits {
        #[command(flatten)]
        db: DatabaseArgs,
        #[arg(long)]
        workspace_id: String,
        #[arg(long, allow_negative_numbers = true)]
        amount: i64,
    },
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PUFFLE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // JSON lines carry the current span's fields (request_id, method, route) at the top level
    // and every enclosing span in `spans`, so each line of a request can be found by its id.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init(),
    };
}

/// Print an operator error on stderr and pick the exit code.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub async fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log.log_format);
    finish(serve_inner(args).await)
}

async fn serve_inner(args: ServeArgs) -> anyhow::Result<()> {
    let bootstrap_api_key = match std::env::var("PUFFLE_BOOTSTRAP_API_KEY") {
        Ok(s) if !s.is_empty() => Some(ApiKey::parse(&s).context(
            "PUFFLE_BOOTSTRAP_API_KEY is not a well-formed key (pk_live_ followed by 64 lowercase hex)",
        )?),
        _ => None,
    };
    let from_env = bootstrap_api_key.is_some();
    let mut config = puffle_server::Config::new(args.bind, args.db.database_url);
    config.max_body_bytes = args.max_body_bytes;
    config.max_csv_rows = args.max_csv_rows;
    config.max_import_leads = args.max_import_leads;
    config.max_ids_per_request = args.max_ids_per_request;
    config.max_items_per_run = args.max_items_per_run;
    config.max_active_runs = args.max_active_runs;
    config.max_json_depth = usize::from(args.max_json_depth);
    config.max_header_bytes = args.max_header_bytes;
    config.rate_limit = puffle_server::RateLimit {
        per_second: args.rate_limit_per_second.max(0.0),
        burst: f64::from(args.rate_limit_burst),
    };
    config.bootstrap_api_key = bootstrap_api_key;
    config.run_worker = !args.no_worker;
    config.engine = args.engine.config()?;
    let running = puffle_server::start(config).await?;
    let base = format!("http://{}", running.addr);
    if let Some(key) = &running.bootstrap_key {
        say!("Created workspace \"default\" and admin user admin@localhost with 1000 credits.");
        if from_env {
            // The operator has it already; stderr often ends up in a log collector.
            say!("Its API key is the one in PUFFLE_BOOTSTRAP_API_KEY.");
        } else {
            say!("Its API key is shown this once; keep it:");
            say!("  export PUFFLE_API_KEY={}", key.expose());
        }
    }
    say!("Puffle is listening on {base}");
    say!("Try: curl -s {base}/api/account -H \"Authorization: Bearer $PUFFLE_API_KEY\"");
    shutdown_signal().await;
    say!("Shutting down…");
    running.shutdown().await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

pub async fn worker(args: WorkerArgs) -> ExitCode {
    init_logging(args.log.log_format);
    finish(
        async {
            let engine = args.engine.config()?;
            // A worker process only executes runs: anything interactive on its machine (an API
            // server, a shell) runs first when they compete for a core.
            puffle_store::priority::lower_this_process();
            let store = open(&args.db).await?;
            let catalog = std::sync::Arc::new(puffle_server::Catalog::new(&engine));
            // Runs created by other processes are found by the worker's poll.
            let wake = std::sync::Arc::new(tokio::sync::Notify::new());
            let pool = puffle_server::WorkerPool::start(store, catalog, engine, wake);
            say!("Puffle worker running on {}", args.db.database_url);
            shutdown_signal().await;
            say!("Shutting down: finishing or handing back in-flight items…");
            pool.shutdown().await;
            Ok(())
        }
        .await,
    )
}

async fn open(db: &DatabaseArgs) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let store = puffle_store::open(&db.database_url)
        .await
        .context("opening the database")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

pub async fn migrate(args: DatabaseArgs) -> ExitCode {
    finish(
        async {
            open(&args).await?;
            say!("Migrations applied to {}", args.database_url);
            Ok(())
        }
        .await,
    )
}

pub async fn admin(cmd: AdminCommand) -> ExitCode {
    finish(admin_inner(cmd).await)
}

async fn admin_inner(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::CreateUser {
            db,
            email,
            role,
            workspace_id,
            credits,
        } => {
            let Some(email) = parse_account_email(&email) else {
                bail!("--email {email:?} is not an email address");
            };
            let role = Role::parse(&role).context("--role must be admin or member")?;
            let workspace = match workspace_id {
                Some(id) => UserWorkspace::Existing(id),
                None => UserWorkspace::New {
                    name: email.clone(),
                    credits,
                },
            };
            let store = open(&db).await?;
            let key = puffle_server::new_api_key();
            let user = store
                .create_user(
                    NewUser {
                        email,
                        role,
                        workspace,
                    },
                    &key,
                )
                .await?;
            let out = json!({"user": user, "apiKey": key.expose()});
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        AdminCommand::GrantCredits {
            db,
            workspace_id,
            amount,
        } => {
            let store = open(&db).await?;
            let balance = store
                .grant_credits(&workspace_id, amount, "admin_grant")
                .await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"balance": balance}))?
            );
            Ok(())
        }
    }
}
