//! Puffle's execution layer: the enrichment catalog, providers and the worker pool.
//!
//! So far: the offline built-in enrichments ([`builtins`]) and what running one produces
//! ([`Outcome`]).

pub mod builtins;
pub mod catalog;
mod clock;
mod config;
pub mod config_file;
mod driver;
mod executor;
pub mod metrics;
mod outcome;
pub mod providers;
pub mod run_view;
pub mod template;
pub mod throttle;
pub mod webhooks;
mod worker;

pub use catalog::{Catalog, Enrichment};
pub use config::EngineConfig;
pub use metrics::EngineMetrics;
pub use outcome::Outcome;
pub use worker::WorkerPool;
