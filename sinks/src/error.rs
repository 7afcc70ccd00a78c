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
    /// A configured rate limit cannot be read.
    #[error("invalid rate limit {value:?}: {reason}")]
    InvalidRateLimit { value: String, reason: String },
    /// Several settings are wrong; each is listed.
    #[error("{}", problems.join("; "))]
    Invalid { problems: Vec<String> },
    /// A secret's environment variable cannot be used (the value is never shown).
    #[error("secret environment variable {name} {reason}")]
    SecretMissing { name: String, reason: &'static str },
    /// A signing secret has the wrong form (the value is never shown).
    #[error("invalid signing secret: {reason}")]
    InvalidSecret { reason: &'static str },
    /// A header cannot be built (the value is never shown).
    #[error("invalid header {name}: {reason}")]
    InvalidHeader { name: String, reason: &'static str },
    /// The HTTP client cannot be built (TLS backend).
    #[error("http client: {source}")]
    HttpClient {
        #[source]
        source: reqwest::Error,
    },
    /// A Parquet file of a changelog table cannot be read.
    #[error("changelog file {path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: deltalake::parquet::errors::ParquetError,
    },
    /// A changelog table's log or a hub state file cannot be understood.
    #[error("{path}: {reason}")]
    Corrupt { path: String, reason: String },
    /// An HTTP sink gave up on a request after its configured attempts.
    #[error("sink {sink} gave up after {attempts} attempts")]
    GaveUp { sink: String, attempts: u32 },
    /// A request cannot be built from the sink's settings (URL, header); the URL is left out
    /// of the message since it may carry a token.
    #[error("invalid http request: {source}")]
    InvalidRequest {
        #[source]
        source: reqwest::Error,
    },
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
            Error::GaveUp { .. } => ErrorClass::Transient,
            Error::Parquet { .. } | Error::Corrupt { .. } => ErrorClass::Definite,
            Error::InvalidPath { .. }
            | Error::InvalidRateLimit { .. }
            | Error::Invalid { .. }
            | Error::SecretMissing { .. }
            | Error::InvalidSecret { .. }
            | Error::InvalidHeader { .. }
            | Error::HttpClient { .. }
            | Error::InvalidRequest { .. } => ErrorClass::Definite,
        }
    }
}
