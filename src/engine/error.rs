//! Why a run or a session ended in error, and which class of error that is.

use replication::ErrorClass;

/// Why a session ended in error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] replication::Error),
    /// The sink failed.
    #[error(transparent)]
    Sink(Box<sinks::Error>),
    /// The pipeline's state file could not be read or written.
    #[error("pipeline state in {path}: {source}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A previous run died during the initial snapshot of a table that an incremental
    /// snapshot cannot finish.
    #[error("the initial snapshot of table {table} was interrupted and it has no primary key, which finishing it incrementally needs: add a primary key and run again, or drop the slot (SELECT pg_drop_replication_slot('{slot}')) and delete {lake} to start over")]
    SnapshotInterrupted {
        table: String,
        slot: String,
        lake: String,
    },
}

impl From<sinks::Error> for PipelineError {
    fn from(e: sinks::Error) -> Self {
        PipelineError::Sink(Box::new(e))
    }
}

impl PipelineError {
    /// The state file beside `lake` could not be read or written.
    pub fn state(lake: &std::path::Path, source: std::io::Error) -> Self {
        PipelineError::State {
            path: lake.display().to_string(),
            source,
        }
    }

    /// Retry, stop, or bug.
    pub fn class(&self) -> ErrorClass {
        match self {
            PipelineError::Source(e) => e.class(),
            PipelineError::Sink(e) => e.class(),
            PipelineError::State { .. } => ErrorClass::Transient,
            PipelineError::SnapshotInterrupted { .. } => ErrorClass::Definite,
        }
    }
}
