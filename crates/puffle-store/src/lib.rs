//! Puffle store
