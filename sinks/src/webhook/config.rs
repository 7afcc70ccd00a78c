//! `[[sinks]] kind = "webhook"`: the configuration and its validation (every problem at
//! once, each with its fix, before anything connects).

use std::collections::HashMap;

use replication::change::TableName;
use serde::Deserialize;

use crate::http::{check_url, ByteSize, SecretSource, SharedFields, SharedSettings, SigningKey};

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

pub(crate) fn default_rows() -> usize {
    500
}
pub(crate) fn default_bytes() -> ByteSize {
    ByteSize::N(1 << 20)
}
pub(crate) fn default_concurrency() -> usize {
    32
}
pub(crate) fn default_timeout() -> String {
    "30s".into()
}

/// A validated webhook sink.
#[derive(Clone)]
pub struct WebhookSettings {
    /// Name, tables, keys, batch limits, traffic shaping.
    pub shared: SharedSettings,
    /// Endpoint.
    pub url: reqwest::Url,
    /// Signing key, if configured.
    pub signing: Option<SigningKey>,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("name", &self.shared.name)
            .field("tables", &self.shared.tables)
            .field("signed", &self.signing.is_some())
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    /// Checks everything; `pipeline_tables` are the source's tables.
    pub fn validate(&self, pipeline_tables: &[TableName]) -> Result<WebhookSettings, Vec<String>> {
        let fields = SharedFields {
            kind: "webhook",
            name: &self.name,
            tables: &self.tables,
            keys: &self.keys,
            max_batch_rows: self.max_batch_rows,
            max_batch_bytes: &self.max_batch_bytes,
            rate_limit: &self.rate_limit,
            max_concurrency: self.max_concurrency,
            timeout: &self.timeout,
        };
        let at = fields.at();
        let mut problems = Vec::new();
        let url = check_url(&at, "url", &self.url, &mut problems);
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
        let shared = fields.validate(pipeline_tables, &mut problems);
        match (shared, url) {
            (Some(shared), Some(url)) if problems.is_empty() => Ok(WebhookSettings {
                shared,
                url,
                signing,
            }),
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
            "export",
            "fix the name",
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
        assert_eq!(ok.shared.tables.len(), 1);
        assert_eq!(ok.shared.limits.max_bytes, 1 << 20);
    }
}
