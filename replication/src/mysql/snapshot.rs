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
//!
//! Incremental snapshots read primary-key chunks instead, each in a snapshot transaction of
//! its own ([`Consistent::renew`]) whose position places the chunk in the stream
//! (`crate::window`, positioned windows):
//!
//! ```text
//!  SELECT … WHERE (k₁ > ?) OR (k₁ = ? AND k₂ > ?) … ORDER BY k₁, k₂ LIMIT n
//! ```
//!
//! Bounds are kept as text and bound back with their exact type (integers as integers,
//! decimals as `CAST(? AS DECIMAL(p, s))`, binary keys as `UNHEX(?)`), never through a double.
//!
//! Values are selected in the form the binlog carries them, so both paths land the same: enum
//! and set as their index and bits (`CAST(e AS UNSIGNED)`, labelled like the binlog's, whatever
//! the labels' charset), MariaDB's `inet6` and `uuid` as their 16 bytes
//! (`CAST(u AS BINARY(16))`), strings as their stored bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use deltalake::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

use super::catalog::{self, quote};
use super::conninfo::MyConnInfo;
use super::position::BinlogPosition;
use super::rows::{Cell, RawColumn};
use super::shape::{text_type, Charset, MyShape, MyTableBuilder, MyType};
use crate::cdc::{Op, RowPosition};
use crate::change::{Event, TableBatch, TableName};
use crate::queue;
use crate::value::days_from_civil;
use crate::window::ChunkRead;
use crate::{Error, Result};

fn sql(context: String) -> impl FnOnce(mysql_async::Error) -> Error {
    move |source| Error::Mysql { context, source }
}

/// An open consistent-snapshot transaction and the binlog position it corresponds to.
pub struct Consistent {
    conn: Conn,
    mariadb: bool,
    /// Streaming from here continues exactly after what the snapshot shows.
    pub position: BinlogPosition,
    /// MySQL with GTIDs: the executed GTID set as of `position`.
    pub executed: Option<String>,
}

/// Start a consistent-snapshot transaction on `conn` and learn its binlog position (and, on
/// MySQL, the executed GTID set as of it).
async fn start(conn: &mut Conn, mariadb: bool) -> Result<(BinlogPosition, Option<String>)> {
    let step = |what: &str| sql(format!("opening the snapshot: {what}"));
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
        let position = BinlogPosition {
            file: get("binlog_snapshot_file").unwrap_or_default(),
            pos: get("binlog_snapshot_position")
                .and_then(|p| p.parse().ok())
                .unwrap_or(4),
        };
        (position, None)
    } else {
        conn.query_drop("FLUSH TABLES WITH READ LOCK")
            .await
            .map_err(step("read lock (needs RELOAD)"))?;
        let started = conn
            .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await;
        let position = catalog::current_position_gtids(conn).await;
        conn.query_drop("UNLOCK TABLES")
            .await
            .map_err(step("unlock"))?;
        started.map_err(step("start transaction"))?;
        position?
    };
    if position.0.file.is_empty() {
        return Err(Error::Protocol(
            "the server reported no binlog position for the snapshot".into(),
        ));
    }
    Ok(position)
}

impl Consistent {
    /// Open the snapshot transaction and learn its binlog position.
    pub async fn begin(info: &MyConnInfo, mariadb: bool) -> Result<Self> {
        let mut conn = catalog::connect(info).await?;
        // UTC timestamps, and strings in their stored bytes (decoded by column charset, as
        // the binlog's are).
        conn.query_drop("SET SESSION time_zone = '+00:00', character_set_results = binary")
            .await
            .map_err(sql("opening the snapshot: session settings".into()))?;
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(sql("opening the snapshot: isolation".into()))?;
        let (position, executed) = start(&mut conn, mariadb).await?;
        Ok(Consistent {
            conn,
            mariadb,
            position,
            executed,
        })
    }

    /// Plan keyset chunks of `table` (see [`plan`]).
    pub async fn plan(&mut self, table: &TableName) -> Result<KeyPlan> {
        plan(&mut self.conn, table).await
    }

    /// Open a new snapshot transaction (ending the current one), as of a newer position.
    pub async fn renew(&mut self) -> Result<()> {
        (self.position, self.executed) = start(&mut self.conn, self.mariadb).await?;
        Ok(())
    }

    /// End the snapshot transaction, keeping the connection for [`Consistent::renew`].
    pub async fn release(&mut self) -> Result<()> {
        self.conn
            .query_drop("COMMIT")
            .await
            .map_err(sql("ending the snapshot".into()))
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
        let statement = format!("SELECT {} FROM {}", select_list(&shape), quote_table(table));
        let mut out = Out::Queue { tx, progress };
        let (rows, _) = self
            .select(
                &shape,
                statement,
                Vec::new(),
                &[],
                max_rows,
                position,
                &mut out,
            )
            .await?;
        Ok(rows)
    }

    /// Read one keyset chunk of `plan`'s table as of the snapshot: at most `limit` rows with a
    /// key above `after` (from the start: `None`) matching `filter` (an SQL predicate), in key
    /// order, as batches of at most `max_rows` rows at `position`. The chunk's upper bound is
    /// `None` when it reached the table's end.
    pub async fn read_chunk(
        &mut self,
        plan: &KeyPlan,
        after: Option<&[String]>,
        filter: Option<&str>,
        limit: usize,
        max_rows: usize,
        position: RowPosition,
    ) -> Result<ChunkRead> {
        let shape = &plan.shape;
        let names: Vec<String> = plan
            .key
            .iter()
            .map(|&k| quote(&shape.columns[k].0))
            .collect();
        let mut params = Vec::new();
        let mut conditions = Vec::new();
        if let Some(after) = after {
            if after.len() != plan.key.len() {
                return Err(Error::Protocol(format!(
                    "snapshot bound of {} has {} values for a {}-column key",
                    shape.table,
                    after.len(),
                    plan.key.len()
                )));
            }
            // (k1, k2) > (v1, v2) spelled out, which every version plans as a range.
            let mut terms = Vec::new();
            for i in 0..plan.key.len() {
                let mut term = Vec::new();
                for j in 0..=i {
                    let ty = &shape.columns[plan.key[j]].1;
                    let (placeholder, value) = bound_param(&after[j], ty)?;
                    let op = if j == i { ">" } else { "=" };
                    term.push(format!("{} {op} {placeholder}", names[j]));
                    params.push(value);
                }
                terms.push(format!("({})", term.join(" AND ")));
            }
            conditions.push(format!("({})", terms.join(" OR ")));
        }
        if let Some(predicate) = filter {
            conditions.push(format!("({predicate})"));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let statement = format!(
            "SELECT {} FROM {}{filter} ORDER BY {} LIMIT {limit}",
            select_list(shape),
            quote_table(&shape.table),
            names.join(", ")
        );
        let mut out = Out::Collect(Vec::new());
        let (rows, last) = self
            .select(
                shape, statement, params, &plan.key, max_rows, position, &mut out,
            )
            .await?;
        let Out::Collect(mut batches) = out else {
            return Err(Error::Protocol("chunk rows went astray".into()));
        };
        if batches.is_empty() {
            // An empty chunk still closes its window (and ends the table).
            batches.push(RecordBatch::new_empty(shape.schema()));
        }
        let upper = match last {
            Some(last) if rows >= limit as u64 => Some(last),
            _ => None,
        };
        Ok(ChunkRead {
            batches,
            rows: rows as usize,
            upper,
        })
    }

    /// Run `statement` and stream its rows into builders of `shape`, handing each full batch
    /// to `out`. Returns the row count and the last row's `key` columns as bound text.
    #[allow(clippy::too_many_arguments)]
    async fn select(
        &mut self,
        shape: &Arc<MyShape>,
        statement: String,
        params: Vec<Value>,
        key: &[usize],
        max_rows: usize,
        position: RowPosition,
        out: &mut Out<'_>,
    ) -> Result<(u64, Option<Vec<String>>)> {
        let table = &shape.table;
        let mut builder = MyTableBuilder::new(shape.clone(), max_rows.min(8192));
        let mut result = self
            .conn
            .exec_iter(statement, params)
            .await
            .map_err(sql(format!("copying {table}")))?;
        let mut stream = result
            .stream::<Row>()
            .await
            .map_err(sql(format!("copying {table}")))?
            .ok_or_else(|| Error::Protocol(format!("copying {table}: no result set")))?;
        let describe = || "snapshot".to_string();
        let mut rows = 0u64;
        let mut last: Option<Vec<Value>> = None;
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
            drop(cells);
            if !key.is_empty() {
                last = Some(values);
            }
            rows += 1;
            if builder.rows() >= max_rows {
                out.take(&mut builder).await?;
            }
        }
        drop(stream);
        out.take(&mut builder).await?;
        let last = match last {
            Some(values) => Some(
                key.iter()
                    .map(|&k| bound_text(&values[k], &shape.columns[k].1))
                    .collect::<Result<Vec<_>>>()?,
            ),
            None => None,
        };
        Ok((rows, last))
    }

    /// End the snapshot transaction.
    pub async fn close(mut self) {
        let _ = self.conn.query_drop("COMMIT").await;
        let _ = self.conn.disconnect().await;
    }
}

/// Where [`Consistent::select`] hands its batches.
enum Out<'a> {
    /// To the sinks, with backpressure, counting rows.
    Queue {
        tx: &'a queue::Sender<Event>,
        progress: &'a AtomicU64,
    },
    /// Kept (one chunk).
    Collect(Vec<RecordBatch>),
}

impl Out<'_> {
    async fn take(&mut self, builder: &mut MyTableBuilder) -> Result<()> {
        let rows = builder.rows() as u64;
        let Some(batch) = builder.take()? else {
            return Ok(());
        };
        match self {
            Out::Collect(batches) => batches.push(batch),
            Out::Queue { tx, progress } => {
                progress.fetch_add(rows, Ordering::Relaxed);
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
                tx.send(event, permit).map_err(|_| Error::SinkStopped)?;
            }
        }
        Ok(())
    }
}

/// How to read a table in primary-key chunks.
pub struct KeyPlan {
    /// The table's shape (as of planning).
    pub shape: Arc<MyShape>,
    /// Primary key columns (indices into the shape's columns), in key order.
    pub key: Vec<usize>,
    /// The server's estimate of the table's rows.
    pub estimate: u64,
}

impl KeyPlan {
    /// Primary key column names, in key order.
    pub fn key_names(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|&k| self.shape.columns[k].0.clone())
            .collect()
    }
}

/// Plan keyset chunks of `table`: its shape and primary key. A table without one, or with a
/// key column whose order Sluice cannot bound exactly (float, bit, enum, set, json, latin1
/// text, text in a charset kept as bytes), is refused with [`Error::NoPrimaryKey`].
pub async fn plan(conn: &mut Conn, table: &TableName) -> Result<KeyPlan> {
    let shape = shape(conn, table).await?;
    let names: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
              WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY'
              ORDER BY ORDINAL_POSITION",
            (&table.schema, &table.name),
        )
        .await
        .map_err(sql(format!("reading the primary key of {table}")))?;
    let key: Vec<usize> = names
        .iter()
        .filter_map(|n| shape.columns.iter().position(|(c, _)| c == n))
        .collect();
    let boundable = key.iter().all(|&k| {
        matches!(
            shape.columns[k].1,
            MyType::Int16
                | MyType::Int32
                | MyType::Int64
                | MyType::UInt64
                | MyType::Year
                | MyType::Decimal { .. }
                | MyType::Text(Charset::Utf8)
                | MyType::Binary
                | MyType::Date
                | MyType::DateTime
                | MyType::Timestamp
                | MyType::Time
        )
    });
    if key.is_empty() || key.len() != names.len() || !boundable {
        return Err(Error::NoPrimaryKey {
            table: table.to_string(),
        });
    }
    let estimate: Option<u64> = conn
        .exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES
              WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&table.schema, &table.name),
        )
        .await
        .map_err(sql(format!("estimating the rows of {table}")))?
        .flatten();
    Ok(KeyPlan {
        shape: Arc::new(shape),
        key,
        estimate: estimate.unwrap_or(0),
    })
}

/// Whether `predicate` is a valid condition on `table` (the server's error otherwise).
pub async fn check_filter(conn: &mut Conn, table: &TableName, predicate: &str) -> Result<()> {
    conn.query_drop(format!(
        "SELECT 1 FROM {} WHERE ({predicate}) LIMIT 0",
        quote_table(table)
    ))
    .await
    .map_err(sql(format!("checking the predicate on {table}")))
}

/// The select list of `shape`'s columns, each in the form the binlog carries it (see the
/// module note).
fn select_list(shape: &MyShape) -> String {
    let columns: Vec<String> = shape
        .columns
        .iter()
        .enumerate()
        .map(|(i, (n, ty))| match ty {
            MyType::Enum(_) | MyType::Set(_) => format!("CAST({} AS UNSIGNED)", quote(n)),
            _ => match shape.raw.get(i).map_or(0, |r| r.fixed) {
                0 => quote(n),
                len => format!("CAST({} AS BINARY({len}))", quote(n)),
            },
        })
        .collect();
    columns.join(", ")
}

fn quote_table(table: &TableName) -> String {
    format!("{}.{}", quote(&table.schema), quote(&table.name))
}

/// A key value as the text a chunk bound keeps (see [`bound_param`]).
fn bound_text(value: &Value, ty: &MyType) -> Result<String> {
    let bad = || {
        Error::Protocol(format!(
            "key value {value:?} of type {ty:?} cannot bound a chunk"
        ))
    };
    Ok(match (value, ty) {
        (Value::Int(i), _) => i.to_string(),
        (Value::UInt(u), _) => u.to_string(),
        (Value::Bytes(b), MyType::Binary) => b.iter().map(|x| format!("{x:02x}")).collect(),
        (Value::Bytes(b), _) => String::from_utf8(b.clone()).map_err(|_| bad())?,
        (Value::Date(y, m, d, ..), MyType::Date) => format!("{y:04}-{m:02}-{d:02}"),
        (Value::Date(y, m, d, h, mi, s, us), _) => {
            format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
        }
        (Value::Time(neg, days, h, m, s, us), _) => format!(
            "{}{}:{m:02}:{s:02}.{us:06}",
            if *neg { "-" } else { "" },
            days * 24 + u32::from(*h)
        ),
        _ => return Err(bad()),
    })
}

/// The SQL placeholder and parameter comparing a key column of type `ty` with bound `text`,
/// exactly (integers as integers, decimals as decimals: never through a double).
fn bound_param(text: &str, ty: &MyType) -> Result<(String, Value)> {
    let bad = || Error::Protocol(format!("bad chunk bound {text:?} for a {ty:?} key"));
    Ok(match ty {
        MyType::Int16 | MyType::Int32 | MyType::Int64 | MyType::Year => {
            ("?".into(), Value::Int(text.parse().map_err(|_| bad())?))
        }
        MyType::UInt64 => ("?".into(), Value::UInt(text.parse().map_err(|_| bad())?)),
        MyType::Decimal { precision, scale } => (
            format!("CAST(? AS DECIMAL({precision}, {scale}))"),
            Value::from(text),
        ),
        MyType::Binary => ("UNHEX(?)".into(), Value::from(text)),
        MyType::Date => ("CAST(? AS DATE)".into(), Value::from(text)),
        MyType::DateTime | MyType::Timestamp => {
            ("CAST(? AS DATETIME(6))".into(), Value::from(text))
        }
        MyType::Time => ("CAST(? AS TIME(6))".into(), Value::from(text)),
        _ => ("?".into(), Value::from(text)),
    })
}

/// A value of the binary protocol as a cell of the column's type.
fn cell<'a>(value: &'a Value, ty: &MyType) -> std::result::Result<Cell<'a>, String> {
    Ok(match (value, ty) {
        (Value::NULL, _) => Cell::Null,
        (Value::Int(i), MyType::Enum(_)) => Cell::Enum(u16::try_from(*i).map_err(|_| "bad enum")?),
        (Value::UInt(u), MyType::Enum(_)) => Cell::Enum(u16::try_from(*u).map_err(|_| "bad enum")?),
        (Value::Int(i), MyType::Set(_)) => Cell::Set(*i as u64),
        (Value::UInt(u), MyType::Set(_)) => Cell::Set(*u),
        (Value::Bytes(b), MyType::Enum(_) | MyType::Set(_)) => {
            let n: u64 = std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("bad enum or set number")?;
            match ty {
                MyType::Enum(_) => Cell::Enum(u16::try_from(n).map_err(|_| "bad enum")?),
                _ => Cell::Set(n),
            }
        }
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
    let mut raw = Vec::with_capacity(rows.len());
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
        let mut binary16 = false;
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
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                text_type(charset.as_deref())
            }
            // The binlog carries them as binary(16), with no type name.
            "inet6" | "uuid" => {
                binary16 = true;
                MyType::Binary
            }
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
            | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" | "geomcollection"
            | "vector" => MyType::Binary,
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
        raw.push(RawColumn {
            ty: mysql_common::constants::ColumnType::MYSQL_TYPE_STRING,
            meta: Vec::new(),
            unsigned,
            // Set only for the fixed-length binary types the server gives as text: selected
            // as `CAST(c AS BINARY(fixed))` (the binlog decoder never reads a snapshot's raw).
            fixed: if binary16 { 16 } else { 0 },
        });
    }
    if columns.is_empty() {
        return Err(Error::Protocol(format!("table {table} has no columns")));
    }
    Ok(MyShape {
        table: Arc::new(table.clone()),
        columns,
        key,
        raw,
    })
}

/// The labels of `enum('a','b')` / `set('a','b')` as `information_schema` spells them: quotes
/// doubled, and `\\`, `\0`, `\n`, `\r`, `\Z` escaped (the server's `append_unescaped`).
fn labels(column_type: &str) -> Vec<String> {
    let inner = column_type
        .split_once('(')
        .map_or("", |(_, rest)| rest.strip_suffix(')').unwrap_or(rest));
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => match chars.next() {
                    Some('0') => label.push('\0'),
                    Some('n') => label.push('\n'),
                    Some('r') => label.push('\r'),
                    Some('Z') => label.push('\x1a'),
                    Some(other) => label.push(other),
                    None => {}
                },
                c => label.push(c),
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
        assert_eq!(
            labels(r"enum('a\\b','nl\nx','z\Z','par)',')')"),
            vec!["a\\b", "nl\nx", "z\x1a", "par)", ")"]
        );
    }
}
