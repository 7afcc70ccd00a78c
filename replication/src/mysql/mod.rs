//! The MySQL/MariaDB source: the binlog's ROW events decoded into the same per-table Arrow
//! batches and [`crate::change::Event`]s as PostgreSQL changes.
//!
//! ```text
//!  conninfo ─▶ catalog (SQL: flavor, preflight, positions, charsets)
//!  binlog dump (mysql_async) ─▶ events (whitelist, MariaDB GTID by hand) ─▶ source
//!        TABLE_MAP ─▶ shape (names, types from the FULL row metadata)
//!        ROWS      ─▶ builder (Arrow) ─▶ XID/COMMIT ─▶ Event::Committed at the commit position
//! ```
//!
//! Positions: the binlog file's index and the offset just past a transaction's commit event,
//! packed into one monotonically increasing `u64` ([`position`]): the Delta `txn` version of
//! each commit, and where a restarted stream resumes.

pub mod catalog;
pub mod conninfo;
pub mod events;
pub mod gtid;
pub mod json;
mod labels;
pub mod position;
pub mod rows;
pub mod shape;
pub mod snapshot;
pub mod source;
