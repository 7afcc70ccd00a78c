//! Decimals as Arrow's `Decimal128`: an integer scaled by `10^scale`, at most 38 digits.
//! Parsed from the exact decimal text both sources can produce (PostgreSQL's `numeric`
//! output, MySQL's decimal as the server prints it); nothing is ever rounded.

/// Powers of ten up to the largest decimal precision (10^38).
pub(crate) const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// Whether `value` has at most `precision` digits.
pub(crate) fn fits(value: i128, precision: u8) -> bool {
    POW10
        .get(usize::from(precision))
        .is_none_or(|limit| value < *limit)
}

/// Parse a decimal text (`-123.4500`) into an integer scaled by `10^scale`; `None` when
/// `decimal(precision, scale)` cannot hold it exactly (`NaN`, `Infinity`, too many digits) or
/// it is not a plain decimal: the caller lands the text itself.
pub fn decimal_exact(text: &str, precision: u8, scale: i8) -> Option<i128> {
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
        return None;
    }
    let scale_digits = usize::try_from(scale).unwrap_or(0);
    if frac_part.bytes().skip(scale_digits).any(|b| b != b'0') {
        return None;
    }
    let mut acc: i128 = 0;
    for b in int_part.bytes() {
        acc = acc.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    for i in 0..scale_digits {
        let d = frac_part.as_bytes().get(i).map_or(0, |b| b - b'0');
        acc = acc.checked_mul(10)?.checked_add(i128::from(d))?;
    }
    if !fits(acc, precision) {
        return None;
    }
    Some(if negative { -acc } else { acc })
}

/// [`decimal_exact`] for a source that must not send such a value (MySQL's decimal): why
/// not, as an error.
pub fn decimal_from_text(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    decimal_exact(text, precision, scale)
        .ok_or_else(|| format!("{text} does not fit decimal({precision},{scale})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_parsing_is_exact() {
        assert_eq!(decimal_exact("-123.45", 12, 2), Some(-12345));
        assert_eq!(decimal_exact("7", 12, 2), Some(700));
        assert_eq!(decimal_exact("1.234", 12, 2), None);
        assert_eq!(decimal_exact("NaN", 12, 2), None);
        assert_eq!(decimal_exact("Infinity", 12, 2), None);
        assert_eq!(decimal_exact("1e5", 12, 2), None);
        assert_eq!(decimal_exact("", 12, 2), None);
        assert!(decimal_from_text("NaN", 12, 2).is_err());
    }
}
