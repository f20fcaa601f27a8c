//! Enrichment runs and items on PostgreSQL.
