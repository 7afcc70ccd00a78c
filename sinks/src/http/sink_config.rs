//! The settings every HTTP sink of the hub shares (name, tables, per-key order, batch cutting,
//! rate windows, concurrency cap, timeout) and their validation, so the webhook and REST
//! sinks check them the same way, with the same messages.

use std::collections::HashMap;
use std::time::Duration;

use replication::change::TableName;
use serde::Deserialize;

use super::{Backoff, ClientConfig, ConcurrencyConfig, DestinationConfig, RateLimit};
use crate::hub::{BatchLimits, KeyColumns};

/// Most changes per hub batch accepted by validation (bodies stay reasonable).
const MAX_BATCH_ROWS: usize = 100_000;

/// Body size bounds accepted by validation.
const BATCH_BYTES: (usize, usize) = (1024, 64 << 20);

/// A byte size: a number or a string like `"1MiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    /// Bytes.
    N(u64),
    /// `"512KiB"`, `"1MB"`, …
    S(String),
}

impl ByteSize {
    /// The size in bytes, `None` if unreadable.
    pub fn bytes(&self) -> Option<usize> {
        match self {
            ByteSize::N(n) => usize::try_from(*n).ok(),
            ByteSize::S(s) => crate::bytesize::parse(s),
        }
    }
}

/// The shared fields as written in a sink's config block.
#[derive(Debug, Clone, Copy)]
pub struct SharedFields<'a> {
    /// `"webhook"`, `"rest"`: names the block in messages.
    pub kind: &'a str,
    /// Unique among the pipeline's sinks; names the cursor and the dead-letter table.
    pub name: &'a str,
    /// `schema.table` names; `None`: every table of the pipeline.
    pub tables: &'a Option<Vec<String>>,
    /// Key columns per table.
    pub keys: &'a HashMap<String, Vec<String>>,
    /// Most changes per hub batch.
    pub max_batch_rows: usize,
    /// Most bytes of rows per hub batch.
    pub max_batch_bytes: &'a ByteSize,
    /// Rate windows (`"20/s"`).
    pub rate_limit: &'a [String],
    /// Cap of requests in flight.
    pub max_concurrency: usize,
    /// Whole-request timeout (`"30s"`).
    pub timeout: &'a str,
}

/// The shared settings, validated.
#[derive(Debug, Clone)]
pub struct SharedSettings {
    /// Sink name.
    pub name: String,
    /// Tables delivered, in a fixed order.
    pub tables: Vec<TableName>,
    /// Key columns.
    pub keys: KeyColumns,
    /// Batch cutting.
    pub limits: BatchLimits,
    /// Traffic shaping.
    pub destination: DestinationConfig,
}

impl SharedFields<'_> {
    /// `[[sinks]] <kind> "<name>"`: how messages name the block.
    pub fn at(&self) -> String {
        format!("[[sinks]] {} {:?}", self.kind, self.name)
    }

    /// Checks every field against the pipeline's tables; each problem, with its fix, goes to
    /// `problems`.
    pub fn validate(
        &self,
        pipeline_tables: &[TableName],
        problems: &mut Vec<String>,
    ) -> Option<SharedSettings> {
        let at = self.at();
        let before = problems.len();
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            problems.push(format!("{at}: name must be 1-64 lowercase letters, digits, - and _ (it names the cursor file)"));
        }
        let tables = match self.tables {
            None => pipeline_tables.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for t in list {
                    match TableName::parse(t).filter(|t| pipeline_tables.contains(t)) {
                        Some(t) if !out.contains(&t) => out.push(t),
                        Some(_) => {}
                        None => problems.push(format!("{at}: tables names {t:?}, which is not one of the [source] tables: fix the name or add it to [source] tables")),
                    }
                }
                if list.is_empty() {
                    problems.push(format!(
                        "{at}: tables is empty: list tables or remove it to deliver all"
                    ));
                }
                out
            }
        };
        let mut keys = KeyColumns::default();
        for (t, cols) in self.keys {
            match TableName::parse(t).filter(|t| tables.contains(t)) {
                Some(t) if !cols.is_empty() => {
                    keys.0.insert(t, cols.clone());
                }
                _ => problems.push(format!("{at}: keys names {t:?}: name one of the sink's tables with at least one column")),
            }
        }
        if !(1..=MAX_BATCH_ROWS).contains(&self.max_batch_rows) {
            problems.push(format!(
                "{at}: max_batch_rows must be between 1 and {MAX_BATCH_ROWS}"
            ));
        }
        let max_bytes = self.max_batch_bytes.bytes();
        match max_bytes {
            Some(b) if (BATCH_BYTES.0..=BATCH_BYTES.1).contains(&b) => {}
            Some(_) => problems.push(format!(
                "{at}: max_batch_bytes must be between 1KiB and 64MiB"
            )),
            None => problems.push(format!(
                "{at}: max_batch_bytes is not a size: write e.g. \"1MiB\" or 1048576"
            )),
        }
        let mut rate_limits = Vec::new();
        for r in self.rate_limit {
            match r.parse::<RateLimit>() {
                Ok(l) => rate_limits.push(l),
                Err(e) => problems.push(format!(
                    "{at}: rate_limit: {e}: write e.g. \"20/s\", \"100/10s\" or \"100000/day\""
                )),
            }
        }
        if !(1..=1024).contains(&self.max_concurrency) {
            problems.push(format!("{at}: max_concurrency must be between 1 and 1024"));
        }
        let timeout = match humantime::parse_duration(self.timeout) {
            Ok(t) if t >= Duration::from_millis(100) => Some(t),
            _ => {
                problems.push(format!(
                    "{at}: timeout {:?} must be a duration of at least 100ms, e.g. \"30s\"",
                    self.timeout
                ));
                None
            }
        };
        if problems.len() > before {
            return None;
        }
        Some(SharedSettings {
            name: self.name.to_string(),
            tables,
            keys,
            limits: BatchLimits {
                max_rows: self.max_batch_rows,
                max_bytes: max_bytes?,
            },
            destination: DestinationConfig {
                rate_limits,
                concurrency: ConcurrencyConfig::with_max(self.max_concurrency),
                backoff: Backoff::default(),
                max_attempts: None,
                client: ClientConfig {
                    timeout: timeout?,
                    pool_max_idle_per_host: self.max_concurrency,
                    ..ClientConfig::default()
                },
            },
        })
    }
}

/// Checks an endpoint URL: `http://` or `https://` with a host.
pub fn check_url(
    at: &str,
    what: &str,
    url: &str,
    problems: &mut Vec<String>,
) -> Option<reqwest::Url> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(_) => {
            problems.push(format!("{at}: {what} must be http:// or https:// with a host, e.g. \"https://hooks.example.com/sluice\""));
            None
        }
        Err(e) => {
            problems.push(format!(
                "{at}: {what} is not a URL ({e}): write e.g. \"https://hooks.example.com/sluice\""
            ));
            None
        }
    }
}
