//! Sluice sources: the change model shared with the sinks, the PostgreSQL logical replication
//! reader (protocol client, slot management, pgoutput decoder, Arrow conversion) and the
//! MySQL/MariaDB binlog reader; [`source`] and [`value`] hold what the two readers share (how a
//! source ends and when its batches close; calendar and decimal values).
//!
//! Nothing in the change model ([`change`], [`Lsn`]) mentions a driver type, so sinks depend on
//! this crate without pulling in a database client.

pub mod cdc;
pub mod change;
mod error;
pub mod evolution;
pub mod health;
mod lsn;
pub mod mysql;
pub mod postgres;
pub mod queue;
pub mod source;
pub mod value;
pub mod window;

pub use error::{Error, ErrorClass, Result};
pub use lsn::Lsn;

/// The Arrow version Sluice uses everywhere: the one deltalake re-exports.
pub use deltalake::arrow;
