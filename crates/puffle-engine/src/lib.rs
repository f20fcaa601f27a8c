//! Puffle's execution layer: the enrichment catalog, providers and the worker pool.
//!
//! Empty until enrichment runs land (the foundation only needs accounts, leads and lists).
