//! Plain SQL against the MySQL/MariaDB server: flavor, the preflight checks (each problem with
//! its fix), binlog positions, and the collation → character set map the row decoder needs.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, Row};

use super::conninfo::{MyConnInfo, SslMode};
use super::position::BinlogPosition;
use crate::change::TableName;
use crate::{Error, Result};

fn sql(context: &str) -> impl FnOnce(mysql_async::Error) -> Error + '_ {
    move |source| Error::Mysql {
        context: context.to_string(),
        source,
    }
}

/// Connect with ordinary (non-replication) SQL.
pub async fn connect(info: &MyConnInfo) -> Result<Conn> {
    // mysql_async's TLS takes rustls' process-wide provider; the dependency tree enables more
    // than one, so name it (once; a provider installed before is kept).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = info.ssl_mode != SslMode::Disabled;
    let connected = match Conn::new(info.opts(tls)).await {
        // `preferred`: a server without TLS is used in the clear.
        Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer))
            if info.ssl_mode == SslMode::Preferred =>
        {
            Conn::new(info.opts(false)).await
        }
        other => other,
    };
    connected.map_err(|source| match source {
        source if source.to_string().contains("invalid peer certificate") => Error::Mysql {
            context: format!(
                "connecting to {info}: the server's certificate was refused (name its CA with ssl-ca=/path/to/ca.pem, or use ssl-mode=required to encrypt without verifying)"
            ),
            source,
        },
        mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => Error::Mysql {
            context: format!(
                "connecting to {info}: the server does not offer TLS (enable it on the server, or use ssl-mode=preferred)"
            ),
            source,
        },
        mysql_async::Error::Server(e) if e.code == 1045 => Error::Auth {
            user: info.user.clone(),
            message: format!(
                "{} (check the password in the URL or SLUICE_SOURCE_PASSWORD)",
                e.message
            ),
        },
        source => Error::Mysql {
            context: format!("connecting to {info}"),
            source,
        },
    })
}

/// What the server is.
#[derive(Debug, Clone)]
pub struct Server {
    /// MariaDB (else MySQL).
    pub mariadb: bool,
    /// `VERSION()`.
    pub version: String,
    /// The server's own `server_id`.
    pub server_id: u32,
    /// Whether binlog events carry a checksum (`binlog_checksum` not NONE).
    pub checksum: bool,
}

/// Flavor and identity.
pub async fn server(conn: &mut Conn) -> Result<Server> {
    let row: Option<(String, u32, String)> = conn
        .query_first("SELECT VERSION(), @@server_id, @@global.binlog_checksum")
        .await
        .map_err(sql("reading the server version"))?;
    let (version, server_id, checksum) = row.unwrap_or_default();
    Ok(Server {
        mariadb: version.to_ascii_lowercase().contains("mariadb"),
        version,
        server_id,
        checksum: !checksum.eq_ignore_ascii_case("NONE"),
    })
}

async fn variable(conn: &mut Conn, name: &str) -> Result<Option<String>> {
    let row: Option<Row> = conn
        .query_first(format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))
        .await
        .map_err(sql("reading server variables"))?;
    Ok(row.and_then(|r| r.get::<Option<String>, _>(1).flatten()))
}

/// Everything that would stop replication, each as one line with its fix; empty when ready.
pub async fn preflight(
    conn: &mut Conn,
    user: &str,
    tables: &[TableName],
    server_id: u32,
) -> Result<Vec<String>> {
    let server = server(conn).await?;
    let mut problems = Vec::new();
    let on = |v: &Option<String>| {
        v.as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case("ON") || v == "1")
    };
    if !on(&variable(conn, "log_bin").await?) {
        problems.push("binary logging is off (log_bin): start the server with log_bin and a server_id set, e.g. log_bin = binlog in its config".to_string());
    }
    let expect = [
        ("binlog_format", "ROW", "the row changes themselves"),
        (
            "binlog_row_image",
            "FULL",
            "whole rows before and after each change",
        ),
        (
            "binlog_row_metadata",
            "FULL",
            "column names, signedness and charsets with every table map",
        ),
    ];
    for (name, want, why) in expect {
        let value = variable(conn, name).await?;
        if !value
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case(want))
        {
            problems.push(format!(
                "{name} is {}, Sluice needs {want} ({why}): SET GLOBAL {name} = '{want}' and set it in the server's config",
                value.as_deref().unwrap_or("unset")
            ));
        }
    }
    let compression = if server.mariadb {
        "log_bin_compress"
    } else {
        "binlog_transaction_compression"
    };
    if on(&variable(conn, compression).await?) {
        problems.push(format!(
            "binlog event compression is on ({compression}): Sluice does not decode compressed events; SET GLOBAL {compression} = OFF"
        ));
    }
    if server_id == server.server_id {
        problems.push(format!(
            "[source] server_id {server_id} is the server's own server_id: choose another id, unique among its replicas"
        ));
    }
    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(sql("reading the user's grants"))?;
    let grants = grants.join("\n").to_ascii_uppercase();
    let all = grants.contains("GRANT ALL PRIVILEGES ON *.*");
    let monitor = if server.mariadb {
        "BINLOG MONITOR"
    } else {
        "REPLICATION CLIENT"
    };
    let mut missing = Vec::new();
    if !all && !grants.contains("REPLICATION SLAVE") {
        missing.push("REPLICATION SLAVE");
    }
    if !all && !grants.contains(monitor) && !grants.contains("REPLICATION CLIENT") {
        missing.push(monitor);
    }
    if !missing.is_empty() {
        problems.push(format!(
            "user {user} lacks {}: GRANT {} ON *.* TO the user",
            missing.join(" and "),
            missing.join(", ")
        ));
    }
    for table in tables {
        let probe = format!(
            "SELECT 1 FROM {} LIMIT 0",
            quote(&table.schema) + "." + &quote(&table.name)
        );
        match conn.query_drop(probe).await {
            Ok(()) => {}
            Err(mysql_async::Error::Server(e)) if e.code == 1146 => {
                problems.push(format!(
                    "table {table} does not exist: create it or remove it from [source] tables"
                ));
            }
            Err(mysql_async::Error::Server(e)) if e.code == 1142 || e.code == 1044 => {
                problems.push(format!(
                    "user {user} cannot read table {table}: GRANT SELECT ON {} TO the user",
                    quote(&table.schema) + ".*"
                ));
            }
            Err(e) => return Err(sql("checking the tables")(e)),
        }
    }
    Ok(problems)
}

/// Quote an identifier with backticks.
pub fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// The server's current binlog position (the end of the last write).
pub async fn current_position(conn: &mut Conn) -> Result<BinlogPosition> {
    Ok(current_position_gtids(conn).await?.0)
}

/// The server's current binlog position and, on MySQL with GTIDs, the executed GTID set as of
/// it (read together, so they agree).
pub async fn current_position_gtids(conn: &mut Conn) -> Result<(BinlogPosition, Option<String>)> {
    let row: Option<Row> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(row) => row,
        // MySQL 8.4 renamed it.
        Err(mysql_async::Error::Server(e)) if e.code == 1064 => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(sql("reading the binlog position"))?,
        Err(e) => return Err(sql("reading the binlog position")(e)),
    };
    let row = row.ok_or_else(|| {
        Error::Protocol("the server reports no binlog position (is log_bin on?)".into())
    })?;
    let file: Option<String> = row.get(0);
    let pos: Option<u64> = row.get(1);
    // MySQL's Executed_Gtid_Set; MariaDB has no such column. Empty (no GTIDs, or none yet)
    // is no set at all: an empty set would ask for the whole binlog.
    let executed: Option<String> = row
        .get::<Option<String>, _>(4)
        .flatten()
        .filter(|g| !g.trim().is_empty());
    Ok((
        BinlogPosition {
            file: file.unwrap_or_default(),
            pos: pos.unwrap_or(4),
        },
        executed,
    ))
}

/// Binlog files the server still has, oldest first.
pub async fn binary_logs(conn: &mut Conn) -> Result<Vec<String>> {
    Ok(binary_log_sizes(conn)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// Binlog files the server still has and their sizes in bytes, oldest first (the last one's
/// size is the current write position).
pub async fn binary_log_sizes(conn: &mut Conn) -> Result<Vec<(String, u64)>> {
    let rows: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(sql("listing binary logs"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name = r.get::<Option<String>, _>(0).flatten()?;
            Some((name, r.get::<Option<u64>, _>(1).flatten().unwrap_or(0)))
        })
        .collect())
}

/// Binlog bytes the server has written after `from`, across rotations; `None` if `from`'s
/// file is gone.
pub async fn bytes_behind(conn: &mut Conn, from: &BinlogPosition) -> Result<Option<u64>> {
    Ok(super::position::bytes_behind(
        &binary_log_sizes(conn).await?,
        from,
    ))
}

/// Character set name of every collation id (row events carry collation ids).
pub async fn charsets(conn: &mut Conn) -> Result<HashMap<u16, String>> {
    let rows: Vec<(u16, String)> = conn
        .query(
            "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL",
        )
        .await
        .map_err(sql("reading collations"))?;
    Ok(rows.into_iter().collect())
}

/// The column names of `table` in order (empty if the table does not exist).
pub async fn table_columns(conn: &mut Conn, table: &TableName) -> Result<Vec<String>> {
    conn.exec(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (table.schema.as_str(), table.name.as_str()),
    )
    .await
    .map_err(sql("reading the columns of a table"))
}
