//! Sans-IO decoder for PostgreSQL's binary COPY format, used by the initial snapshot
//! (`COPY (SELECT …) TO STDOUT (FORMAT binary)`). Rows are decoded into the same Arrow
//! builders as streamed changes; field values are in the same binary send format.
//!
//! ```text
//!  "PGCOPY\n\xff\r\n\0" | flags i32 | ext len i32 | ext …      header
//!  count i16 | (len i32 | bytes)*count                          one row; len -1 = NULL
//!  -1 i16                                                       trailer
//! ```
//! CopyData messages split rows anywhere: [`CopyDecoder::push`] buffers, and
//! [`CopyDecoder::rows`] hands out every complete row, keeping a partial one for later.
//! <https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>

use bytes::{Buf, BytesMut};

use super::pgoutput::{DecodeError, Value};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Buffers binary COPY data and decodes complete rows.
#[derive(Debug, Default)]
pub struct CopyDecoder {
    buf: BytesMut,
    header_done: bool,
    finished: bool,
}

/// One row's values, in column order.
#[derive(Debug, Clone)]
pub struct CopyRow<'a> {
    fields: usize,
    data: &'a [u8],
}

impl CopyDecoder {
    /// A decoder expecting the header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the payload of one CopyData message.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether the trailer was seen.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Call `on_row` for every complete row buffered; keep an incomplete tail for later.
    pub fn rows<E: From<DecodeError>>(
        &mut self,
        mut on_row: impl FnMut(CopyRow<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.header_done {
            if self.buf.len() < SIGNATURE.len() + 8 {
                return Ok(());
            }
            if &self.buf[..SIGNATURE.len()] != SIGNATURE {
                return Err(DecodeError::Truncated("binary copy signature").into());
            }
            let ext = i32::from_be_bytes([self.buf[15], self.buf[16], self.buf[17], self.buf[18]]);
            let ext =
                usize::try_from(ext).map_err(|_| DecodeError::NegativeLength("copy header"))?;
            if self.buf.len() < SIGNATURE.len() + 8 + ext {
                return Ok(());
            }
            self.buf.advance(SIGNATURE.len() + 8 + ext);
            self.header_done = true;
        }
        let mut used = 0;
        while !self.finished {
            let rest = &self.buf[used..];
            let Some(count) = rest.get(..2) else { break };
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.finished = true;
                used += 2;
                break;
            }
            let fields =
                usize::try_from(count).map_err(|_| DecodeError::NegativeLength("copy row"))?;
            // Find the row's end; stop if it is not all here yet.
            let mut end = 2;
            let mut complete = true;
            for _ in 0..fields {
                let Some(len) = rest.get(end..end + 4) else {
                    complete = false;
                    break;
                };
                let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                end += 4;
                if len >= 0 {
                    end += len as usize;
                    if end > rest.len() {
                        complete = false;
                        break;
                    }
                } else if len != -1 {
                    return Err(DecodeError::NegativeLength("copy field").into());
                }
            }
            if !complete {
                break;
            }
            on_row(CopyRow {
                fields,
                data: &rest[2..end],
            })?;
            used += end;
        }
        self.buf.advance(used);
        Ok(())
    }
}

impl<'a> CopyRow<'a> {
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields
    }

    /// Whether the row has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields == 0
    }

    /// The values: [`Value::Binary`] or [`Value::Null`].
    pub fn values(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let mut data = self.data;
        (0..self.fields).map(move |_| {
            // Validated by `rows`: lengths and bounds hold.
            let len = data
                .get(..4)
                .map_or(-1, |l| i32::from_be_bytes([l[0], l[1], l[2], l[3]]));
            data = data.get(4..).unwrap_or_default();
            if len < 0 {
                return Value::Null;
            }
            let (value, rest) = data.split_at((len as usize).min(data.len()));
            data = rest;
            Value::Binary(value)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = SIGNATURE.to_vec();
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        for id in 0..3i64 {
            b.extend_from_slice(&2i16.to_be_bytes());
            b.extend_from_slice(&8i32.to_be_bytes());
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
        }
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b
    }

    fn decode_in_pieces(bytes: &[u8], piece: usize) -> Vec<Vec<Option<Vec<u8>>>> {
        let mut d = CopyDecoder::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            d.push(chunk);
            d.rows(|row| {
                out.push(
                    row.values()
                        .map(|v| match v {
                            Value::Binary(b) => Some(b.to_vec()),
                            _ => None,
                        })
                        .collect(),
                );
                Ok::<_, DecodeError>(())
            })
            .unwrap();
        }
        assert!(d.finished());
        out
    }

    #[test]
    fn rows_split_at_every_offset_decode_the_same() {
        let bytes = sample();
        let whole = decode_in_pieces(&bytes, bytes.len());
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[2], vec![Some(2i64.to_be_bytes().to_vec()), None]);
        for piece in 1..bytes.len() {
            assert_eq!(decode_in_pieces(&bytes, piece), whole, "pieces of {piece}");
        }
    }

    /// `COPY (SELECT 1::int2, 2::int4, 3::int8, 1.5::float4, 2.5::float8, numeric, char(3),
    /// timestamp, time, interval, text[], inet, json, varbit) TO STDOUT (FORMAT binary)` from
    /// PostgreSQL 15 (scripts/fuzz-seeds.sh, fuzz/seeds/copy/scalars.bin).
    const CAPTURED: &str = "5047434f50590aff0d0a000000000000000000000e000000020001000000040000\
        0002000000080000000000000003000000043fc00000000000084004000000000000000000120005000200\
        000006000109291a85000108fc00000003612020000000080003049b8d52b413000000080000000a8be626\
        080000001000000001ad27480000000001000000000000001e000000010000000000000019000000020000\
        00010000000161000000016200000008020800040a000001000000157b226b223a205b312c20322e352c20\
        6e756c6c5d7d0000000500000004b0ffff";

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        s.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn captured_copy_split_at_every_offset_decodes_the_same() {
        let bytes = hex(CAPTURED);
        let whole = decode_in_pieces(&bytes, bytes.len());
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].len(), 14);
        assert_eq!(whole[0][0], Some(vec![0, 1]));
        for cut in 0..=bytes.len() {
            let mut d = CopyDecoder::new();
            let mut rows = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                d.push(part);
                d.rows(|row| {
                    rows.push(
                        row.values()
                            .map(|v| match v {
                                Value::Binary(b) => Some(b.to_vec()),
                                _ => None,
                            })
                            .collect::<Vec<_>>(),
                    );
                    Ok::<_, DecodeError>(())
                })
                .unwrap();
            }
            assert!(d.finished(), "split at {cut}");
            assert_eq!(rows, whole, "split at {cut}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = CopyDecoder::new();
        d.push(b"NOTCOPY at all, clearly");
        assert!(d.rows(|_| Ok::<_, DecodeError>(())).is_err());
        let mut bytes = sample();
        bytes[21] = 0xff; // a negative field count
        let mut d = CopyDecoder::new();
        d.push(&bytes);
        assert!(d.rows(|_| Ok::<_, DecodeError>(())).is_err());
    }
}
