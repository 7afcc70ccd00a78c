//! MySQL's binary JSON (the binlog's JSON column format) as the text MySQL itself prints, so a
//! JSON value reads the same whether the snapshot's `SELECT` or the binlog delivered it.
//!
//! mysql_common parses the binary layout; the rendering here follows the server's: `", "` and
//! `": "` separators, object keys in their stored order, doubles in the shortest round-trip
//! form (positional for exponents −15…14, with `.0` when integral; else `1.5e15`), and the
//! "opaque" scalars MySQL keeps inside JSON (`JSON_OBJECT('at', NOW())`) as it prints them:
//! dates and times as quoted text with six fractional digits, decimals as numbers with their
//! scale, anything else as `"base64:type<N>:<data>"`.

use std::fmt::Write as _;

use mysql_common::binlog::jsonb::{self, ComplexValue, StorageFormat};
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use mysql_common::proto::MyDeserialize;

use super::rows::{decimal, Cursor, RowError};

/// The JSON text of a binary JSON value (empty: `null`, as MySQL reads it).
pub fn text(bytes: &[u8]) -> Result<String, RowError> {
    if bytes.is_empty() {
        return Ok("null".into());
    }
    let value = jsonb::Value::deserialize((), &mut ParseBuf(bytes)).map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(bytes.len() * 2);
    write(&mut out, &value)?;
    Ok(out)
}

fn write(out: &mut String, value: &jsonb::Value<'_>) -> Result<(), RowError> {
    use jsonb::Value as V;
    match value {
        V::Null => out.push_str("null"),
        V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        V::I16(x) => push(out, x),
        V::U16(x) => push(out, x),
        V::I32(x) => push(out, x),
        V::U32(x) => push(out, x),
        V::I64(x) => push(out, x),
        V::U64(x) => push(out, x),
        V::F64(x) => out.push_str(&double(*x)),
        V::String(s) => string(out, s.str_raw())?,
        V::SmallArray(a) => array(out, a)?,
        V::LargeArray(a) => array(out, a)?,
        V::SmallObject(o) => object(out, o)?,
        V::LargeObject(o) => object(out, o)?,
        V::Opaque(o) => opaque(out, o.value_type(), o.data_raw())?,
    }
    Ok(())
}

fn push(out: &mut String, x: impl std::fmt::Display) {
    let _ = write!(out, "{x}");
}

fn array<T: StorageFormat>(
    out: &mut String,
    a: &ComplexValue<'_, T, jsonb::Array>,
) -> Result<(), RowError> {
    out.push('[');
    for (i, item) in a.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write(out, &item.map_err(|e| e.to_string())?)?;
    }
    out.push(']');
    Ok(())
}

fn object<T: StorageFormat>(
    out: &mut String,
    o: &ComplexValue<'_, T, jsonb::Object>,
) -> Result<(), RowError> {
    out.push('{');
    for (i, entry) in o.iter().enumerate() {
        let (key, value) = entry.map_err(|e| e.to_string())?;
        if i > 0 {
            out.push_str(", ");
        }
        string(out, key.value_raw())?;
        out.push_str(": ");
        write(out, &value)?;
    }
    out.push('}');
    Ok(())
}

fn string(out: &mut String, raw: &[u8]) -> Result<(), RowError> {
    let s = std::str::from_utf8(raw).map_err(|e| format!("JSON string: {e}"))?;
    out.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?);
    Ok(())
}

/// A double as MySQL prints it inside JSON.
fn double(x: f64) -> String {
    let sci = format!("{x:e}");
    let exponent: i32 = sci
        .rsplit('e')
        .next()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    if x != 0.0 && !(-15..15).contains(&exponent) {
        return sci;
    }
    let positional = format!("{x}");
    if positional.contains('.') {
        positional
    } else {
        positional + ".0"
    }
}

/// A scalar MySQL keeps in its own binary form inside JSON.
fn opaque(out: &mut String, ty: ColumnType, data: &[u8]) -> Result<(), RowError> {
    let packed = || -> Result<i64, RowError> {
        let bytes: [u8; 8] = data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or("short JSON temporal value")?;
        Ok(i64::from_le_bytes(bytes))
    };
    match ty {
        ColumnType::MYSQL_TYPE_NEWDECIMAL => {
            let [precision, scale, rest @ ..] = data else {
                return Err("short JSON decimal".into());
            };
            let text = decimal(&mut Cursor { buf: rest }, *precision, *scale)?;
            out.push_str(&text);
        }
        ColumnType::MYSQL_TYPE_DATE => {
            let (y, m, d, ..) = datetime(packed()?);
            let _ = write!(out, "\"{y:04}-{m:02}-{d:02}\"");
        }
        ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_TIMESTAMP => {
            let (y, mo, d, h, mi, s, us) = datetime(packed()?);
            let _ = write!(
                out,
                "\"{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}\""
            );
        }
        ColumnType::MYSQL_TYPE_TIME => {
            let packed = packed()?;
            let (sign, v) = (if packed < 0 { "-" } else { "" }, packed.unsigned_abs());
            let (hms, us) = (v >> 24, v % (1 << 24));
            let (h, mi, s) = (
                (hms >> 12) % (1 << 10),
                (hms >> 6) % (1 << 6),
                hms % (1 << 6),
            );
            let _ = write!(out, "\"{sign}{h:02}:{mi:02}:{s:02}.{us:06}\"");
        }
        other => {
            use base64::Engine as _;
            let data = base64::engine::general_purpose::STANDARD.encode(data);
            let _ = write!(out, "\"base64:type{}:{data}\"", other as u8);
        }
    }
    Ok(())
}

/// MySQL's packed datetime (`TIME_to_longlong_datetime_packed`): year, month, day, hour,
/// minute, second, microsecond.
fn datetime(packed: i64) -> (u64, u64, u64, u64, u64, u64, u64) {
    let v = packed.unsigned_abs();
    let (ymdhms, us) = (v >> 24, v % (1 << 24));
    let (ymd, hms) = (ymdhms >> 17, ymdhms % (1 << 17));
    let (ym, d) = (ymd >> 5, ymd % (1 << 5));
    let (y, m) = (ym / 13, ym % 13);
    let (h, mi, s) = (hms >> 12, (hms >> 6) % (1 << 6), hms % (1 << 6));
    (y, m, d, h, mi, s, us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_print_as_mysql_prints_them() {
        // Outputs of MySQL 9.7 for CAST('[…]' AS JSON).
        for (x, mysql) in [
            (1.5, "1.5"),
            (100.0, "100.0"),
            (1e100, "1e100"),
            (-0.0, "-0.0"),
            (1e14, "100000000000000.0"),
            (1e15, "1e15"),
            (1.5e15, "1.5e15"),
            (1e-15, "0.000000000000001"),
            (1e-16, "1e-16"),
            (123_456_789.123_456_79, "123456789.12345679"),
            (5e-324, "5e-324"),
            (1.2345678901234567e19, "1.2345678901234567e19"),
            (2.5e-5, "0.000025"),
        ] {
            assert_eq!(double(x), mysql, "{x}");
        }
    }

    #[test]
    fn packed_datetimes_unpack() {
        // 2024-01-02 03:04:05.500000
        let ymd = (2024 * 13 + 1) << 5 | 2;
        let hms = 3 << 12 | 4 << 6 | 5;
        let packed = ((ymd << 17 | hms) << 24) + 500_000;
        assert_eq!(datetime(packed), (2024, 1, 2, 3, 4, 5, 500_000));
    }
}
