//! `items_page`: `GET /api/enrichment/{id}/items?limit=100` on the first page and at depth N
//! (the last page of an N-item run), interleaved so both see the same machine; then, on the same
//! table, the deep page by keyset (what the store does) beside the same page by SQL OFFSET.

use anyhow::{Context, Result};
use serde_json::json;

use super::Ctx;
use crate::report::{Bar, Figure};
use crate::stats::Latency;

const LIMIT: i64 = 100;
/// OFFSET pages are slow by nature; a few are enough for a median.
const OFFSET_SAMPLES: usize = 9;

/// The OFFSET bar is 50× at depth 1,000,000. OFFSET's cost grows linearly with depth and
/// keyset's does not, so a quick run at a tenth of the depth is held to a tenth of the ratio.
fn offset_bar(depth: i64) -> f64 {
    (50.0 * depth as f64 / 1_000_000.0).min(50.0)
}

pub async fn figures(ctx: &Ctx, run_id: &str, depth: usize) -> Result<Vec<Figure>> {
    let depth = depth as i64;
    // The page at depth N holds items N-100 … N-1: its cursor is the item just before them.
    let cursor = ctx.db.item_id_at(run_id, depth - LIMIT - 1).await?;
    let first_path = format!("/api/enrichment/{run_id}/items?limit={LIMIT}");
    let deep_path = format!("{first_path}&cursor={cursor}");

    // Warm both paths (connection, page cache) before timing.
    for _ in 0..5 {
        ctx.api.timed_get(&first_path).await?;
        ctx.api.timed_get(&deep_path).await?;
    }
    let (mut first, mut deep) = (Vec::new(), Vec::new());
    for _ in 0..ctx.scale.page_samples {
        first.push(ctx.api.timed_get(&first_path).await?);
        deep.push(ctx.api.timed_get(&deep_path).await?);
    }
    let first = Latency::of(&first).context("no sample")?;
    let deep = Latency::of(&deep).context("no sample")?;

    let mut keyset = Vec::new();
    let mut offset = Vec::new();
    for i in 0..ctx.scale.page_samples.min(100) {
        keyset.push(ctx.db.time_keyset_page(run_id, &cursor, LIMIT + 1).await?);
        if i < OFFSET_SAMPLES {
            offset.push(
                ctx.db
                    .time_offset_page(run_id, depth - LIMIT, LIMIT + 1)
                    .await?,
            );
        }
    }
    let keyset = Latency::of(&keyset).context("no sample")?;
    let offset = Latency::of(&offset).context("no sample")?;
    let plans = ctx.db.page_plans().await.unwrap_or_default();

    Ok(vec![
        Figure::new(
            "items_page",
            &format!(
                "GET …/items?limit=100 p50 at depth {depth} vs the first page (p99 in details)"
            ),
            "ms",
            deep.p50_ms,
            first.p50_ms,
            "first page p50",
            vec![Bar::RatioAtMost(1.5)],
            json!({"deep": deep, "first": first, "p99Ratio": deep.p99_ms / first.p99_ms}),
        ),
        Figure::new(
            "items_page_offset",
            &format!("the page at depth {depth} in SQL: OFFSET p50 vs keyset p50"),
            "ms",
            offset.p50_ms,
            keyset.p50_ms,
            "keyset p50",
            vec![Bar::RatioAtLeast(offset_bar(depth))],
            json!({"offset": offset, "keyset": keyset, "plans": plans}),
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn offset_bar_scales_with_depth() {
        assert_eq!(super::offset_bar(1_000_000), 50.0);
        assert_eq!(super::offset_bar(100_000), 5.0);
        assert_eq!(super::offset_bar(5_000_000), 50.0);
    }
}
