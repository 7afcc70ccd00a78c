//! Byte sizes as configuration files write them: a number, or `"64MiB"`, `"512KB"`, `"1GiB"`.

/// The size `s` stands for (`"64MiB"`, `"512KB"`, `"1048576"`); `None` if it is not one.
pub fn parse(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: usize = n.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse() {
        assert_eq!(super::parse("64MiB"), Some(64 << 20));
        assert_eq!(super::parse(" 512 KB "), Some(512_000));
        assert_eq!(super::parse("1048576"), Some(1 << 20));
        assert_eq!(super::parse("12 parsecs"), None);
        assert_eq!(super::parse("MiB"), None);
    }
}
