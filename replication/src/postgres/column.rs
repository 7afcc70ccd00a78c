//! PostgreSQL column types → Arrow types, and Arrow builders that values are decoded into
//! straight from the pgoutput buffer.
//!
//! A [`ColumnType`] is derived once per Relation message from the type OID and modifier; a
//! [`ColumnBuilder`] then appends each value without building an intermediate row. Values
//! arrive in binary send format (pgoutput `binary 'true'`) or, per column, in text output
//! format: both land in the same Arrow type, so a table's schema never depends on the
//! connection mode. The mapping is documented in the README's type table.
//!
//! A valid value the Arrow type cannot hold exactly lands as NULL, and
//! [`ColumnBuilder::append`] hands back its PostgreSQL text for the table's `<column>__text`
//! companion (see [`super::table`]):
//!
//! ```text
//!  value ─▶ typed? ──yes──▶ column builder                     (no allocation)
//!             └─no──▶ NULL in the column, text ─▶ companion    (±infinity, NaN in decimal,
//!                                                               year > 9999, 2-D arrays, …)
//! ```

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Arc;

use deltalake::arrow::array::NullBufferBuilder;
use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListArray, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use deltalake::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};

use super::pgoutput::Value;
use super::value::{self, ValueResult};
use crate::value::decimal_exact;

/// Type OIDs from `pg_type.dat`, for the types Sluice decodes natively.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
    /// OIDs below this are built in; user types (enums, domains, composites) are above.
    pub const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

    /// Element OID of a built-in array type.
    pub fn array_element(oid: u32) -> Option<u32> {
        Some(match oid {
            1000 => BOOL,
            1001 => BYTEA,
            1003 => NAME,
            1016 => INT8,
            1005 => INT2,
            1007 => INT4,
            1009 => TEXT,
            199 => JSON,
            1021 => FLOAT4,
            1022 => FLOAT8,
            1014 => BPCHAR,
            1015 => VARCHAR,
            1182 => DATE,
            1183 => TIME,
            1115 => TIMESTAMP,
            1185 => TIMESTAMPTZ,
            1187 => INTERVAL,
            1231 => NUMERIC,
            2951 => UUID,
            3807 => JSONB,
            _ => return None,
        })
    }
}

/// Largest decimal precision Arrow's Decimal128 (and Delta's decimal) holds.
const MAX_DECIMAL_PRECISION: u8 = 38;

/// How the values of one column are decoded and which Arrow type holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// bool → Boolean
    Bool,
    /// int2 → Int16
    Int16,
    /// int4 → Int32
    Int32,
    /// int8 → Int64
    Int64,
    /// float4 → Float32
    Float32,
    /// float8 → Float64
    Float64,
    /// numeric(p,s) with p ≤ 38 and 0 ≤ s ≤ p → Decimal128(p,s)
    Decimal { precision: u8, scale: i8 },
    /// unconstrained or very wide numeric → exact text
    NumericText,
    /// text, varchar, char, name, json, enums, anything else in text mode → Utf8
    Text,
    /// jsonb → Utf8 (binary form is a version byte and the text)
    Jsonb,
    /// bytea → Binary
    Bytea,
    /// date → Date32
    Date,
    /// time → Utf8 `HH:MM:SS[.ffffff]` (Delta has no time type)
    Time,
    /// timestamp → Timestamp(µs)
    Timestamp,
    /// timestamptz → Timestamp(µs, UTC)
    TimestampTz,
    /// interval → Utf8, ISO 8601
    Interval,
    /// uuid → Utf8, canonical form
    Uuid,
}

/// The decoded shape of one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnType {
    /// How each (element) value is decoded.
    pub kind: Kind,
    /// Whether the column is a one-dimensional array of `kind`.
    pub array: bool,
}

impl ColumnType {
    /// The column type for a type OID and modifier. `enums` lists the OIDs of enum types,
    /// whose binary form is their label. Returns `None` for a type Sluice cannot decode in
    /// binary form; such columns need the connection in text mode, where they become text.
    pub fn from_oid(type_oid: u32, type_modifier: i32, enums: &HashSet<u32>) -> Option<Self> {
        if let Some(element) = oid::array_element(type_oid) {
            let kind = scalar_kind(element, -1)?;
            return Some(ColumnType { kind, array: true });
        }
        if enums.contains(&type_oid) {
            return Some(ColumnType {
                kind: Kind::Text,
                array: false,
            });
        }
        scalar_kind(type_oid, type_modifier).map(|kind| ColumnType { kind, array: false })
    }

    /// The column type when the connection is in text mode: unknown types are exact text.
    pub fn from_oid_text_mode(type_oid: u32, type_modifier: i32) -> Self {
        Self::from_oid(type_oid, type_modifier, &HashSet::new()).unwrap_or(ColumnType {
            kind: Kind::Text,
            array: false,
        })
    }

    /// The Arrow type that holds this column.
    pub fn arrow_type(&self) -> DataType {
        let scalar = match self.kind {
            Kind::Bool => DataType::Boolean,
            Kind::Int16 => DataType::Int16,
            Kind::Int32 => DataType::Int32,
            Kind::Int64 => DataType::Int64,
            Kind::Float32 => DataType::Float32,
            Kind::Float64 => DataType::Float64,
            Kind::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            Kind::Bytea => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::NumericText
            | Kind::Text
            | Kind::Jsonb
            | Kind::Time
            | Kind::Interval
            | Kind::Uuid => DataType::Utf8,
        };
        if self.array {
            DataType::List(element_field(scalar))
        } else {
            scalar
        }
    }
}

/// The field of a list's elements, named `element` as Delta's and Parquet's readers expect.
fn element_field(data_type: DataType) -> FieldRef {
    Arc::new(Field::new("element", data_type, true))
}

fn scalar_kind(type_oid: u32, type_modifier: i32) -> Option<Kind> {
    Some(match type_oid {
        oid::BOOL => Kind::Bool,
        oid::INT2 => Kind::Int16,
        oid::INT4 => Kind::Int32,
        oid::INT8 => Kind::Int64,
        oid::FLOAT4 => Kind::Float32,
        oid::FLOAT8 => Kind::Float64,
        oid::NUMERIC => numeric_kind(type_modifier),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::JSON => Kind::Text,
        oid::JSONB => Kind::Jsonb,
        oid::BYTEA => Kind::Bytea,
        oid::DATE => Kind::Date,
        oid::TIME => Kind::Time,
        oid::TIMESTAMP => Kind::Timestamp,
        oid::TIMESTAMPTZ => Kind::TimestampTz,
        oid::INTERVAL => Kind::Interval,
        oid::UUID => Kind::Uuid,
        _ => return None,
    })
}

/// numeric's typmod is `((precision << 16) | scale) + 4`, scale an 11-bit signed field.
fn numeric_kind(type_modifier: i32) -> Kind {
    if type_modifier < 4 {
        return Kind::NumericText;
    }
    let packed = type_modifier - 4;
    let precision = (packed >> 16) & 0xffff;
    let scale = ((packed & 0x7ff) ^ 1024) - 1024;
    match (u8::try_from(precision), i8::try_from(scale)) {
        (Ok(p), Ok(s)) if p <= MAX_DECIMAL_PRECISION && s >= 0 && i32::from(s) <= i32::from(p) => {
            Kind::Decimal {
                precision: p,
                scale: s,
            }
        }
        _ => Kind::NumericText,
    }
}

/// Whether a type OID is user-defined (and so needs a catalog look-up to be understood).
pub fn is_user_type(type_oid: u32) -> bool {
    type_oid >= oid::FIRST_NORMAL_OBJECT_ID
}

/// Accumulates one column's values.
pub struct ColumnBuilder {
    ty: ColumnType,
    builder: Builder,
    /// Reused buffer for values formatted as text (uuid, interval, numeric, time).
    scratch: String,
    /// Text of the last value the Arrow type could not hold, for the companion column.
    text: String,
}

enum Builder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    List(Box<ListBuilder>),
}

struct ListBuilder {
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
    values: Builder,
}

impl Builder {
    fn new(ty: &ColumnType, capacity: usize) -> Self {
        let scalar = match ty.kind {
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            Kind::Int16 => Builder::Int16(Int16Builder::with_capacity(capacity)),
            Kind::Int32 => Builder::Int32(Int32Builder::with_capacity(capacity)),
            Kind::Int64 => Builder::Int64(Int64Builder::with_capacity(capacity)),
            Kind::Float32 => Builder::Float32(Float32Builder::with_capacity(capacity)),
            Kind::Float64 => Builder::Float64(Float64Builder::with_capacity(capacity)),
            Kind::Decimal { precision, scale } => Builder::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_data_type(DataType::Decimal128(precision, scale)),
            ),
            Kind::Bytea => Builder::Binary(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Kind::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
            Kind::Timestamp => {
                Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            Kind::TimestampTz => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            Kind::NumericText
            | Kind::Text
            | Kind::Jsonb
            | Kind::Time
            | Kind::Interval
            | Kind::Uuid => Builder::Utf8(StringBuilder::with_capacity(capacity, capacity * 16)),
        };
        if ty.array {
            let mut offsets = Vec::with_capacity(capacity + 1);
            offsets.push(0);
            Builder::List(Box::new(ListBuilder {
                offsets,
                nulls: NullBufferBuilder::new(capacity),
                values: scalar,
            }))
        } else {
            scalar
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int16(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Float32(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Decimal(b) => b.append_null(),
            Builder::Utf8(b) => b.append_null(),
            Builder::Binary(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::List(l) => {
                let last = l.offsets.last().copied().unwrap_or(0);
                l.offsets.push(last);
                l.nulls.append_null();
            }
        }
    }

    fn finish(&mut self, ty: &ColumnType) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int16(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Float32(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Decimal(b) => Arc::new(b.finish()),
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::List(l) => {
                let scalar = ColumnType {
                    kind: ty.kind,
                    array: false,
                };
                let values = l.values.finish(&scalar);
                let offsets = std::mem::replace(&mut l.offsets, vec![0]);
                let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
                let nulls = l.nulls.finish();
                Arc::new(ListArray::new(
                    element_field(scalar.arrow_type()),
                    offsets,
                    values,
                    nulls,
                ))
            }
        }
    }
}

impl ColumnBuilder {
    /// A builder for `ty` with room for `capacity` rows.
    pub fn new(ty: ColumnType, capacity: usize) -> Self {
        ColumnBuilder {
            builder: Builder::new(&ty, capacity),
            ty,
            scratch: String::new(),
            text: String::new(),
        }
    }

    /// The column's decoded type.
    pub fn column_type(&self) -> ColumnType {
        self.ty
    }

    /// Append SQL NULL (also used for unchanged TOAST values and absent key columns).
    pub fn append_null(&mut self) {
        self.builder.append_null();
    }

    /// Append one value from a tuple. `Null` and `Unchanged` append NULL; the caller records
    /// unchanged columns in `_sluice_unchanged`.
    ///
    /// Returns `Some(text)` when the column's Arrow type cannot hold the value exactly
    /// (±infinity, a date beyond year 9999, NaN in a decimal, a multi-dimensional array…):
    /// the column got NULL and `text`, PostgreSQL's own output of the value, belongs in the
    /// `<column>__text` companion. An error only for bytes no server sends (truncated,
    /// garbage). Ordinary values allocate nothing.
    #[inline]
    pub fn append(&mut self, value: Value<'_>) -> ValueResult<Option<&str>> {
        let kind = self.ty.kind;
        let typed = match (value, &mut self.builder) {
            (Value::Null | Value::Unchanged, b) => {
                b.append_null();
                return Ok(None);
            }
            (Value::Binary(bytes), Builder::List(list)) => {
                let mut buf = bytes;
                let header = value::array_header(&mut buf)?;
                let n = header.elements();
                let typed = header.is_plain() && binary_elements_fit(kind, buf, n)?;
                if typed {
                    for _ in 0..n {
                        match value::array_element(&mut buf)? {
                            Some(e) => {
                                if !append_binary(kind, &mut list.values, e, &mut self.scratch)? {
                                    return Err(mismatch());
                                }
                            }
                            None => list.values.append_null(),
                        }
                    }
                    list.push_valid(n);
                } else {
                    self.text.clear();
                    value::array_to_text(
                        &header,
                        &mut buf,
                        &mut self.text,
                        &mut self.scratch,
                        &mut |e, out| binary_text(kind, e, out),
                    )?;
                }
                if !buf.is_empty() {
                    return Err("trailing bytes after array".into());
                }
                typed
            }
            (Value::Text(bytes), Builder::List(list)) => {
                let text = utf8(bytes)?;
                match plain_text_elements(kind, text) {
                    Some(elements) => {
                        for e in &elements {
                            match e {
                                Some(e) => {
                                    if !append_text(kind, &mut list.values, e)? {
                                        return Err(mismatch());
                                    }
                                }
                                None => list.values.append_null(),
                            }
                        }
                        list.push_valid(elements.len());
                        true
                    }
                    None => {
                        self.text.clear();
                        self.text.push_str(text);
                        false
                    }
                }
            }
            (Value::Binary(bytes), b) => {
                if append_binary(kind, b, bytes, &mut self.scratch)? {
                    return Ok(None);
                }
                self.text.clear();
                binary_text(kind, bytes, &mut self.text)?;
                false
            }
            (Value::Text(bytes), b) => {
                let v = utf8(bytes)?;
                if append_text(kind, b, v)? {
                    return Ok(None);
                } else {
                    self.text.clear();
                    self.text.push_str(v);
                    false
                }
            }
        };
        if typed {
            Ok(None)
        } else {
            self.builder.append_null();
            Ok(Some(&self.text))
        }
    }

    /// Take the accumulated values as an array, leaving the builder empty and reusable.
    pub fn finish(&mut self) -> ArrayRef {
        self.builder.finish(&self.ty)
    }
}

impl Kind {
    /// Whether some valid values of this kind do not fit its Arrow type.
    fn may_not_fit(self) -> bool {
        matches!(
            self,
            Kind::Decimal { .. } | Kind::Date | Kind::Timestamp | Kind::TimestampTz
        )
    }
}

impl ListBuilder {
    fn push_valid(&mut self, added: usize) {
        let last = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(last + added as i32);
        self.nulls.append_non_null();
    }
}

fn utf8(bytes: &[u8]) -> ValueResult<&str> {
    std::str::from_utf8(bytes).map_err(|_| "value is not valid utf-8".to_string())
}

fn mismatch() -> String {
    "internal: builder does not match column kind".to_string()
}

/// Whether every element of a binary array lands typed (checked before appending any, so an
/// array never lands half typed). Only kinds with unrepresentable values are scanned.
fn binary_elements_fit(kind: Kind, mut buf: &[u8], n: usize) -> ValueResult<bool> {
    if !kind.may_not_fit() {
        return Ok(true);
    }
    for _ in 0..n {
        let Some(e) = value::array_element(&mut buf)? else {
            continue;
        };
        let fits = match kind {
            Kind::Date => value::date_to_arrow(value::pg_date(e)?).is_some(),
            Kind::Timestamp | Kind::TimestampTz => {
                value::timestamp_to_arrow(value::pg_timestamp(e)?).is_some()
            }
            Kind::Decimal { precision, scale } => {
                value::numeric(e)?.to_decimal(precision, scale)?.is_some()
            }
            _ => true,
        };
        if !fits {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The elements of a text array that maps to a Delta array (one dimension from 1, every
/// element representable); `None` sends the whole text to the companion.
fn plain_text_elements(kind: Kind, text: &str) -> Option<Vec<Option<String>>> {
    if text.starts_with('[') || text.starts_with("{{") {
        return None;
    }
    let elements = value::array_elements_from_text(text).ok()?;
    if kind.may_not_fit() {
        let fits = |e: &str| match kind {
            Kind::Date => value::date_from_text(e).is_some(),
            Kind::Timestamp | Kind::TimestampTz => value::timestamp_from_text(e).is_some(),
            Kind::Decimal { precision, scale } => decimal_exact(e, precision, scale).is_some(),
            _ => true,
        };
        if !elements.iter().flatten().all(|e| fits(e)) {
            return None;
        }
    }
    Some(elements)
}

/// Append one scalar in binary send format; `false` (nothing appended) when the Arrow type
/// cannot hold it.
// Inlined into its two callers: the `Result<bool, _>` then costs nothing per value (measured
// with scripts/bench-decode-instructions.sh).
#[inline(always)]
fn append_binary(kind: Kind, b: &mut Builder, v: &[u8], scratch: &mut String) -> ValueResult<bool> {
    match (kind, b) {
        (Kind::Bool, Builder::Bool(b)) => b.append_value(value::exact::<1>(v)?[0] != 0),
        (Kind::Int16, Builder::Int16(b)) => b.append_value(i16::from_be_bytes(value::exact(v)?)),
        (Kind::Int32, Builder::Int32(b)) => b.append_value(i32::from_be_bytes(value::exact(v)?)),
        (Kind::Int64, Builder::Int64(b)) => b.append_value(i64::from_be_bytes(value::exact(v)?)),
        (Kind::Float32, Builder::Float32(b)) => {
            b.append_value(f32::from_be_bytes(value::exact(v)?))
        }
        (Kind::Float64, Builder::Float64(b)) => {
            b.append_value(f64::from_be_bytes(value::exact(v)?))
        }
        (Kind::Decimal { precision, scale }, Builder::Decimal(b)) => {
            match value::numeric(v)?.to_decimal(precision, scale)? {
                Some(d) => b.append_value(d),
                None => return Ok(false),
            }
        }
        (Kind::NumericText, Builder::Utf8(b)) => b.append_value(value::numeric(v)?.to_text()),
        (Kind::Text, Builder::Utf8(b)) => b.append_value(utf8(v)?),
        (Kind::Jsonb, Builder::Utf8(b)) => b.append_value(jsonb(v)?),
        (Kind::Bytea, Builder::Binary(b)) => b.append_value(v),
        (Kind::Date, Builder::Date(b)) => match value::date_to_arrow(value::pg_date(v)?) {
            Some(d) => b.append_value(d),
            None => return Ok(false),
        },
        (Kind::Timestamp | Kind::TimestampTz, Builder::Timestamp(b)) => {
            match value::timestamp_to_arrow(value::pg_timestamp(v)?) {
                Some(t) => b.append_value(t),
                None => return Ok(false),
            }
        }
        (Kind::Time, Builder::Utf8(b)) => {
            scratch.clear();
            value::time_to_text(i64::from_be_bytes(value::exact(v)?), scratch);
            b.append_value(&*scratch);
        }
        (Kind::Interval, Builder::Utf8(b)) => {
            scratch.clear();
            value::interval_to_text(v, scratch)?;
            b.append_value(&*scratch);
        }
        (Kind::Uuid, Builder::Utf8(b)) => {
            scratch.clear();
            value::uuid_to_text(v, scratch)?;
            b.append_value(&*scratch);
        }
        _ => return Err(mismatch()),
    }
    Ok(true)
}

fn jsonb(v: &[u8]) -> ValueResult<&str> {
    match v.split_first() {
        Some((1, json)) => utf8(json),
        _ => Err("unknown jsonb binary version".into()),
    }
}

/// PostgreSQL's text output of one binary value (the type's output function, with the
/// session settings of the replication connection), for the companion column and for the
/// elements of arrays that land as text.
fn binary_text(kind: Kind, v: &[u8], out: &mut String) -> ValueResult<()> {
    match kind {
        Kind::Bool => out.push(if value::exact::<1>(v)?[0] != 0 {
            't'
        } else {
            'f'
        }),
        Kind::Int16 => {
            let _ = write!(out, "{}", i16::from_be_bytes(value::exact(v)?));
        }
        Kind::Int32 => {
            let _ = write!(out, "{}", i32::from_be_bytes(value::exact(v)?));
        }
        Kind::Int64 => {
            let _ = write!(out, "{}", i64::from_be_bytes(value::exact(v)?));
        }
        Kind::Float32 => value::float4_to_text(f32::from_be_bytes(value::exact(v)?), out),
        Kind::Float64 => value::float8_to_text(f64::from_be_bytes(value::exact(v)?), out),
        Kind::Decimal { .. } | Kind::NumericText => out.push_str(&value::numeric(v)?.to_text()),
        Kind::Text => out.push_str(utf8(v)?),
        Kind::Jsonb => out.push_str(jsonb(v)?),
        Kind::Bytea => value::bytea_to_text(v, out),
        Kind::Date => value::date_to_text(value::pg_date(v)?, out),
        Kind::Time => value::time_to_text(i64::from_be_bytes(value::exact(v)?), out),
        Kind::Timestamp => value::timestamp_to_text(value::pg_timestamp(v)?, false, out),
        Kind::TimestampTz => value::timestamp_to_text(value::pg_timestamp(v)?, true, out),
        Kind::Interval => value::interval_to_text(v, out)?,
        Kind::Uuid => value::uuid_to_text(v, out)?,
    }
    Ok(())
}

/// Append one scalar in text output format; `false` (nothing appended) when the Arrow type
/// cannot hold it.
fn append_text(kind: Kind, b: &mut Builder, v: &str) -> ValueResult<bool> {
    let bad = |what: &str| format!("invalid {what} text {v:?}");
    match (kind, b) {
        (Kind::Bool, Builder::Bool(b)) => b.append_value(match v {
            "t" => true,
            "f" => false,
            _ => return Err(bad("bool")),
        }),
        (Kind::Int16, Builder::Int16(b)) => b.append_value(v.parse().map_err(|_| bad("int2"))?),
        (Kind::Int32, Builder::Int32(b)) => b.append_value(v.parse().map_err(|_| bad("int4"))?),
        (Kind::Int64, Builder::Int64(b)) => b.append_value(v.parse().map_err(|_| bad("int8"))?),
        (Kind::Float32, Builder::Float32(b)) => {
            b.append_value(v.parse().map_err(|_| bad("float4"))?)
        }
        (Kind::Float64, Builder::Float64(b)) => {
            b.append_value(v.parse().map_err(|_| bad("float8"))?)
        }
        (Kind::Decimal { precision, scale }, Builder::Decimal(b)) => {
            match decimal_exact(v, precision, scale) {
                Some(d) => b.append_value(d),
                None => return Ok(false),
            }
        }
        (
            Kind::NumericText | Kind::Text | Kind::Jsonb | Kind::Time | Kind::Interval | Kind::Uuid,
            Builder::Utf8(b),
        ) => b.append_value(v),
        (Kind::Bytea, Builder::Binary(b)) => b.append_value(value::bytea_from_text(v)?),
        (Kind::Date, Builder::Date(b)) => match value::date_from_text(v) {
            Some(d) => b.append_value(d),
            None => return Ok(false),
        },
        (Kind::Timestamp | Kind::TimestampTz, Builder::Timestamp(b)) => {
            match value::timestamp_from_text(v) {
                Some(t) => b.append_value(t),
                None => return Ok(false),
            }
        }
        _ => return Err(mismatch()),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, AsArray, Decimal128Array};

    #[test]
    fn numeric_typmod_picks_decimal_or_text() {
        let typmod = |p: i32, s: i32| ((p << 16) | (s & 0x7ff)) + 4;
        assert_eq!(
            numeric_kind(typmod(12, 2)),
            Kind::Decimal {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(numeric_kind(typmod(39, 2)), Kind::NumericText);
        assert_eq!(numeric_kind(typmod(5, -2)), Kind::NumericText);
        assert_eq!(numeric_kind(-1), Kind::NumericText);
    }

    #[test]
    fn binary_and_text_land_identically() {
        let ty = ColumnType::from_oid(oid::NUMERIC, ((12 << 16) | 2) + 4, &HashSet::new()).unwrap();
        let mut b = ColumnBuilder::new(ty, 4);
        let mut bin = Vec::new();
        for x in [2i16, 0, 0, 2, 1234, 5600] {
            bin.extend_from_slice(&x.to_be_bytes());
        }
        b.append(Value::Binary(&bin)).unwrap();
        b.append(Value::Text(b"1234.56")).unwrap();
        b.append(Value::Null).unwrap();
        let arr = b.finish();
        let arr = arr.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(arr.value(0), 123456);
        assert_eq!(arr.value(1), 123456);
        assert!(arr.is_null(2));
    }

    #[test]
    fn arrays_with_nulls_and_empties() {
        let ty = ColumnType::from_oid(1007, -1, &HashSet::new()).unwrap();
        assert!(ty.array);
        let mut b = ColumnBuilder::new(ty, 4);
        let mut bin = Vec::new();
        for x in [1i32, 1, 23, 3, 1] {
            bin.extend_from_slice(&x.to_be_bytes());
        }
        bin.extend_from_slice(&4i32.to_be_bytes());
        bin.extend_from_slice(&7i32.to_be_bytes());
        bin.extend_from_slice(&(-1i32).to_be_bytes());
        bin.extend_from_slice(&4i32.to_be_bytes());
        bin.extend_from_slice(&9i32.to_be_bytes());
        b.append(Value::Binary(&bin)).unwrap();
        b.append(Value::Text(b"{}")).unwrap();
        b.append(Value::Text(b"{7,NULL,9}")).unwrap();
        b.append(Value::Null).unwrap();
        let arr = b.finish();
        let list = arr.as_list::<i32>();
        assert_eq!(list.len(), 4);
        assert_eq!(&list.value(0), &list.value(2));
        assert_eq!(list.value(1).len(), 0);
        assert!(list.is_null(3));
        assert!(list.value(0).is_null(1));
    }

    #[test]
    fn garbage_values_are_errors() {
        for (oid, bytes) in [
            (oid::INT8, &[1u8, 2][..]),
            (oid::NUMERIC, &[0, 1]),
            (oid::UUID, &[0; 3]),
            (oid::DATE, &[0; 5]),
            (1007, &[0, 0, 0, 2]),
        ] {
            let ty = ColumnType::from_oid(oid, -1, &HashSet::new()).unwrap();
            let mut b = ColumnBuilder::new(ty, 1);
            assert!(b.append(Value::Binary(bytes)).is_err(), "oid {oid}");
        }
    }

    fn append_text_of(ty: ColumnType, value: Value<'_>) -> (ArrayRef, Option<String>) {
        let mut b = ColumnBuilder::new(ty, 1);
        let text = b.append(value).unwrap().map(str::to_string);
        (b.finish(), text)
    }

    fn scalar(oid: u32, typmod: i32) -> ColumnType {
        ColumnType::from_oid(oid, typmod, &HashSet::new()).unwrap()
    }

    #[test]
    fn unrepresentable_values_go_to_the_companion_in_both_formats() {
        let numeric_5_2 = ((5 << 16) | 2) + 4;
        let nan = [0u8, 0, 0, 0, 0xC0, 0, 0, 0];
        let cases: Vec<(ColumnType, Vec<u8>, &str)> = vec![
            (
                scalar(oid::DATE, -1),
                i32::MAX.to_be_bytes().to_vec(),
                "infinity",
            ),
            (
                scalar(oid::DATE, -1),
                i32::MIN.to_be_bytes().to_vec(),
                "-infinity",
            ),
            (
                scalar(oid::TIMESTAMP, -1),
                i64::MAX.to_be_bytes().to_vec(),
                "infinity",
            ),
            (
                scalar(oid::TIMESTAMPTZ, -1),
                i64::MIN.to_be_bytes().to_vec(),
                "-infinity",
            ),
            (
                scalar(oid::TIMESTAMPTZ, -1),
                9_223_371_331_199_999_999i64.to_be_bytes().to_vec(),
                "294276-12-31 23:59:59.999999+00",
            ),
            (scalar(oid::NUMERIC, numeric_5_2), nan.to_vec(), "NaN"),
        ];
        for (ty, binary, text) in cases {
            let (arr, got) = append_text_of(ty, Value::Binary(&binary));
            assert!(arr.is_null(0));
            assert_eq!(got.as_deref(), Some(text));
            let (arr, got) = append_text_of(ty, Value::Text(text.as_bytes()));
            assert!(arr.is_null(0));
            assert_eq!(got.as_deref(), Some(text));
        }
        // Ordinary values land typed and say nothing.
        let (arr, got) = append_text_of(scalar(oid::DATE, -1), Value::Text(b"2026-01-02"));
        assert!(!arr.is_null(0) && got.is_none());
        let (arr, got) = append_text_of(scalar(oid::DATE, -1), Value::Binary(&[0, 0, 0, 0]));
        assert!(!arr.is_null(0) && got.is_none());
    }

    fn int_array(dims: &[(i32, i32)], elements: &[Option<i32>]) -> Vec<u8> {
        let mut b = Vec::new();
        for x in [dims.len() as i32, 1, 23] {
            b.extend_from_slice(&x.to_be_bytes());
        }
        for (len, lower) in dims {
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&lower.to_be_bytes());
        }
        for e in elements {
            match e {
                Some(v) => {
                    b.extend_from_slice(&4i32.to_be_bytes());
                    b.extend_from_slice(&v.to_be_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b
    }

    #[test]
    fn arrays_that_are_not_plain_land_as_their_text() {
        let ty = ColumnType::from_oid(1007, -1, &HashSet::new()).unwrap();
        for (dims, elements, text) in [
            (
                vec![(3, 0)],
                vec![Some(1), Some(2), Some(3)],
                "[0:2]={1,2,3}",
            ),
            (
                vec![(2, 1), (2, 1)],
                vec![Some(1), Some(2), Some(3), None],
                "{{1,2},{3,NULL}}",
            ),
        ] {
            let bin = int_array(&dims, &elements);
            let (arr, got) = append_text_of(ty, Value::Binary(&bin));
            assert!(arr.is_null(0));
            assert_eq!(got.as_deref(), Some(text));
            let (arr, got) = append_text_of(ty, Value::Text(text.as_bytes()));
            assert!(arr.is_null(0));
            assert_eq!(got.as_deref(), Some(text));
        }
        // One element a date cannot hold sends the whole array to the companion, and the
        // rows before and after stay aligned.
        let dates = ColumnType::from_oid(1182, -1, &HashSet::new()).unwrap();
        let mut b = ColumnBuilder::new(dates, 3);
        assert!(b.append(Value::Text(b"{2026-01-02}")).unwrap().is_none());
        assert_eq!(
            b.append(Value::Text(b"{2026-01-02,infinity}")).unwrap(),
            Some("{2026-01-02,infinity}")
        );
        let mut bin = Vec::new();
        for x in [1i32, 0, 1082, 2, 1, 4, 0, 4, i32::MAX] {
            bin.extend_from_slice(&x.to_be_bytes());
        }
        assert_eq!(
            b.append(Value::Binary(&bin)).unwrap(),
            Some("{2000-01-01,infinity}")
        );
        assert!(b.append(Value::Text(b"{}")).unwrap().is_none());
        let arr = b.finish();
        let list = arr.as_list::<i32>();
        assert_eq!(list.len(), 4);
        assert_eq!(list.value(0).len(), 1);
        assert!(list.is_null(1) && list.is_null(2));
        assert_eq!(list.value(3).len(), 0);
        assert_eq!(list.values().len(), 1);
    }

    #[test]
    fn truncated_values_are_errors_at_every_offset_never_panics() {
        let numeric_38_10 = ((38 << 16) | 10) + 4;
        let values: Vec<(ColumnType, Vec<u8>)> = vec![
            (
                scalar(oid::NUMERIC, numeric_38_10),
                vec![0, 2, 0, 1, 0, 0, 0, 2, 0, 1, 0, 2],
            ),
            (scalar(oid::TIMESTAMPTZ, -1), vec![0; 8]),
            (scalar(oid::INTERVAL, -1), vec![0; 16]),
            (scalar(oid::UUID, -1), vec![1; 16]),
            (
                scalar(1007, -1),
                int_array(&[(2, 0), (2, 1)], &[Some(1), None, Some(3), Some(4)]),
            ),
            (scalar(1185, -1), {
                let mut b = Vec::new();
                for x in [1i32, 0, 1184, 1, 1, 8] {
                    b.extend_from_slice(&x.to_be_bytes());
                }
                b.extend_from_slice(&i64::MAX.to_be_bytes());
                b
            }),
        ];
        for (ty, whole) in values {
            let mut b = ColumnBuilder::new(ty, 1);
            assert!(b.append(Value::Binary(&whole)).is_ok(), "{ty:?}");
            for cut in 0..whole.len() {
                let mut b = ColumnBuilder::new(ty, 1);
                assert!(
                    b.append(Value::Binary(&whole[..cut])).is_err(),
                    "{ty:?} cut at {cut}"
                );
            }
            // Garbage never panics, whatever it decodes to.
            for flip in 0..whole.len() {
                let mut garbage = whole.clone();
                garbage[flip] ^= 0xA5;
                let mut b = ColumnBuilder::new(ty, 1);
                let _ = b.append(Value::Binary(&garbage));
            }
        }
        // Text that is no array, date or decimal still lands, as the text it is.
        for (ty, text) in [
            (scalar(1007, -1), "{1,"),
            (scalar(oid::DATE, -1), "2026-99-99"),
            (scalar(oid::NUMERIC, numeric_38_10), "1e5"),
        ] {
            let (arr, got) = append_text_of(ty, Value::Text(text.as_bytes()));
            assert!(arr.is_null(0));
            assert_eq!(got.as_deref(), Some(text));
        }
        // Float text as PostgreSQL prints the specials.
        let ty = scalar(oid::FLOAT8, -1);
        for text in ["Infinity", "-Infinity", "NaN", "-0", "1e+100"] {
            let (arr, got) = append_text_of(ty, Value::Text(text.as_bytes()));
            assert!(!arr.is_null(0) && got.is_none(), "{text}");
        }
    }
}
