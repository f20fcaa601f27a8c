//! Seed data, over HTTP like any client: company leads imported by CSV into lists.

use std::time::Instant;

use anyhow::{ensure, Result};

use crate::api::Api;

/// Rows per CSV import: the server's cap on one import.
pub const IMPORT_ROWS: usize = 100_000;

/// CSV of company leads `start..end`, each with a domain of its own so none dedupes into another
/// (`prefix` keeps lists of different figures apart).
pub fn company_csv(prefix: &str, start: usize, end: usize) -> String {
    let mut csv = String::with_capacity((end - start) * 48 + 20);
    csv.push_str("type,name,domain\n");
    for i in start..end {
        csv.push_str(&format!(
            "company,Company {prefix}{i},{prefix}{i}.example\n"
        ));
    }
    csv
}

/// A new company list holding `n` new leads; returns its id and the import rate (rows/s).
pub async fn company_list(api: &Api, name: &str, prefix: &str, n: usize) -> Result<(String, f64)> {
    let list = api.create_list(name, "company").await?;
    let start = Instant::now();
    let mut from = 0;
    while from < n {
        let to = (from + IMPORT_ROWS).min(n);
        let created = api.import_csv(&list, company_csv(prefix, from, to)).await?;
        ensure!(
            created == (to - from) as i64,
            "import of rows {from}..{to} created {created} leads (duplicates from an earlier run?)"
        );
        eprintln!("  {name}: {to}/{n} leads imported");
        from = to;
    }
    Ok((list, n as f64 / start.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_are_distinct_companies() {
        let csv = company_csv("a", 8, 10);
        assert_eq!(
            csv,
            "type,name,domain\ncompany,Company a8,a8.example\ncompany,Company a9,a9.example\n"
        );
    }
}
