//! The ENUM and SET labels of a TABLE_MAP event's optional metadata (ENUM_STR_VALUE,
//! SET_STR_VALUE), parsed with every count bounded by the bytes that carry it.

use mysql_common::proto::MySerialize;

/// The bytes of a table map's ENUM_STR_VALUE or SET_STR_VALUE metadata field, as the server
/// sent them.
pub(super) fn raw(field: &impl MySerialize) -> Vec<u8> {
    let mut bytes = Vec::new();
    field.serialize(&mut bytes);
    bytes
}

/// The labels of each ENUM or SET column in such a field: per column a length-encoded count,
/// then that many length-encoded strings. Parsed here rather than by mysql_common, which
/// reserves room for the count before reading a byte of it (a malformed count of about 2^61 is an
/// allocation of exabytes, an abort: found by the binlog_rows fuzz target); every label
/// takes at least one byte, so a count above the bytes left is an error here.
pub(super) fn column_labels(mut bytes: &[u8]) -> std::result::Result<Vec<Vec<Vec<u8>>>, String> {
    let mut columns = Vec::new();
    while !bytes.is_empty() {
        let count = lenenc(&mut bytes)?;
        if count > bytes.len() as u64 {
            return Err(format!("{count} labels in the {} bytes left", bytes.len()));
        }
        let mut labels = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = lenenc(&mut bytes)?;
            if len > bytes.len() as u64 {
                return Err(format!(
                    "a {len}-byte label in the {} bytes left",
                    bytes.len()
                ));
            }
            let (label, rest) = bytes.split_at(len as usize);
            labels.push(label.to_vec());
            bytes = rest;
        }
        columns.push(labels);
    }
    Ok(columns)
}

/// A length-encoded integer (1, 3, 4 or 9 bytes), taken off the front of `bytes`.
fn lenenc(bytes: &mut &[u8]) -> std::result::Result<u64, String> {
    let (&first, rest) = bytes.split_first().ok_or("a length past the end")?;
    let width = match first {
        0..=0xfa => {
            *bytes = rest;
            return Ok(u64::from(first));
        }
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return Err(format!("no length starts with {first:#04x}")),
    };
    if rest.len() < width {
        return Err("a length past the end".into());
    }
    let mut le = [0u8; 8];
    le[..width].copy_from_slice(&rest[..width]);
    *bytes = &rest[width..];
    Ok(u64::from_le_bytes(le))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_and_set_labels_are_bounded_by_their_bytes() {
        assert_eq!(
            column_labels(&[2, 1, b'a', 2, b'b', b'c', 1, 0]).unwrap(),
            vec![vec![b"a".to_vec(), b"bc".to_vec()], vec![Vec::new()]]
        );
        assert_eq!(column_labels(&[]).unwrap(), Vec::<Vec<Vec<u8>>>::new());
        // A count of about 2^61 in 8 bytes, then one label: refused before anything is reserved.
        let mut huge = vec![0xfe];
        huge.extend(0x3001_e077_d070_83c0u64.to_le_bytes());
        huge.extend([1, b'a']);
        let e = column_labels(&huge).unwrap_err();
        assert!(e.contains("labels in the 2 bytes left"), "{e}");
        assert!(column_labels(&[1, 5, b'a']).is_err());
        assert!(column_labels(&[1, 0xfc, 1]).is_err());
        assert!(column_labels(&[0xff]).is_err());
    }
}
