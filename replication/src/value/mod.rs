//! Value helpers both sources share: the calendar (days since 1970-01-01) and exact decimals.
//! Source-specific conversions stay with their source (`postgres::value`, `mysql::shape`).

mod calendar;
mod decimal;

pub use calendar::{civil_from_days, days_from_civil};
pub use decimal::{decimal_exact, decimal_from_text};
pub(crate) use decimal::{fits, POW10};
