//! PostgreSQL log sequence numbers.

use std::fmt;
use std::str::FromStr;

/// A position in the PostgreSQL write-ahead log, printed as `XXXXXXXX/XXXXXXXX`.
///
/// Sluice uses the commit LSN of a source transaction as its position: it orders transactions,
/// it is the Delta `txn` version, and the slot is confirmed up to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The zero position (`0/0`), used as "nothing yet".
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid lsn {s:?}: expected XXX/XXX"))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|e| format!("invalid lsn {s:?}: {e}"))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|e| format!("invalid lsn {s:?}: {e}"))?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_form() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("nonsense".parse::<Lsn>().is_err());
        assert!("1/xyz".parse::<Lsn>().is_err());
    }
}
