//! Ordinary SQL against the source (tokio-postgres): preflight checks, publication and slot
//! management, catalog look-ups, and the numbers `sluice status` shows.
//!
//! Identifiers are quoted with [`quote_ident`]; values are always bound parameters.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio_postgres::Client;

use super::column::{is_user_type, ColumnType};
use super::conninfo::ConnInfo;
use super::tls;
use crate::change::{quote_ident, TableName};
use crate::health::WalReport;
use crate::{Error, Lsn, Result};

/// Open an SQL connection; its driver task runs in the background until the client drops.
pub async fn connect(info: &ConnInfo) -> Result<Client> {
    let connector = tls::sql_connector(info)?;
    let (client, connection) = info
        .sql_config()
        .connect(connector)
        .await
        .map_err(|e| connect_error(info, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "sql connection closed");
        }
    });
    Ok(client)
}

/// A one-line description of why connecting failed, with the fix. A server that cannot be
/// reached yet (refused, unknown host, starting up, out of connections) is
/// [`Error::Unreachable`], which `sluice run` retries; everything else is definite.
fn connect_error(info: &ConnInfo, e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        if let "57P03" | "53300" = db.code().code() {
            // cannot_connect_now (starting up, recovering), too_many_connections
            return Error::Unreachable {
                problem: format!(
                    "postgres at {} cannot take the connection yet: {}",
                    info.addr(),
                    db.message()
                ),
            };
        }
        let fix = match db.code().code() {
            "28P01" | "28000" => format!(
                "authentication failed for user {}: check the password (url or SLUICE_SOURCE_PASSWORD) and pg_hba.conf",
                info.user
            ),
            "3D000" => format!("database {} does not exist: create it or fix the url", info.dbname),
            _ => format!("postgres at {} refused the connection: {}", info.addr(), db.message()),
        };
        return Error::Preflight {
            problems: vec![fix],
        };
    }
    // The driver's top-level message is vague ("error performing TLS handshake"): add causes.
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    let fix = if text.contains("password missing") {
        format!(
            "the server asks user {} for a password: put it in the url or in SLUICE_SOURCE_PASSWORD",
            info.user
        )
    } else if text.contains("tls") || text.contains("TLS") || text.contains("ssl") {
        format!("tls with {} failed ({text}): check sslmode", info.addr())
    } else {
        return Error::Unreachable {
            problem: format!(
                "cannot reach postgres at {} ({text}): check host and port, and that the server is running",
                info.addr()
            ),
        };
    };
    Error::Preflight {
        problems: vec![fix],
    }
}

fn sql(context: &str) -> impl FnOnce(tokio_postgres::Error) -> Error + '_ {
    move |source| Error::Sql {
        context: context.to_string(),
        source,
    }
}

/// What the pipeline needs to exist, checked before anything is created.
#[derive(Debug, Clone)]
pub struct Requirements<'a> {
    /// Replication slot name.
    pub slot: &'a str,
    /// Source tables.
    pub tables: &'a [TableName],
}

/// Check everything that would stop replication; return every problem, each with its fix.
pub async fn preflight(client: &Client, req: &Requirements<'_>) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let wal_level: String = client
        .query_one("SELECT current_setting('wal_level')", &[])
        .await
        .map_err(sql("reading wal_level"))?
        .get(0);
    if wal_level != "logical" {
        problems.push(format!(
            "wal_level is {wal_level}, logical replication needs logical: run ALTER SYSTEM SET wal_level = logical and restart postgres"
        ));
    }
    let row = client
        .query_one(
            "SELECT rolreplication OR rolsuper, current_user::text FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(sql("reading role attributes"))?;
    let (can_replicate, user): (bool, String) = (row.get(0), row.get(1));
    if !can_replicate {
        problems.push(format!(
            "role {user} lacks the REPLICATION attribute: run ALTER ROLE {} WITH REPLICATION",
            quote_ident(&user)
        ));
    }
    let row = client
        .query_one(
            "SELECT current_setting('max_replication_slots')::int,
                    (SELECT count(*)::int FROM pg_replication_slots),
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&req.slot],
        )
        .await
        .map_err(sql("reading replication slots"))?;
    let (max_slots, used, exists): (i32, i32, bool) = (row.get(0), row.get(1), row.get(2));
    if !exists && used >= max_slots {
        problems.push(format!(
            "no free replication slot ({used} of max_replication_slots={max_slots} in use): drop an unused slot with SELECT pg_drop_replication_slot('name') or raise max_replication_slots and restart postgres"
        ));
    }
    if exists {
        let row = client
            .query_one(
                "SELECT plugin, database FROM pg_replication_slots WHERE slot_name = $1",
                &[&req.slot],
            )
            .await
            .map_err(sql("reading replication slot"))?;
        let (plugin, database): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        let current_db: String = client
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(sql("reading database"))?
            .get(0);
        if plugin.as_deref() != Some("pgoutput") || database.as_deref() != Some(&current_db) {
            problems.push(format!(
                "replication slot {} exists but is not a pgoutput slot of database {current_db}: drop it or set [source] slot to another name",
                req.slot
            ));
        }
    }
    for table in req.tables {
        let row = client
            .query_opt(
                "SELECT c.relreplident::text,
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                        c.relkind::text
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2",
                &[&table.schema, &table.name],
            )
            .await
            .map_err(sql("reading tables"))?;
        let Some(row) = row else {
            problems.push(format!(
                "table {table} does not exist: create it or remove it from [source] tables"
            ));
            continue;
        };
        let (identity, has_pk, kind): (String, bool, String) = (row.get(0), row.get(1), row.get(2));
        if kind != "r" && kind != "p" {
            problems.push(format!(
                "{table} is not a table (relkind {kind}): only tables can be replicated"
            ));
        } else if identity == "n" || (identity == "d" && !has_pk) {
            problems.push(format!(
                "table {table} has no primary key and REPLICA IDENTITY is not FULL, so its updates and deletes cannot be keyed: add a primary key or run ALTER TABLE {} REPLICA IDENTITY FULL",
                table.quoted()
            ));
        }
    }
    Ok(problems)
}

/// Create the publication if missing, or make it cover exactly `tables`.
pub async fn ensure_publication(client: &Client, name: &str, tables: &[TableName]) -> Result<()> {
    let list = tables
        .iter()
        .map(TableName::quoted)
        .collect::<Vec<_>>()
        .join(", ");
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(sql("reading publications"))?
        .is_some();
    let statement = if exists {
        format!("ALTER PUBLICATION {} SET TABLE {list}", quote_ident(name))
    } else {
        format!("CREATE PUBLICATION {} FOR TABLE {list}", quote_ident(name))
    };
    client
        .batch_execute(&statement)
        .await
        .map_err(sql("creating the publication"))?;
    Ok(())
}

/// Whether the replication slot exists.
pub async fn slot_exists(client: &Client, slot: &str) -> Result<bool> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("reading replication slots"))?
        .is_some())
}

/// Create the logical slot with pgoutput if it does not exist. Returns whether it was created.
pub async fn ensure_slot(client: &Client, slot: &str) -> Result<bool> {
    if slot_exists(client, slot).await? {
        return Ok(false);
    }
    client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .map_err(sql("creating the replication slot"))?;
    Ok(true)
}

/// How the tables' columns can be streamed.
#[derive(Debug, Clone, Default)]
pub struct TypeSupport {
    /// Whether every column decodes in binary form (else the connection uses text).
    pub binary: bool,
    /// OIDs of enum types used by the tables.
    pub enums: HashSet<u32>,
    /// Columns that forced text mode, for the log.
    pub text_columns: Vec<String>,
    /// Primary key columns of the tables that have one. With REPLICA IDENTITY FULL every
    /// column is sent as identity; the primary key tells a key change from an update.
    pub primary_keys: HashMap<TableName, Vec<String>>,
}

/// Decide binary or text mode from the catalog types of the tables' columns, and read their
/// primary keys.
pub async fn type_support(client: &Client, tables: &[TableName]) -> Result<TypeSupport> {
    let mut support = TypeSupport {
        binary: true,
        ..TypeSupport::default()
    };
    for table in tables {
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid::oid, a.atttypmod, t.typtype::text
                   FROM pg_attribute a
                   JOIN pg_class c ON c.oid = a.attrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_type t ON t.oid = a.atttypid
                  WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
                &[&table.schema, &table.name],
            )
            .await
            .map_err(sql("reading column types"))?;
        let key = client
            .query(
                "SELECT a.attname::text
                   FROM pg_index i
                   JOIN pg_class c ON c.oid = i.indrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                  WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary
                  ORDER BY array_position(i.indkey::int2[], a.attnum)",
                &[&table.schema, &table.name],
            )
            .await
            .map_err(sql("reading primary keys"))?;
        if !key.is_empty() {
            support.primary_keys.insert(
                table.clone(),
                key.iter().map(|r| r.get::<_, String>(0)).collect(),
            );
        }
        for row in rows {
            let (name, oid, typmod, typtype): (String, u32, i32, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if typtype == "e" {
                support.enums.insert(oid);
                continue;
            }
            if is_user_type(oid) || ColumnType::from_oid(oid, typmod, &HashSet::new()).is_none() {
                support.binary = false;
                support.text_columns.push(format!("{table}.{name}"));
            }
        }
    }
    Ok(support)
}

/// `wal_sender_timeout`; zero when disabled.
pub async fn wal_sender_timeout(client: &Client) -> Result<Duration> {
    let ms: i32 = client
        .query_one(
            "SELECT setting::int FROM pg_settings WHERE name = 'wal_sender_timeout'",
            &[],
        )
        .await
        .map_err(sql("reading wal_sender_timeout"))?
        .get(0);
    Ok(Duration::from_millis(ms.max(0) as u64))
}

/// The server's current WAL write position.
pub async fn current_wal_lsn(client: &Client) -> Result<Lsn> {
    let text: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(sql("reading the current wal position"))?
        .get(0);
    text.parse().map_err(Error::Protocol)
}

/// A slot as `sluice status` reports it.
#[derive(Debug, Clone)]
pub struct SlotStatus {
    /// Position confirmed durable by Sluice.
    pub confirmed_flush: Option<Lsn>,
    /// WAL bytes the slot retains beyond what was confirmed.
    pub lag_bytes: Option<i64>,
    /// Whether a consumer is connected.
    pub active: bool,
}

/// The slot's state, or `None` if it does not exist.
pub async fn slot_status(client: &Client, slot: &str) -> Result<Option<SlotStatus>> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text,
                    (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint,
                    active
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("reading the replication slot"))?;
    Ok(row.map(|row| SlotStatus {
        confirmed_flush: row.get::<_, Option<String>>(0).and_then(|s| s.parse().ok()),
        lag_bytes: row.get(1),
        active: row.get(2),
    }))
}

/// The column names of `table` in order (empty if the table does not exist).
pub async fn table_columns(client: &Client, table: &TableName) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(sql("reading the columns of a table"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Prefix of the heartbeat messages (`pg_logical_emit_message(false, …)`): told apart from the
/// incremental-snapshot watermarks ([`crate::change::MARKER_PREFIX`], transactional) by both
/// prefix and kind. The content is the server's clock when it was written, in microseconds
/// since the Unix epoch.
pub const HEARTBEAT_PREFIX: &str = "sluice_heartbeat";

/// Write a heartbeat into the WAL: a non-transactional logical decoding message, decoded by
/// every slot of this database (it lands in no table). Returns its position.
pub async fn emit_heartbeat(client: &Client) -> Result<Lsn> {
    let lsn: String = client
        .query_one(
            "SELECT pg_logical_emit_message(false, $1,
                        (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text)::text",
            &[&HEARTBEAT_PREFIX],
        )
        .await
        .map_err(sql("writing a heartbeat into the WAL"))?
        .get(0);
    lsn.parse().map_err(Error::Protocol)
}

/// Read the slot's WAL retention (`wal_status` and `safe_wal_size` need PostgreSQL 13+) and
/// `max_slot_wal_keep_size`; `None` when the slot does not exist.
pub async fn slot_wal(client: &Client, slot: &str) -> Result<Option<WalReport>> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(sql("reading the server version"))?
        .get(0);
    let query = if version >= 130_000 {
        "SELECT wal_status::text, safe_wal_size::bigint,
                (pg_current_wal_lsn() - restart_lsn)::bigint,
                (SELECT CASE WHEN setting::bigint < 0 THEN NULL
                             ELSE setting::bigint * 1024 * 1024 END
                   FROM pg_settings WHERE name = 'max_slot_wal_keep_size')
           FROM pg_replication_slots WHERE slot_name = $1"
    } else {
        "SELECT NULL::text, NULL::bigint, (pg_current_wal_lsn() - restart_lsn)::bigint,
                NULL::bigint
           FROM pg_replication_slots WHERE slot_name = $1"
    };
    let row = client
        .query_opt(query, &[&slot])
        .await
        .map_err(sql("reading the replication slot's wal retention"))?;
    Ok(row.map(|row| WalReport {
        slot: slot.to_string(),
        wal_status: row.get(0),
        safe_wal_size: row.get(1),
        retained_bytes: row.get(2),
        max_slot_wal_keep_size: row.get(3),
        checked_at: std::time::SystemTime::now(),
    }))
}
