//! `engine_instant`: items per second of a built-in over 100,000 items, beside the raw write
//! limit of the same database: the fastest loop of the SQL an item cannot do without (a batched
//! claim UPDATE … RETURNING and a batched finish UPDATE) on a same-shaped table.

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::run_create::Executed;
use super::Ctx;
use crate::report::{Bar, Figure};
use crate::stats::median;

/// Batch sizes the raw loop tries; the fastest counts. 512 is the worker's claim batch.
const RAW_BATCHES: [usize; 3] = [256, 512, 1024];

pub async fn figure(ctx: &Ctx, runs: &[Executed]) -> Result<Figure> {
    let first = runs.first().context("no run was executed")?;
    let rates: Vec<f64> = runs
        .iter()
        .map(|r| r.items as f64 / r.execute_seconds.max(1e-3))
        .collect();
    let value = median(&rates).context("no rate")?;

    let table = "bench_raw_items";
    ctx.db.clone_items_table(table).await?;
    let mut raw = Vec::new();
    for batch in RAW_BATCHES {
        let n = ctx.db.fill_pending_copy(table, &first.run_id).await?;
        let (done, took) = ctx
            .db
            .raw_claim_finish_loop(table, &first.run_id, batch)
            .await?;
        ensure!(done as i64 == n, "raw loop finished {done} of {n} items");
        let rate = done as f64 / took.as_secs_f64();
        eprintln!("  raw claim+finish loop, batch {batch}: {rate:.0} items/s");
        raw.push(json!({"batch": batch, "itemsPerSecond": rate}));
    }
    ctx.db.drop_table(table).await?;
    let baseline = raw
        .iter()
        .filter_map(|r| r["itemsPerSecond"].as_f64())
        .fold(0.0, f64::max);
    let floor = if ctx.backend == "sqlite" {
        25_000.0
    } else {
        15_000.0
    };
    Ok(Figure::new(
        "engine_instant",
        &format!(
            "company_domain over {} company leads (median of {} runs, server clock)",
            first.items,
            runs.len()
        ),
        "items/s",
        value,
        baseline,
        "raw limit: fastest batched claim+finish UPDATE loop, same DB",
        vec![Bar::ValueAtLeast(floor), Bar::RatioAtLeast(0.5)],
        json!({"runsItemsPerSecond": rates, "raw": raw}),
    ))
}
