//! The replication crate's one error type. Every variant answers [`Error::class`], and that
//! `match` is the only place that decides whether a failure is retried, stops the pipeline, or
//! is a bug (the same split as Materialize's `DefiniteError`/`TransientError`).

use crate::Lsn;

/// Result alias for the replication crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the pipeline should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry with backoff: network, server restart, timeouts.
    Transient,
    /// Stop and tell the operator what to do: bad settings, lost slot, incompatible schema.
    Definite,
    /// A broken invariant inside Sluice.
    Bug,
}

/// Errors of the PostgreSQL source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection string could not be understood.
    #[error("invalid source url: {reason}")]
    InvalidUrl { reason: String },
    /// TCP connect or socket I/O failed.
    #[error("cannot reach postgres at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// I/O failed on an established connection.
    #[error("connection to the source lost: {0}")]
    Io(#[from] std::io::Error),
    /// TLS was required but the server refused it, or the handshake failed.
    #[error("tls: {reason}")]
    Tls { reason: String },
    /// The server rejected the credentials.
    #[error("authentication failed for user {user}: {message}")]
    Auth { user: String, message: String },
    /// The server asked for an authentication method Sluice does not speak.
    #[error("unsupported authentication method {code} requested by the server")]
    UnsupportedAuth { code: i32 },
    /// An ErrorResponse from the server.
    #[error("postgres error {code}: {message}")]
    Server { code: String, message: String },
    /// The server sent bytes that do not follow the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The server ended the replication stream on its own (CopyDone or CommandComplete: it
    /// is shutting down or its walsender was stopped); a new session resumes.
    #[error("the server ended the replication stream (shutting down or walsender stopped)")]
    StreamEnded,
    /// A pgoutput message could not be decoded.
    #[error("cannot decode pgoutput message at {lsn}: {source}")]
    Decode {
        lsn: Lsn,
        #[source]
        source: crate::postgres::pgoutput::DecodeError,
    },
    /// Binary COPY data of a snapshot could not be decoded.
    #[error("cannot decode binary copy data: {0}")]
    CopyDecode(#[from] crate::postgres::pgoutput::DecodeError),
    /// A column value could not be represented in its Arrow type.
    #[error("table {table} column {column} (type {pg_type}) at {lsn}: {reason}")]
    Value {
        table: String,
        column: String,
        pg_type: String,
        lsn: Lsn,
        reason: String,
    },
    /// A MySQL/MariaDB column value could not be represented.
    #[error("table {table} column {column} (type {mysql_type}) at binlog {position}: {reason}")]
    MysqlValue {
        table: String,
        column: String,
        mysql_type: String,
        position: String,
        reason: String,
    },
    /// A MySQL/MariaDB table changed in a way the Delta table cannot follow.
    #[error(
        "table {table} column {column} at binlog {position}: incompatible schema change: {reason}"
    )]
    MysqlSchemaChange {
        table: String,
        column: String,
        position: String,
        reason: String,
    },
    /// A change referenced a relation the stream never described.
    #[error("change for unknown relation oid {oid} at {lsn}")]
    UnknownRelation { oid: u32, lsn: Lsn },
    /// The table's schema changed in a way the Delta table cannot follow.
    #[error("table {table} column {column} at {lsn}: incompatible schema change: {reason}")]
    SchemaChange {
        table: String,
        column: String,
        lsn: Lsn,
        reason: String,
    },
    /// An ordinary SQL statement failed.
    #[error("{context}: {source}")]
    Sql {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A preflight check found problems; each line names the fix.
    #[error("{}", problems.join("\n"))]
    Preflight { problems: Vec<String> },
    /// An incremental snapshot needs a primary key to read the table in order.
    #[error("table {table} has no primary key, which an incremental snapshot needs to read it in key order (on PostgreSQL REPLICA IDENTITY FULL does not give one; on MySQL/MariaDB the key's columns must be integers, decimals, utf8 text, binary or dates and times): add a primary key, or load the table with snapshot = \"initial\" in a new pipeline")]
    NoPrimaryKey { table: String },
    /// A MySQL/MariaDB statement or the binlog stream failed.
    #[error("{context}: {source}")]
    Mysql {
        context: String,
        #[source]
        source: mysql_async::Error,
    },
    /// The binlog position to resume from is gone from the server.
    #[error("binlog {file} (needed to resume at {position}) was purged from the server: the changes in it are lost to this pipeline; delete the lake's tables for this pipeline and its state file ({state}) and run again to re-snapshot, and keep binlogs longer (binlog_expire_logs_seconds)")]
    BinlogPurged {
        file: String,
        position: String,
        state: String,
    },
    /// The source cannot be reached yet (refused, unknown host, starting up, too many
    /// connections): retried by `sluice run`, reported at once by `sluice check`. The text
    /// names the address and the fix, never the password.
    #[error("{problem}")]
    Unreachable { problem: String },
    /// The server removed WAL the replication slot still needed (`wal_status = lost`, past
    /// `max_slot_wal_keep_size`): the slot can never stream again.
    #[error("replication slot {slot} is lost: the server removed WAL it still needed (retained WAL passed max_slot_wal_keep_size{keep}), so the changes in it are lost to this pipeline; to re-snapshot, drop the slot (SELECT pg_drop_replication_slot('{slot}')) and run sluice run again: it re-creates the slot and takes a new initial snapshot (snapshot = \"initial\", the default) into the existing tables, as op r at a new position; a row deleted while the slot was lost gets no delete row, so for an exact changelog also delete the lake's tables for this pipeline and its state file ({state}) before running; and raise max_slot_wal_keep_size (or set it to -1) so the slot is kept while sluice is behind")]
    SlotLost {
        slot: String,
        keep: String,
        state: String,
    },
    /// The sink ended (with its own error) while the source still had events for it.
    #[error("the sink stopped; see its error")]
    SinkStopped,
    /// Arrow refused to build a batch (a bug: builders and schema disagree).
    #[error("arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
}

impl Error {
    /// Whether to retry, stop, or report a bug. The one place this decision is made.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Connect { .. }
            | Error::Io(_)
            | Error::Unreachable { .. }
            | Error::StreamEnded => ErrorClass::Transient,
            Error::Server { code, .. } => match code.as_str() {
                // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
                "57P01" | "57P02" | "57P03" | "53300" | "08006" | "08003" => ErrorClass::Transient,
                _ => ErrorClass::Definite,
            },
            Error::Sql { source, .. } => {
                if source.is_closed() || source.as_db_error().is_none() {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Definite
                }
            }
            Error::Mysql { source, .. } => match source {
                mysql_async::Error::Io(_) => ErrorClass::Transient,
                mysql_async::Error::Server(e) => match e.code {
                    // server shutdown, lost connection, too many connections, read-only
                    1053 | 2013 | 1040 | 1927 => ErrorClass::Transient,
                    _ => ErrorClass::Definite,
                },
                mysql_async::Error::Driver(_) => ErrorClass::Transient,
                _ => ErrorClass::Definite,
            },
            Error::BinlogPurged { .. } | Error::SlotLost { .. } => ErrorClass::Definite,
            Error::InvalidUrl { .. }
            | Error::Tls { .. }
            | Error::Auth { .. }
            | Error::UnsupportedAuth { .. }
            | Error::Value { .. }
            | Error::SchemaChange { .. }
            | Error::MysqlValue { .. }
            | Error::MysqlSchemaChange { .. }
            | Error::NoPrimaryKey { .. }
            | Error::Preflight { .. } => ErrorClass::Definite,
            Error::Protocol(_)
            | Error::Decode { .. }
            | Error::CopyDecode(_)
            // The pipeline reports the sink's own error first; reaching this one is a bug.
            | Error::SinkStopped
            | Error::UnknownRelation { .. }
            | Error::Arrow(_) => ErrorClass::Bug,
        }
    }
}
