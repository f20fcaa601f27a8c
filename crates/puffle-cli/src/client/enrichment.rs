//! Enrichment commands (spec §5, §6, §9): the catalog, and runs: create, status, results, cancel,
//! plus two of ours: `results --all` (every page, streamed) and `wait` (poll until the run ends).
//!
//! Each command builds its one [`Call`]. The one-request commands go through [`http::execute`]
//! like the rest of the client; `results --all` sends its call again per page (with the next
//! cursor), `wait` sends its call until the run is terminal.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::alone;
use super::args::json_object;
use super::http::{self, has_fields, Api, Call, Fail, Global};
use super::output::{self, Format, ItemWriter};

#[derive(Args)]
#[command(subcommand_negates_reqs = true)]
pub struct EnrichmentCommand {
    #[command(subcommand)]
    action: Option<EnrichmentAction>,
    #[command(flatten)]
    search: CatalogSearch,
    #[command(flatten)]
    global: Global,
}

/// Query of `GET /api/enrichments`.
#[derive(Args, Serialize)]
struct CatalogSearch {
    /// Only the enrichment with this slug (hidden ones too; 404 if unknown).
    #[arg(long, value_name = "SLUG")]
    id: Option<String>,
    /// Case-insensitive text search over slug, name and description.
    #[arg(long)]
    q: Option<String>,
}

#[derive(Subcommand)]
enum EnrichmentAction {
    /// Start an enrichment run over leads, charged up front (POST /api/enrichment).
    Create(RunCreate),
    /// Show a run: status, item counts, output, cost, timing (GET /api/enrichment/{id}).
    Status(RunId),
    /// Show a run's items, one per lead, with their results (GET /api/enrichment/{id}/items).
    Results(RunResults),
    /// Cancel a pending or running run; its pending items are skipped (POST /api/enrichment/{id}/cancel).
    Cancel(RunId),
    /// [ours] Show the webhook deliveries of a run created with --webhook-url
    /// (GET /api/enrichment/{id}/webhooks).
    Webhooks(RunId),
    /// Poll a run until it is completed, failed or cancelled, with progress on stderr; print the run.
    /// Exit 0 when completed, 1 when failed or cancelled.
    Wait(RunWait),
}

#[derive(Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct RunCreate {
    /// Slug of the enrichment to run (see `puffle enrichment`).
    #[arg(long, value_name = "SLUG")]
    enrichment_id: String,
    /// Which leads, a JSON object: {"type":"explicit_leads","leadIds":[…],"listId"?},
    /// {"type":"list","listId":…} or {"type":"filtered_list","listId":…,"filter":{"where":[…]}}.
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    scope: Value,
    /// persisted (default) writes results to the leads; preview runs free over at most 10 leads
    /// and writes nothing.
    #[arg(long, value_parser = ["persisted", "preview"])]
    mode: Option<String>,
    /// The enrichment's input: a JSON object matching its inputSchema.
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    input: Option<Value>,
    /// Where results are written: a JSON object {target, attributeKey, writePolicy}.
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    output: Option<Value>,
    /// A JSON object {fieldId}.
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    display_request: Option<Value>,
    /// Sending the same key again returns the first run instead of starting (and charging) another.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// overwrite (default), or fill_empty: skip leads whose target attribute already has a value.
    #[arg(long, value_parser = ["overwrite", "fill_empty"])]
    write_policy: Option<String>,
    /// [ours] POST a signed event here when the run ends (create a signing secret first with
    /// `puffle account webhook-secret`).
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
}

#[derive(Args)]
struct RunId {
    /// Id of the run (the enrichmentRunId printed by `puffle enrichment create`).
    #[arg(long)]
    id: String,
}

/// Query of `GET /api/enrichment/{id}/items`.
#[derive(Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct RunResults {
    /// Id of the run.
    #[arg(long)]
    #[serde(skip)]
    id: String,
    /// Only items with this status.
    #[arg(long, value_parser = ["pending", "running", "completed", "skipped", "failed"])]
    status: Option<String>,
    /// Only the item of this lead.
    #[arg(long)]
    lead_id: Option<String>,
    /// Continue after this item id (the previous page's page.nextCursor).
    #[arg(long)]
    cursor: Option<String>,
    /// Page size, 1–100 (default 50; 100 with --all).
    #[arg(long)]
    limit: Option<u32>,
    /// Follow page.nextCursor to the last page, printing items as pages arrive: one JSON object
    /// per line, or with --format table|csv one header and a row per item (columns id, leadId,
    /// status, attempts, skippedReason, result as JSON, error.message; csv adds listId,
    /// membershipId, provider, startedAt, completedAt).
    #[arg(long)]
    #[serde(skip)]
    all: bool,
}

#[derive(Args)]
struct RunWait {
    /// Id of the run.
    #[arg(long)]
    id: String,
    /// Milliseconds between two status requests (at least 100).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(100..)
    )]
    interval_ms: u64,
}

pub async fn run(cmd: EnrichmentCommand) -> ExitCode {
    let EnrichmentCommand {
        action,
        search,
        global,
    } = cmd;
    let outcome = async {
        alone("enrichment", action.is_some(), has_fields(&search))?;
        let call = |method: Method, path: &[&str]| Call::new(method, path);
        let one = match action {
            None => call(Method::GET, &["enrichments"]).query(&search),
            Some(EnrichmentAction::Create(body)) => call(Method::POST, &["enrichment"]).json(&body),
            Some(EnrichmentAction::Status(RunId { id })) => call(Method::GET, &["enrichment", &id]),
            Some(EnrichmentAction::Cancel(RunId { id })) => {
                call(Method::POST, &["enrichment", &id, "cancel"])
            }
            Some(EnrichmentAction::Webhooks(RunId { id })) => {
                call(Method::GET, &["enrichment", &id, "webhooks"])
            }
            Some(EnrichmentAction::Results(flags)) => return results(&global, &flags).await,
            Some(EnrichmentAction::Wait(flags)) => return wait(&global, &flags).await,
        };
        http::execute(&global, one)
            .await
            .map(|()| ExitCode::SUCCESS)
    };
    outcome.await.unwrap_or_else(Fail::report)
}

// ---------------------------------------------------------------- results

/// Page size of `results --all` when no --limit is given: the most the API serves.
const ALL_PAGE_SIZE: &str = "100";

/// One page as the API sends it, or with --all or an item format every page through
/// [`ItemWriter`], each printed before the next is fetched.
async fn results(global: &Global, flags: &RunResults) -> Result<ExitCode, Fail> {
    let mut call = Call::new(Method::GET, &["enrichment", &flags.id, "items"]).query(flags);
    if !flags.all && !matches!(global.format, Format::Table | Format::Csv) {
        http::execute(global, call).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if flags.all && flags.limit.is_none() {
        call = call.set_query("limit", ALL_PAGE_SIZE);
    }
    let api = Api::new(global)?;
    let mut writer = ItemWriter::new(global.format);
    let mut cursor = flags.cursor.clone();
    loop {
        let (body, page) = api.fetch(&call).await?;
        let items = page
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| Fail::failure("the API answered without an items array"))?;
        let reader_left = !writer.page(&body, items)?;
        if reader_left || !flags.all {
            break;
        }
        let Some(next) = page.pointer("/page/nextCursor").and_then(Value::as_str) else {
            break;
        };
        if cursor.as_deref() == Some(next) {
            return Err(Fail::failure(format!(
                "the API answered the cursor {next} with the same nextCursor; stopping"
            )));
        }
        call = call.set_query("cursor", next);
        cursor = Some(next.to_string());
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- wait

/// Transient failures in a row (no answer, 429, 502–504) that `wait` rides out before giving up.
const MAX_RETRIES: u32 = 5;
/// The longest pause between two tries after a transient failure, unless the API asks for more.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

async fn wait(global: &Global, flags: &RunWait) -> Result<ExitCode, Fail> {
    let api = Api::new(global)?;
    let call = Call::new(Method::GET, &["enrichment", &flags.id]);
    let interval = Duration::from_millis(flags.interval_ms);
    let mut progress = Progress::new();
    let mut failures = 0;
    let (body, run) = loop {
        let fail = match api.fetch(&call).await {
            Ok((body, value)) => match RunState::read(&value) {
                Ok(run) if run.is_terminal() => break (body, run),
                Ok(run) => {
                    failures = 0;
                    progress.show(&run);
                    tokio::time::sleep(interval).await;
                    continue;
                }
                Err(fail) => fail,
            },
            Err(fail) => fail,
        };
        failures += 1;
        match fail.retry() {
            Some(asked) if failures <= MAX_RETRIES => {
                progress.retrying(failures, fail.message());
                let backoff = interval.saturating_mul(1 << failures).min(MAX_BACKOFF);
                tokio::time::sleep(backoff.max(asked.unwrap_or_default())).await;
            }
            _ => {
                progress.clear();
                return Err(fail);
            }
        }
    };
    progress.show(&run);
    progress.clear();
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("{}\n", progress.summary(&flags.id, &run)),
    );
    output::write_body(global.format, &body)?;
    Ok(if run.status == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What `wait` reads of `GET /api/enrichment/{id}`.
struct RunState {
    status: String,
    /// `run.scope.resolvedCount`.
    total: u64,
    pending: u64,
    running: u64,
    completed: u64,
    skipped: u64,
    failed: u64,
    /// `run.error.message`, when the run failed as a whole.
    error: Option<String>,
}

impl RunState {
    fn read(body: &Value) -> Result<RunState, Fail> {
        let run = &body["run"];
        let status = run["status"]
            .as_str()
            .ok_or_else(|| Fail::failure(format!("the API answered without run.status: {body}")))?;
        let count = |name: &str| run["scope"]["counts"][name].as_u64().unwrap_or(0);
        let (pending, running) = (count("pending"), count("running"));
        let (completed, skipped, failed) = (count("completed"), count("skipped"), count("failed"));
        let total = run["scope"]["resolvedCount"]
            .as_u64()
            .unwrap_or(pending + running + completed + skipped + failed);
        Ok(RunState {
            status: status.to_string(),
            total,
            pending,
            running,
            completed,
            skipped,
            failed,
            error: run["error"]["message"].as_str().map(str::to_string),
        })
    }

    fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }

    /// Items that reached an end: completed, skipped or failed.
    fn done(&self) -> u64 {
        self.completed + self.skipped + self.failed
    }
}

/// The progress bar of `wait` on stderr (hidden when stderr is not a terminal), and the rate
/// since the first status seen.
struct Progress {
    bar: ProgressBar,
    started: Instant,
    /// When the first status arrived, and how many items were done then.
    first: Option<(Instant, u64)>,
    /// Items per second since `first`, once any item got done.
    rate: Option<f64>,
}

impl Progress {
    fn new() -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let style =
                ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} items  {msg}")
                    .expect("the template is valid")
                    .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                .with_style(style)
                .with_message("waiting for the run");
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            started: Instant::now(),
            first: None,
            rate: None,
        }
    }

    fn show(&mut self, run: &RunState) {
        let now = Instant::now();
        let done = run.done();
        let (since, done_then) = *self.first.get_or_insert((now, done));
        let seconds = now.duration_since(since).as_secs_f64();
        if done > done_then && seconds > 0.0 {
            self.rate = Some((done - done_then) as f64 / seconds);
        }
        self.bar.set_length(run.total);
        self.bar.set_position(done);
        let eta = match self.rate {
            Some(rate) if rate > 0.0 => {
                let left = run.total.saturating_sub(done) as f64 / rate;
                human(Duration::from_secs_f64(left.min(1e9)))
            }
            _ => "?".into(),
        };
        self.bar
            .set_message(format!("{} · {} · ETA {eta}", run.status, self.rate_text()));
    }

    fn retrying(&self, attempt: u32, why: &str) {
        self.bar
            .set_message(format!("retrying ({attempt}/{MAX_RETRIES}) after: {why}"));
    }

    fn clear(&self) {
        self.bar.finish_and_clear();
    }

    fn rate_text(&self) -> String {
        match self.rate {
            Some(rate) => format!("{rate:.1} items/s"),
            None => "– items/s".into(),
        }
    }

    /// The one line `wait` ends with, e.g. `run … completed: 3/3 items done (3 completed,
    /// 0 skipped, 0 failed), 12.5 items/s, waited 1.2s`.
    fn summary(&self, id: &str, run: &RunState) -> String {
        let mut line = format!(
            "run {id} {}: {}/{} items done ({} completed, {} skipped, {} failed",
            run.status,
            run.done(),
            run.total,
            run.completed,
            run.skipped,
            run.failed
        );
        for (count, name) in [(run.running, "running"), (run.pending, "pending")] {
            if count > 0 {
                let _ = write!(line, ", {count} {name}");
            }
        }
        line.push(')');
        if self.rate.is_some() {
            let _ = write!(line, ", {}", self.rate_text());
        }
        let _ = write!(line, ", waited {}", human(self.started.elapsed()));
        if let Some(error) = &run.error {
            let _ = write!(line, "; error: {error}");
        }
        line
    }
}

/// A duration for people: `0.4s`, `42s`, `3m05s`, `2h07m`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..10 => format!("{:.1}s", d.as_secs_f64()),
        10..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn run_state_counts_done_items_and_knows_terminal_statuses() {
        let body = json!({"run": {"status": "running", "error": null, "scope": {
            "resolvedCount": 10,
            "counts": {"pending": 3, "running": 2, "completed": 3, "skipped": 1, "failed": 1}}}});
        let run = RunState::read(&body).unwrap_or_else(|_| panic!("reads"));
        assert_eq!((run.done(), run.total), (5, 10));
        assert!(!run.is_terminal());
        for status in ["completed", "failed", "cancelled"] {
            let body = json!({"run": {"status": status, "scope": {"counts": {"completed": 2}}}});
            let run = RunState::read(&body).unwrap_or_else(|_| panic!("reads"));
            assert!(run.is_terminal(), "{status}");
            assert_eq!(run.total, 2, "without resolvedCount, the sum of the counts");
        }
        assert!(RunState::read(&json!({"error": {"code": "x"}})).is_err());
    }

    #[test]
    fn summary_names_the_outcome_the_counts_and_the_error() {
        let progress = Progress {
            bar: ProgressBar::hidden(),
            started: Instant::now(),
            first: None,
            rate: None,
        };
        let run = RunState {
            status: "failed".into(),
            total: 4,
            pending: 0,
            running: 1,
            completed: 1,
            skipped: 2,
            failed: 0,
            error: Some("provider is not configured".into()),
        };
        let line = progress.summary("r1", &run);
        assert!(
            line.starts_with(
                "run r1 failed: 3/4 items done (1 completed, 2 skipped, 0 failed, 1 running), waited "
            ),
            "{line}"
        );
        assert!(
            line.ends_with("; error: provider is not configured"),
            "{line}"
        );
    }

    #[test]
    fn create_flags_become_the_camel_case_body() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            create: RunCreate,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "create",
            "--enrichment-id=company_domain",
            r#"--scope={"type":"list","listId":"l"}"#,
            "--mode=preview",
            r#"--input={"a":1}"#,
            r#"--output={"attributeKey":"site"}"#,
            r#"--display-request={"fieldId":"f"}"#,
            "--idempotency-key=k",
            "--write-policy=fill_empty",
            "--webhook-url=https://hooks.example.com/p",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_value(&cli.create).unwrap(),
            json!({"enrichmentId": "company_domain", "scope": {"type": "list", "listId": "l"},
                "mode": "preview", "input": {"a": 1}, "output": {"attributeKey": "site"},
                "displayRequest": {"fieldId": "f"}, "idempotencyKey": "k",
                "writePolicy": "fill_empty", "webhookUrl": "https://hooks.example.com/p"})
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_millis(420)), "0.4s");
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(7620)), "2h07m");
    }
}
