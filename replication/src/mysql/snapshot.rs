//! Initial load of MySQL/MariaDB tables at one consistent binlog position, so that streaming
//! from that position continues with no gap and no duplicate.
//!
//! ```text
//!  START TRANSACTION WITH CONSISTENT SNAPSHOT
//!    MariaDB: SHOW STATUS LIKE 'binlog_snapshot_%'  → the snapshot's binlog position (no lock)
//!    MySQL:   FLUSH TABLES WITH READ LOCK … SHOW MASTER STATUS … UNLOCK TABLES (a brief lock)
//!  per table: SELECT … (binary protocol, streamed) ─▶ builders (op `r`) ─▶ Event::Snapshot
//! ```
//!
//! One streamed SELECT per table inside the snapshot transaction keeps memory at one batch,
//! whatever the table's size. The table shapes come from `information_schema` and map to the
//! same Arrow types as the binlog's table maps, so streamed rows land in the same columns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

use super::catalog::{self, quote};
use super::conninfo::MyConnInfo;
use super::position::BinlogPosition;
use super::rows::Cell;
use super::shape::{Charset, MyShape, MyTableBuilder, MyType};
use crate::cdc::{Op, RowPosition};
use crate::change::{Event, TableBatch, TableName};
use crate::postgres::value::days_from_civil;
use crate::queue;
use crate::{Error, Result};

fn sql(context: String) -> impl FnOnce(mysql_async::Error) -> Error {
    move |source| Error::Mysql { context, source }
}

/// An open consistent-snapshot transaction and the binlog position it corresponds to.
pub struct Consistent {
    conn: Conn,
    /// Streaming from here continues exactly after what the snapshot shows.
    pub position: BinlogPosition,
}

impl Consistent {
    /// Open the snapshot transaction and learn its binlog position.
    pub async fn begin(info: &MyConnInfo, mariadb: bool) -> Result<Self> {
        let mut conn = catalog::connect(info).await?;
        let step = |what: &str| sql(format!("opening the snapshot: {what}"));
        // UTC timestamps, and strings in their stored bytes (decoded by column charset, as
        // the binlog's are).
        conn.query_drop("SET SESSION time_zone = '+00:00', character_set_results = binary")
            .await
            .map_err(step("session settings"))?;
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(step("isolation"))?;
        let position = if mariadb {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await
                .map_err(step("start transaction"))?;
            let rows: Vec<(String, String)> = conn
                .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
                .await
                .map_err(step("binlog_snapshot status"))?;
            let get = |name: &str| {
                rows.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            BinlogPosition {
                file: get("binlog_snapshot_file").unwrap_or_default(),
                pos: get("binlog_snapshot_position")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(4),
            }
        } else {
            conn.query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .map_err(step("read lock (needs RELOAD)"))?;
            let started = conn
                .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await;
            let position = catalog::current_position(&mut conn).await;
            conn.query_drop("UNLOCK TABLES")
                .await
                .map_err(step("unlock"))?;
            started.map_err(step("start transaction"))?;
            position?
        };
        if position.file.is_empty() {
            return Err(Error::Protocol(
                "the server reported no binlog position for the snapshot".into(),
            ));
        }
        Ok(Consistent { conn, position })
    }

    /// Copy `table` as of the snapshot into [`Event::Snapshot`]s of at most `max_rows` rows,
    /// each row at `position`. Returns the rows copied; `progress` counts them as they go.
    pub async fn copy_table(
        &mut self,
        table: &TableName,
        max_rows: usize,
        position: RowPosition,
        tx: &queue::Sender<Event>,
        progress: &AtomicU64,
    ) -> Result<u64> {
        let shape = Arc::new(shape(&mut self.conn, table).await?);
        let columns: Vec<String> = shape.columns.iter().map(|(n, _)| quote(n)).collect();
        let statement = format!(
            "SELECT {} FROM {}.{}",
            columns.join(", "),
            quote(&table.schema),
            quote(&table.name)
        );
        let mut builder = MyTableBuilder::new(shape.clone(), max_rows.min(8192));
        let mut result = self
            .conn
            .exec_iter(statement, ())
            .await
            .map_err(sql(format!("copying {table}")))?;
        let mut stream = result
            .stream::<Row>()
            .await
            .map_err(sql(format!("copying {table}")))?
            .ok_or_else(|| Error::Protocol(format!("copying {table}: no result set")))?;
        let describe = || "snapshot".to_string();
        let mut rows = 0u64;
        while let Some(row) = stream.next().await {
            let row = row.map_err(sql(format!("copying {table}")))?;
            let values = row.unwrap();
            let mut cells: Vec<Option<Cell<'_>>> = Vec::with_capacity(values.len());
            for (value, (name, ty)) in values.iter().zip(&shape.columns) {
                let cell = cell(value, ty).map_err(|reason| Error::MysqlValue {
                    table: table.to_string(),
                    column: name.clone(),
                    mysql_type: format!("{ty:?}"),
                    position: "snapshot".into(),
                    reason,
                })?;
                cells.push(Some(cell));
            }
            builder.append(Op::Read, position, &cells, &describe)?;
            rows += 1;
            if builder.rows() >= max_rows {
                progress.fetch_add(builder.rows() as u64, Ordering::Relaxed);
                send(&mut builder, tx).await?;
            }
        }
        drop(stream);
        progress.fetch_add(builder.rows() as u64, Ordering::Relaxed);
        send(&mut builder, tx).await?;
        Ok(rows)
    }

    /// End the snapshot transaction.
    pub async fn close(mut self) {
        let _ = self.conn.query_drop("COMMIT").await;
        let _ = self.conn.disconnect().await;
    }
}

async fn send(builder: &mut MyTableBuilder, tx: &queue::Sender<Event>) -> Result<()> {
    let Some(batch) = builder.take()? else {
        return Ok(());
    };
    let event = Event::Snapshot {
        tables: vec![TableBatch {
            table: builder.shape().table.clone(),
            batch,
        }],
    };
    let permit = tx
        .reserve(event.memory_size())
        .await
        .map_err(|_| Error::SinkStopped)?;
    tx.send(event, permit).map_err(|_| Error::SinkStopped)
}

/// A value of the binary protocol as a cell of the column's type.
fn cell<'a>(value: &'a Value, ty: &MyType) -> std::result::Result<Cell<'a>, String> {
    Ok(match (value, ty) {
        (Value::NULL, _) => Cell::Null,
        (Value::Int(i), MyType::Year) => Cell::Year(u16::try_from(*i).map_err(|_| "bad year")?),
        (Value::Int(i), _) => Cell::Int(*i),
        (Value::UInt(u), _) => Cell::UInt(*u),
        (Value::Float(f), _) => Cell::Float(*f),
        (Value::Double(d), MyType::Float32) => Cell::Float(*d as f32),
        (Value::Double(d), _) => Cell::Double(*d),
        (Value::Bytes(b), MyType::Decimal { .. } | MyType::DecimalText) => {
            Cell::Decimal(String::from_utf8(b.clone()).map_err(|e| e.to_string())?)
        }
        (Value::Bytes(b), MyType::Bit | MyType::UInt64) => {
            Cell::Bit(b.iter().fold(0u64, |n, byte| (n << 8) | u64::from(*byte)))
        }
        (Value::Bytes(b), MyType::Json) => {
            Cell::Json(String::from_utf8(b.clone()).map_err(|e| e.to_string())?)
        }
        (Value::Bytes(b), MyType::Year) => Cell::Year(
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("bad year")?,
        ),
        (Value::Bytes(b), _) => Cell::Bytes(b),
        (Value::Date(y, m, d, ..), MyType::Date) => Cell::Date {
            y: *y,
            m: *m,
            d: *d,
        },
        (Value::Date(y, m, d, h, mi, s, us), MyType::DateTime) => Cell::DateTime {
            y: *y,
            m: *m,
            d: *d,
            h: *h,
            mi: *mi,
            s: *s,
            us: *us,
        },
        (Value::Date(y, m, d, h, mi, s, us), MyType::Timestamp) => {
            // The session's time zone is UTC.
            if *y == 0 {
                Cell::Timestamp { secs: 0, us: 0 }
            } else {
                let days = days_from_civil(i64::from(*y), u32::from(*m), u32::from(*d));
                let secs =
                    days * 86_400 + i64::from(*h) * 3600 + i64::from(*mi) * 60 + i64::from(*s);
                Cell::Timestamp {
                    secs: u32::try_from(secs).map_err(|_| "timestamp out of range")?,
                    us: *us,
                }
            }
        }
        (Value::Time(neg, days, h, m, s, us), _) => Cell::Time {
            neg: *neg,
            h: days * 24 + u32::from(*h),
            m: *m,
            s: *s,
            us: *us,
        },
        (v, ty) => return Err(format!("unexpected {v:?} for {ty:?}")),
    })
}

/// A table's shape from `information_schema`, typed as its binlog table maps are.
pub async fn shape(conn: &mut Conn, table: &TableName) -> Result<MyShape> {
    let rows: Vec<Row> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE,
                    CHARACTER_SET_NAME, COLUMN_KEY
               FROM information_schema.COLUMNS
              WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?
              ORDER BY ORDINAL_POSITION",
            (&table.schema, &table.name),
        )
        .await
        .map_err(sql(format!("reading the columns of {table}")))?;
    let mut columns = Vec::with_capacity(rows.len());
    let mut key = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        let name: String = row.get(0).unwrap_or_default();
        let data_type: String = row.get::<String, _>(1).unwrap_or_default().to_lowercase();
        let column_type: String = row.get::<String, _>(2).unwrap_or_default();
        let precision: Option<u64> = row.get(3).flatten();
        let scale: Option<u64> = row.get(4).flatten();
        let charset: Option<String> = row.get(5).flatten();
        let column_key: Option<String> = row.get(6).flatten();
        if column_key.as_deref() == Some("PRI") {
            key.push(i);
        }
        let unsigned = column_type.to_lowercase().contains("unsigned");
        let text = || match charset.as_deref() {
            Some("binary") | None => Ok(MyType::Binary),
            Some("utf8mb4" | "utf8mb3" | "utf8" | "ascii") => Ok(MyType::Text(Charset::Utf8)),
            Some("latin1") => Ok(MyType::Text(Charset::Latin1)),
            Some(other) => Err(Error::MysqlValue {
                table: table.to_string(),
                column: name.clone(),
                mysql_type: data_type.clone(),
                position: "snapshot".into(),
                reason: format!(
                    "character set {other} is not supported: convert the column to utf8mb4"
                ),
            }),
        };
        let ty = match data_type.as_str() {
            "tinyint" => MyType::Int16,
            "smallint" if unsigned => MyType::Int32,
            "smallint" => MyType::Int16,
            "mediumint" => MyType::Int32,
            "int" | "integer" if unsigned => MyType::Int64,
            "int" | "integer" => MyType::Int32,
            "bigint" if unsigned => MyType::UInt64,
            "bigint" => MyType::Int64,
            "decimal" | "numeric" => match (precision, scale) {
                (Some(p), Some(s)) if p <= 38 => MyType::Decimal {
                    precision: p as u8,
                    scale: s as i8,
                },
                _ => MyType::DecimalText,
            },
            "float" => MyType::Float32,
            "double" | "real" => MyType::Float64,
            "date" => MyType::Date,
            "datetime" => MyType::DateTime,
            "timestamp" => MyType::Timestamp,
            "time" => MyType::Time,
            "year" => MyType::Year,
            "bit" if precision.unwrap_or(1) >= 64 => MyType::UInt64,
            "bit" => MyType::Bit,
            "enum" => MyType::Enum(labels(&column_type).into()),
            "set" => MyType::Set(labels(&column_type).into()),
            "json" => MyType::Json,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => text()?,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
            | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" => MyType::Binary,
            other => {
                return Err(Error::MysqlValue {
                    table: table.to_string(),
                    column: name,
                    mysql_type: other.to_string(),
                    position: "snapshot".into(),
                    reason: "column type not supported".into(),
                })
            }
        };
        columns.push((name, ty));
    }
    if columns.is_empty() {
        return Err(Error::Protocol(format!("table {table} has no columns")));
    }
    Ok(MyShape {
        table: Arc::new(table.clone()),
        columns,
        key,
        raw: Vec::new(),
    })
}

/// The labels of `enum('a','b')` / `set('a','b')` (quotes doubled inside labels).
fn labels(column_type: &str) -> Vec<String> {
    let inner = column_type
        .split_once('(')
        .map_or("", |(_, rest)| rest.trim_end_matches(')'));
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    label.push('\'');
                } else {
                    break;
                }
            } else {
                label.push(c);
            }
        }
        out.push(label);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_labels_parse_with_quotes() {
        assert_eq!(labels("enum('a','it''s','c,d')"), vec!["a", "it's", "c,d"]);
        assert_eq!(labels("set('r','g')"), vec!["r", "g"]);
    }
}
