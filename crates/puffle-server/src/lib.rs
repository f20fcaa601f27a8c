//! Puffle's HTTP API: one router per resource, an auth extractor, one error envelope.

mod app;
mod auth;
mod engine_runtime;
mod error;
mod extract;
mod limits;
mod observe;
mod openapi;
mod routes;

pub use app::{new_api_key, start, Config, Running};
pub use limits::RateLimit;
pub use puffle_engine::{Catalog, EngineConfig, WorkerPool};
