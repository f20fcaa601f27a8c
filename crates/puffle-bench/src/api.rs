//! The API as a client sees it: a few calls the benchmark needs, with timings where they matter.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    pub base: String,
    key: String,
}

/// What the benchmark reads from a run's status.
#[derive(Debug, Clone)]
pub struct RunStatus {
    pub status: String,
    pub done: i64,
    pub total: i64,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}

impl RunStatus {
    fn from(body: &Value) -> Result<RunStatus> {
        let run = &body["run"];
        let counts = &run["scope"]["counts"];
        let n = |k: &str| counts[k].as_i64().unwrap_or(0);
        Ok(RunStatus {
            status: run["status"]
                .as_str()
                .ok_or_else(|| anyhow!("a run without status: {body}"))?
                .to_string(),
            done: n("completed") + n("skipped") + n("failed"),
            total: run["scope"]["resolvedCount"].as_i64().unwrap_or(0),
            started_at: run["timing"]["startedAt"].as_str().map(str::to_string),
            completed_at: run["timing"]["completedAt"].as_str().map(str::to_string),
        })
    }

    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }
}

impl Api {
    pub fn new(base: &str, key: &str) -> Result<Api> {
        let client = reqwest::Client::builder()
            // Imports of 100,000 rows and runs over them are slow on purpose-small machines.
            .timeout(Duration::from_secs(600))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            client,
            base: base.trim_end_matches('/').into(),
            key: key.into(),
        })
    }

    /// The same server and key with a client of its own, for a thread with its own runtime.
    pub fn with_new_client(&self) -> Result<Api> {
        Api::new(&self.base, &self.key)
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("{what}: request failed"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("{what}: reading the body"))?;
        if !status.is_success() {
            bail!(
                "{what}: HTTP {status}: {}",
                text.chars().take(500).collect::<String>()
            );
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: the answer is not JSON"))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.client.get(format!("{}{path}", self.base)), path)
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(
            self.client.post(format!("{}{path}", self.base)).json(body),
            path,
        )
        .await
    }

    /// Time one GET, body included (a page is only useful once it has arrived whole).
    pub async fn timed_get(&self, path: &str) -> Result<Duration> {
        let start = Instant::now();
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("GET {path}: body"))?;
        let took = start.elapsed();
        if !status.is_success() {
            bail!(
                "GET {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(took)
    }

    /// Time one GET until its body has arrived, then parse it (outside the timing).
    pub async fn timed_get_json(&self, path: &str) -> Result<(Duration, Value)> {
        let start = Instant::now();
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("GET {path}: body"))?;
        let took = start.elapsed();
        if !status.is_success() {
            bail!(
                "GET {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let json =
            serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))?;
        Ok((took, json))
    }

    pub async fn run_status_timed(&self, id: &str) -> Result<(Duration, RunStatus)> {
        let (took, body) = self
            .timed_get_json(&format!("/api/enrichment/{id}"))
            .await?;
        Ok((took, RunStatus::from(&body)?))
    }

    pub async fn workspace_id(&self) -> Result<String> {
        let account = self.get("/api/account").await?;
        account["workspace"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("/api/account without workspace.id: {account}"))
    }

    pub async fn grant_credits(&self, amount: i64) -> Result<()> {
        let workspace = self.workspace_id().await?;
        self.post(
            "/api/admin/credits",
            &json!({"workspaceId": workspace, "amount": amount}),
        )
        .await?;
        Ok(())
    }

    pub async fn create_list(&self, name: &str, lead_type: &str) -> Result<String> {
        let body = self
            .post("/api/lists", &json!({"name": name, "leadType": lead_type}))
            .await?;
        body["list"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("POST /api/lists without list.id: {body}"))
    }

    /// Import CSV rows into a list; returns how many leads were created.
    pub async fn import_csv(&self, list_id: &str, csv: String) -> Result<i64> {
        let path = format!("/api/lists/{list_id}/import.csv");
        let body = self
            .send(
                self.client
                    .post(format!("{}{path}", self.base))
                    .header("content-type", "text/csv")
                    .body(csv),
                &path,
            )
            .await?;
        body["created"]
            .as_i64()
            .ok_or_else(|| anyhow!("import answer without created"))
    }

    /// Create a run; returns its id and how long the request took.
    pub async fn create_run(&self, body: &Value) -> Result<(String, Duration)> {
        let start = Instant::now();
        let answer = self.post("/api/enrichment", body).await?;
        let took = start.elapsed();
        let id = answer["runId"]
            .as_str()
            .ok_or_else(|| anyhow!("POST /api/enrichment without runId: {answer}"))?;
        Ok((id.to_string(), took))
    }

    pub async fn run_status(&self, id: &str) -> Result<RunStatus> {
        RunStatus::from(&self.get(&format!("/api/enrichment/{id}")).await?)
    }

    /// Poll until the run ends (or `timeout`); the poll is slow enough not to weigh on the run.
    pub async fn wait_run(&self, id: &str, timeout: Duration) -> Result<RunStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.run_status(id).await?;
            if s.finished() {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!(
                    "run {id} not finished after {timeout:?}: {}/{} items done",
                    s.done,
                    s.total
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Seconds between two of the API's RFC 3339 timestamps (`…T14:00:00.123Z`): the server's own
/// clock, so a run's execution time is not blurred by the client's polling interval.
pub fn seconds_between(from: &str, to: &str) -> Result<f64> {
    Ok((epoch_millis(to)? - epoch_millis(from)?) as f64 / 1000.0)
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC only, as the API writes it).
fn epoch_millis(ts: &str) -> Result<i64> {
    let bad = || anyhow!("not an RFC 3339 UTC timestamp with milliseconds: {ts:?}");
    let b = ts.as_bytes();
    if b.len() != 24 || b[10] != b'T' || b[23] != b'Z' {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| -> Result<i64> {
        ts.get(r).and_then(|s| s.parse().ok()).ok_or_else(bad)
    };
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + n(11..13)?) * 60 + n(14..16)?) * 60_000 + n(17..19)? * 1000 + n(20..23)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_to_seconds() {
        assert_eq!(epoch_millis("1970-01-01T00:00:00.000Z").unwrap(), 0);
        assert_eq!(
            epoch_millis("2000-03-01T00:00:01.250Z").unwrap(),
            951_868_801_250
        );
        // Across midnight and a month end.
        let s = seconds_between("2026-01-31T23:59:59.500Z", "2026-02-01T00:00:01.000Z").unwrap();
        assert!((s - 1.5).abs() < 1e-9);
        assert!(epoch_millis("2026-01-31 23:59:59Z").is_err());
        assert!(epoch_millis("2026-01-31T23:59:59.5ZZ").is_err());
    }

    #[test]
    fn run_status_counts_terminal_items() {
        let body = serde_json::json!({"run": {"status": "running",
            "scope": {"resolvedCount": 10, "counts": {"pending": 4, "running": 1,
                "completed": 3, "skipped": 1, "failed": 1}},
            "timing": {"startedAt": "2026-01-01T00:00:00.000Z", "completedAt": null}}});
        let s = RunStatus::from(&body).unwrap();
        assert_eq!((s.done, s.total), (5, 10));
        assert!(!s.finished());
        assert_eq!(s.completed_at, None);
        assert!(RunStatus::from(&serde_json::json!({})).is_err());
    }
}
