//! Conversions of single PostgreSQL values, in binary send format or text output format, to
//! the exact representation Sluice stores. Pure functions on byte slices: no builders, no I/O.
//!
//! Binary formats are those of the types' `*_send` functions (see PostgreSQL's
//! `src/backend/utils/adt/`); text formats are the output with `DateStyle=ISO`,
//! `TimeZone=UTC`, `IntervalStyle=iso_8601`, which the replication connection sets at startup.
//!
//! Conversions to a typed representation return `None` for a valid value the Delta type
//! cannot hold (±infinity, a date outside years 1-9999, NaN in a decimal); the `*_to_text`
//! functions then print it exactly as PostgreSQL's output function does, so the binary and
//! the text path put the same text in the companion column. Errors are kept for bytes no
//! server sends (truncated or malformed send formats).

use std::fmt::Write;

mod array;
mod float;

pub use array::{
    array_element, array_elements_from_text, array_header, array_to_text, push_array_item,
    ArrayHeader,
};
pub use float::{float4_to_text, float8_to_text, float_to_text};

use crate::value::{civil_from_days, days_from_civil, fits, POW10};

/// Microseconds between 1970-01-01 (Arrow's epoch) and 2000-01-01 (PostgreSQL's).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
/// Days between the two epochs.
pub const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Why a value cannot be stored. Turned into an error naming table, column and LSN.
pub type ValueResult<T> = Result<T, String>;

fn take<'a>(buf: &mut &'a [u8], n: usize) -> ValueResult<&'a [u8]> {
    if buf.len() < n {
        return Err(format!(
            "binary value truncated: need {n} bytes, have {}",
            buf.len()
        ));
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

/// Read a fixed-size big-endian value that must be exactly `N` bytes.
pub fn exact<const N: usize>(buf: &[u8]) -> ValueResult<[u8; N]> {
    buf.try_into()
        .map_err(|_| format!("binary value has {} bytes, expected {N}", buf.len()))
}

fn be_i16(buf: &mut &[u8]) -> ValueResult<i16> {
    Ok(i16::from_be_bytes(exact(take(buf, 2)?)?))
}

fn be_i32(buf: &mut &[u8]) -> ValueResult<i32> {
    Ok(i32::from_be_bytes(exact(take(buf, 4)?)?))
}

/// A decoded binary `numeric`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Numeric<'a> {
    /// A finite number: base-10000 digits, weight of the first digit, sign, display scale.
    Finite {
        negative: bool,
        weight: i16,
        dscale: u16,
        digits: &'a [u8],
    },
    /// `NaN`.
    NaN,
    /// `Infinity`.
    PosInfinity,
    /// `-Infinity`.
    NegInfinity,
}

/// Parse `numeric_send` output.
pub fn numeric(mut buf: &[u8]) -> ValueResult<Numeric<'_>> {
    let ndigits = be_i16(&mut buf)?;
    let weight = be_i16(&mut buf)?;
    let sign = be_i16(&mut buf)? as u16;
    let dscale = be_i16(&mut buf)? as u16;
    let ndigits = usize::try_from(ndigits).map_err(|_| "negative numeric digit count")?;
    let digits = take(&mut buf, ndigits * 2)?;
    if !buf.is_empty() {
        return Err("trailing bytes after numeric".into());
    }
    match sign {
        0x0000 => Ok(Numeric::Finite {
            negative: false,
            weight,
            dscale,
            digits,
        }),
        0x4000 => Ok(Numeric::Finite {
            negative: true,
            weight,
            dscale,
            digits,
        }),
        0xC000 => Ok(Numeric::NaN),
        0xD000 => Ok(Numeric::PosInfinity),
        0xF000 => Ok(Numeric::NegInfinity),
        other => Err(format!("invalid numeric sign {other:#x}")),
    }
}

impl Numeric<'_> {
    /// The value as an integer scaled by `10^scale`; `None` when `decimal(precision, scale)`
    /// cannot hold it exactly (NaN, ±Infinity, too many digits): the caller lands its text.
    /// An error only for a malformed digit.
    ///
    /// Digits below the scale are dropped per base-10000 group *before* accumulating (they
    /// must be zero), so a value at full precision (38 digits) never passes through an
    /// intermediate wider than itself.
    pub fn to_decimal(&self, precision: u8, scale: i8) -> ValueResult<Option<i128>> {
        let Numeric::Finite {
            negative,
            weight,
            digits,
            ..
        } = self
        else {
            return Ok(None);
        };
        let scale = i32::from(scale);
        let mut acc: i128 = 0;
        // Decimal exponent (in units of 10^-scale) of the last digit accumulated into `acc`.
        let mut unit = 0i32;
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let d = i16::from_be_bytes([pair[0], pair[1]]);
            if !(0..10_000).contains(&d) {
                return Err(format!("invalid numeric digit {d}"));
            }
            let d = i128::from(d);
            // Exponent of this group's last decimal digit, in units of 10^-scale.
            let e = 4 * (i32::from(*weight) - i as i32) + scale;
            let (step, add) = if e >= 0 {
                (4, d)
            } else if e > -4 {
                let cut = POW10[(-e) as usize];
                if d % cut != 0 {
                    return Ok(None);
                }
                (4 + e, d / cut)
            } else {
                if d != 0 {
                    return Ok(None);
                }
                continue;
            };
            let Some(next) = (if acc == 0 {
                Some(add)
            } else {
                acc.checked_mul(POW10[step as usize])
                    .and_then(|a| a.checked_add(add))
            }) else {
                return Ok(None);
            };
            acc = next;
            unit = e.max(0);
        }
        if unit > 0 && acc != 0 {
            let Some(shifted) = POW10.get(unit as usize).and_then(|p| acc.checked_mul(*p)) else {
                return Ok(None);
            };
            acc = shifted;
        }
        if !fits(acc, precision) {
            return Ok(None);
        }
        Ok(Some(if *negative { -acc } else { acc }))
    }

    /// PostgreSQL's text form of the value (`numeric_out`).
    pub fn to_text(&self) -> String {
        let (negative, weight, dscale, digits) = match self {
            Numeric::NaN => return "NaN".into(),
            Numeric::PosInfinity => return "Infinity".into(),
            Numeric::NegInfinity => return "-Infinity".into(),
            Numeric::Finite {
                negative,
                weight,
                dscale,
                digits,
            } => (*negative, i32::from(*weight), usize::from(*dscale), digits),
        };
        let digit = |i: i32| -> i16 {
            usize::try_from(i)
                .ok()
                .and_then(|i| digits.get(2 * i..2 * i + 2))
                .map_or(0, |p| i16::from_be_bytes([p[0], p[1]]))
        };
        let mut out = String::new();
        if negative {
            out.push('-');
        }
        if weight < 0 {
            out.push('0');
        } else {
            for i in 0..=weight {
                if i == 0 {
                    let _ = write!(out, "{}", digit(i));
                } else {
                    let _ = write!(out, "{:04}", digit(i));
                }
            }
        }
        if dscale > 0 {
            out.push('.');
            let mut frac = String::new();
            let mut i = weight + 1;
            while frac.len() < dscale {
                let _ = write!(frac, "{:04}", digit(i));
                i += 1;
            }
            frac.truncate(dscale);
            out.push_str(&frac);
        }
        out
    }
}

/// First and last day a Delta date holds in every reader (0001-01-01 and 9999-12-31: the
/// range of Spark's, Java's and Python's date types), as days since 1970-01-01. Dates and
/// timestamps outside it land as text in the `<column>__text` companion.
const FIRST_DELTA_DAY: i64 = days_from_civil(1, 1, 1);
const LAST_DELTA_DAY: i64 = days_from_civil(9999, 12, 31);

/// Binary `date` (days since 2000-01-01, `date_send`).
pub fn pg_date(buf: &[u8]) -> ValueResult<i32> {
    Ok(i32::from_be_bytes(exact(buf)?))
}

/// Binary `timestamp`/`timestamptz` (µs since 2000-01-01, `timestamp_send`).
pub fn pg_timestamp(buf: &[u8]) -> ValueResult<i64> {
    Ok(i64::from_be_bytes(exact(buf)?))
}

/// A PostgreSQL date as Arrow Date32 (days since 1970-01-01); `None` for ±infinity and dates
/// outside what a Delta date holds.
pub fn date_to_arrow(pg_days: i32) -> Option<i32> {
    // One range check on the PostgreSQL value (±infinity are i32::MAX/MIN, outside it).
    const FIRST: i64 = FIRST_DELTA_DAY - PG_EPOCH_OFFSET_DAYS as i64;
    const LAST: i64 = LAST_DELTA_DAY - PG_EPOCH_OFFSET_DAYS as i64;
    (FIRST..=LAST)
        .contains(&i64::from(pg_days))
        .then(|| pg_days + PG_EPOCH_OFFSET_DAYS)
}

/// A PostgreSQL timestamp as µs since 1970-01-01; `None` for ±infinity and instants outside
/// what a Delta timestamp holds (years 1 to 9999; beyond them the shift may even overflow).
pub fn timestamp_to_arrow(pg_micros: i64) -> Option<i64> {
    // Two comparisons against constants on the PostgreSQL value (±infinity are i64::MAX/MIN,
    // outside the range), then the shift, which cannot overflow inside it: this runs for
    // every timestamp.
    const FIRST: i64 = FIRST_DELTA_DAY * MICROS_PER_DAY - PG_EPOCH_OFFSET_MICROS;
    const END: i64 = (LAST_DELTA_DAY + 1) * MICROS_PER_DAY - PG_EPOCH_OFFSET_MICROS;
    (FIRST..END)
        .contains(&pg_micros)
        .then(|| pg_micros + PG_EPOCH_OFFSET_MICROS)
}

/// `date_out` with `DateStyle=ISO`: `2026-01-02`, `0044-03-15 BC`, `infinity`.
pub fn date_to_text(pg_days: i32, out: &mut String) {
    match pg_days {
        i32::MAX => out.push_str("infinity"),
        i32::MIN => out.push_str("-infinity"),
        d => {
            let (year, month, day) =
                civil_from_days(i64::from(d) + i64::from(PG_EPOCH_OFFSET_DAYS));
            push_date(year, month, day, out);
            if year <= 0 {
                out.push_str(" BC");
            }
        }
    }
}

fn push_date(year: i64, month: u32, day: u32, out: &mut String) {
    let shown = if year > 0 { year } else { 1 - year };
    let _ = write!(out, "{shown:04}-{month:02}-{day:02}");
}

/// `timestamp_out`/`timestamptz_out` with `DateStyle=ISO` and `TimeZone=UTC`:
/// `2026-01-02 03:04:05.5`, with `+00` for timestamptz, ` BC` last, or `±infinity`.
pub fn timestamp_to_text(pg_micros: i64, with_zone: bool, out: &mut String) {
    match pg_micros {
        i64::MAX => return out.push_str("infinity"),
        i64::MIN => return out.push_str("-infinity"),
        _ => {}
    }
    // In i128: the shift to 1970 overflows i64 near PostgreSQL's upper limit.
    let micros = i128::from(pg_micros) + i128::from(PG_EPOCH_OFFSET_MICROS);
    let day = i128::from(MICROS_PER_DAY);
    let (days, time) = (micros.div_euclid(day) as i64, micros.rem_euclid(day) as i64);
    let (year, month, dom) = civil_from_days(days);
    push_date(year, month, dom, out);
    out.push(' ');
    time_to_text(time, out);
    if with_zone {
        out.push_str("+00");
    }
    if year <= 0 {
        out.push_str(" BC");
    }
}

/// Parse `date_out` text (`YYYY-MM-DD[ BC]`, any number of year digits) into Date32; `None`
/// when a Delta date cannot hold it (±infinity, out of range) or it is not such a date: the
/// caller lands the text itself.
pub fn date_from_text(text: &str) -> Option<i32> {
    let days = civil_text_days(text)?;
    (FIRST_DELTA_DAY..=LAST_DELTA_DAY)
        .contains(&days)
        .then(|| i32::try_from(days).ok())
        .flatten()
}

/// Days since 1970-01-01 of `YYYY-MM-DD[ BC]`.
fn civil_text_days(text: &str) -> Option<i64> {
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (text, false),
    };
    let mut parts = body.splitn(3, '-');
    let year: i64 = digits(parts.next()?)?;
    let month = u32::try_from(digits(parts.next()?)?).ok()?;
    let day = u32::try_from(digits(parts.next()?)?).ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year > 10_000_000 {
        return None;
    }
    let year = if bc { 1 - year } else { year };
    Some(days_from_civil(year, month, day))
}

/// A run of ASCII digits (no sign) as a number.
fn digits(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parse `HH:MM:SS[.ffffff]` into microseconds since midnight.
pub fn time_from_text(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, ':');
    let h = digits(parts.next()?)?;
    let m = digits(parts.next()?)?;
    let sec = parts.next()?;
    let (s, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let s = digits(s)?;
    if h > 24 || m > 59 || s > 60 || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut micros: i64 = 0;
    for i in 0..6 {
        micros = micros * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + micros)
}

/// Parse `timestamp_out` text (`YYYY-MM-DD HH:MM:SS[.ffffff][+00][ BC]`) into µs since
/// 1970-01-01 (UTC: the session runs with `TimeZone=UTC`, so a `timestamptz` offset is always
/// `+00`); `None` when a Delta timestamp cannot hold it (±infinity, out of range) or it is not
/// such a timestamp: the caller lands the text itself.
pub fn timestamp_from_text(text: &str) -> Option<i64> {
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (text, false),
    };
    let (date, time) = body.split_once(' ')?;
    let time = time.strip_suffix("+00").unwrap_or(time);
    let days = if bc {
        civil_text_days(&format!("{date} BC"))?
    } else {
        civil_text_days(date)?
    };
    if !(FIRST_DELTA_DAY..=LAST_DELTA_DAY).contains(&days) {
        return None;
    }
    let time = time_from_text(time)?;
    if time >= MICROS_PER_DAY {
        return None;
    }
    Some(days * MICROS_PER_DAY + time)
}

/// Format microseconds since midnight as PostgreSQL prints `time` (`13:45:00.5`).
pub fn time_to_text(micros: i64, out: &mut String) {
    let secs = micros / 1_000_000;
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    push_fraction(micros % 1_000_000, out);
}

fn push_fraction(frac: i64, out: &mut String) {
    if frac != 0 {
        let digits = format!("{:06}", frac.abs());
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Format binary `interval` (µs, days, months) as PostgreSQL's `iso_8601` interval style.
pub fn interval_to_text(buf: &[u8], out: &mut String) -> ValueResult<()> {
    let raw: [u8; 16] = exact(buf)?;
    let micros = i64::from_be_bytes(raw[..8].try_into().unwrap_or_default());
    let days = i32::from_be_bytes(raw[8..12].try_into().unwrap_or_default());
    let months = i32::from_be_bytes(raw[12..].try_into().unwrap_or_default());
    if micros == 0 && days == 0 && months == 0 {
        out.push_str("PT0S");
        return Ok(());
    }
    let part = |out: &mut String, v: i64, unit: char| {
        if v != 0 {
            let _ = write!(out, "{v}{unit}");
        }
    };
    out.push('P');
    part(out, i64::from(months / 12), 'Y');
    part(out, i64::from(months % 12), 'M');
    part(out, i64::from(days), 'D');
    let hours = micros / 3_600_000_000;
    let minutes = micros / 60_000_000 % 60;
    let secs = micros / 1_000_000 % 60;
    let frac = micros % 1_000_000;
    if hours != 0 || minutes != 0 || secs != 0 || frac != 0 {
        out.push('T');
    }
    part(out, hours, 'H');
    part(out, minutes, 'M');
    if secs != 0 || frac != 0 {
        if secs < 0 || frac < 0 {
            out.push('-');
        }
        let _ = write!(out, "{}", secs.abs());
        push_fraction(frac, out);
        out.push('S');
    }
    Ok(())
}

/// Format a binary `uuid` in its canonical hyphenated lowercase form.
pub fn uuid_to_text(buf: &[u8], out: &mut String) -> ValueResult<()> {
    let raw: [u8; 16] = exact(buf)?;
    for (i, b) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{b:02x}");
    }
    Ok(())
}

/// `byteaout` with `bytea_output=hex`: `\\x00ff`.
pub fn bytea_to_text(bytes: &[u8], out: &mut String) {
    out.push_str("\\x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// Decode `bytea` text output (`\x0a0b`) into bytes.
pub fn bytea_from_text(text: &str) -> ValueResult<Vec<u8>> {
    let hex = text
        .strip_prefix("\\x")
        .ok_or_else(|| "bytea text is not in hex format".to_string())?;
    if hex.len() % 2 != 0 {
        return Err("odd-length bytea hex".into());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| "invalid bytea hex".into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::decimal_exact;

    fn numeric_bytes(ndigits: &[i16], weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(ndigits.len() as i16).to_be_bytes());
        b.extend_from_slice(&weight.to_be_bytes());
        b.extend_from_slice(&sign.to_be_bytes());
        b.extend_from_slice(&dscale.to_be_bytes());
        for d in ndigits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numeric_to_decimal_and_text() {
        // 12345.67 = [1, 2345, 6700], weight 1, dscale 2
        let b = numeric_bytes(&[1, 2345, 6700], 1, 0, 2);
        let n = numeric(&b).unwrap();
        assert_eq!(n.to_decimal(12, 2).unwrap(), Some(1_234_567));
        assert_eq!(n.to_text(), "12345.67");
        let neg = numeric_bytes(&[5], -1, 0x4000, 4); // -0.0005
        let n = numeric(&neg).unwrap();
        assert_eq!(n.to_text(), "-0.0005");
        assert_eq!(n.to_decimal(10, 4).unwrap(), Some(-5));
        assert_eq!(n.to_decimal(10, 3).unwrap(), None);
        let big = numeric_bytes(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 10, 0, 0);
        assert_eq!(
            numeric(&big).unwrap().to_text(),
            format!("1{}", "0".repeat(40))
        );
        assert_eq!(numeric(&big).unwrap().to_decimal(38, 0).unwrap(), None);
        for (sign, text) in [(0xC000, "NaN"), (0xD000, "Infinity"), (0xF000, "-Infinity")] {
            let n = numeric_bytes(&[], 0, sign, 0);
            assert_eq!(numeric(&n).unwrap().to_text(), text);
            assert_eq!(numeric(&n).unwrap().to_decimal(10, 2).unwrap(), None);
        }
        assert_eq!(
            numeric(&numeric_bytes(&[], 0, 0, 0)).unwrap().to_text(),
            "0"
        );
        let bad_digit = numeric_bytes(&[10_000], 0, 0, 0);
        assert!(numeric(&bad_digit).unwrap().to_decimal(10, 0).is_err());
    }

    /// The binary form `numeric_send` gives a decimal text: base-10000 groups aligned on the
    /// decimal point, leading and trailing zero groups stripped, as PostgreSQL stores them.
    fn numeric_from_decimal_text(text: &str) -> Vec<u8> {
        let (negative, body) = match text.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, text),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let int = int.trim_start_matches('0');
        let pad_int = (4 - int.len() % 4) % 4;
        let pad_frac = (4 - frac.len() % 4) % 4;
        let all = format!("{}{int}{frac}{}", "0".repeat(pad_int), "0".repeat(pad_frac));
        let mut groups: Vec<i16> = (0..all.len())
            .step_by(4)
            .map(|i| all[i..i + 4].parse().unwrap())
            .collect();
        let mut weight = ((int.len() + pad_int) / 4) as i16 - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        numeric_bytes(
            &groups,
            weight,
            if negative { 0x4000 } else { 0 },
            frac.len() as u16,
        )
    }

    #[test]
    fn every_precision_and_scale_boundary_is_exact() {
        for p in 1u8..=38 {
            for s in 0..=p {
                let int_digits = usize::from(p - s);
                let frac_digits = usize::from(s);
                let int = if int_digits == 0 {
                    "0".to_string()
                } else {
                    "9".repeat(int_digits)
                };
                let frac = "9".repeat(frac_digits);
                let largest = if frac_digits == 0 {
                    int.clone()
                } else {
                    format!("{int}.{frac}")
                };
                let smallest = if frac_digits == 0 {
                    "1".to_string()
                } else {
                    format!("0.{}1", "0".repeat(frac_digits - 1))
                };
                let max = POW10[usize::from(p)] - 1;
                let scale = s as i8;
                for (text, expected) in [
                    (largest.clone(), max),
                    (format!("-{largest}"), -max),
                    (smallest.clone(), 1),
                    (format!("-{smallest}"), -1),
                ] {
                    let bin = numeric_from_decimal_text(&text);
                    let n = numeric(&bin).unwrap();
                    assert_eq!(n.to_text(), text, "p={p} s={s}");
                    assert_eq!(
                        n.to_decimal(p, scale).unwrap(),
                        Some(expected),
                        "binary {text} in ({p},{s})"
                    );
                    assert_eq!(
                        decimal_exact(&text, p, scale),
                        Some(expected),
                        "text {text} in ({p},{s})"
                    );
                }
                // One more digit than the type holds does not fit either way.
                let over = format!("1{}", "0".repeat(int_digits));
                let n = numeric_from_decimal_text(&over);
                assert_eq!(numeric(&n).unwrap().to_decimal(p, scale).unwrap(), None);
                assert_eq!(decimal_exact(&over, p, scale), None);
            }
        }
        let full = "9999999999999999999999999999.9999999999";
        let n = numeric_from_decimal_text(full);
        assert_eq!(
            numeric(&n).unwrap().to_decimal(38, 10).unwrap(),
            Some(POW10[38] - 1)
        );
        // Trailing zeros beyond the scale are fine, a non-zero digit there is not.
        let n = numeric_from_decimal_text("1.2300");
        assert_eq!(numeric(&n).unwrap().to_decimal(5, 2).unwrap(), Some(123));
        let n = numeric_from_decimal_text("1.2301");
        assert_eq!(numeric(&n).unwrap().to_decimal(5, 2).unwrap(), None);
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(date_from_text("1970-01-01"), Some(0));
        assert_eq!(date_from_text("2000-01-01"), Some(PG_EPOCH_OFFSET_DAYS));
        assert_eq!(date_to_arrow(0), Some(PG_EPOCH_OFFSET_DAYS));
        assert_eq!(date_to_arrow(i32::MAX), None);
        assert_eq!(date_to_arrow(i32::MIN), None);
        assert_eq!(
            timestamp_from_text("2000-01-01 00:00:01.5+00"),
            Some(PG_EPOCH_OFFSET_MICROS + 1_500_000)
        );
        assert_eq!(date_from_text("0001-01-01"), Some(FIRST_DELTA_DAY as i32));
        assert_eq!(date_from_text("9999-12-31"), Some(LAST_DELTA_DAY as i32));
        for outside in [
            "infinity",
            "-infinity",
            "0001-12-31 BC",
            "10000-01-01",
            "5874897-12-31",
            "2026-13-01",
            "20x6-01-01",
            "",
        ] {
            assert_eq!(date_from_text(outside), None, "{outside}");
            assert_eq!(timestamp_from_text(outside), None, "{outside}");
        }
        for outside in [
            "294276-12-31 23:59:59.999999",
            "294276-12-31 23:59:59.999999+00",
            "0001-01-01 00:00:00+00 BC",
            "10000-01-01 00:00:00",
            "2026-01-01 25:00:00",
            "2026-01-01 00:00:00+05:30",
        ] {
            assert_eq!(timestamp_from_text(outside), None, "{outside}");
        }
        let mut s = String::new();
        time_to_text(13 * 3_600_000_000 + 45 * 60_000_000 + 500_000, &mut s);
        assert_eq!(s, "13:45:00.5");
        assert_eq!(
            time_from_text("13:45:00.5"),
            Some(13 * 3_600_000_000 + 45 * 60_000_000 + 500_000)
        );
        assert_eq!(time_from_text("13:45"), None);
    }

    #[test]
    fn dates_and_timestamps_print_as_postgres_does() {
        let date = |pg_days: i32| {
            let mut s = String::new();
            date_to_text(pg_days, &mut s);
            s
        };
        let day = |y, m, d| (days_from_civil(y, m, d) - i64::from(PG_EPOCH_OFFSET_DAYS)) as i32;
        assert_eq!(date(i32::MAX), "infinity");
        assert_eq!(date(i32::MIN), "-infinity");
        assert_eq!(date(day(2026, 1, 2)), "2026-01-02");
        assert_eq!(date(day(0, 1, 1)), "0001-01-01 BC");
        assert_eq!(date(day(-4713, 11, 24)), "4714-11-24 BC");
        assert_eq!(date(day(5_874_897, 12, 31)), "5874897-12-31");
        let ts = |pg: i64, zone: bool| {
            let mut s = String::new();
            timestamp_to_text(pg, zone, &mut s);
            s
        };
        assert_eq!(ts(i64::MAX, true), "infinity");
        assert_eq!(ts(i64::MIN, false), "-infinity");
        assert_eq!(ts(1_500_000, false), "2000-01-01 00:00:01.5");
        assert_eq!(ts(-1, true), "1999-12-31 23:59:59.999999+00");
        let micros =
            |y, m, d| (days_from_civil(y, m, d) - i64::from(PG_EPOCH_OFFSET_DAYS)) * MICROS_PER_DAY;
        // PostgreSQL's last timestamp: its shift to 1970 overflows an i64.
        let last = micros(294_276, 12, 31) + MICROS_PER_DAY - 1;
        assert_eq!(ts(last, false), "294276-12-31 23:59:59.999999");
        assert_eq!(ts(last, true), "294276-12-31 23:59:59.999999+00");
        assert_eq!(timestamp_to_arrow(last), None);
        assert_eq!(ts(micros(0, 1, 1), true), "0001-01-01 00:00:00+00 BC");
        assert_eq!(
            ts(micros(0, 1, 1) + 500_000, false),
            "0001-01-01 00:00:00.5 BC"
        );
        assert_eq!(timestamp_to_arrow(micros(0, 12, 31)), None);
        assert_eq!(
            timestamp_to_arrow(micros(1, 1, 1)),
            Some(FIRST_DELTA_DAY * MICROS_PER_DAY)
        );
        assert_eq!(timestamp_to_arrow(micros(10_000, 1, 1)), None);
    }

    #[test]
    fn floats_print_as_postgres_does() {
        let f8 = |v: f64| {
            let mut s = String::new();
            float8_to_text(v, &mut s);
            s
        };
        let f4 = |v: f32| {
            let mut s = String::new();
            float4_to_text(v, &mut s);
            s
        };
        // Rust's shortest is `7.9942673513236e17`, exactly on the interval's bound, which
        // PostgreSQL's Ryu refuses.
        assert_eq!(
            f8("7.994267351323599e17".parse().unwrap()),
            "7.994267351323599e+17"
        );
        assert_eq!(f4(f32::MAX), "3.4028235e+38");
        // Halfway between two 8-digit candidates: PostgreSQL rounds half to even.
        assert_eq!(f4("2548687.25".parse().unwrap()), "2.5486872e+06");
        assert_eq!(f4(f32::NAN), "NaN");
        assert_eq!(f8(1e100), "1e+100");
        assert_eq!(f8(1e-5), "1e-05");
        assert_eq!(f8(0.0001), "0.0001");
        assert_eq!(f8(123456789012345.0), "123456789012345");
        assert_eq!(f8(1234567890123456.0), "1.234567890123456e+15");
        assert_eq!(f8(-1.5), "-1.5");
        assert_eq!(f8(0.0), "0");
        assert_eq!(f8(-0.0), "-0");
        assert_eq!(f8(f64::NAN), "NaN");
        assert_eq!(f8(f64::INFINITY), "Infinity");
        assert_eq!(f8(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(f8(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(f8(5e-324), "5e-324");
        assert_eq!(f4(1e6), "1e+06");
        assert_eq!(f4(123456.0), "123456");
        assert_eq!(f4(1.5e-5), "1.5e-05");
        assert_eq!(f4(0.1), "0.1");
    }

    #[test]
    fn intervals_match_iso_8601_style() {
        let iv = |micros: i64, days: i32, months: i32| {
            let mut b = micros.to_be_bytes().to_vec();
            b.extend_from_slice(&days.to_be_bytes());
            b.extend_from_slice(&months.to_be_bytes());
            let mut s = String::new();
            interval_to_text(&b, &mut s).unwrap();
            s
        };
        assert_eq!(iv(0, 0, 0), "PT0S");
        assert_eq!(
            iv(4 * 3_600_000_000 + 5 * 60_000_000 + 6_789_000, 3, 14),
            "P1Y2M3DT4H5M6.789S"
        );
        assert_eq!(iv(-1_500_000, 0, -1), "P-1MT-1.5S");
    }
}
