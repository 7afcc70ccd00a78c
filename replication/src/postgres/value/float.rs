//! PostgreSQL's text output of float4 and float8 (`float4out`/`float8out` with
//! `extra_float_digits = 3`: the shortest digits that read back exactly, as its Ryu prints
//! them), for companion columns and the elements of arrays that land as text.

use std::fmt::Write;

/// `float8out` with `extra_float_digits` ≥ 1 (see [`float_to_text`]).
pub fn float8_to_text(v: f64, out: &mut String) {
    float_to_text(
        &pg_shortest(v, |t| t.parse::<f64>().ok() == Some(v), 17),
        15,
        out,
    );
}

/// `float4out` with `extra_float_digits` ≥ 1 (see [`float_to_text`]).
pub fn float4_to_text(v: f32, out: &mut String) {
    let shortest = if v.is_finite() && v != 0.0 {
        let reads_back = |t: &str| t.parse::<f32>().ok() == Some(v);
        pg_shortest_with(
            format!("{v:e}"),
            |p| format!("{v:.*e}", p - 1),
            reads_back,
            9,
        )
    } else {
        format!("{v:e}")
    };
    float_to_text(&shortest, 6, out);
}

/// The digits PostgreSQL's Ryu prints for `v`, as `d.ddde±N` (see [`float_to_text`]).
fn pg_shortest(v: f64, reads_back: impl Fn(&str) -> bool, max_digits: usize) -> String {
    if !v.is_finite() || v == 0.0 {
        return format!("{v:e}");
    }
    pg_shortest_with(
        format!("{v:e}"),
        |p| format!("{v:.*e}", p - 1),
        reads_back,
        max_digits,
    )
}

/// PostgreSQL's Ryu picks, at the fewest digits that identify the float, the value correctly
/// rounded (half to even) to that many digits; and it is built without `STRICTLY_SHORTEST`,
/// so the bounds of the rounding interval are excluded. Rust's shortest (`{:e}`) includes
/// them for an even mantissa and breaks ties its own way. So: from Rust's length on (never
/// fewer digits than it needs), the first correctly rounded (`{:.*e}`) candidate strictly
/// inside the interval, or at that length Rust's own digits if they are.
fn pg_shortest_with(
    shortest: String,
    rounded: impl Fn(usize) -> String,
    reads_back: impl Fn(&str) -> bool,
    max_digits: usize,
) -> String {
    let inside = |t: &str| reads_back(t) && !on_bound(t, &reads_back);
    let len = shortest
        .split('e')
        .next()
        .map_or(1, |m| m.bytes().filter(u8::is_ascii_digit).count());
    for digits in len..=max_digits {
        let candidate = rounded(digits);
        if inside(&candidate) {
            return candidate;
        }
        if digits == len && inside(&shortest) {
            return shortest;
        }
    }
    shortest
}

/// Whether the decimal `d.ddde±N` sits exactly on a bound of its float's rounding interval:
/// nudged outward by 10^-40 of itself, it no longer reads back as the same float.
fn on_bound(text: &str, reads_back: &impl Fn(&str) -> bool) -> bool {
    let Some((mantissa, exp)) = text.split_once('e') else {
        return false;
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let Ok(exp) = exp.parse::<i32>() else {
        return false;
    };
    // `digits` as an integer times 10^(exp - len + 1).
    let scale = exp - digits.len() as i32 + 1 - 40;
    let above = format!("{sign}{digits}{}1e{scale}", "0".repeat(39));
    let below = match decrement(&digits) {
        Some(d) => format!("{sign}{d}{}e{scale}", "9".repeat(40)),
        None => return !reads_back(&above),
    };
    !reads_back(&above) || !reads_back(&below)
}

/// A decimal digit string minus one (`None` for zero).
fn decrement(digits: &str) -> Option<String> {
    let mut d = digits.as_bytes().to_vec();
    for b in d.iter_mut().rev() {
        if *b == b'0' {
            *b = b'9';
        } else {
            *b -= 1;
            return Some(String::from_utf8(d).unwrap_or_default());
        }
    }
    None
}

/// `float4out`/`float8out` with `extra_float_digits` ≥ 1: the shortest text that reads back
/// exactly, fixed-point when the decimal exponent is in `-4..fixed_below` (6 for float4, 15
/// for float8), else `d.ddde±XX`; `NaN`, `Infinity`, `-Infinity`, `-0`.
pub fn float_to_text(shortest_exp: &str, fixed_below: i32, out: &mut String) {
    // `shortest_exp` is `d.ddde-N`: the digits PostgreSQL's Ryu picks (see `pg_shortest_with`).
    match shortest_exp {
        "NaN" => return out.push_str("NaN"),
        "inf" => return out.push_str("Infinity"),
        "-inf" => return out.push_str("-Infinity"),
        _ => {}
    }
    let (mantissa, exp) = shortest_exp.split_once('e').unwrap_or((shortest_exp, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if digits.bytes().all(|b| b == b'0') {
        out.push_str(if negative { "-0" } else { "0" });
        return;
    }
    if negative {
        out.push('-');
    }
    if (-4..fixed_below).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(&digits);
        } else if point as usize >= digits.len() {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
        } else {
            out.push_str(&digits[..point as usize]);
            out.push('.');
            out.push_str(&digits[point as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}
