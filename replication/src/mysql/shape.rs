//! From a TABLE_MAP event (with `binlog_row_metadata = FULL`: names, signedness, charsets,
//! enum and set labels, primary key) to the table's Arrow shape, and from row values to Arrow.
//! No DDL parser: the binlog describes every table it changes.
//!
//! | MySQL / MariaDB | Arrow (Delta) |
//! |---|---|
//! | tinyint, smallint (signed), year | Int16 |
//! | smallint unsigned, mediumint, int (signed) | Int32 |
//! | int unsigned, bigint (signed), bit(1..63) | Int64 |
//! | bigint unsigned, bit(64) | Decimal128(20, 0), exact |
//! | decimal(p,s), p ≤ 38 | Decimal128(p, s), exact; wider: exact text |
//! | float, double | Float32, Float64 |
//! | date | Date32 |
//! | datetime | Timestamp(µs), no zone |
//! | timestamp | Timestamp(µs, UTC) |
//! | time | text `[-]HHH:MM:SS[.ffffff]` (its range exceeds a day) |
//! | char, varchar, text (utf8, utf8mb4, ascii, latin1) | Utf8 |
//! | binary, varbinary, blob, binary charset, geometry, MySQL vector, MariaDB inet6 and uuid | Binary |
//! | char, varchar, text in any other charset (gbk, ucs2, utf16, cp1251, …) | Binary: the stored bytes |
//! | enum, set | Utf8: the label(s), a set's joined by `,` |
//! | json | Utf8, the JSON text |
//!
//! A value the server accepted that its typed column cannot hold (zero and invalid dates such
//! as `0000-00-00` or `2026-02-31` under a lax sql_mode, year-0 dates outside Delta's range, an
//! integer beyond its column, an enum index or set bit without a label) never stops the table:
//! the typed column is null and the value's exact text ([`exact_text`]) goes to a
//! `<column>__text` string column, which appears in a batch (and then in the Delta schema) only
//! once such a value does.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;
use mysql_common::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_common::constants::ColumnType as My;

use super::labels::{column_labels, raw};
use super::rows::{Cell, RawColumn};

use crate::cdc::{cdc_fields, CdcBuilder, Op, RowPosition};
use crate::change::TableName;
use crate::evolution::with_companions;
use crate::value::{days_from_civil, decimal_from_text};
use crate::{Error, Result};

const MAX_DECIMAL_PRECISION: u8 = 38;

/// How text bytes of a column are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// utf8mb3, utf8mb4, ascii: validated UTF-8.
    Utf8,
    /// MySQL's latin1 (Windows-1252).
    Latin1,
    /// Any other (gbk, ucs2, utf16, utf32, cp1251, …) or unknown: kept as the stored bytes, an
    /// Arrow Binary column. Not a key a chunk can be bounded by: the server orders it by its
    /// collation, not by its bytes.
    Undecoded,
}

/// A column's decoded type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MyType {
    Int16,
    Int32,
    Int64,
    /// bigint unsigned, bit(64): Decimal128(20, 0).
    UInt64,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: i8,
    },
    DecimalText,
    Text(Charset),
    Binary,
    Date,
    DateTime,
    Timestamp,
    Time,
    Year,
    /// bit(n): the big-endian bytes as a number.
    Bit,
    Enum(Arc<[String]>),
    Set(Arc<[String]>),
    Json,
}

impl MyType {
    fn arrow(&self) -> DataType {
        match self {
            MyType::Int16 | MyType::Year => DataType::Int16,
            MyType::Int32 => DataType::Int32,
            MyType::Int64 | MyType::Bit => DataType::Int64,
            MyType::UInt64 => DataType::Decimal128(20, 0),
            MyType::Float32 => DataType::Float32,
            MyType::Float64 => DataType::Float64,
            MyType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            MyType::Binary | MyType::Text(Charset::Undecoded) => DataType::Binary,
            MyType::Date => DataType::Date32,
            MyType::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            MyType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            MyType::DecimalText
            | MyType::Text(_)
            | MyType::Time
            | MyType::Enum(_)
            | MyType::Set(_)
            | MyType::Json => DataType::Utf8,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            MyType::Int16 => "smallint",
            MyType::Int32 => "int",
            MyType::Int64 => "bigint",
            MyType::UInt64 => "bigint unsigned",
            MyType::Float32 => "float",
            MyType::Float64 => "double",
            MyType::Decimal { .. } | MyType::DecimalText => "decimal",
            MyType::Text(_) => "text",
            MyType::Binary => "binary",
            MyType::Date => "date",
            MyType::DateTime => "datetime",
            MyType::Timestamp => "timestamp",
            MyType::Time => "time",
            MyType::Year => "year",
            MyType::Bit => "bit",
            MyType::Enum(_) => "enum",
            MyType::Set(_) => "set",
            MyType::Json => "json",
        }
    }
}

/// The type of a character column in the character set `charset` (`None`: unknown). utf8 and
/// latin1 are decoded; the binary charset is binary; every other (gbk, ucs2, utf16, cp1251, …)
/// lands as its stored bytes, exact, rather than stopping the table.
pub(super) fn text_type(charset: Option<&str>) -> MyType {
    match charset {
        Some("utf8mb4" | "utf8mb3" | "utf8" | "ascii") => MyType::Text(Charset::Utf8),
        Some("latin1") => MyType::Text(Charset::Latin1),
        Some("binary") => MyType::Binary,
        _ => MyType::Text(Charset::Undecoded),
    }
}

/// The shape of one table as its TABLE_MAP describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct MyShape {
    /// The table.
    pub table: Arc<TableName>,
    /// (name, type) per column, in table order.
    pub columns: Vec<(String, MyType)>,
    /// Primary key column indexes.
    pub key: Vec<usize>,
    /// How each column's values are laid out in row images.
    pub raw: Vec<RawColumn>,
}

impl MyShape {
    /// Read the shape from a TABLE_MAP event. `charsets` maps collation ids to character set
    /// names.
    pub fn from_table_map(
        tme: &TableMapEvent<'_>,
        charsets: &HashMap<u16, String>,
        position: &str,
    ) -> Result<Self> {
        let table = Arc::new(TableName {
            schema: tme.database_name().into_owned(),
            name: tme.table_name().into_owned(),
        });
        let bad = |column: String, reason: String| Error::MysqlValue {
            table: table.to_string(),
            column,
            mysql_type: "?".into(),
            position: position.to_string(),
            reason,
        };
        let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())
            .map_err(|e| bad(String::new(), format!("table map metadata: {e}")))?;
        let mut enums = Vec::new();
        let mut sets = Vec::new();
        for field in tme.iter_optional_meta() {
            let metadata = |e| bad(String::new(), format!("table map metadata: {e}"));
            let (labels, bytes) = match field.map_err(|e| metadata(e.to_string()))? {
                OptionalMetadataField::EnumStrValue(v) => (&mut enums, raw(&v)),
                OptionalMetadataField::SetStrValue(v) => (&mut sets, raw(&v)),
                _ => continue,
            };
            labels.extend(column_labels(&bytes).map_err(metadata)?);
        }
        let names: Vec<String> = meta
            .iter_column_name()
            .map(|n| n.map(|n| n.name().into_owned()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| bad(String::new(), e.to_string()))?;
        let n = tme.columns_count() as usize;
        if names.len() != n {
            return Err(bad(
                String::new(),
                "the table map has no column names: set binlog_row_metadata = FULL".into(),
            ));
        }
        let mut signed = meta.iter_signedness();
        let mut text_charsets = meta.iter_charset();
        let mut enum_charsets = meta.iter_enum_and_set_charset();
        let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
        let mut columns = Vec::with_capacity(n);
        let mut raw = Vec::with_capacity(n);
        for (i, name) in names.into_iter().enumerate() {
            let ty = tme
                .get_column_type(i)
                .ok()
                .flatten()
                .ok_or_else(|| bad(name.clone(), "unknown column type".into()))?;
            let col_meta = tme.get_column_metadata(i).unwrap_or(&[]);
            let unsigned = if ty.is_numeric_type() {
                signed.next().unwrap_or(false)
            } else {
                false
            };
            let charset = if ty.is_character_type() {
                text_charsets.next().transpose().ok().flatten()
            } else if ty.is_enum_or_set_type() {
                enum_charsets.next().transpose().ok().flatten()
            } else {
                None
            };
            let labels = |raw: Option<Vec<Vec<u8>>>| -> Arc<[String]> {
                let latin1 =
                    charset.and_then(|id| charsets.get(&id)).map(String::as_str) == Some("latin1");
                raw.unwrap_or_default()
                    .iter()
                    .map(|l| {
                        if latin1 {
                            l.iter().map(|c| cp1252(*c)).collect()
                        } else {
                            String::from_utf8_lossy(l).into_owned()
                        }
                    })
                    .collect()
            };
            let my = match ty {
                My::MYSQL_TYPE_TINY => MyType::Int16,
                My::MYSQL_TYPE_SHORT if unsigned => MyType::Int32,
                My::MYSQL_TYPE_SHORT => MyType::Int16,
                My::MYSQL_TYPE_INT24 => MyType::Int32,
                My::MYSQL_TYPE_LONG if unsigned => MyType::Int64,
                My::MYSQL_TYPE_LONG => MyType::Int32,
                My::MYSQL_TYPE_LONGLONG if unsigned => MyType::UInt64,
                My::MYSQL_TYPE_LONGLONG => MyType::Int64,
                My::MYSQL_TYPE_FLOAT => MyType::Float32,
                My::MYSQL_TYPE_DOUBLE => MyType::Float64,
                My::MYSQL_TYPE_NEWDECIMAL => {
                    let precision = col_meta.first().copied().unwrap_or(65);
                    let scale = col_meta.get(1).copied().unwrap_or(0);
                    if precision <= MAX_DECIMAL_PRECISION {
                        MyType::Decimal {
                            precision,
                            scale: scale as i8,
                        }
                    } else {
                        MyType::DecimalText
                    }
                }
                My::MYSQL_TYPE_DATE | My::MYSQL_TYPE_NEWDATE => MyType::Date,
                My::MYSQL_TYPE_DATETIME | My::MYSQL_TYPE_DATETIME2 => MyType::DateTime,
                My::MYSQL_TYPE_TIMESTAMP | My::MYSQL_TYPE_TIMESTAMP2 => MyType::Timestamp,
                My::MYSQL_TYPE_TIME | My::MYSQL_TYPE_TIME2 => MyType::Time,
                My::MYSQL_TYPE_YEAR => MyType::Year,
                My::MYSQL_TYPE_BIT => {
                    let bits = usize::from(col_meta.get(1).copied().unwrap_or(0)) * 8
                        + usize::from(col_meta.first().copied().unwrap_or(0));
                    if bits >= 64 {
                        MyType::UInt64
                    } else {
                        MyType::Bit
                    }
                }
                My::MYSQL_TYPE_ENUM => MyType::Enum(labels(enums.next())),
                My::MYSQL_TYPE_SET => MyType::Set(labels(sets.next())),
                My::MYSQL_TYPE_JSON => MyType::Json,
                My::MYSQL_TYPE_GEOMETRY | My::MYSQL_TYPE_VECTOR => MyType::Binary,
                My::MYSQL_TYPE_STRING
                | My::MYSQL_TYPE_VAR_STRING
                | My::MYSQL_TYPE_VARCHAR
                | My::MYSQL_TYPE_BLOB
                | My::MYSQL_TYPE_TINY_BLOB
                | My::MYSQL_TYPE_MEDIUM_BLOB
                | My::MYSQL_TYPE_LONG_BLOB => {
                    let name = charset.and_then(|id| charsets.get(&id)).map(String::as_str);
                    text_type(name)
                }
                other => {
                    return Err(bad(name, format!("column type {other:?} is not supported")));
                }
            };
            // binary(n) loses its trailing 0x00 bytes in the binlog (see `rows`); a CHAR in
            // another charset landing as bytes loses its pad characters, as from a SELECT.
            let binary_charset =
                charset.and_then(|id| charsets.get(&id)).map(String::as_str) == Some("binary");
            let fixed = match ty {
                My::MYSQL_TYPE_STRING if binary_charset => super::rows::string_length(col_meta),
                _ => 0,
            };
            columns.push((name, my));
            raw.push(RawColumn {
                ty,
                meta: col_meta.to_vec(),
                unsigned,
                fixed,
            });
        }
        let key = meta
            .iter_primary_key()
            .filter_map(|k| k.ok())
            .map(|k| k as usize)
            .collect();
        Ok(MyShape {
            table,
            columns,
            key,
            raw,
        })
    }

    /// The Arrow schema: CDC columns, then the table's.
    pub fn schema(&self) -> SchemaRef {
        let mut fields = cdc_fields();
        fields.extend(
            self.columns
                .iter()
                .map(|(name, ty)| Field::new(name, ty.arrow(), true)),
        );
        Arc::new(Schema::new(fields))
    }

    /// The table's source columns (name, Arrow type), as the lake compares shapes.
    pub fn source_columns(&self) -> crate::evolution::Columns {
        self.columns
            .iter()
            .map(|(name, ty)| (name.clone(), ty.arrow()))
            .collect()
    }
}

enum Column {
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    Dec(Decimal128Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Utf8(StringBuilder),
    Bin(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
}

impl Column {
    fn new(ty: &MyType, capacity: usize) -> Self {
        match ty.arrow() {
            DataType::Int16 => Column::I16(Int16Builder::with_capacity(capacity)),
            DataType::Int32 => Column::I32(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => Column::I64(Int64Builder::with_capacity(capacity)),
            DataType::Decimal128(p, s) => Column::Dec(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(p, s)
                    .unwrap_or_default(),
            ),
            DataType::Float32 => Column::F32(Float32Builder::with_capacity(capacity)),
            DataType::Float64 => Column::F64(Float64Builder::with_capacity(capacity)),
            DataType::Binary => Column::Bin(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Date32 => Column::Date(Date32Builder::with_capacity(capacity)),
            DataType::Timestamp(_, tz) => {
                let b = TimestampMicrosecondBuilder::with_capacity(capacity);
                Column::Ts(match tz {
                    Some(tz) => b.with_timezone(tz),
                    None => b,
                })
            }
            _ => Column::Utf8(StringBuilder::with_capacity(capacity, capacity * 16)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Column::I16(b) => b.append_null(),
            Column::I32(b) => b.append_null(),
            Column::I64(b) => b.append_null(),
            Column::Dec(b) => b.append_null(),
            Column::F32(b) => b.append_null(),
            Column::F64(b) => b.append_null(),
            Column::Utf8(b) => b.append_null(),
            Column::Bin(b) => b.append_null(),
            Column::Date(b) => b.append_null(),
            Column::Ts(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::I16(b) => Arc::new(b.finish()),
            Column::I32(b) => Arc::new(b.finish()),
            Column::I64(b) => Arc::new(b.finish()),
            Column::Dec(b) => Arc::new(b.finish()),
            Column::F32(b) => Arc::new(b.finish()),
            Column::F64(b) => Arc::new(b.finish()),
            Column::Utf8(b) => Arc::new(b.finish()),
            Column::Bin(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Ts(b) => Arc::new(b.finish()),
        }
    }

    /// Append one value; the error is the reason it cannot be represented, and then nothing
    /// was appended.
    fn append(&mut self, ty: &MyType, cell: &Cell<'_>) -> std::result::Result<(), String> {
        match (self, ty, cell) {
            (c, _, Cell::Null) => c.append_null(),
            (Column::I16(b), MyType::Year, Cell::Year(y)) => b.append_value(*y as i16),
            (Column::I16(b), _, c) => {
                b.append_value(int(c)?.try_into().map_err(|_| "out of range")?)
            }
            (Column::I32(b), _, c) => {
                b.append_value(int(c)?.try_into().map_err(|_| "out of range")?)
            }
            (Column::I64(b), MyType::Bit, Cell::Bit(v)) => {
                b.append_value(i64::try_from(*v).map_err(|_| "out of range")?)
            }
            (Column::I64(b), _, c) => {
                b.append_value(int(c)?.try_into().map_err(|_| "out of range")?)
            }
            (Column::Dec(b), MyType::UInt64, Cell::Bit(v)) => b.append_value(i128::from(*v)),
            (Column::Dec(b), MyType::UInt64, c) => b.append_value(int(c)?),
            (Column::Dec(b), MyType::Decimal { precision, scale }, Cell::Decimal(text)) => {
                b.append_value(decimal_from_text(text, *precision, *scale)?)
            }
            (Column::Utf8(b), MyType::DecimalText, Cell::Decimal(text)) => b.append_value(text),
            (Column::F32(b), _, Cell::Float(f)) => b.append_value(*f),
            (Column::F64(b), _, Cell::Double(d)) => b.append_value(*d),
            (Column::Date(b), _, Cell::Date { y, m, d }) => b.append_value(days(*y, *m, *d)?),
            (
                Column::Ts(b),
                MyType::DateTime,
                Cell::DateTime {
                    y,
                    m,
                    d,
                    h,
                    mi,
                    s,
                    us,
                },
            ) => {
                let day = i64::from(days(*y, *m, *d)?);
                if *h > 23 || *mi > 59 || *s > 59 {
                    return Err(format!("invalid time of day {h:02}:{mi:02}:{s:02}"));
                }
                let secs =
                    day * 86_400 + i64::from(*h) * 3600 + i64::from(*mi) * 60 + i64::from(*s);
                b.append_value(secs * 1_000_000 + i64::from(*us));
            }
            (Column::Ts(b), MyType::Timestamp, Cell::Timestamp { secs, us }) => {
                if *secs == 0 && *us == 0 {
                    return Err("zero timestamp (0000-00-00 00:00:00) cannot be stored in a timestamp column: fix the row or set a strict sql_mode".into());
                }
                b.append_value(i64::from(*secs) * 1_000_000 + i64::from(*us));
            }
            (Column::Utf8(b), MyType::Time, Cell::Time { neg, h, m, s, us }) => {
                let sign = if *neg { "-" } else { "" };
                if *us == 0 {
                    b.append_value(format!("{sign}{h:02}:{m:02}:{s:02}"));
                } else {
                    b.append_value(format!("{sign}{h:02}:{m:02}:{s:02}.{us:06}"));
                }
            }
            (Column::Utf8(b), MyType::Enum(labels), Cell::Enum(i)) => match i {
                // 0 is the error value '' that a lax sql_mode stores for an invalid label.
                0 => b.append_value(""),
                i => b.append_value(
                    labels
                        .get(usize::from(*i) - 1)
                        .ok_or("enum index beyond its labels")?,
                ),
            },
            (Column::Utf8(b), MyType::Set(labels), Cell::Set(bits)) => {
                if labels.len() < 64 && bits >> labels.len() != 0 {
                    return Err("set bit beyond its labels".into());
                }
                let mut out = String::new();
                // 64 bits name at most 64 labels (a SET's limit); more, from a malformed table
                // map, would shift past the u64.
                for (i, label) in labels
                    .iter()
                    .take(64)
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                {
                    if i > 0 && !out.is_empty() {
                        out.push(',');
                    }
                    out.push_str(label);
                }
                b.append_value(out);
            }
            (Column::Utf8(b), MyType::Json, Cell::Json(text)) => b.append_value(text),
            // A snapshot reads enum and set values as their labels already.
            (Column::Utf8(b), MyType::Enum(_) | MyType::Set(_), Cell::Bytes(text)) => {
                b.append_value(std::str::from_utf8(text).map_err(|e| format!("not UTF-8: {e}"))?);
            }
            (Column::Utf8(b), MyType::Text(Charset::Latin1), Cell::Bytes(bytes)) => {
                b.append_value(bytes.iter().map(|c| cp1252(*c)).collect::<String>());
            }
            (Column::Utf8(b), _, Cell::Bytes(bytes)) => {
                b.append_value(std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?);
            }
            (Column::Bin(b), _, Cell::Bytes(bytes)) => b.append_value(bytes),
            (Column::Bin(b), _, Cell::Padded { bytes, len }) => {
                // Written in place: no copy of the value is made.
                const ZEROS: [u8; 256] = [0; 256];
                let pad = len.saturating_sub(bytes.len());
                let zeros = ZEROS
                    .get(..pad)
                    .ok_or("fixed-length binary over 256 bytes")?;
                let _ = b.write_all(bytes);
                let _ = b.write_all(zeros);
                b.append_value(b"");
            }
            (_, ty, c) => return Err(format!("unexpected {c:?} for a {} column", ty.name())),
        }
        Ok(())
    }
}

fn int(c: &Cell<'_>) -> std::result::Result<i128, String> {
    match c {
        Cell::Int(i) => Ok(i128::from(*i)),
        Cell::UInt(u) => Ok(i128::from(*u)),
        other => Err(format!("expected an integer, got {other:?}")),
    }
}

/// Days since 1970-01-01 of a calendar date; zero and impossible dates are errors, and so is
/// year 0, outside Delta's date range (0001-01-01 to 9999-12-31).
fn days(y: u16, m: u8, d: u8) -> std::result::Result<i32, String> {
    let valid = y >= 1 && (1..=12).contains(&m) && d >= 1 && {
        let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let last = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        d <= last[usize::from(m - 1)]
    };
    if !valid {
        return Err(format!(
            "invalid date {y:04}-{m:02}-{d:02} (zero dates cannot be stored in a date column): fix the row or set a strict sql_mode"
        ));
    }
    i32::try_from(days_from_civil(i64::from(y), u32::from(m), u32::from(d)))
        .map_err(|_| "date out of range".into())
}

/// MySQL's latin1 is Windows-1252.
fn cp1252(byte: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match byte {
        0x80..=0x9f => HIGH[usize::from(byte - 0x80)],
        b => char::from(b),
    }
}

/// Accumulates rows of one table. Rows of the open transaction sit after the committed ones
/// and get their position when it commits.
pub struct MyTableBuilder {
    shape: Arc<MyShape>,
    schema: SchemaRef,
    cdc: CdcBuilder,
    columns: Vec<Column>,
    /// `<column>__text` companions, made when a value the column's type cannot hold (see
    /// [`exact_text`]) first appears in the batch.
    invalid: Vec<Option<StringBuilder>>,
}

/// The exact text of a value the server accepted that a column of type `ty` could not hold
/// ([`Column::append`] refused it): a zero or impossible date, datetime or timestamp as the
/// server prints it, an integer (or bit, year) beyond the column's range as its number, an enum
/// index or set bits without labels as their number (the server's `column + 0`), a decimal
/// as its digits. `None` when the refusal is not about the value (a decoder bug): that stops.
fn exact_text(ty: &MyType, cell: &Cell<'_>) -> Option<String> {
    Some(match (ty, cell) {
        (MyType::Date, Cell::Date { y, m, d }) => format!("{y:04}-{m:02}-{d:02}"),
        (
            MyType::DateTime,
            Cell::DateTime {
                y,
                m,
                d,
                h,
                mi,
                s,
                us,
            },
        ) => {
            let frac = if *us > 0 {
                format!(".{us:06}")
            } else {
                String::new()
            };
            format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}{frac}")
        }
        (MyType::Timestamp, Cell::Timestamp { secs: 0, us: 0 }) => {
            "0000-00-00 00:00:00".to_string()
        }
        (
            MyType::Int16 | MyType::Int32 | MyType::Int64 | MyType::UInt64 | MyType::Bit,
            Cell::Int(i),
        ) => i.to_string(),
        (
            MyType::Int16 | MyType::Int32 | MyType::Int64 | MyType::UInt64 | MyType::Bit,
            Cell::UInt(u) | Cell::Bit(u),
        ) => u.to_string(),
        (MyType::Year, Cell::Year(y)) => y.to_string(),
        (MyType::Enum(_), Cell::Enum(i)) => i.to_string(),
        (MyType::Set(_), Cell::Set(bits)) => bits.to_string(),
        (MyType::Decimal { .. }, Cell::Decimal(text)) => text.clone(),
        _ => return None,
    })
}

impl MyTableBuilder {
    /// Empty builders for `shape`.
    pub fn new(shape: Arc<MyShape>, capacity: usize) -> Self {
        MyTableBuilder {
            schema: shape.schema(),
            cdc: CdcBuilder::new(capacity),
            columns: shape
                .columns
                .iter()
                .map(|(_, ty)| Column::new(ty, capacity))
                .collect(),
            invalid: shape.columns.iter().map(|_| None).collect(),
            shape,
        }
    }

    /// The shape decoded.
    pub fn shape(&self) -> &Arc<MyShape> {
        &self.shape
    }

    /// Rows accumulated.
    pub fn rows(&self) -> usize {
        self.cdc.rows()
    }

    /// Append one row image (`values[i]` for column `i`; `None`: not in the image).
    pub fn append(
        &mut self,
        op: Op,
        pos: RowPosition,
        values: &[Option<Cell<'_>>],
        position: &dyn Fn() -> String,
    ) -> Result<()> {
        let row = self.cdc.rows();
        for (i, value) in values.iter().enumerate() {
            let Some(column) = self.columns.get_mut(i) else {
                break;
            };
            let ty = &self.shape.columns[i].1;
            // The typed value first; only a refused one costs a look at its text.
            let text = match value {
                Some(v) => match column.append(ty, v) {
                    Ok(()) => None,
                    Err(reason) => {
                        let Some(text) = exact_text(ty, v) else {
                            return Err(Error::MysqlValue {
                                table: self.shape.table.to_string(),
                                column: self.shape.columns[i].0.clone(),
                                mysql_type: ty.name().to_string(),
                                position: position(),
                                reason,
                            });
                        };
                        column.append_null();
                        Some(text)
                    }
                },
                None => {
                    column.append_null();
                    self.cdc.unchanged(&self.shape.columns[i].0);
                    None
                }
            };
            if text.is_some() || self.invalid[i].is_some() {
                let companion = self.invalid[i].get_or_insert_with(|| {
                    let mut b = StringBuilder::new();
                    b.append_nulls(row);
                    b
                });
                companion.append_option(text.as_deref());
            }
        }
        self.cdc.append(op, pos);
        Ok(())
    }

    /// Set the position of every row from `start` on (the transaction that just committed).
    pub fn stamp_since(&mut self, start: usize, pos: RowPosition) {
        self.cdc.stamp_since(start, pos);
    }

    /// Take the rows as a batch; `None` when empty.
    pub fn take(&mut self) -> Result<Option<RecordBatch>> {
        if self.cdc.rows() == 0 {
            return Ok(None);
        }
        let mut arrays = self.cdc.finish();
        arrays.extend(self.columns.iter_mut().map(Column::finish));
        let schema = with_companions(
            self.schema.clone(),
            &mut arrays,
            &mut self.invalid,
            self.shape.columns.iter().map(|(name, _)| name.as_str()),
        );
        Ok(Some(RecordBatch::try_new(schema, arrays)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the binlog_rows fuzz target: a TABLE_MAP whose ENUM_STR_VALUE field claims
    /// 0x3001e077d07083c0 labels (mysql_common reserved room for them and the process
    /// aborted). The shape is refused with an error.
    #[test]
    fn a_table_map_with_an_absurd_enum_label_count_is_an_error() {
        use mysql_common::binlog::consts::BinlogVersion;
        use mysql_common::binlog::events::EventData;
        use mysql_common::binlog::EventStreamReader;

        let mut bytes: &[u8] = include_bytes!("../../tests/data/fuzz-enum-label-count.binlog");
        let mut reader = EventStreamReader::new(BinlogVersion::Version4);
        let mut refused = 0;
        // Framed as the fuzz target frames events (as packets would).
        while bytes.len() >= 23 {
            let size = u32::from_le_bytes(bytes[9..13].try_into().unwrap()) as usize;
            if size < 23 || size > bytes.len() {
                break;
            }
            let (event, rest) = bytes.split_at(size);
            bytes = rest;
            let Ok(Some(event)) = reader.read(event) else {
                break;
            };
            if let Ok(Some(EventData::TableMapEvent(tme))) = event.read_data() {
                let e = MyShape::from_table_map(&tme, &HashMap::new(), "binlog.000001:4")
                    .unwrap_err()
                    .to_string();
                assert!(e.contains("labels in the"), "{e}");
                refused += 1;
            }
        }
        assert_eq!(refused, 1);
    }

    #[test]
    fn dates_and_latin1() {
        assert_eq!(days(1970, 1, 1), Ok(0));
        assert_eq!(days(2024, 2, 29), Ok(19782));
        assert!(days(0, 0, 0).is_err());
        assert!(days(2023, 2, 29).is_err());
        assert_eq!(cp1252(0x80), '€');
        assert_eq!(cp1252(b'e'), 'e');
        assert_eq!(cp1252(0xe9), 'é');
    }

    #[test]
    fn values_land_in_their_arrow_types() {
        let mut c = Column::new(&MyType::UInt64, 4);
        c.append(&MyType::UInt64, &Cell::UInt(u64::MAX)).unwrap();
        let set: Arc<[String]> = vec!["a".to_string(), "b".into(), "c".into()].into();
        let mut s = Column::new(&MyType::Set(set.clone()), 4);
        s.append(&MyType::Set(set), &Cell::Set(0b101)).unwrap();
        let mut y = Column::new(&MyType::Year, 2);
        y.append(&MyType::Year, &Cell::Year(0)).unwrap();
        let a = c.finish();
        let a = a
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Decimal128Array>()
            .unwrap();
        assert_eq!(a.value(0), i128::from(u64::MAX));
        let s = s.finish();
        let s = s
            .as_any()
            .downcast_ref::<deltalake::arrow::array::StringArray>()
            .unwrap();
        assert_eq!(s.value(0), "a,c");
        let y = y.finish();
        let y = y
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int16Array>()
            .unwrap();
        assert_eq!(y.value(0), 0);
        let mut d = Column::new(&MyType::Date, 1);
        assert!(d
            .append(&MyType::Date, &Cell::Date { y: 0, m: 0, d: 0 })
            .is_err());
        // A table map can claim more SET labels than 64 bits can name: the rest are unused.
        let many: Arc<[String]> = (0..70).map(|i| format!("l{i}")).collect();
        let mut s = Column::new(&MyType::Set(many.clone()), 1);
        s.append(&MyType::Set(many), &Cell::Set(1 << 63 | 1))
            .unwrap();
        let s = s.finish();
        let s = s
            .as_any()
            .downcast_ref::<deltalake::arrow::array::StringArray>()
            .unwrap();
        assert_eq!(s.value(0), "l0,l63");
    }

    #[test]
    fn refused_values_land_null_with_their_exact_text() {
        use deltalake::arrow::array::Array as _;
        let labels: Arc<[String]> = vec!["a".to_string()].into();
        let shape = Arc::new(MyShape {
            table: Arc::new(TableName {
                schema: "s".into(),
                name: "t".into(),
            }),
            columns: vec![
                ("e".into(), MyType::Enum(labels.clone())),
                ("st".into(), MyType::Set(labels)),
                ("ts".into(), MyType::Timestamp),
                ("dt".into(), MyType::Date),
                ("b".into(), MyType::Binary),
                ("i".into(), MyType::Int16),
            ],
            key: Vec::new(),
            raw: Vec::new(),
        });
        let mut builder = MyTableBuilder::new(shape, 4);
        let pos = RowPosition {
            lsn: crate::lsn::Lsn(1),
            seq: 0,
            commit_ts: 0,
        };
        let at = || "here".to_string();
        let good = [
            Some(Cell::Enum(1)),
            Some(Cell::Set(1)),
            Some(Cell::Timestamp { secs: 1, us: 0 }),
            Some(Cell::Date { y: 1, m: 1, d: 1 }),
            Some(Cell::Padded {
                bytes: &[1],
                len: 4,
            }),
            Some(Cell::Int(-1)),
        ];
        builder.append(Op::Insert, pos, &good, &at).unwrap();
        let refused = [
            Some(Cell::Enum(7)),
            Some(Cell::Set(0b10)),
            Some(Cell::Timestamp { secs: 0, us: 0 }),
            Some(Cell::Date { y: 0, m: 1, d: 1 }),
            Some(Cell::Bytes(&[1, 0, 0, 0])),
            Some(Cell::Int(40_000)),
        ];
        builder.append(Op::Insert, pos, &refused, &at).unwrap();
        let batch = builder.take().unwrap().unwrap();
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        let text = |name: &str| {
            let a = column(&format!("{name}{}", crate::evolution::COMPANION_SUFFIX));
            let a = a
                .as_any()
                .downcast_ref::<deltalake::arrow::array::StringArray>()
                .unwrap()
                .clone();
            (a.is_null(0), a.value(1).to_string())
        };
        for (name, want) in [
            ("e", "7"),
            ("st", "2"),
            ("ts", "0000-00-00 00:00:00"),
            ("dt", "0000-01-01"),
            ("i", "40000"),
        ] {
            assert_eq!(text(name), (true, want.to_string()), "{name}");
            assert!(
                column(name).is_valid(0) && column(name).is_null(1),
                "{name}"
            );
        }
        let b = column("b");
        let b = b
            .as_any()
            .downcast_ref::<deltalake::arrow::array::BinaryArray>()
            .unwrap();
        assert_eq!(b.value(0), [1, 0, 0, 0]);
        assert_eq!(b.value(1), [1, 0, 0, 0]);
        assert!(batch.column_by_name("b__text").is_none());
        // A cell of the wrong kind is a decoder bug: it stops, naming the column.
        let mut builder = MyTableBuilder::new(builder.shape().clone(), 1);
        let wrong = [Some(Cell::Json("{}".into())), None, None, None, None, None];
        assert!(builder.append(Op::Insert, pos, &wrong, &at).is_err());
    }

    #[test]
    fn other_charsets_land_as_bytes() {
        for other in ["gbk", "ucs2", "utf16", "utf32", "cp1251"] {
            let ty = text_type(Some(other));
            assert_eq!(ty, MyType::Text(Charset::Undecoded), "{other}");
            assert_eq!(ty.arrow(), DataType::Binary);
            let mut c = Column::new(&ty, 1);
            c.append(&ty, &Cell::Bytes(&[0xd6, 0xd0])).unwrap();
        }
        assert_eq!(text_type(None), MyType::Text(Charset::Undecoded));
        assert_eq!(text_type(Some("binary")), MyType::Binary);
        assert_eq!(text_type(Some("utf8mb4")), MyType::Text(Charset::Utf8));
        assert_eq!(text_type(Some("latin1")), MyType::Text(Charset::Latin1));
    }
}
