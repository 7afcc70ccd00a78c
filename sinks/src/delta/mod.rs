//! The Delta Lake changelog sink: one append-only Delta table per source table, every commit
//! idempotent by source position.

mod history;
mod side_table;
mod sink;
mod spill;
mod table;

pub use history::{ResnapshotQueue, SchemaChangeRecord, SchemaHistory, HISTORY_DIR};
pub use side_table::SideTable;
pub use sink::{DeltaSink, TablePosition};
