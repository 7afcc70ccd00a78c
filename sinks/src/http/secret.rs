//! Secrets of HTTP sinks (signing secrets, `Authorization` tokens): configured by the name
//! of an environment variable, never by value, and never printed.
//!
//! ```toml
//! secret = { env = "ORDERS_HOOK_SECRET" }
//! headers = { Authorization = { env = "CRM_TOKEN", prefix = "Bearer " } }
//! ```
//!
//! Invariants: `Debug` and `Display` of [`Secret`] and [`SecretSource`]'s resolved value print
//! `***`; errors name the variable, never its value; header values built from a secret are
//! marked sensitive (`HeaderValue::set_sensitive`), so reqwest and hyper do not print them.

use std::fmt;

use reqwest::header::HeaderValue;
use serde::Deserialize;

use crate::{Error, Result};

/// Where a secret comes from, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of the environment variable holding the secret.
    pub env: String,
    /// Text put before the value (e.g. `"Bearer "` for an `Authorization` header).
    #[serde(default)]
    pub prefix: Option<String>,
}

/// A resolved secret; prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl SecretSource {
    /// Reads the variable now (at config validation, before anything connects).
    pub fn resolve(&self) -> Result<Secret> {
        let value = std::env::var(&self.env).map_err(|e| Error::SecretMissing {
            name: self.env.clone(),
            reason: match e {
                std::env::VarError::NotPresent => "is not set",
                std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
            },
        })?;
        if value.is_empty() {
            return Err(Error::SecretMissing {
                name: self.env.clone(),
                reason: "is empty",
            });
        }
        Ok(Secret(format!(
            "{}{value}",
            self.prefix.as_deref().unwrap_or_default()
        )))
    }
}

impl Secret {
    /// A secret from a value the caller already holds (tests, other sources).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must use it (HMAC key, header value).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value as a sensitive header value (`name` only for the error).
    pub fn header_value(&self, name: &str) -> Result<HeaderValue> {
        let mut v = HeaderValue::from_str(&self.0).map_err(|_| Error::InvalidHeader {
            name: name.to_string(),
            reason: "the secret holds characters not allowed in a header value",
        })?;
        v.set_sensitive(true);
        Ok(v)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_with_prefix_and_never_prints() {
        // A variable name no other test uses: tests run in parallel in one process.
        std::env::set_var("SLUICE_TEST_SECRET_PREFIXED", "tok-123");
        let src: SecretSource =
            serde_json::from_str(r#"{"env": "SLUICE_TEST_SECRET_PREFIXED", "prefix": "Bearer "}"#)
                .unwrap();
        let s = src.resolve().unwrap();
        assert_eq!(s.expose(), "Bearer tok-123");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        let h = s.header_value("Authorization").unwrap();
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("tok-123"));
    }

    #[test]
    fn missing_and_unknown_fields() {
        let src = SecretSource {
            env: "SLUICE_TEST_SECRET_NEVER_SET".into(),
            prefix: None,
        };
        let e = src.resolve().unwrap_err().to_string();
        assert!(
            e.contains("SLUICE_TEST_SECRET_NEVER_SET") && e.contains("not set"),
            "{e}"
        );
        assert!(serde_json::from_str::<SecretSource>(r#"{"env": "X", "value": "y"}"#).is_err());
        let bad = Secret::new("a\nb")
            .header_value("Authorization")
            .unwrap_err();
        assert!(!bad.to_string().contains("a\nb"));
    }
}
