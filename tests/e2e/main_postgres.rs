//! The end-to-end suite on PostgreSQL: the same test modules as `main.rs`, built as the
//! `e2e_postgres` target (see `support::on_postgres`).

include!("main.rs");
