//! `[[sinks]] kind = "webhook"`: the configuration and its validation (every problem at
//! once, each with its fix, before anything connects).

use std::collections::HashMap;
use std::time::Duration;

use replication::change::TableName;
use serde::Deserialize;

use crate::http::{
    Backoff, ClientConfig, ConcurrencyConfig, DestinationConfig, RateLimit, SecretSource,
    SigningKey,
};
use crate::hub::{BatchLimits, KeyColumns};

/// Most changes per batch accepted by validation (bodies stay reasonable).
const MAX_BATCH_ROWS: usize = 100_000;

/// Body size bounds accepted by validation.
const BATCH_BYTES: (usize, usize) = (1024, 64 << 20);

/// A webhook sink as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique among the pipeline's sinks; names the cursor and the dead-letter table.
    pub name: String,
    /// The endpoint, `http://` or `https://`.
    pub url: String,
    /// Tables delivered, `schema.table` (default: every table of the pipeline).
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Key columns per table for per-key order (default: `id` if the table has one, else the
    /// whole table is one key).
    #[serde(default)]
    pub keys: HashMap<String, Vec<String>>,
    /// Standard Webhooks signing secret (`whsec_<base64>` or raw), from an environment
    /// variable.
    #[serde(default)]
    pub secret: Option<SecretSource>,
    /// Most change events per request.
    #[serde(default = "default_rows")]
    pub max_batch_rows: usize,
    /// Most bytes of rows per request (`"1MiB"` or a number).
    #[serde(default = "default_bytes")]
    pub max_batch_bytes: ByteSize,
    /// Rate windows, all respected at once: `["20/s", "100000/day"]`.
    #[serde(default)]
    pub rate_limit: Vec<String>,
    /// Cap of requests in flight (AIMD adapts below it).
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Whole-request timeout (`"30s"`).
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

/// A byte size: a number or a string like `"1MiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    /// Bytes.
    N(u64),
    /// `"512KiB"`, `"1MB"`, …
    S(String),
}

fn default_rows() -> usize {
    500
}
fn default_bytes() -> ByteSize {
    ByteSize::N(1 << 20)
}
fn default_concurrency() -> usize {
    32
}
fn default_timeout() -> String {
    "30s".into()
}

/// A validated webhook sink.
#[derive(Clone)]
pub struct WebhookSettings {
    /// Sink name.
    pub name: String,
    /// Endpoint.
    pub url: reqwest::Url,
    /// Tables delivered.
    pub tables: Vec<TableName>,
    /// Key columns.
    pub keys: KeyColumns,
    /// Signing key, if configured.
    pub signing: Option<SigningKey>,
    /// Batch cutting.
    pub limits: BatchLimits,
    /// Traffic shaping.
    pub destination: DestinationConfig,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("name", &self.name)
            .field("tables", &self.tables)
            .field("signed", &self.signing.is_some())
            .finish_non_exhaustive()
    }
}

impl ByteSize {
    fn bytes(&self) -> Option<usize> {
        match self {
            ByteSize::N(n) => usize::try_from(*n).ok(),
            ByteSize::S(s) => crate::bytesize::parse(s),
        }
    }
}

impl WebhookConfig {
    /// Checks everything; `pipeline_tables` are the source's tables.
    pub fn validate(&self, pipeline_tables: &[TableName]) -> Result<WebhookSettings, Vec<String>> {
        let at = format!("[[sinks]] webhook {:?}", self.name);
        let mut problems = Vec::new();
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            problems.push(format!("{at}: name must be 1-64 lowercase letters, digits, - and _ (it names the cursor file)"));
        }
        let url = match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                problems.push(format!("{at}: url must be http:// or https:// with a host, e.g. \"https://hooks.example.com/sluice\""));
                None
            }
            Err(e) => {
                problems.push(format!(
                    "{at}: url is not a URL ({e}): write e.g. \"https://hooks.example.com/sluice\""
                ));
                None
            }
        };
        let tables = match &self.tables {
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
        for (t, cols) in &self.keys {
            match TableName::parse(t).filter(|t| tables.contains(t)) {
                Some(t) if !cols.is_empty() => {
                    keys.0.insert(t, cols.clone());
                }
                _ => problems.push(format!("{at}: keys names {t:?}: name one of the sink's tables with at least one column")),
            }
        }
        let signing = match &self.secret {
            None => None,
            Some(source) => match source.resolve() {
                Ok(secret) => match SigningKey::from_secret(secret.expose()) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        problems.push(format!("{at}: secret: {e}"));
                        None
                    }
                },
                Err(e) => {
                    problems.push(format!(
                        "{at}: {e}: export it before starting sluice (e.g. export {}=whsec_…)",
                        source.env
                    ));
                    None
                }
            },
        };
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
        for r in &self.rate_limit {
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
        let timeout = match humantime::parse_duration(&self.timeout) {
            Ok(t) if t >= Duration::from_millis(100) => Some(t),
            _ => {
                problems.push(format!(
                    "{at}: timeout {:?} must be a duration of at least 100ms, e.g. \"30s\"",
                    self.timeout
                ));
                None
            }
        };
        match (url, timeout, max_bytes) {
            (Some(url), Some(timeout), Some(max_bytes)) if problems.is_empty() => {
                Ok(WebhookSettings {
                    name: self.name.clone(),
                    url,
                    tables,
                    keys,
                    signing,
                    limits: BatchLimits {
                        max_rows: self.max_batch_rows,
                        max_bytes,
                    },
                    destination: DestinationConfig {
                        rate_limits,
                        concurrency: ConcurrencyConfig::with_max(self.max_concurrency),
                        backoff: Backoff::default(),
                        max_attempts: None,
                        client: ClientConfig {
                            timeout,
                            pool_max_idle_per_host: self.max_concurrency,
                            ..ClientConfig::default()
                        },
                    },
                })
            }
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> WebhookConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn reports_every_problem_with_its_fix() {
        let c = config(
            r#"
            name = "hook"
            url = "ftp://x"
            secret = { env = "SLUICE_TEST_SURELY_UNSET_SECRET" }
            max_batch_rows = 0
            max_batch_bytes = "12 parsecs"
            rate_limit = ["fast"]
            tables = ["public.nope"]
            "#,
        );
        let problems = c
            .validate(&[TableName::parse("public.orders").unwrap()])
            .unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        for (p, fix) in problems.iter().zip([
            "https://",
            "fix the name",
            "export",
            "between 1",
            "1MiB",
            "20/s",
        ]) {
            assert!(p.contains(fix), "{p}");
        }
        let ok =
            config("name = \"hook\"\nurl = \"http://127.0.0.1:9/x\"\nrate_limit = [\"20/s\"]\n")
                .validate(&[TableName::parse("public.orders").unwrap()])
                .unwrap();
        assert_eq!(ok.tables.len(), 1);
        assert_eq!(ok.limits.max_bytes, 1 << 20);
    }
}
