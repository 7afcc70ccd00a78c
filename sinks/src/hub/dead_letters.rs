//! Parked changes: what a destination refused for good, kept in a Delta table beside the lake
//! (`<lake>/_sluice_dead_letters/<pipeline>/<sink>`), one row per change: pipeline, sink,
//! table, key (JSON), position (lsn, seq), op, HTTP status, response excerpt, when.
//!
//! Never a secret or a row value beyond the key: the response excerpt is the destination's
//! own words (at most `sinks::http::EXCERPT_BYTES`). Rows are written before the cursor moves
//! past them, so a crash in between parks them again on restart: a change may appear twice
//! here (same sink, lsn and seq), never zero times.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};

use crate::delta::SideTable;
use crate::{Error, Result};

/// Directory of the dead-letter tables beside the lake.
pub const DEAD_LETTERS_DIR: &str = "_sluice_dead_letters";

/// The dead-letter table of `sink` of `pipeline`.
pub fn dead_letter_path(lake: &Path, pipeline: &str, sink: &str) -> PathBuf {
    lake.join(DEAD_LETTERS_DIR).join(pipeline).join(sink)
}

/// One refused change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedChange {
    /// `schema.table`.
    pub table: String,
    /// The key columns as JSON.
    pub key: String,
    /// Commit position.
    pub lsn: u64,
    /// Ordinal in the transaction.
    pub seq: i64,
    /// The change's op.
    pub op: String,
    /// The HTTP status of the refusal.
    pub status: u16,
    /// The start of the response body.
    pub response: String,
}

/// A parked change as read back, with when it was parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRecord {
    /// The change and its refusal.
    pub change: ParkedChange,
    /// When it was parked (unix microseconds).
    pub parked_at: i64,
}

/// What became of a parked change that `sluice dead-letters retry` took up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Sent again and accepted.
    Delivered,
    /// Not sent: a later change of the same key was delivered since (re-sending the parked one
    /// would overwrite newer state).
    Superseded,
}

impl Resolution {
    fn as_str(self) -> &'static str {
        match self {
            Resolution::Delivered => "delivered",
            Resolution::Superseded => "superseded",
        }
    }
}

/// Identifies a parked change: table, key (JSON), lsn, seq.
pub type ParkedId = (String, String, u64, i64);

impl ParkedChange {
    /// Its identity among the parked changes.
    pub fn id(&self) -> ParkedId {
        (self.table.clone(), self.key.clone(), self.lsn, self.seq)
    }
}

/// The dead-letter table of one sink, and beside it (`<sink>.resolved`) the parked changes a
/// retry resolved. Both are append-only: a parked change is open while it has no resolution.
pub struct DeadLetters {
    pipeline: String,
    sink: String,
    parked: SideTable,
    resolved: SideTable,
}

fn text(batch: &RecordBatch, name: &str) -> Option<StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>().cloned())
}

fn int64(batch: &RecordBatch, name: &str) -> Option<Int64Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Int64Type>().cloned())
}

impl DeadLetters {
    /// The dead letters of `sink` (the tables are created on the first write).
    pub fn new(lake: &Path, pipeline: &str, sink: &str) -> Self {
        let path = dead_letter_path(lake, pipeline, sink);
        let resolved = path.with_file_name(format!("{sink}.resolved"));
        DeadLetters {
            parked: SideTable::new(path, format!("{sink}_dead_letters"), Self::schema()),
            resolved: SideTable::new(
                resolved,
                format!("{sink}_dead_letters_resolved"),
                Self::resolved_schema(),
            ),
            pipeline: pipeline.to_string(),
            sink: sink.to_string(),
        }
    }

    fn schema() -> Arc<Schema> {
        let s = |n: &str| Field::new(n, DataType::Utf8, false);
        Arc::new(Schema::new(vec![
            s("pipeline"),
            s("sink"),
            s("table"),
            s("key"),
            Field::new("lsn", DataType::Int64, false),
            Field::new("seq", DataType::Int64, false),
            s("op"),
            Field::new("status", DataType::Int32, false),
            s("response"),
            Field::new("parked_at", timestamp(), false),
        ]))
    }

    fn resolved_schema() -> Arc<Schema> {
        let s = |n: &str| Field::new(n, DataType::Utf8, false);
        Arc::new(Schema::new(vec![
            s("table"),
            s("key"),
            Field::new("lsn", DataType::Int64, false),
            Field::new("seq", DataType::Int64, false),
            s("resolution"),
            Field::new("resolved_at", timestamp(), false),
        ]))
    }

    /// Appends `parked` durably (one Delta commit).
    pub async fn park(&mut self, parked: &[ParkedChange]) -> Result<()> {
        if parked.is_empty() {
            return Ok(());
        }
        let n = parked.len();
        let now = (super::position::now_ms() * 1000) as i64;
        let strs = |f: &dyn Fn(&ParkedChange) -> String| -> ArrayRef {
            Arc::new(StringArray::from(parked.iter().map(f).collect::<Vec<_>>()))
        };
        let columns: Vec<ArrayRef> = vec![
            strs(&|_| self.pipeline.clone()),
            strs(&|_| self.sink.clone()),
            strs(&|p| p.table.clone()),
            strs(&|p| p.key.clone()),
            Arc::new(Int64Array::from(
                parked.iter().map(|p| p.lsn as i64).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                parked.iter().map(|p| p.seq).collect::<Vec<_>>(),
            )),
            strs(&|p| p.op.clone()),
            Arc::new(Int32Array::from(
                parked
                    .iter()
                    .map(|p| i32::from(p.status))
                    .collect::<Vec<_>>(),
            )),
            strs(&|p| p.response.clone()),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        ];
        let batch = self.batch(self.parked.schema(), columns)?;
        self.parked.append(batch).await
    }

    fn batch(&self, schema: Arc<Schema>, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
        RecordBatch::try_new(schema, columns).map_err(|source| Error::Arrow {
            table: format!("dead letters of {}", self.sink),
            source,
        })
    }

    /// Records what became of parked changes (one Delta commit).
    pub async fn resolve(&mut self, resolved: &[(ParkedId, Resolution)]) -> Result<()> {
        if resolved.is_empty() {
            return Ok(());
        }
        let now = (super::position::now_ms() * 1000) as i64;
        let strs = |f: &dyn Fn(&(ParkedId, Resolution)) -> String| -> ArrayRef {
            Arc::new(StringArray::from(
                resolved.iter().map(f).collect::<Vec<_>>(),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            strs(&|r| r.0 .0.clone()),
            strs(&|r| r.0 .1.clone()),
            Arc::new(Int64Array::from(
                resolved.iter().map(|r| r.0 .2 as i64).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                resolved.iter().map(|r| r.0 .3).collect::<Vec<_>>(),
            )),
            strs(&|r| r.1.as_str().to_string()),
            Arc::new(
                TimestampMicrosecondArray::from(vec![now; resolved.len()]).with_timezone("UTC"),
            ),
        ];
        let batch = self.batch(self.resolved.schema(), columns)?;
        self.resolved.append(batch).await
    }

    /// The parked changes without a resolution, oldest position first (a change parked twice,
    /// by a crash between parking and the cursor, is listed once).
    pub async fn open_changes(
        lake: &Path,
        pipeline: &str,
        sink: &str,
    ) -> Result<Vec<ParkedRecord>> {
        let path = dead_letter_path(lake, pipeline, sink);
        let resolved_path = path.with_file_name(format!("{sink}.resolved"));
        let mut resolved = std::collections::HashSet::new();
        for b in SideTable::scan(&resolved_path).await? {
            let (Some(t), Some(k), Some(l), Some(s)) = (
                text(&b, "table"),
                text(&b, "key"),
                int64(&b, "lsn"),
                int64(&b, "seq"),
            ) else {
                continue;
            };
            for i in 0..b.num_rows() {
                resolved.insert((
                    t.value(i).to_string(),
                    k.value(i).to_string(),
                    l.value(i) as u64,
                    s.value(i),
                ));
            }
        }
        let mut out: Vec<ParkedRecord> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for b in SideTable::scan(&path).await? {
            let (Some(t), Some(k), Some(l), Some(s), Some(op), Some(resp)) = (
                text(&b, "table"),
                text(&b, "key"),
                int64(&b, "lsn"),
                int64(&b, "seq"),
                text(&b, "op"),
                text(&b, "response"),
            ) else {
                continue;
            };
            let status = b
                .column_by_name("status")
                .and_then(|c| c.as_primitive_opt::<Int32Type>().cloned());
            let at = b
                .column_by_name("parked_at")
                .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>().cloned());
            for i in 0..b.num_rows() {
                let change = ParkedChange {
                    table: t.value(i).to_string(),
                    key: k.value(i).to_string(),
                    lsn: l.value(i) as u64,
                    seq: s.value(i),
                    op: op.value(i).to_string(),
                    status: status
                        .as_ref()
                        .map_or(0, |c| u16::try_from(c.value(i)).unwrap_or(0)),
                    response: resp.value(i).to_string(),
                };
                let id = change.id();
                if resolved.contains(&id) || !seen.insert(id) {
                    continue;
                }
                out.push(ParkedRecord {
                    change,
                    parked_at: at.as_ref().map_or(0, |c| c.value(i)),
                });
            }
        }
        out.sort_by_key(|r| (r.change.lsn, r.change.seq, r.change.table.clone()));
        Ok(out)
    }
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}
