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

/// Deepest nesting rendered. MySQL refuses documents nested deeper than 100
/// (`JSON_DOCUMENT_MAX_DEPTH`), so no real value comes near; the bound keeps a malformed one
/// from recursing through the stack (a 2 MiB tokio worker stack holds a few thousand levels).
const MAX_DEPTH: usize = 200;

/// The JSON text of a binary JSON value (empty: `null`, as MySQL reads it).
pub fn text(bytes: &[u8]) -> Result<String, RowError> {
    if bytes.is_empty() {
        return Ok("null".into());
    }
    let value = jsonb::Value::deserialize((), &mut ParseBuf(bytes)).map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(bytes.len() * 2);
    write(&mut out, &value, 0)?;
    Ok(out)
}

fn write(out: &mut String, value: &jsonb::Value<'_>, depth: usize) -> Result<(), RowError> {
    use jsonb::Value as V;
    if depth > MAX_DEPTH {
        return Err(format!("JSON nested deeper than {MAX_DEPTH} levels"));
    }
    match value {
        V::Null => out.push_str("null"),
        V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        V::I16(x) => push(out, x),
        V::U16(x) => push(out, x),
        V::I32(x) => push(out, x),
        V::U32(x) => push(out, x),
        V::I64(x) => push(out, x),
        V::U64(x) => push(out, x),
        // MySQL stores no NaN or infinity in JSON; their text would not be JSON.
        V::F64(x) if !x.is_finite() => return Err(format!("JSON double {x} is not finite")),
        V::F64(x) => out.push_str(&double(*x)),
        V::String(s) => string(out, s.str_raw())?,
        V::SmallArray(a) => array(out, a, depth)?,
        V::LargeArray(a) => array(out, a, depth)?,
        V::SmallObject(o) => object(out, o, depth)?,
        V::LargeObject(o) => object(out, o, depth)?,
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
    depth: usize,
) -> Result<(), RowError> {
    out.push('[');
    for (i, item) in a.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write(out, &item.map_err(|e| e.to_string())?, depth + 1)?;
    }
    out.push(']');
    Ok(())
}

fn object<T: StorageFormat>(
    out: &mut String,
    o: &ComplexValue<'_, T, jsonb::Object>,
    depth: usize,
) -> Result<(), RowError> {
    out.push('{');
    for (i, entry) in o.iter().enumerate() {
        let (key, value) = entry.map_err(|e| e.to_string())?;
        if i > 0 {
            out.push_str(", ");
        }
        string(out, key.value_raw())?;
        out.push_str(": ");
        write(out, &value, depth + 1)?;
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

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        s.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn captured_values_render_and_every_truncation_is_an_error() {
        // MySQL 9.7's binary form of two documents (scripts/fuzz-seeds.sh, fuzz/seeds/mysql_json/).
        for (binary, json) in [
            (
                "000400470020000000200001002100010022000200050000050100002400023a0061636262020016\
                 0012000100130001000400000c14006465016603000d00050100050200050300",
                r#"{"": 0, "a": 1, "c": {"d": null, "e": "f"}, "bb": [1, 2, 3]}"#,
            ),
            (
                "02030038000f0d000f17000f2800f6080c038000000c0159f60f1d147fffffffe2329affffffffff\
                 fff60e1b00800000640000000000000000",
                "[12.345, -0.50000000000000000000, 100000000000000000000]",
            ),
        ] {
            let bytes = hex(binary);
            assert_eq!(text(&bytes).unwrap(), json);
            // The empty value is JSON null (MySQL reads it so); every other prefix is short.
            for cut in 1..bytes.len() {
                assert!(text(&bytes[..cut]).is_err(), "{json} cut at {cut}");
            }
        }
    }

    #[test]
    fn non_finite_doubles_are_errors() {
        // Found by the mysql_json fuzz target: a double of bits ffff…ff00 (NaN) rendered as
        // "NaN.0", which is not JSON.
        let crash = hex(
            "0b00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
             ffffffffffffffffffffffffffffffffff0000000000f83f",
        );
        assert!(text(&crash).is_err());
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let doc: Vec<u8> = std::iter::once(0x0b).chain(x.to_le_bytes()).collect();
            assert!(text(&doc).is_err(), "{x}");
        }
        let doc: Vec<u8> = std::iter::once(0x0b).chain(1.5f64.to_le_bytes()).collect();
        assert_eq!(text(&doc).unwrap(), "1.5");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // [[[…[]…]]]: each small array of one element is 4 header bytes (count, size), a 3-byte
        // entry (type 0x02, offset 7) and the inner array; the outermost type byte comes first.
        let nested = |levels: usize| {
            let mut doc = vec![0x02];
            for k in 0..levels {
                let size = (7 * (levels - k) + 4) as u16;
                doc.extend([1, 0]);
                doc.extend(size.to_le_bytes());
                doc.extend([0x02, 7, 0]);
            }
            doc.extend([0, 0, 4, 0]); // []
            doc
        };
        assert_eq!(text(&nested(3)).unwrap(), "[[[[]]]]");
        assert!(text(&nested(MAX_DEPTH)).is_ok());
        // Offsets are 16 bits in the small format: stop short of 64 KiB.
        let err = text(&nested(9000)).unwrap_err();
        assert!(err.contains("nested deeper"), "{err}");
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
