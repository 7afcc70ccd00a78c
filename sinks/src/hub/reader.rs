//! The changelog reader: the rows of a pipeline's changelog tables after a cursor, merged
//! across tables in `(_sluice_lsn, _sluice_seq)` order, up to the hub position W.
//!
//! ```text
//!   table a: v0 v1 v2 │ v3 (> W: not yet)      each table: next log version whose txn
//!   table b: v0 v1    │                        position ≤ W ─▶ its added files ─▶ Parquet
//!                     ▼                        batches of READ_ROWS rows ─▶ rows > cursor
//!            k-way merge by (lsn, seq) ─▶ Change
//! ```
//!
//! Invariants:
//! - A log version is read only once its position is ≤ W; W is only ever an event's commit
//!   position published after every table committed that event, so a version is either
//!   wholly ≤ W or wholly after it, and when every table is exhausted up to W, every row
//!   ≤ W has been returned (a segment is complete).
//! - Memory is one Parquet batch (at most [`READ_ROWS`] rows) per table, whatever the lag.
//! - Versions wholly before the cursor are skipped from the log alone; their files are not
//!   opened. Reading starts at version 0 on open (the log is small beside the data).
//! - Rows of one table are in `(lsn, seq)` order in file order; a table whose rows are not
//!   (a MySQL incremental-snapshot chunk placed at the position of the transaction before
//!   it) is reported as an error rather than risk skipping rows.
//! - Reads are blocking file I/O: callers run them off the async workers (spawn_blocking).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use deltalake::arrow::array::{Array, AsArray, RecordBatch, StructArray};
use deltalake::arrow::datatypes::{Field, FieldRef, Int64Type, TimestampMicrosecondType};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::json::writer::{make_encoder, EncoderOptions, NullableEncoder};
use deltalake::parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use replication::change::{
    TableName, COMMIT_TS_COLUMN, LSN_COLUMN, OP_COLUMN, SEQ_COLUMN, UNCHANGED_COLUMN,
};
use replication::Lsn;
use serde_json::{Map, Value};

use super::json_text::FastText;
use super::log::read_version;
use crate::{Error, Result};

/// Rows per Parquet batch read: bounds the reader's memory per table.
const READ_ROWS: usize = 1024;

/// Prefix of the changelog's own columns.
const CDC_PREFIX: &str = "_sluice_";

/// The key columns of each table, for per-key ordering. A table without an entry is keyed
/// by its `id` column if it has one; otherwise the whole table is one key (its changes are
/// delivered one batch at a time).
#[derive(Debug, Clone, Default)]
pub struct KeyColumns(pub HashMap<TableName, Vec<String>>);

/// A change's place in the merged changelog: `(lsn, seq, table, dup)`. `dup` numbers the
/// rows of one table sharing `(lsn, seq)` in file order: snapshot rows all carry the
/// snapshot's position with seq 0, and still need a total, deterministic order.
pub type Mark = (u64, i64, String, u64);

/// One change read from the changelog.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Source table.
    pub table: Arc<TableName>,
    /// Commit position of its transaction.
    pub lsn: u64,
    /// Ordinal in the transaction.
    pub seq: i64,
    /// Ordinal among this table's rows with the same `(lsn, seq)` (0 but for snapshots).
    pub dup: u64,
    /// `c`, `u`, `d`, `r` or `t`.
    pub op: &'static str,
    /// Commit time, unix microseconds.
    pub commit_ts: i64,
    /// Columns whose value the source did not send (unchanged TOAST): absent from `row`.
    pub unchanged: Vec<String>,
    /// The key columns and their values as one compact JSON object, columns sorted by name
    /// (the text `serde_json` gives a `Map` of them): sent as is by the webhook, stored as
    /// is in the dead-letter table; [`Change::key_map`] parses it.
    pub key: Bytes,
    /// A hash of the table and `key`: equal keys have equal hashes (different keys rarely
    /// do, which only makes a batch wait for another one needlessly).
    pub key_hash: u64,
    /// The row's columns (without the changelog's own) as one compact JSON object, in the
    /// table's column order, as arrow-json encodes them (explicit nulls): sent as is by the
    /// webhook; [`Change::row_map`] parses it where columns are needed.
    pub row: Bytes,
}

impl Change {
    /// Its changelog position.
    pub fn position(&self) -> (u64, i64) {
        (self.lsn, self.seq)
    }

    /// Its place in the merged changelog.
    pub fn mark(&self) -> Mark {
        (self.lsn, self.seq, self.table.to_string(), self.dup)
    }

    /// Bytes of `row` as JSON: what batch byte limits count.
    pub fn size(&self) -> usize {
        self.row.len()
    }

    /// `row` parsed into its columns.
    pub fn row_map(&self) -> Result<Map<String, Value>> {
        self.parse(&self.row, "row")
    }

    /// The change with its row and key in allocations of their own, not slices of its read
    /// batch's buffer: for a change kept while reading on (a parked change found again), so
    /// it does not hold a whole read batch's text.
    pub fn detached(mut self) -> Change {
        self.row = Bytes::copy_from_slice(&self.row);
        self.key = Bytes::copy_from_slice(&self.key);
        self
    }

    /// `key` parsed into its columns.
    pub fn key_map(&self) -> Result<Map<String, Value>> {
        self.parse(&self.key, "key")
    }

    /// `key` as text.
    pub fn key_text(&self) -> &str {
        // Written by serde_json (or arrow-json's serde_json strings): always UTF-8.
        std::str::from_utf8(&self.key).unwrap_or_default()
    }

    fn parse(&self, json: &[u8], what: &str) -> Result<Map<String, Value>> {
        serde_json::from_slice(json).map_err(|e| Error::Corrupt {
            path: self.table.to_string(),
            reason: format!(
                "{what} at {}/{} is not a json object: {e}",
                self.lsn, self.seq
            ),
        })
    }
}

/// The hash of a key of table `label` ([`Change::key_hash`]): FNV-1a over the label, a
/// separator and the key text, then splitmix64's finalizer so every bit depends on every
/// byte (the runner's set uses it as is). Not keyed: nothing here is chosen by an attacker
/// that could not just as well write one key many times, and it is the same in every run.
pub fn key_hash(label: &str, key: &[u8]) -> u64 {
    key_hash_after(label_hash(label), key)
}

/// FNV-1a's state after a table's label and the separator: the part of [`key_hash`] shared
/// by every key of the table, computed once per table.
fn label_hash(label: &str) -> u64 {
    fnv(
        0xcbf2_9ce4_8422_2325,
        label.as_bytes().iter().chain(&[0xff]),
    )
}

/// [`key_hash`] of `key` from its table's [`label_hash`].
fn key_hash_after(label: u64, key: &[u8]) -> u64 {
    let mut h = fnv(label, key);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn fnv<'a>(mut h: u64, bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The op column's value as one of the five ops.
fn op_of(op: &str) -> Option<&'static str> {
    Some(match op {
        "c" => "c",
        "u" => "u",
        "d" => "d",
        "r" => "r",
        "t" => "t",
        _ => return None,
    })
}

/// One table's read state.
struct TableReader {
    name: Arc<TableName>,
    /// `name` as text, as in a [`Mark`].
    label: String,
    /// [`label_hash`] of `label`.
    label_hash: u64,
    dir: PathBuf,
    keys: Option<Vec<String>>,
    next_version: u64,
    files: VecDeque<PathBuf>,
    file: Option<(PathBuf, ParquetRecordBatchReader)>,
    rows: VecDeque<Change>,
    /// `(lsn, seq)` of the last row decoded and its `dup`.
    last: Option<((u64, i64), u64)>,
}

/// Reads the changelog after a position, merged across tables.
pub struct ChangelogReader {
    app_id: String,
    after: Mark,
    tables: Vec<TableReader>,
}

impl ChangelogReader {
    /// A reader of `tables` of pipeline `app_id` under `lake`, returning rows after `after`.
    pub fn open(
        lake: &std::path::Path,
        app_id: &str,
        tables: &[TableName],
        keys: &KeyColumns,
        after: Mark,
    ) -> Self {
        let tables = tables
            .iter()
            .map(|t| {
                TableReader::new(
                    lake.join(&t.schema).join(&t.name),
                    t,
                    keys.0.get(t).cloned(),
                )
            })
            .collect();
        ChangelogReader {
            app_id: app_id.to_string(),
            after,
            tables,
        }
    }

    /// The next change at or below `w`, or `None` when every table is read up to `w`.
    pub fn next(&mut self, w: Lsn) -> Result<Option<Change>> {
        // (table index, lsn, seq, dup): the label is the table's, compared without copies.
        let mut best: Option<(usize, u64, i64, u64)> = None;
        for i in 0..self.tables.len() {
            if let Some(c) = self.tables[i].peek(&self.app_id, w, &self.after)? {
                let (lsn, seq, dup) = (c.lsn, c.seq, c.dup);
                let label = self.tables[i].label.as_str();
                let better = best.is_none_or(|(b, bl, bs, bd)| {
                    (lsn, seq, label, dup) < (bl, bs, self.tables[b].label.as_str(), bd)
                });
                if better {
                    best = Some((i, lsn, seq, dup));
                }
            }
        }
        let Some((i, lsn, seq, dup)) = best else {
            return Ok(None);
        };
        let label = &self.tables[i].label;
        if self.after.2 != *label {
            self.after.2.clone_from(label);
        }
        (self.after.0, self.after.1, self.after.3) = (lsn, seq, dup);
        Ok(self.tables[i].rows.pop_front())
    }
}

impl TableReader {
    fn new(dir: PathBuf, name: &TableName, keys: Option<Vec<String>>) -> Self {
        let label = name.to_string();
        TableReader {
            label_hash: label_hash(&label),
            label,
            name: Arc::new(name.clone()),
            dir,
            keys,
            next_version: 0,
            files: VecDeque::new(),
            file: None,
            rows: VecDeque::new(),
            last: None,
        }
    }

    fn peek(&mut self, app_id: &str, w: Lsn, after: &Mark) -> Result<Option<&Change>> {
        loop {
            let label = self.label.as_str();
            while self.rows.front().is_some_and(|c| {
                (c.lsn, c.seq, label, c.dup) <= (after.0, after.1, after.2.as_str(), after.3)
            }) {
                self.rows.pop_front();
            }
            if !self.rows.is_empty() {
                return Ok(self.rows.front());
            }
            if let Some((path, reader)) = &mut self.file {
                match reader.next() {
                    Some(batch) => {
                        let batch = batch.map_err(|source| Error::Arrow {
                            table: self.name.to_string(),
                            source,
                        })?;
                        let path = path.clone();
                        self.decode(&batch, after, &path)?;
                        continue;
                    }
                    None => self.file = None,
                }
            }
            if let Some(path) = self.files.pop_front() {
                let parquet = |source| Error::Parquet {
                    path: path.display().to_string(),
                    source,
                };
                let f = std::fs::File::open(&path).map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(f)
                    .map_err(parquet)?
                    .with_batch_size(READ_ROWS)
                    .build()
                    .map_err(parquet)?;
                self.file = Some((path, reader));
                continue;
            }
            let Some(version) = read_version(&self.dir, self.next_version, app_id)? else {
                return Ok(None);
            };
            match version.position {
                Some(p) if p > w => return Ok(None),
                Some(p) if p.0 < after.0 => {}
                _ => self.files.extend(version.files),
            }
            self.next_version += 1;
        }
    }

    /// Appends the rows of `batch` after `after` to `self.rows`.
    ///
    /// The data columns of the whole batch are encoded as JSON once, into one buffer; each
    /// row is a slice of it (no per-row parse). The key is encoded and parsed alone.
    fn decode(&mut self, batch: &RecordBatch, after: &Mark, path: &std::path::Path) -> Result<()> {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let arrow = |source| Error::Arrow {
            table: self.name.to_string(),
            source,
        };
        let schema = batch.schema();
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| corrupt(format!("no column {name}")))
        };
        let lsn = col(LSN_COLUMN)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| corrupt(format!("{LSN_COLUMN} is not int64")))?;
        let seq = col(SEQ_COLUMN)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| corrupt(format!("{SEQ_COLUMN} is not int64")))?;
        let op = col(OP_COLUMN)?
            .as_string_opt::<i32>()
            .ok_or_else(|| corrupt(format!("{OP_COLUMN} is not utf8")))?;
        let ts = col(COMMIT_TS_COLUMN)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| corrupt(format!("{COMMIT_TS_COLUMN} is not a timestamp")))?;
        let unchanged = col(UNCHANGED_COLUMN)?
            .as_list_opt::<i32>()
            .ok_or_else(|| corrupt(format!("{UNCHANGED_COLUMN} is not a list")))?;
        let data: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.name().starts_with(CDC_PREFIX))
            .map(|(i, _)| i)
            .collect();
        let projected = batch.project(&data).map_err(arrow)?;
        let rows = RowsJson::encode(&projected).map_err(arrow)?;
        let mut keys: Vec<String> = match &self.keys {
            Some(k) => k.clone(),
            None if schema.field_with_name("id").is_ok() => vec!["id".into()],
            None => Vec::new(),
        };
        // The key's text is a serde_json `Map`'s: columns sorted by name.
        keys.sort();
        keys.dedup();
        let data_schema = projected.schema();
        let options = json_options();
        let key_fields: Vec<Option<FieldRef>> = keys
            .iter()
            .map(|k| {
                data_schema
                    .column_with_name(k)
                    .map(|(_, f)| Arc::new(f.clone()))
            })
            .collect();
        let mut key_columns = keys
            .iter()
            .zip(&key_fields)
            .map(|(k, f)| KeyColumn::new(k, f.as_ref(), &projected, &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(arrow)?;
        // Every row's key, one after the other in one buffer; a change holds a slice of it.
        let mut key_text = Vec::with_capacity(batch.num_rows() * 16);
        let mut scratch = Vec::new();
        let mut taken = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let position = (lsn.value(i) as u64, seq.value(i));
            let dup = match self.last {
                Some((p, d)) if p == position => d + 1,
                Some((p, _)) if p > position => {
                    return Err(corrupt(format!(
                        "rows of {} out of (lsn, seq) order: {}/{} after {}/{} (an incremental-snapshot chunk sharing a transaction's position, which hub sinks cannot order yet)",
                        self.name, position.0, position.1, p.0, p.1
                    )))
                }
                _ => 0,
            };
            self.last = Some((position, dup));
            if (position.0, position.1, self.label.as_str(), dup)
                <= (after.0, after.1, after.2.as_str(), after.3)
            {
                continue;
            }
            let unchanged: Vec<String> = if unchanged.is_null(i) {
                Vec::new()
            } else {
                let list = unchanged.value(i);
                let names = list.as_string::<i32>();
                (0..names.len())
                    .filter(|j| !names.is_null(*j))
                    .map(|j| names.value(j).to_string())
                    .collect()
            };
            let own_row = if unchanged.is_empty() {
                None
            } else {
                // Rare (unchanged TOAST): this row again without the columns not sent.
                let sent: Vec<usize> = (0..projected.num_columns())
                    .filter(|&c| !unchanged.iter().any(|u| u == data_schema.field(c).name()))
                    .collect();
                let one = projected.slice(i, 1).project(&sent).map_err(arrow)?;
                Some(RowsJson::encode(&one).map_err(arrow)?.row(0))
            };
            let op = op_of(op.value(i))
                .ok_or_else(|| corrupt(format!("unknown {OP_COLUMN} {:?}", op.value(i))))?;
            key_text.push(b'{');
            for (n, column) in key_columns.iter_mut().enumerate() {
                if n > 0 {
                    key_text.push(b',');
                }
                key_text.extend_from_slice(&column.name);
                let sent = !unchanged.contains(&column.column);
                column
                    .write(i, sent, &mut key_text, &mut scratch)
                    .map_err(|e| {
                        corrupt(format!(
                            "key column {} of {}: {e}",
                            column.column, self.name
                        ))
                    })?;
            }
            key_text.push(b'}');
            taken.push((i, position, dup, op, unchanged, own_row, key_text.len()));
        }
        let key_text = Bytes::from(key_text);
        let mut key_start = 0;
        for (i, position, dup, op, unchanged, own_row, key_end) in taken {
            let key = key_text.slice(key_start..key_end);
            key_start = key_end;
            self.rows.push_back(Change {
                table: self.name.clone(),
                lsn: position.0,
                seq: position.1,
                dup,
                op,
                commit_ts: ts.value(i),
                unchanged,
                key_hash: key_hash_after(self.label_hash, &key),
                key,
                row: own_row.unwrap_or_else(|| rows.row(i)),
            });
        }
        Ok(())
    }
}

/// One key column of a decoded batch, writing its values as JSON.
struct KeyColumn<'a> {
    column: String,
    /// `"name":`
    name: Vec<u8>,
    /// `None`: the table has no such column (its value is null).
    encoder: Option<NullableEncoder<'a>>,
    /// Whether arrow-json's text of a value is already serde_json's (integers, booleans,
    /// strings: the same digits, the same escaping); other types are parsed and written
    /// again (a decimal `12.30` is serde_json's `12.3`), so the key text stays a `Map`'s.
    canonical: bool,
}

impl<'a> KeyColumn<'a> {
    fn new(
        column: &str,
        field: Option<&'a FieldRef>,
        batch: &'a RecordBatch,
        options: &'a EncoderOptions,
    ) -> std::result::Result<Self, ArrowError> {
        use deltalake::arrow::datatypes::DataType as T;
        let mut name = serde_json::to_vec(column).unwrap_or_default();
        name.push(b':');
        let (encoder, canonical) = match field.zip(batch.column_by_name(column)) {
            None => (None, true),
            Some((field, array)) => {
                let canonical = matches!(
                    field.data_type(),
                    T::Int8
                        | T::Int16
                        | T::Int32
                        | T::Int64
                        | T::UInt8
                        | T::UInt16
                        | T::UInt32
                        | T::UInt64
                        | T::Boolean
                        | T::Utf8
                        | T::LargeUtf8
                );
                (
                    Some(make_encoder(field, array.as_ref(), options)?),
                    canonical,
                )
            }
        };
        Ok(KeyColumn {
            column: column.to_string(),
            name,
            encoder,
            canonical,
        })
    }

    /// Appends row `i`'s value (null if the column is absent, null there, or not `sent`).
    fn write(
        &mut self,
        i: usize,
        sent: bool,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> std::result::Result<(), serde_json::Error> {
        match &mut self.encoder {
            Some(e) if sent && !e.is_null(i) => {
                if self.canonical {
                    e.encode(i, out);
                } else {
                    scratch.clear();
                    e.encode(i, scratch);
                    let value: Value = serde_json::from_slice(scratch)?;
                    serde_json::to_writer(&mut *out, &value)?;
                }
            }
            _ => out.extend_from_slice(b"null"),
        }
        Ok(())
    }
}

/// arrow-json's options for rows and keys: explicit nulls, and the faster text of
/// timestamps, dates and decimals ([`FastText`]: the same bytes).
fn json_options() -> EncoderOptions {
    EncoderOptions::default()
        .with_explicit_nulls(true)
        .with_encoder_factory(Arc::new(FastText))
}

/// The JSON objects of a batch's rows, encoded in one buffer: arrow-json's encoders with
/// explicit nulls (the same text its writer produces). A row taken out is a slice of the
/// shared buffer, not a copy: the buffer lives while any change of its read batch (at most
/// [`READ_ROWS`] rows) is in flight, which the runner's window bounds; a parked change is
/// copied into the dead-letter table, and one kept while reading on is
/// [`Change::detached`].
struct RowsJson {
    buf: Bytes,
    /// Where each row ends in `buf` (row `i` starts where `i - 1` ends).
    ends: Vec<usize>,
}

impl RowsJson {
    fn encode(batch: &RecordBatch) -> std::result::Result<Self, ArrowError> {
        let n = batch.num_rows();
        let array = StructArray::from(batch.clone());
        let field: FieldRef = Arc::new(Field::new_struct(
            "",
            batch.schema().fields().clone(),
            false,
        ));
        let options = json_options();
        let mut encoder = make_encoder(&field, &array, &options)?;
        let mut buf = Vec::with_capacity(n * 64 * batch.num_columns().max(1));
        let mut ends = Vec::with_capacity(n);
        for i in 0..n {
            encoder.encode(i, &mut buf);
            ends.push(buf.len());
        }
        Ok(RowsJson {
            buf: Bytes::from(buf),
            ends,
        })
    }

    /// Row `i`, `i` < the batch's rows.
    fn row(&self, i: usize) -> Bytes {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.buf.slice(start..self.ends[i])
    }
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::{
        ArrayRef, Decimal128Array, Float64Array, Int64Array, ListBuilder, StringArray,
        StringBuilder, TimestampMicrosecondArray,
    };
    use deltalake::arrow::datatypes::{DataType, Schema};
    use deltalake::arrow::json::writer::LineDelimited;
    use deltalake::arrow::json::WriterBuilder;

    use super::*;

    #[test]
    fn rows_are_the_text_of_arrow_jsons_writer() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("note", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new("price", DataType::Decimal128(12, 2), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a \"q\"\n é"), None, Some("")])),
                Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN), None])),
                Arc::new(
                    Decimal128Array::from(vec![Some(1230), None, Some(-5)])
                        .with_precision_and_scale(12, 2)
                        .unwrap(),
                ),
            ],
        )
        .unwrap();
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, LineDelimited>(Vec::new());
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let text = String::from_utf8(writer.into_inner()).unwrap();
        let rows = RowsJson::encode(&batch).unwrap();
        let ours: Vec<String> = (0..3)
            .map(|i| String::from_utf8(rows.row(i).to_vec()).unwrap())
            .collect();
        assert_eq!(ours, text.lines().collect::<Vec<_>>());
        for row in &ours {
            serde_json::from_str::<Map<String, Value>>(row).unwrap();
        }
    }

    /// A changelog batch as the writers shape it: `data` columns, then the changelog's own
    /// (`replication::cdc::cdc_fields`), one row per op, commit times 5, 6, ….
    fn changelog_batch(
        data: Vec<(Field, ArrayRef)>,
        positions: &[(i64, i64)],
        ops: &[&str],
        unchanged: &[Option<&[&str]>],
    ) -> RecordBatch {
        let mut lists = ListBuilder::new(StringBuilder::new()).with_field(Field::new(
            "element",
            DataType::Utf8,
            true,
        ));
        for u in unchanged {
            match u {
                None => lists.append_null(),
                Some(names) => {
                    for n in *names {
                        lists.values().append_value(n);
                    }
                    lists.append(true);
                }
            }
        }
        let (mut fields, mut columns): (Vec<Field>, Vec<ArrayRef>) = data.into_iter().unzip();
        fields.extend(replication::cdc::cdc_fields());
        columns.extend([
            Arc::new(StringArray::from(ops.to_vec())) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(positions.iter().map(|p| p.0))),
            Arc::new(Int64Array::from_iter_values(positions.iter().map(|p| p.1))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(5..5 + ops.len() as i64)
                    .with_timezone("UTC"),
            ),
            Arc::new(lists.finish()),
        ]);
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    /// A reader of table `name` alone (nothing read yet).
    fn table_reader(name: &str, keys: Option<Vec<String>>) -> TableReader {
        let name = TableName::parse(name).unwrap();
        TableReader::new(PathBuf::new(), &name, keys)
    }

    #[test]
    fn unchanged_columns_are_absent_from_the_row_and_null_in_the_key() {
        let batch = changelog_batch(
            vec![
                (
                    Field::new("id", DataType::Int64, false),
                    Arc::new(Int64Array::from(vec![1, 2, 3])),
                ),
                (
                    Field::new("bio", DataType::Utf8, true),
                    Arc::new(StringArray::from(vec![Some("long"), None, None])),
                ),
            ],
            &[(10, 0), (10, 1), (11, 0)],
            &["c", "u", "u"],
            &[None, Some(&["bio"]), Some(&["id", "bio"])],
        );
        let mut reader = table_reader("public.people", None);
        let after = (0, 0, String::new(), 0);
        reader
            .decode(&batch, &after, std::path::Path::new("x.parquet"))
            .unwrap();
        let got: Vec<(String, String, Vec<String>, u64)> = reader
            .rows
            .iter()
            .map(|c| {
                (
                    String::from_utf8(c.row.to_vec()).unwrap(),
                    c.key_text().to_string(),
                    c.unchanged.clone(),
                    c.key_hash,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    r#"{"id":1,"bio":"long"}"#.to_string(),
                    r#"{"id":1}"#.to_string(),
                    vec![],
                    key_hash("public.people", br#"{"id":1}"#)
                ),
                (
                    r#"{"id":2}"#.to_string(),
                    r#"{"id":2}"#.to_string(),
                    vec!["bio".to_string()],
                    key_hash("public.people", br#"{"id":2}"#)
                ),
                (
                    "{}".to_string(),
                    r#"{"id":null}"#.to_string(),
                    vec!["id".to_string(), "bio".to_string()],
                    key_hash("public.people", br#"{"id":null}"#)
                ),
            ]
        );
        assert_eq!(reader.rows[1].size(), 8);
        assert_eq!(reader.rows[1].op, "u");
    }

    #[test]
    fn key_text_is_the_text_of_a_serde_json_map() {
        // A composite key named out of order, one part a decimal (arrow-json writes 12.30,
        // a Map of the parsed value 12.3) and one a string needing escapes.
        let batch = changelog_batch(
            vec![
                (
                    Field::new("region", DataType::Utf8, false),
                    Arc::new(StringArray::from(vec!["e\"u", "us"])),
                ),
                (
                    Field::new("price", DataType::Decimal128(12, 2), true),
                    Arc::new(
                        Decimal128Array::from(vec![Some(1230), None])
                            .with_precision_and_scale(12, 2)
                            .unwrap(),
                    ),
                ),
            ],
            &[(10, 0), (11, 0)],
            &["c", "d"],
            &[None, None],
        );
        let mut reader = table_reader("public.prices", Some(vec!["region".into(), "price".into()]));
        reader
            .decode(&batch, &(0, 0, String::new(), 0), std::path::Path::new("x"))
            .unwrap();
        let texts: Vec<&str> = reader.rows.iter().map(Change::key_text).collect();
        let maps = [
            serde_json::json!({"region": "e\"u", "price": 12.3}),
            serde_json::json!({"region": "us", "price": null}),
        ];
        let expected: Vec<String> = maps.iter().map(Value::to_string).collect();
        assert_eq!(texts, expected);
        assert_eq!(
            reader.rows[0].key_map().unwrap(),
            *maps[0].as_object().unwrap()
        );
        assert_eq!(reader.rows[1].op, "d");
        assert_ne!(reader.rows[0].key_hash, reader.rows[1].key_hash);
    }
}
