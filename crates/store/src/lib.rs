//! Durable storage for the hub: SQLite (the default, one file, no server) and PostgreSQL,
//! both behind `switchboard_core::store::Store` and both held to the same conformance suite
//! (`tests/conformance.rs`).

mod common;
mod postgres;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::{SqliteOptions, SqliteStore};
