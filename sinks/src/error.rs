//! The sinks crate's error type; [`Error::class`] is the one retry decision.

pub use replication::ErrorClass;

/// Result alias for the sinks crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the sinks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Delta log or object store failed.
    #[error("delta table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// Arrow refused a batch.
    #[error("delta table {table}: {source}")]
    Arrow {
        table: String,
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
    /// Local file I/O (spill files of large transactions, the lake directory).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The lake path cannot be used.
    #[error("invalid delta path {path}: {reason}")]
    InvalidPath { path: String, reason: String },
}

impl Error {
    /// Whether to retry or stop.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Delta { source, .. } => match source {
                deltalake::DeltaTableError::ObjectStore { .. }
                | deltalake::DeltaTableError::Io { .. }
                | deltalake::DeltaTableError::VersionAlreadyExists(_) => ErrorClass::Transient,
                _ => ErrorClass::Definite,
            },
            Error::Io { .. } => ErrorClass::Transient,
            Error::Arrow { .. } => ErrorClass::Bug,
            Error::InvalidPath { .. } => ErrorClass::Definite,
        }
    }
}
