//! Faster JSON text for the column types arrow-json formats through `Display`: timestamps
//! (microseconds, naive or UTC), dates and decimals. Text byte-equal to arrow-json's own
//! encoders, written with integer arithmetic instead of `core::fmt` and chrono.
//!
//! Why: reading the changelog for a hub sink is one thread's work, and on the catch-up
//! bench's rows (a `timestamptz` and a `numeric` among five columns) arrow-json spent a third
//! of that thread formatting these two through `write!` (chrono's RFC 3339, arrow's decimal
//! strings); the sinks' delivery rate is bound by that thread.
//!
//! What arrow-json writes, and so what these write (arrow-json 59, default options):
//! - `Timestamp(Microsecond, None)`: `"2026-12-01T22:40:00.123456"` (chrono's `Debug` of a
//!   `NaiveDateTime`); with `Some("UTC")`: the same with `Z` (RFC 3339, `AutoSi`). The
//!   fraction is left out when zero, 3 digits when whole milliseconds, else 6.
//! - `Date32`: `"2026-12-01"`.
//! - `Decimal128(p, s)`, `s ≥ 0`: the unscaled value's digits with a point `s` digits from
//!   the right (`12.30`, `-0.05`), unquoted.
//!
//! Anything else (years outside 0..=9999, other time zones and units, negative scales, a
//! value with more digits than its precision) is left to arrow-json's own formatter, so the
//! text is always arrow-json's. The unit tests compare both on edge and random values.

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, FieldRef, TimeUnit, TimestampMicrosecondType,
};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder};
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};

/// The [`EncoderFactory`] giving the faster encoders; every other type gets arrow-json's.
#[derive(Debug, Default)]
pub struct FastText;

impl EncoderFactory for FastText {
    fn make_default_encoder<'a>(
        &self,
        field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        // The field's type may differ from the array's (dictionaries): go by the array.
        let encoder: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, tz)
                if tz.as_deref().is_none_or(|tz| tz == "UTC") =>
            {
                Box::new(Timestamps {
                    values: array.as_primitive::<TimestampMicrosecondType>().values(),
                    utc: tz.is_some(),
                    second: Second::default(),
                    fallback: formatter(array)?,
                })
            }
            DataType::Date32 => Box::new(Dates {
                values: array.as_primitive::<Date32Type>().values(),
                day: Day::default(),
                fallback: formatter(array)?,
            }),
            DataType::Decimal128(precision, scale) if *scale >= 0 => Box::new(Decimals {
                values: array.as_primitive::<Decimal128Type>().values(),
                precision: *precision,
                scale: *scale as u32,
                fallback: formatter(array)?,
            }),
            _ => return Ok(None),
        };
        let _ = field;
        Ok(Some(NullableEncoder::new(encoder, array.nulls().cloned())))
    }
}

/// arrow-json's own formatter of `array` (the options it uses for these types).
fn formatter(array: &dyn Array) -> Result<ArrayFormatter<'_>, ArrowError> {
    ArrayFormatter::try_new(array, &FormatOptions::new().with_display_error(true))
}

struct Timestamps<'a> {
    values: &'a [i64],
    utc: bool,
    second: Second,
    fallback: ArrayFormatter<'a>,
}

/// The last day written: neighbouring rows mostly share it.
#[derive(Default)]
struct Day {
    days: Option<i64>,
    /// Its `YYYY-MM-DD`, empty if outside years 0..=9999.
    text: Vec<u8>,
}

impl Day {
    /// Writes `days` as `YYYY-MM-DD`; `false` (nothing written) outside years 0..=9999.
    fn write(&mut self, out: &mut Vec<u8>, days: i64) -> bool {
        if self.days != Some(days) {
            self.text.clear();
            date(&mut self.text, days);
            self.days = Some(days);
        }
        out.extend_from_slice(&self.text);
        !self.text.is_empty()
    }
}

impl Encoder for Timestamps<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.values[idx];
        let (secs, micros) = (v.div_euclid(1_000_000), v.rem_euclid(1_000_000) as u32);
        let whole = self.second.text(secs);
        if whole.is_empty() {
            out.push(b'"');
            fallback(out, &self.fallback, idx);
            out.push(b'"');
            return;
        }
        // `"` + the second's text + up to `.123456` + `Z"`, written as one slice.
        let mut tail = [0u8; 9];
        let mut n = 0;
        if micros != 0 {
            tail[0] = b'.';
            let (mut rest, width) = if micros % 1000 == 0 {
                (micros / 1000, 3)
            } else {
                (micros, 6)
            };
            for slot in tail[1..=width].iter_mut().rev() {
                *slot = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            n = 1 + width;
        }
        if self.utc {
            tail[n] = b'Z';
            n += 1;
        }
        tail[n] = b'"';
        out.push(b'"');
        out.extend_from_slice(whole);
        out.extend_from_slice(&tail[..=n]);
    }
}

/// The last second written, as `YYYY-MM-DDTHH:MM:SS`: the rows of a batch, written by a few
/// transactions, mostly share it.
#[derive(Default)]
struct Second {
    secs: Option<i64>,
    /// Its text, empty if outside years 0..=9999.
    text: Vec<u8>,
    day: Day,
}

impl Second {
    /// The text of `secs` since the epoch; empty outside years 0..=9999.
    fn text(&mut self, secs: i64) -> &[u8] {
        if self.secs != Some(secs) {
            let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
            self.text.clear();
            if self.day.write(&mut self.text, days) {
                self.text.push(b'T');
                two(&mut self.text, sod / 3600);
                self.text.push(b':');
                two(&mut self.text, sod / 60 % 60);
                self.text.push(b':');
                two(&mut self.text, sod % 60);
            }
            self.secs = Some(secs);
        }
        &self.text
    }
}

struct Dates<'a> {
    values: &'a [i32],
    day: Day,
    fallback: ArrayFormatter<'a>,
}

impl Encoder for Dates<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.push(b'"');
        if !self.day.write(out, i64::from(self.values[idx])) {
            fallback(out, &self.fallback, idx);
        }
        out.push(b'"');
    }
}

struct Decimals<'a> {
    values: &'a [i128],
    precision: u8,
    scale: u32,
    fallback: ArrayFormatter<'a>,
}

impl Encoder for Decimals<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.values[idx];
        let abs = v.unsigned_abs();
        let mut buf = itoa::Buffer::new();
        // 64-bit digits are several times cheaper than 128-bit ones, and most values fit.
        let text = match u64::try_from(abs) {
            Ok(small) => buf.format(small),
            Err(_) => buf.format(abs),
        }
        .as_bytes();
        if text.len() > usize::from(self.precision) {
            // arrow cuts such digits off; rare enough to leave to it.
            fallback(out, &self.fallback, idx);
            return;
        }
        if v < 0 {
            out.push(b'-');
        }
        let scale = self.scale as usize;
        if scale == 0 {
            out.extend_from_slice(text);
        } else if text.len() > scale {
            let (whole, fraction) = text.split_at(text.len() - scale);
            out.extend_from_slice(whole);
            out.push(b'.');
            out.extend_from_slice(fraction);
        } else {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + scale - text.len(), b'0');
            out.extend_from_slice(text);
        }
    }
}

fn fallback(out: &mut Vec<u8>, formatter: &ArrayFormatter<'_>, idx: usize) {
    use std::io::Write;
    // Writing into a Vec cannot fail; a value arrow cannot display writes its error text,
    // as arrow-json does (`with_display_error`).
    let _ = write!(out, "{}", formatter.value(idx));
}

/// `YYYY-MM-DD` of `days` since 1970-01-01; `false` (nothing written) outside years
/// 0..=9999, which chrono writes with a sign and more digits.
fn date(out: &mut Vec<u8>, days: i64) -> bool {
    let Some((y, m, d)) = civil_from_days(days) else {
        return false;
    };
    if !(0..=9999).contains(&y) {
        return false;
    }
    digits(out, y as u32, 4);
    out.push(b'-');
    two(out, m);
    out.push(b'-');
    two(out, d);
    true
}

/// Year, month, day of `days` since 1970-01-01 in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`); `None` far outside any date arrow can show.
fn civil_from_days(days: i64) -> Option<(i64, u32, u32)> {
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe.checked_add(era.checked_mul(400)?)? + i64::from(m <= 2);
    Some((y, m, d))
}

fn two(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
}

/// `n` in exactly `width` digits, zero-padded (`n` < 10^width).
fn digits(out: &mut Vec<u8>, mut n: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{
        ArrayRef, Date32Array, Decimal128Array, RecordBatch, TimestampMicrosecondArray,
    };
    use deltalake::arrow::datatypes::{Field, Schema};
    use deltalake::arrow::json::writer::make_encoder;

    use super::*;

    /// Each row of `array` as arrow-json's default encoder and as ours write it.
    fn both(array: ArrayRef) -> (Vec<String>, Vec<String>) {
        let field: FieldRef = Arc::new(Field::new("v", array.data_type().clone(), true));
        let plain = EncoderOptions::default().with_explicit_nulls(true);
        let fast = plain.clone().with_encoder_factory(Arc::new(FastText));
        let rows = |options: &EncoderOptions| {
            let mut e = make_encoder(&field, array.as_ref(), options).unwrap();
            (0..array.len())
                .map(|i| {
                    let mut out = Vec::new();
                    if e.is_null(i) {
                        out.extend_from_slice(b"null");
                    } else {
                        e.encode(i, &mut out);
                    }
                    String::from_utf8(out).unwrap()
                })
                .collect::<Vec<_>>()
        };
        (rows(&plain), rows(&fast))
    }

    /// A few thousand values spread over `range`, plus `edges`.
    fn values(edges: &[i64], range: (i64, i64)) -> Vec<i64> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let span = (range.1 - range.0) as u64;
        let mut v: Vec<i64> = edges.to_vec();
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(range.0 + (x % span) as i64);
        }
        v
    }

    #[test]
    fn timestamps_as_arrow_json_writes_them() {
        let day = 86_400_000_000i64;
        let edges = [
            0,
            -1,
            1,
            999,
            1000,
            1_000_000,
            -1_000_000,
            1_764_628_800_123_456,
            1_764_628_800_123_000,
            1_764_628_800_000_000,
            951_782_400_000_000,     // 2000-02-29
            -62_167_219_200_000_000, // 0000-01-01
            -62_167_219_200_000_001, // before year 0
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000, // 10000-01-01
            i64::MAX,
            i64::MIN,
        ];
        let v = values(&edges, (-400 * 366 * day, 9000 * 366 * day));
        for tz in [None, Some("UTC")] {
            let a = TimestampMicrosecondArray::from(v.clone()).with_timezone_opt(tz);
            let (plain, fast) = both(Arc::new(a));
            assert_eq!(plain, fast, "time zone {tz:?}");
        }
        // Neighbours sharing a second (the cached part) and crossing into the next one.
        let base = 1_764_628_799_000_000i64;
        let near: Vec<i64> = [0, 1, 1000, 123_456, 999_999, 1_000_000, 1_000_001, 0, -1]
            .iter()
            .map(|d| base + d)
            .collect();
        for tz in [None, Some("UTC")] {
            let a = TimestampMicrosecondArray::from(near.clone()).with_timezone_opt(tz);
            let (plain, fast) = both(Arc::new(a));
            assert_eq!(plain, fast, "time zone {tz:?}");
        }
        let with_nulls = TimestampMicrosecondArray::from(vec![Some(5), None, Some(-5)]);
        let (plain, fast) = both(Arc::new(with_nulls));
        assert_eq!(plain, fast);
        // Other zones are arrow-json's own.
        let berlin = TimestampMicrosecondArray::from(vec![0i64]).with_timezone("Europe/Berlin");
        let (plain, fast) = both(Arc::new(berlin));
        assert_eq!(plain, fast);
    }

    #[test]
    fn dates_as_arrow_json_writes_them() {
        let edges = [
            0,
            -1,
            1,
            11_016,
            -719_528,
            -719_529,
            2_932_896,
            2_932_897,
            i32::MAX as i64,
            i32::MIN as i64,
        ];
        let v: Vec<i32> = values(&edges, (-800_000, 3_000_000))
            .into_iter()
            .map(|d| d as i32)
            .collect();
        let (plain, fast) = both(Arc::new(Date32Array::from(v)));
        assert_eq!(plain, fast);
    }

    #[test]
    fn decimals_as_arrow_json_writes_them() {
        let edges = [
            0,
            1,
            -1,
            5,
            -5,
            99,
            100,
            -100,
            1230,
            -1230,
            123_456_789,
            i64::MAX,
            i64::MIN,
        ];
        let mut v: Vec<i128> = values(&edges, (-10_000_000_000, 10_000_000_000))
            .into_iter()
            .map(i128::from)
            .collect();
        v.extend([i128::MAX, i128::MIN, 10i128.pow(37), -(10i128.pow(37))]);
        for (precision, scale) in [
            (38, 0),
            (38, 2),
            (38, 10),
            (12, 2),
            (5, 2),
            (38, 38),
            (3, 0),
            (20, 19),
        ] {
            let a = Decimal128Array::from(v.clone())
                .with_precision_and_scale(precision, scale)
                .unwrap();
            let (plain, fast) = both(Arc::new(a));
            assert_eq!(plain, fast, "decimal({precision}, {scale})");
        }
    }

    #[test]
    fn rows_of_a_batch_are_the_same_text() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("day", DataType::Date32, true),
            Field::new("price", DataType::Decimal128(12, 2), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_764_628_800_123_456), None])
                        .with_timezone("UTC"),
                ),
                Arc::new(Date32Array::from(vec![None, Some(20_424)])),
                Arc::new(
                    Decimal128Array::from(vec![Some(-5), Some(1230)])
                        .with_precision_and_scale(12, 2)
                        .unwrap(),
                ),
            ],
        )
        .unwrap();
        let array: ArrayRef = Arc::new(deltalake::arrow::array::StructArray::from(batch));
        let (plain, fast) = both(array);
        assert_eq!(plain, fast);
    }
}
