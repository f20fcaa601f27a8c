//! What executing an enrichment for one lead produced, before the worker turns it into an item
//! status (spec §6 "Items lifecycle").

use std::time::Duration;

use serde_json::Value;

/// What executing an enrichment for one lead produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A result to write (the JSON of the enrichment's outputSchema).
    Hit(Value),
    /// Executed, nothing found: the item completes with result null, nothing written.
    Miss,
    /// The lead lacks what the enrichment reads: the item is skipped with `missing_input`, no attempt counted.
    MissingInput,
    /// Retryable failure (later: provider 429/5xx); `after` = the provider's Retry-After if any.
    Retry {
        after: Option<Duration>,
        message: String,
    },
    /// Permanent failure with a human sentence.
    Fail(String),
    /// An async provider step submitted job `submission_id` (or polled it: not ready yet). The
    /// item waits, holding no slot, and runs again `after` this long without spending an
    /// attempt; `callback_used`: a stored callback was read and is cleared.
    Waiting {
        submission_id: String,
        after: Duration,
        callback_used: bool,
    },
}
