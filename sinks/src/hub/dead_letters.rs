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
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::StructType;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;

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

/// The dead-letter table of one sink.
pub struct DeadLetters {
    path: PathBuf,
    pipeline: String,
    sink: String,
    table: Option<DeltaTable>,
}

impl DeadLetters {
    /// The dead letters of `sink` (the table is created on the first park).
    pub fn new(lake: &Path, pipeline: &str, sink: &str) -> Self {
        DeadLetters {
            path: dead_letter_path(lake, pipeline, sink),
            pipeline: pipeline.to_string(),
            sink: sink.to_string(),
            table: None,
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
            Field::new(
                "parked_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]))
    }

    fn delta(&self, source: deltalake::DeltaTableError) -> Error {
        Error::Delta {
            table: self.path.display().to_string(),
            source,
        }
    }

    async fn open(&mut self) -> Result<&mut DeltaTable> {
        if self.table.is_none() {
            std::fs::create_dir_all(&self.path).map_err(|source| Error::Io {
                path: self.path.display().to_string(),
                source,
            })?;
            let url =
                url::Url::from_directory_path(&self.path).map_err(|()| Error::InvalidPath {
                    path: self.path.display().to_string(),
                    reason: "not an absolute path".into(),
                })?;
            let table = if self.path.join("_delta_log").is_dir() {
                deltalake::open_table(url)
                    .await
                    .map_err(|e| self.delta(e))?
            } else {
                let schema: StructType = Self::schema()
                    .as_ref()
                    .try_into_kernel()
                    .map_err(|e| self.delta(deltalake::DeltaTableError::Generic(e.to_string())))?;
                DeltaTable::try_from_url(url)
                    .await
                    .map_err(|e| self.delta(e))?
                    .create()
                    .with_table_name(format!("{}_dead_letters", self.sink))
                    .with_columns(schema.fields().cloned())
                    .await
                    .map_err(|e| self.delta(e))?
            };
            self.table = Some(table);
        }
        self.table.as_mut().ok_or_else(|| Error::InvalidPath {
            path: String::new(),
            reason: "dead-letter table vanished".into(),
        })
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
        let batch =
            RecordBatch::try_new(Self::schema(), columns).map_err(|source| Error::Arrow {
                table: self.path.display().to_string(),
                source,
            })?;
        let path = self.path.display().to_string();
        let table = self.open().await?;
        let delta = |source| Error::Delta {
            table: path.clone(),
            source,
        };
        let mut writer = RecordBatchWriter::for_table(table).map_err(delta)?;
        writer.write(batch).await.map_err(delta)?;
        writer.flush_and_commit(table).await.map_err(delta)?;
        Ok(())
    }
}
