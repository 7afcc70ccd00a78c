//! Sluice sinks, of two kinds:
//!
//! - the Delta changelog ([`delta`]) receives [`replication::change::Event`]s in source commit
//!   order and reports the end position of each event once it is durable; it alone confirms
//!   the source (the slot, the binlog resume position);
//! - hub sinks ([`hub`]: the contract; [`webhook`], [`rest`]) read that changelog with a durable cursor
//!   of their own, so a slow or failing API never holds back the source or the lake.

pub mod bytesize;
pub mod delta;
mod error;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod rest;
pub mod webhook;

pub use error::{Error, ErrorClass, Result};
