//! `run_create`: `POST /api/enrichment` over a 100,000-lead list, beside the least SQL a run
//! creation must do (read the members, insert the items) on the same database.
//! The runs it creates are executed and timed for `engine_instant`: one honest run, two figures.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::{instant_run_body, Ctx};
use crate::api::seconds_between;
use crate::report::{Bar, Figure};
use crate::stats::median;

/// One created-and-executed run.
pub struct Executed {
    pub run_id: String,
    pub create_seconds: f64,
    /// From the run's startedAt to its completedAt, on the server's clock.
    pub execute_seconds: f64,
    pub items: i64,
}

/// Create and execute `repeats` company_domain runs over `list_id`, one after the other.
pub async fn create_and_execute(ctx: &Ctx, list_id: &str) -> Result<Vec<Executed>> {
    let mut out = Vec::new();
    for i in 0..ctx.scale.instant_repeats {
        let (run_id, took) = ctx.api.create_run(&instant_run_body(list_id)).await?;
        let done = ctx.api.wait_run(&run_id, Duration::from_secs(1800)).await?;
        ensure!(
            done.status == "completed",
            "run {run_id} ended {}",
            done.status
        );
        let (Some(started), Some(completed)) = (&done.started_at, &done.completed_at) else {
            anyhow::bail!("run {run_id} completed without startedAt/completedAt");
        };
        let execute_seconds = seconds_between(started, completed)?;
        eprintln!(
            "  run {}: created in {:.3} s, {} items executed in {:.2} s",
            i + 1,
            took.as_secs_f64(),
            done.total,
            execute_seconds
        );
        out.push(Executed {
            run_id,
            create_seconds: took.as_secs_f64(),
            execute_seconds,
            items: done.total,
        });
    }
    Ok(out)
}

pub async fn figure(ctx: &Ctx, list_id: &str, runs: &[Executed]) -> Result<Figure> {
    let first = runs.first().context("no run was created")?;
    let table = "bench_create_items";
    let mut raw = Vec::new();
    for _ in 0..ctx.scale.instant_repeats {
        // A fresh table each time, so every insert lands in an equally empty index.
        ctx.db.clone_items_table(table).await?;
        let (n, took) = ctx
            .db
            .time_create_items(table, &first.run_id, list_id)
            .await?;
        ensure!(
            n as i64 == first.items,
            "raw insert wrote {n} rows, the run has {}",
            first.items
        );
        raw.push(took.as_secs_f64());
    }
    ctx.db.drop_table(table).await?;
    let created: Vec<f64> = runs.iter().map(|r| r.create_seconds).collect();
    let value = median(&created).context("no timing")?;
    let baseline = median(&raw).context("no timing")?;
    // The bar is stated for SQLite; PostgreSQL is held to the same second.
    let bars = vec![Bar::ValueAtMost(1.0)];
    Ok(Figure::new(
        "run_create",
        &format!(
            "POST /api/enrichment over a {}-lead list (median of {})",
            first.items,
            runs.len()
        ),
        "s",
        value,
        baseline,
        "raw: SELECT members + multi-row INSERT of the items, same DB",
        bars,
        json!({"requestSeconds": created, "rawSeconds": raw, "items": first.items}),
    ))
}
