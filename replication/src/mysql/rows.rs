//! Sans-IO decoder of ROWS event bodies: row images straight into [`Cell`]s that borrow the
//! event buffer, no per-row allocation. The byte layouts follow the server's own
//! `log_event.cc` / `my_time.cc` / `decimal.c`.
//!
//! ```text
//!  image  := null bitmap over the columns present | value for each present, non-null column
//!  update := before image, after image      write := after      delete := before
//! ```
//!
//! Integers are little-endian; DATETIME2, TIMESTAMP2, TIME2 and DECIMAL are big-endian packed
//! forms; strings and blobs carry a 1–4 byte little-endian length.

use mysql_common::constants::ColumnType as My;

/// How one column's values are laid out, from its table map entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawColumn {
    /// The real type (ENUM/SET resolved out of STRING).
    pub ty: My,
    /// Type metadata bytes.
    pub meta: Vec<u8>,
    /// Integer signedness.
    pub unsigned: bool,
}

/// One decoded value, borrowing the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    Bytes(&'a [u8]),
    /// Decimal digits as text: sign, integer part, `.`, fraction.
    Decimal(String),
    Date {
        y: u16,
        m: u8,
        d: u8,
    },
    DateTime {
        y: u16,
        m: u8,
        d: u8,
        h: u8,
        mi: u8,
        s: u8,
        us: u32,
    },
    /// Seconds and microseconds since the epoch, UTC.
    Timestamp {
        secs: u32,
        us: u32,
    },
    Time {
        neg: bool,
        h: u32,
        m: u8,
        s: u8,
        us: u32,
    },
    Year(u16),
    Bit(u64),
    Enum(u16),
    Set(u64),
    /// MySQL binary JSON, rendered as JSON text.
    Json(String),
}

/// Why a row could not be decoded.
pub type RowError = String;

pub(super) struct Cursor<'a> {
    pub(super) buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RowError> {
        if self.buf.len() < n {
            return Err(format!(
                "row data truncated (wanted {n} bytes, {} left)",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn le(&mut self, n: usize) -> Result<u64, RowError> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    }

    fn be(&mut self, n: usize) -> Result<u64, RowError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    }
}

/// Bytes of the fractional seconds part for `fsp` digits.
fn frac_bytes(fsp: u8) -> usize {
    usize::from(fsp).div_ceil(2)
}

/// Fractional seconds (big-endian, `fsp` digits) as microseconds.
fn frac_micros(cur: &mut Cursor<'_>, fsp: u8) -> Result<u32, RowError> {
    let n = frac_bytes(fsp);
    let v = cur.be(n)? as u32;
    Ok(match n {
        0 => 0,
        1 => v * 10_000,
        2 => v * 100,
        _ => v,
    })
}

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// MySQL's binary DECIMAL(precision, scale) as text.
pub(super) fn decimal(cur: &mut Cursor<'_>, precision: u8, scale: u8) -> Result<String, RowError> {
    let (precision, scale) = (usize::from(precision), usize::from(scale));
    if scale > precision {
        return Err("decimal scale above precision".into());
    }
    let intg = precision - scale;
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (scale / 9, scale % 9);
    let size = intg0 * 4 + DIG2BYTES[intg0x] + frac0 * 4 + DIG2BYTES[frac0x];
    let mut bytes = cur.take(size)?.to_vec();
    let Some(first) = bytes.first_mut() else {
        return Ok("0".into());
    };
    let negative = *first & 0x80 == 0;
    *first ^= 0x80;
    if negative {
        bytes.iter_mut().for_each(|b| *b = !*b);
    }
    let mut c = Cursor { buf: &bytes };
    let mut int = String::new();
    if intg0x > 0 {
        int.push_str(&c.be(DIG2BYTES[intg0x])?.to_string());
    }
    for _ in 0..intg0 {
        let group = c.be(4)?;
        if int.is_empty() {
            int.push_str(&group.to_string());
        } else {
            int.push_str(&format!("{group:09}"));
        }
    }
    let int = int.trim_start_matches('0');
    let mut out = String::with_capacity(precision + 2);
    if negative {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if scale > 0 {
        out.push('.');
        for _ in 0..frac0 {
            out.push_str(&format!("{:09}", c.be(4)?));
        }
        if frac0x > 0 {
            out.push_str(&format!(
                "{:0width$}",
                c.be(DIG2BYTES[frac0x])?,
                width = frac0x
            ));
        }
    }
    Ok(out)
}

/// TIME2: 3 bytes big-endian offset by 0x800000 (hour 10 bits, minute 6, second 6) plus
/// fractional seconds; negative values are stored as the packed form's two's complement.
fn time2(cur: &mut Cursor<'_>, fsp: u8) -> Result<Cell<'static>, RowError> {
    const OFS: i64 = 0x80_0000;
    let packed: i64 = match frac_bytes(fsp) {
        0 => (cur.be(3)? as i64 - OFS) << 24,
        1 => {
            let mut int = cur.be(3)? as i64 - OFS;
            let mut frac = cur.be(1)? as i64;
            if int < 0 && frac != 0 {
                int += 1;
                frac -= 0x100;
            }
            (int << 24) + frac * 10_000
        }
        2 => {
            let mut int = cur.be(3)? as i64 - OFS;
            let mut frac = cur.be(2)? as i64;
            if int < 0 && frac != 0 {
                int += 1;
                frac -= 0x1_0000;
            }
            (int << 24) + frac * 100
        }
        _ => cur.be(6)? as i64 - 0x8000_0000_0000,
    };
    let neg = packed < 0;
    let packed = packed.unsigned_abs();
    let hms = packed >> 24;
    Ok(Cell::Time {
        neg,
        h: ((hms >> 12) % (1 << 10)) as u32,
        m: ((hms >> 6) % 64) as u8,
        s: (hms % 64) as u8,
        us: (packed % (1 << 24)) as u32,
    })
}

fn datetime2(cur: &mut Cursor<'_>, fsp: u8) -> Result<Cell<'static>, RowError> {
    let int = cur.be(5)? as i64 - 0x80_0000_0000;
    let us = frac_micros(cur, fsp)?;
    let ymd = int >> 17;
    let ym = ymd >> 5;
    let hms = int % (1 << 17);
    Ok(Cell::DateTime {
        y: (ym / 13) as u16,
        m: (ym % 13) as u8,
        d: (ymd % 32) as u8,
        h: (hms >> 12) as u8,
        mi: ((hms >> 6) % 64) as u8,
        s: (hms % 64) as u8,
        us,
    })
}

fn string_length(meta: &[u8]) -> usize {
    let (b0, b1) = (
        usize::from(meta.first().copied().unwrap_or(0)),
        usize::from(meta.get(1).copied().unwrap_or(0)),
    );
    if (b0 & 0x30) != 0x30 {
        b1 | (((b0 & 0x30) ^ 0x30) << 4)
    } else {
        b1
    }
}

/// Decode one non-null value of `col`.
fn value<'a>(cur: &mut Cursor<'a>, col: &RawColumn) -> Result<Cell<'a>, RowError> {
    let meta = |i: usize| col.meta.get(i).copied().unwrap_or(0);
    let int = |cur: &mut Cursor<'a>, n: usize| -> Result<Cell<'a>, RowError> {
        let raw = cur.le(n)?;
        Ok(if col.unsigned {
            Cell::UInt(raw)
        } else {
            let shift = 64 - 8 * n as u32;
            Cell::Int(((raw << shift) as i64) >> shift)
        })
    };
    Ok(match col.ty {
        My::MYSQL_TYPE_TINY => int(cur, 1)?,
        My::MYSQL_TYPE_SHORT => int(cur, 2)?,
        My::MYSQL_TYPE_INT24 => int(cur, 3)?,
        My::MYSQL_TYPE_LONG => int(cur, 4)?,
        My::MYSQL_TYPE_LONGLONG => int(cur, 8)?,
        My::MYSQL_TYPE_FLOAT => Cell::Float(f32::from_bits(cur.le(4)? as u32)),
        My::MYSQL_TYPE_DOUBLE => Cell::Double(f64::from_bits(cur.le(8)?)),
        My::MYSQL_TYPE_YEAR => match cur.le(1)? {
            0 => Cell::Year(0),
            y => Cell::Year(1900 + y as u16),
        },
        My::MYSQL_TYPE_DATE | My::MYSQL_TYPE_NEWDATE => {
            let v = cur.le(3)?;
            Cell::Date {
                y: (v >> 9) as u16,
                m: ((v >> 5) & 15) as u8,
                d: (v & 31) as u8,
            }
        }
        My::MYSQL_TYPE_DATETIME => {
            let v = cur.le(8)?;
            let (date, time) = (v / 1_000_000, v % 1_000_000);
            Cell::DateTime {
                y: (date / 10_000) as u16,
                m: ((date / 100) % 100) as u8,
                d: (date % 100) as u8,
                h: (time / 10_000) as u8,
                mi: ((time / 100) % 100) as u8,
                s: (time % 100) as u8,
                us: 0,
            }
        }
        My::MYSQL_TYPE_DATETIME2 => datetime2(cur, meta(0))?,
        My::MYSQL_TYPE_TIMESTAMP => Cell::Timestamp {
            secs: cur.le(4)? as u32,
            us: 0,
        },
        My::MYSQL_TYPE_TIMESTAMP2 => Cell::Timestamp {
            secs: cur.be(4)? as u32,
            us: frac_micros(cur, meta(0))?,
        },
        My::MYSQL_TYPE_TIME => {
            let v = cur.le(3)? as i64;
            let v = (v << 40) >> 40;
            let (neg, v) = (v < 0, v.unsigned_abs());
            Cell::Time {
                neg,
                h: (v / 10_000) as u32,
                m: ((v / 100) % 100) as u8,
                s: (v % 100) as u8,
                us: 0,
            }
        }
        My::MYSQL_TYPE_TIME2 => time2(cur, meta(0))?,
        My::MYSQL_TYPE_NEWDECIMAL => Cell::Decimal(decimal(cur, meta(0), meta(1))?),
        My::MYSQL_TYPE_BIT => {
            let n = usize::from(meta(1)) + usize::from(meta(0) > 0);
            Cell::Bit(cur.be(n)?)
        }
        My::MYSQL_TYPE_ENUM => Cell::Enum(cur.le(usize::from(meta(1)).clamp(1, 2))? as u16),
        My::MYSQL_TYPE_SET => Cell::Set(cur.le(usize::from(meta(1)).clamp(1, 8))?),
        My::MYSQL_TYPE_VARCHAR | My::MYSQL_TYPE_VAR_STRING => {
            let max = usize::from(meta(0)) | (usize::from(meta(1)) << 8);
            let len = cur.le(if max < 256 { 1 } else { 2 })? as usize;
            Cell::Bytes(cur.take(len)?)
        }
        My::MYSQL_TYPE_STRING => {
            let max = string_length(&col.meta);
            let len = cur.le(if max < 256 { 1 } else { 2 })? as usize;
            Cell::Bytes(cur.take(len)?)
        }
        My::MYSQL_TYPE_BLOB
        | My::MYSQL_TYPE_TINY_BLOB
        | My::MYSQL_TYPE_MEDIUM_BLOB
        | My::MYSQL_TYPE_LONG_BLOB
        | My::MYSQL_TYPE_GEOMETRY => {
            let len = cur.le(usize::from(meta(0)).clamp(1, 4))? as usize;
            Cell::Bytes(cur.take(len)?)
        }
        My::MYSQL_TYPE_JSON => {
            let len = cur.le(usize::from(meta(0)).clamp(1, 4))? as usize;
            let bytes = cur.take(len)?;
            Cell::Json(super::json::text(bytes)?)
        }
        other => return Err(format!("column type {other:?} cannot be decoded")),
    })
}

/// The columns an image holds.
pub struct Present {
    bits: Vec<bool>,
    count: usize,
}

impl Present {
    /// Presence per column.
    pub fn new(bits: Vec<bool>) -> Self {
        let count = bits.iter().filter(|b| **b).count();
        Present { bits, count }
    }

    fn has(&self, i: usize) -> bool {
        self.bits.get(i).copied().unwrap_or(false)
    }
}

/// Decode one row image into `out` (one cell per column; `None` when not in the image).
pub fn image<'a>(
    data: &mut &'a [u8],
    columns: &[RawColumn],
    present: &Present,
    out: &mut Vec<Option<Cell<'a>>>,
) -> Result<(), RowError> {
    out.clear();
    let mut cur = Cursor { buf: data };
    let nulls = cur.take(present.count.div_ceil(8))?;
    let mut k = 0;
    for (i, col) in columns.iter().enumerate() {
        if !present.has(i) {
            out.push(None);
            continue;
        }
        let null = nulls[k / 8] & (1 << (k % 8)) != 0;
        k += 1;
        out.push(Some(if null {
            Cell::Null
        } else {
            value(&mut cur, col)?
        }));
    }
    *data = cur.buf;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: My, meta: &[u8], unsigned: bool) -> RawColumn {
        RawColumn {
            ty,
            meta: meta.to_vec(),
            unsigned,
        }
    }

    #[test]
    fn decimals_decode_exactly() {
        // DECIMAL(10,2) 1234.56: intg 8 = 0 groups + 8 digits (4 bytes), frac 2 digits (1 byte).
        let mut bytes = vec![0x80, 0x00, 0x04, 0xd2, 56];
        let mut c = Cursor { buf: &bytes };
        assert_eq!(decimal(&mut c, 10, 2).unwrap(), "1234.56");
        bytes.iter_mut().for_each(|b| *b = !*b);
        let mut c = Cursor { buf: &bytes };
        assert_eq!(decimal(&mut c, 10, 2).unwrap(), "-1234.56");
    }

    #[test]
    fn negative_time_with_fraction() {
        // -838:59:59.50 as TIME(2): the server's packed form.
        let hms: i64 = (838 << 12) | (59 << 6) | 59;
        let packed = -((hms << 24) + 500_000);
        let int = (packed >> 24) + 0x80_0000; // floor division
        let frac = ((packed % (1 << 24)) / 10_000 + 0x100) % 0x100;
        let bytes = [(int >> 16) as u8, (int >> 8) as u8, int as u8, frac as u8];
        let mut c = Cursor { buf: &bytes };
        assert_eq!(
            time2(&mut c, 2).unwrap(),
            Cell::Time {
                neg: true,
                h: 838,
                m: 59,
                s: 59,
                us: 500_000
            }
        );
    }

    #[test]
    fn images_with_nulls_and_absent_columns() {
        let columns = [
            col(My::MYSQL_TYPE_LONG, &[], false),
            col(My::MYSQL_TYPE_VARCHAR, &[50, 0], false),
            col(My::MYSQL_TYPE_TINY, &[], true),
        ];
        // All three present; column 1 null.
        let data = [0b010u8, 0xff, 0xff, 0xff, 0xff, 200];
        let mut buf: &[u8] = &data;
        let mut out = Vec::new();
        image(&mut buf, &columns, &Present::new(vec![true; 3]), &mut out).unwrap();
        assert_eq!(
            out,
            vec![Some(Cell::Int(-1)), Some(Cell::Null), Some(Cell::UInt(200))]
        );
        assert!(buf.is_empty());
        let mut short: &[u8] = &data[..3];
        assert!(image(&mut short, &columns, &Present::new(vec![true; 3]), &mut out).is_err());
    }
}
