//! Conversions of single PostgreSQL values, in binary send format or text output format, to
//! the exact representation Sluice stores. Pure functions on byte slices: no builders, no I/O.
//!
//! Binary formats are those of the types' `*_send` functions (see PostgreSQL's
//! `src/backend/utils/adt/`); text formats are the output with `DateStyle=ISO`,
//! `TimeZone=UTC`, `IntervalStyle=iso_8601`, which the replication connection sets at startup.

use std::fmt::Write;

/// Microseconds between 1970-01-01 (Arrow's epoch) and 2000-01-01 (PostgreSQL's).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
/// Days between the two epochs.
pub const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Powers of ten up to the largest decimal precision (10^38).
const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// Whether `value` has at most `precision` digits.
fn fits(value: i128, precision: u8) -> bool {
    POW10
        .get(usize::from(precision))
        .is_none_or(|limit| value < *limit)
}

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
    /// The value as an integer scaled by `10^scale`, or an error if it does not fit in
    /// `precision` digits or is not finite.
    pub fn to_decimal(&self, precision: u8, scale: i8) -> ValueResult<i128> {
        let Numeric::Finite {
            negative,
            weight,
            digits,
            ..
        } = self
        else {
            return Err(format!(
                "{} cannot be stored in decimal({precision},{scale}); declare the column without precision to keep it as exact text",
                self.to_text()
            ));
        };
        let overflow = || format!("value does not fit decimal({precision},{scale})");
        let mut acc: i128 = 0;
        for pair in digits.chunks_exact(2) {
            let d = i16::from_be_bytes([pair[0], pair[1]]);
            if !(0..10_000).contains(&d) {
                return Err(format!("invalid numeric digit {d}"));
            }
            acc = acc
                .checked_mul(10_000)
                .and_then(|a| a.checked_add(i128::from(d)))
                .ok_or_else(overflow)?;
        }
        let ndigits = (digits.len() / 2) as i32;
        // Decimal exponent of the last base-10000 digit, shifted to the target scale.
        let exponent = 4 * (i32::from(*weight) - ndigits + 1) + i32::from(scale);
        if exponent >= 0 {
            let scale = POW10.get(exponent as usize).ok_or_else(overflow)?;
            acc = acc.checked_mul(*scale).ok_or_else(overflow)?;
        } else {
            for _ in 0..-exponent {
                if acc % 10 != 0 {
                    return Err(format!("value has more than {scale} decimal places"));
                }
                acc /= 10;
            }
        }
        if !fits(acc, precision) {
            return Err(overflow());
        }
        Ok(if *negative { -acc } else { acc })
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

/// Parse a decimal text (`-123.4500`) into an integer scaled by `10^scale`.
pub fn decimal_from_text(text: &str, precision: u8, scale: i8) -> ValueResult<i128> {
    let overflow = || format!("{text} does not fit decimal({precision},{scale})");
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "{text} cannot be stored in decimal({precision},{scale}); declare the column without precision to keep it as exact text"
        ));
    }
    let scale_digits = usize::try_from(scale).unwrap_or(0);
    let mut acc: i128 = 0;
    for b in int_part.bytes() {
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_add(i128::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    for i in 0..scale_digits {
        let d = frac_part.as_bytes().get(i).map_or(0, |b| b - b'0');
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_add(i128::from(d)))
            .ok_or_else(overflow)?;
    }
    if frac_part.bytes().skip(scale_digits).any(|b| b != b'0') {
        return Err(format!("{text} has more than {scale} decimal places"));
    }
    if !fits(acc, precision) {
        return Err(overflow());
    }
    Ok(if negative { -acc } else { acc })
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Binary `date` (days since 2000-01-01) to Arrow Date32 (days since 1970-01-01).
pub fn date_from_binary(buf: &[u8]) -> ValueResult<i32> {
    let days = i32::from_be_bytes(exact(buf)?);
    match days {
        i32::MAX => Err(infinite("date", true)),
        i32::MIN => Err(infinite("date", false)),
        d => d
            .checked_add(PG_EPOCH_OFFSET_DAYS)
            .ok_or_else(|| "date out of range".into()),
    }
}

/// Binary `timestamp`/`timestamptz` (µs since 2000-01-01) to µs since 1970-01-01.
pub fn timestamp_from_binary(buf: &[u8]) -> ValueResult<i64> {
    let micros = i64::from_be_bytes(exact(buf)?);
    match micros {
        i64::MAX => Err(infinite("timestamp", true)),
        i64::MIN => Err(infinite("timestamp", false)),
        m => m
            .checked_add(PG_EPOCH_OFFSET_MICROS)
            .ok_or_else(|| "timestamp out of range".into()),
    }
}

fn infinite(what: &str, positive: bool) -> String {
    format!(
        "{}infinity cannot be stored in a Delta {what} column (no infinite {what} exists there)",
        if positive { "" } else { "-" }
    )
}

/// Parse `YYYY-MM-DD[ BC]` into days since 1970-01-01.
pub fn date_from_text(text: &str) -> ValueResult<i32> {
    match text {
        "infinity" => return Err(infinite("date", true)),
        "-infinity" => return Err(infinite("date", false)),
        _ => {}
    }
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (text, false),
    };
    let bad = || format!("invalid date text {text:?}");
    let mut parts = body.splitn(3, '-');
    let year: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let month: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let day: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let year = if bc { 1 - year } else { year };
    i32::try_from(days_from_civil(year, month, day)).map_err(|_| bad())
}

/// Parse `HH:MM:SS[.ffffff]` into microseconds since midnight.
pub fn time_from_text(text: &str) -> ValueResult<i64> {
    let bad = || format!("invalid time text {text:?}");
    let mut parts = text.splitn(3, ':');
    let h: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let m: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let sec = parts.next().ok_or_else(bad)?;
    let (s, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let s: i64 = s.parse().map_err(|_| bad())?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut micros: i64 = 0;
    for i in 0..6 {
        micros = micros * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    Ok(((h * 60 + m) * 60 + s) * 1_000_000 + micros)
}

/// Parse `YYYY-MM-DD HH:MM:SS[.ffffff][+00][ BC]` into µs since 1970-01-01 (UTC: the session
/// runs with `TimeZone=UTC`, so a `timestamptz` offset is always `+00`).
pub fn timestamp_from_text(text: &str) -> ValueResult<i64> {
    match text {
        "infinity" => return Err(infinite("timestamp", true)),
        "-infinity" => return Err(infinite("timestamp", false)),
        _ => {}
    }
    let bad = || format!("invalid timestamp text {text:?}");
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (text, false),
    };
    let (date, time) = body.split_once(' ').ok_or_else(bad)?;
    let time = time.strip_suffix("+00").unwrap_or(time);
    let date = if bc {
        format!("{date} BC")
    } else {
        date.to_string()
    };
    let days = i64::from(date_from_text(&date)?);
    Ok(days * MICROS_PER_DAY + time_from_text(time)?)
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

/// Header of a binary array (`array_send`): element count after validating dimensions.
pub fn array_header(buf: &mut &[u8]) -> ValueResult<usize> {
    let ndim = be_i32(buf)?;
    let _has_null = be_i32(buf)?;
    let _elem_oid = be_i32(buf)?;
    match ndim {
        0 => Ok(0),
        1 => {
            let len = be_i32(buf)?;
            let _lower_bound = be_i32(buf)?;
            usize::try_from(len).map_err(|_| "negative array length".into())
        }
        n => Err(format!(
            "{n}-dimensional arrays are not supported (only one-dimensional arrays map to a Delta array)"
        )),
    }
}

/// The next element of a binary array: `None` for NULL.
pub fn array_element<'a>(buf: &mut &'a [u8]) -> ValueResult<Option<&'a [u8]>> {
    let len = be_i32(buf)?;
    if len < 0 {
        return Ok(None);
    }
    take(buf, len as usize).map(Some)
}

/// Split a one-dimensional text array (`{a,"b c",NULL}`) into its elements, unescaped.
pub fn array_elements_from_text(text: &str) -> ValueResult<Vec<Option<String>>> {
    let bad = || {
        format!(
            "unsupported array text {text:?} (only one-dimensional arrays map to a Delta array)"
        )
    };
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(bad)?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => item.push(chars.next().ok_or_else(bad)?),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(bad()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' || c == '"' {
                    return Err(bad());
                }
                if c == '\\' {
                    chars.next();
                    item.push(chars.next().ok_or_else(bad)?);
                    continue;
                }
                item.push(c);
                chars.next();
            }
        }
        out.push(if !quoted && item == "NULL" {
            None
        } else {
            Some(item)
        });
        match chars.next() {
            Some(',') => continue,
            None => return Ok(out),
            Some(_) => return Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(n.to_decimal(12, 2).unwrap(), 1_234_567);
        assert_eq!(n.to_text(), "12345.67");
        let neg = numeric_bytes(&[5], -1, 0x4000, 4); // -0.0005
        let n = numeric(&neg).unwrap();
        assert_eq!(n.to_text(), "-0.0005");
        assert_eq!(n.to_decimal(10, 4).unwrap(), -5);
        assert!(n.to_decimal(10, 3).is_err());
        let big = numeric_bytes(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 10, 0, 0);
        assert_eq!(
            numeric(&big).unwrap().to_text(),
            format!("1{}", "0".repeat(40))
        );
        assert!(numeric(&big).unwrap().to_decimal(38, 0).is_err());
        let nan = numeric_bytes(&[], 0, 0xC000, 0);
        assert_eq!(numeric(&nan).unwrap().to_text(), "NaN");
        assert!(numeric(&nan).unwrap().to_decimal(10, 2).is_err());
        assert_eq!(
            numeric(&numeric_bytes(&[], 0, 0, 0)).unwrap().to_text(),
            "0"
        );
    }

    #[test]
    fn decimal_text_parsing_is_exact() {
        assert_eq!(decimal_from_text("-123.45", 12, 2).unwrap(), -12345);
        assert_eq!(decimal_from_text("7", 12, 2).unwrap(), 700);
        assert!(decimal_from_text("1.234", 12, 2).is_err());
        assert!(decimal_from_text("NaN", 12, 2).is_err());
        assert!(decimal_from_text("1e5", 12, 2).is_err());
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(date_from_text("1970-01-01").unwrap(), 0);
        assert_eq!(date_from_text("2000-01-01").unwrap(), PG_EPOCH_OFFSET_DAYS);
        assert_eq!(
            date_from_binary(&0i32.to_be_bytes()).unwrap(),
            PG_EPOCH_OFFSET_DAYS
        );
        assert!(date_from_binary(&i32::MAX.to_be_bytes()).is_err());
        assert_eq!(
            timestamp_from_text("2000-01-01 00:00:01.5+00").unwrap(),
            PG_EPOCH_OFFSET_MICROS + 1_500_000
        );
        assert_eq!(
            date_from_text("0001-01-01 BC").unwrap(),
            date_from_text("0000-01-01").unwrap()
        );
        let mut s = String::new();
        time_to_text(13 * 3_600_000_000 + 45 * 60_000_000 + 500_000, &mut s);
        assert_eq!(s, "13:45:00.5");
        assert_eq!(
            time_from_text("13:45:00.5").unwrap(),
            13 * 3_600_000_000 + 45 * 60_000_000 + 500_000
        );
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

    #[test]
    fn text_arrays_split_and_unescape() {
        assert_eq!(
            array_elements_from_text(r#"{a,"b c",NULL,"NULL","x\"y"}"#).unwrap(),
            vec![
                Some("a".into()),
                Some("b c".into()),
                None,
                Some("NULL".into()),
                Some("x\"y".into())
            ]
        );
        assert!(array_elements_from_text("{}").unwrap().is_empty());
        assert!(array_elements_from_text("{{1,2},{3,4}}").is_err());
    }
}
