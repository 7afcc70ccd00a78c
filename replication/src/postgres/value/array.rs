//! PostgreSQL arrays: the binary form of `array_send` (dimensions, then elements), the text
//! form `array_out` prints, and the split of a one-dimensional text array into its elements.
//!
//! ```text
//!  ndim i32 | has_null i32 | element oid i32 | (length i32 | lower bound i32) * ndim
//!  (len i32 | bytes) * product of lengths          len -1 = NULL
//! ```
//! A one-dimensional array from index 1 maps to a Delta array; any other prints as
//! `[lb:ub]…={{…},{…}}` for the companion column.

use std::fmt::Write;

use super::{be_i32, take, ValueResult};

/// Most dimensions PostgreSQL allows an array (`MAXDIM`).
const MAX_ARRAY_DIMS: usize = 6;

/// Header of a binary array (`array_send`): its dimensions as (length, lower bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayHeader {
    ndim: usize,
    dims: [(i32, i32); MAX_ARRAY_DIMS],
}

impl ArrayHeader {
    /// Dimensions as (length, lower bound), outermost first.
    pub fn dims(&self) -> &[(i32, i32)] {
        &self.dims[..self.ndim]
    }

    /// Whether the array maps to a Delta array: no dimension, or one starting at 1.
    pub fn is_plain(&self) -> bool {
        match self.dims() {
            [] => true,
            [(_, lower)] => *lower == 1,
            _ => false,
        }
    }

    /// Total number of elements.
    pub fn elements(&self) -> usize {
        if self.ndim == 0 {
            return 0;
        }
        self.dims().iter().map(|(len, _)| *len as usize).product()
    }
}

/// Parse an `array_send` header, leaving `buf` at the first element. The element count is
/// checked against the bytes left (each element takes at least its 4-byte length), so garbage
/// cannot make a caller loop for long.
pub fn array_header(buf: &mut &[u8]) -> ValueResult<ArrayHeader> {
    let ndim = be_i32(buf)?;
    let _has_null = be_i32(buf)?;
    let _elem_oid = be_i32(buf)?;
    let ndim = usize::try_from(ndim)
        .ok()
        .filter(|n| *n <= MAX_ARRAY_DIMS)
        .ok_or_else(|| format!("invalid array dimension count {ndim}"))?;
    let mut header = ArrayHeader {
        ndim,
        dims: [(0, 0); MAX_ARRAY_DIMS],
    };
    let mut total: usize = if ndim == 0 { 0 } else { 1 };
    for dim in header.dims.iter_mut().take(ndim) {
        let len = be_i32(buf)?;
        let lower = be_i32(buf)?;
        let n = usize::try_from(len).map_err(|_| "negative array length".to_string())?;
        total = total.saturating_mul(n);
        *dim = (len, lower);
    }
    if total > buf.len() / 4 {
        return Err(format!(
            "binary array of {total} elements truncated at {} bytes",
            buf.len()
        ));
    }
    Ok(header)
}

/// Write an array as `array_out` prints it (`{1,NULL,"a b"}`, `[0:1]={7,8}`, `{{1,2},{3,4}}`),
/// reading `header.elements()` elements from `buf` and formatting each with `element`.
pub fn array_to_text(
    header: &ArrayHeader,
    buf: &mut &[u8],
    out: &mut String,
    scratch: &mut String,
    element: &mut dyn FnMut(&[u8], &mut String) -> ValueResult<()>,
) -> ValueResult<()> {
    let dims = header.dims();
    if dims.is_empty() {
        out.push_str("{}");
        return Ok(());
    }
    if dims.iter().any(|(_, lower)| *lower != 1) {
        for (len, lower) in dims {
            let upper = i64::from(*lower) + i64::from(*len) - 1;
            let _ = write!(out, "[{lower}:{upper}]");
        }
        out.push('=');
    }
    array_level(dims, buf, out, scratch, element)
}

fn array_level(
    dims: &[(i32, i32)],
    buf: &mut &[u8],
    out: &mut String,
    scratch: &mut String,
    element: &mut dyn FnMut(&[u8], &mut String) -> ValueResult<()>,
) -> ValueResult<()> {
    let Some(((len, _), inner)) = dims.split_first() else {
        return Ok(());
    };
    out.push('{');
    for i in 0..*len {
        if i > 0 {
            out.push(',');
        }
        if !inner.is_empty() {
            array_level(inner, buf, out, scratch, element)?;
            continue;
        }
        match array_element(buf)? {
            None => out.push_str("NULL"),
            Some(e) => {
                scratch.clear();
                element(e, scratch)?;
                push_array_item(scratch, out);
            }
        }
    }
    out.push('}');
    Ok(())
}

/// Append one element text as `array_out` does: double-quoted, with `"` and `\` escaped, when
/// it is empty, is `NULL` in any case, or holds `{},"\` or white space.
pub fn push_array_item(item: &str, out: &mut String) {
    let quote = item.is_empty()
        || item.eq_ignore_ascii_case("null")
        || item.bytes().any(|b| {
            matches!(
                b,
                b'{' | b'}' | b',' | b'"' | b'\\' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c
            )
        });
    if !quote {
        out.push_str(item);
        return;
    }
    out.push('"');
    for c in item.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
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

    fn array_bytes(dims: &[(i32, i32)], elements: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(dims.len() as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&23i32.to_be_bytes());
        for (len, lower) in dims {
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&lower.to_be_bytes());
        }
        for e in elements {
            match e {
                Some(e) => {
                    b.extend_from_slice(&(e.len() as i32).to_be_bytes());
                    b.extend_from_slice(e);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b
    }

    #[test]
    fn arrays_print_as_array_out_does() {
        let text = |dims: &[(i32, i32)], elements: &[Option<&[u8]>]| {
            let bytes = array_bytes(dims, elements);
            let mut buf = &bytes[..];
            let header = array_header(&mut buf).unwrap();
            let (mut out, mut scratch) = (String::new(), String::new());
            array_to_text(&header, &mut buf, &mut out, &mut scratch, &mut |e, o| {
                o.push_str(std::str::from_utf8(e).unwrap());
                Ok(())
            })
            .unwrap();
            assert!(buf.is_empty());
            (header.is_plain(), out)
        };
        let one: &[u8] = b"1";
        let two: &[u8] = b"2";
        let three: &[u8] = b"3";
        let four: &[u8] = b"4";
        assert_eq!(
            text(&[(3, 0)], &[Some(one), Some(two), Some(three)]),
            (false, "[0:2]={1,2,3}".into())
        );
        assert_eq!(
            text(
                &[(2, 1), (2, 1)],
                &[Some(one), Some(two), Some(three), Some(four)]
            ),
            (false, "{{1,2},{3,4}}".into())
        );
        assert_eq!(
            text(&[(1, -2), (2, 5)], &[Some(one), None]),
            (false, "[-2:-2][5:6]={{1,NULL}}".into())
        );
        assert_eq!(text(&[], &[]), (true, "{}".into()));
        let items: Vec<&[u8]> = vec![b"a b", b"", b"null", b"x\"y", b"a\\b", b"{", b"plain"];
        let items: Vec<Option<&[u8]>> = items.into_iter().map(Some).collect();
        assert_eq!(
            text(&[(7, 1)], &items),
            (true, r#"{"a b","","null","x\"y","a\\b","{",plain}"#.into())
        );
    }

    #[test]
    fn truncated_and_garbage_arrays_are_errors_not_panics() {
        let whole = array_bytes(&[(2, 1), (2, 1)], &[Some(b"1"), Some(b"2"), None, None]);
        for cut in 0..whole.len() {
            let mut buf = &whole[..cut];
            if let Ok(header) = array_header(&mut buf) {
                let (mut out, mut scratch) = (String::new(), String::new());
                let r = array_to_text(
                    &header,
                    &mut buf,
                    &mut out,
                    &mut scratch,
                    &mut |_, _| Ok(()),
                );
                assert!(r.is_err(), "cut at {cut}");
            }
        }
        // Absurd dimensions are refused before any element is read.
        let huge = array_bytes(&[(i32::MAX, 1), (i32::MAX, 1)], &[]);
        assert!(array_header(&mut &huge[..]).is_err());
        let deep = array_bytes(&[(1, 1); 7], &[]);
        assert!(array_header(&mut &deep[..]).is_err());
        let negative = array_bytes(&[(-1, 1)], &[]);
        assert!(array_header(&mut &negative[..]).is_err());
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
        for cut in 0..12 {
            let _ = array_elements_from_text(&r#"{a,"b\c",N"#[..cut.min(10)]);
        }
    }
}
