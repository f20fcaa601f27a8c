// End-to-end tests: a real server on port 0 with a fresh database per test, real HTTP.
// One test binary per storage backend: this one is SQLite; main_postgres.rs builds the same
// modules again for PostgreSQL (no inner doc comment here, as that file includes this one).

mod support;

mod accounts;
mod cli;
mod cli_enrichment;
mod credits;
mod enrichment_catalog;
mod enrichment_items;
mod enrichment_review;
mod enrichment_runs;
mod enrichment_worker;
mod errors;
mod fleet;
mod import;
mod leads;
mod limits;
mod lists;
mod load;
mod observability;
mod providers;
mod providers_async;
mod serve_process;
mod service;
mod shutdown;
mod webhooks;
mod worker_process;
