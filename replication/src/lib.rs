//! Sluice sources: the change model shared with the sinks, the PostgreSQL logical replication
//! reader (protocol client, slot management, pgoutput decoder, Arrow conversion) and the
//! MySQL/MariaDB binlog reader.
//!
//! Nothing in the change model ([`change`], [`Lsn`]) mentions a driver type, so sinks depend on
//! this crate without pulling in a database client.

pub mod cdc;
pub mod change;
mod error;
pub mod evolution;
mod lsn;
pub mod mysql;
pub mod postgres;
pub mod queue;
pub mod window;

pub use error::{Error, ErrorClass, Result};
pub use lsn::Lsn;

/// The Arrow version Sluice uses everywhere: the one deltalake re-exports.
pub use deltalake::arrow;
