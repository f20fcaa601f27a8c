//! One module per figure. Each measures its figure and its baseline in the same run.

pub mod engine_instant;
pub mod engine_latency;
pub mod items_page;
pub mod load;
pub mod run_create;
pub mod run_watch;

use serde::Serialize;

use crate::api::Api;
use crate::db::Db;

/// Sizes of one benchmark: the full one, or `--quick` (a tenth of the big run, fewer samples).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scale {
    /// Items of the big run (memory, status, items_page).
    pub big_run: usize,
    /// Leads of the list behind run_create and engine_instant.
    pub instant_run: usize,
    /// Runs created (and executed) for run_create / engine_instant; the median is reported.
    pub instant_repeats: usize,
    /// Items of the custom_http run against the loopback provider.
    pub latency_run: usize,
    /// Timed requests per page kind in items_page.
    pub page_samples: usize,
}

impl Scale {
    pub fn new(quick: bool) -> Scale {
        if quick {
            Scale {
                big_run: 100_000,
                instant_run: 100_000,
                instant_repeats: 3,
                latency_run: 16_000,
                page_samples: 200,
            }
        } else {
            Scale {
                big_run: 1_000_000,
                instant_run: 100_000,
                instant_repeats: 3,
                latency_run: 64_000,
                page_samples: 500,
            }
        }
    }
}

/// What every figure may use.
pub struct Ctx {
    pub api: Api,
    pub db: Db,
    pub scale: Scale,
    pub backend: &'static str,
}

/// The body of a built-in run over a list.
pub fn instant_run_body(list_id: &str) -> serde_json::Value {
    serde_json::json!({
        "enrichmentId": "company_domain",
        "scope": {"type": "list", "listId": list_id},
    })
}
