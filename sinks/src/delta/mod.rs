//! The Delta Lake changelog sink: one append-only Delta table per source table, every commit
//! idempotent by source position.

mod sink;
mod spill;
mod table;

pub use sink::{DeltaSink, TablePosition};
