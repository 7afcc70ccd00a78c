//! The PostgreSQL source: a logical replication client on the pgoutput plugin.
//!
//! ```text
//!  conninfo ─▶ client (wire protocol, tls, auth) ─▶ stream (XLogData, keepalive, feedback)
//!                                                      │ pgoutput payloads
//!                                                      ▼
//!  catalog (SQL: preflight, slot, publication)    pgoutput (sans-IO decoder)
//!                                                      │ messages borrowing the buffer
//!                                                      ▼
//!                                 table (per-table Arrow builders, column, value)
//! ```

mod assembler;
pub mod catalog;
pub mod client;
pub mod column;
pub mod conninfo;
pub mod copy;
pub mod incremental;
pub mod pgoutput;
pub mod snapshot;
pub mod source;
pub mod stream;
pub mod table;
pub mod tls;
pub mod value;

pub use assembler::Assembler;
