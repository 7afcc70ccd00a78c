//! Sluice sinks. A sink receives [`replication::change::Event`]s in source commit order and
//! reports the end position of each event once it is durable; the pipeline confirms the
//! source only up to the minimum over all sinks.

pub mod delta;
mod error;
pub mod http;
pub mod hub;
pub mod webhook;

pub use error::{Error, ErrorClass, Result};
