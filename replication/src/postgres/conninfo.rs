//! Connection settings parsed from a `postgres://` URL.
//!
//! One parser serves both connections Sluice opens (the replication connection on our own
//! protocol client and the SQL connection on tokio-postgres), so both always agree on host,
//! user, database and TLS mode. The password may come from the URL or, preferably, from the
//! `SLUICE_SOURCE_PASSWORD` environment variable; it is held in [`Password`], which never prints.

use std::fmt;

use crate::{Error, Result};

/// Environment variable that supplies the source password when the URL has none.
pub const PASSWORD_ENV: &str = "SLUICE_SOURCE_PASSWORD";

/// A password that never appears in `Debug` or `Display` output.
#[derive(Clone, Default)]
pub struct Password(String);

impl Password {
    /// Wrap a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Password(secret.into())
    }

    /// The secret itself, for the authentication exchange only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// TLS policy, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, without verifying the certificate.
    Prefer,
    /// Require TLS, without verifying the certificate.
    Require,
    /// Require TLS and verify the certificate chain and the host name.
    VerifyFull,
}

/// Everything needed to open a connection to one PostgreSQL server.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Role to log in as.
    pub user: String,
    /// Password, when the server asks for one.
    pub password: Option<Password>,
    /// Database name.
    pub dbname: String,
    /// TLS policy.
    pub ssl_mode: SslMode,
    /// PEM file with the CA certificates trusted for `verify-full` (else the web PKI roots).
    pub ssl_root_cert: Option<String>,
}

impl ConnInfo {
    /// Parse `postgres://user[:password]@host[:port]/dbname[?sslmode=..&sslrootcert=..]`.
    /// A password in `SLUICE_SOURCE_PASSWORD` is used when the URL carries none.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| invalid("must start with postgres://"))?;
        let (authority, path_query) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (percent_decode(user)?, Some(percent_decode(pass)?)),
                None => (percent_decode(u)?, None),
            },
            None => (String::new(), None),
        };
        let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
            let (h, p) = stripped
                .split_once(']')
                .ok_or_else(|| invalid("unclosed [ in host"))?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| invalid(&format!("port {p:?} is not a number")))?,
            None => 5432,
        };
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        let mut info = ConnInfo {
            host: if host.is_empty() {
                "localhost".into()
            } else {
                host
            },
            port,
            user: user.clone(),
            password: password.map(Password::new),
            dbname: percent_decode(path)?,
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "sslmode" => {
                    info.ssl_mode = match value.as_str() {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(invalid(&format!(
                                "sslmode {other:?} is not supported: use disable, prefer, require or verify-full"
                            )))
                        }
                    }
                }
                "sslrootcert" => info.ssl_root_cert = Some(value),
                "user" => info.user = value,
                "password" => info.password = Some(Password::new(value)),
                "dbname" => info.dbname = value,
                "application_name" | "connect_timeout" => {}
                other => {
                    return Err(invalid(&format!(
                        "unknown parameter {other:?}: use sslmode, sslrootcert, user, password or dbname"
                    )))
                }
            }
        }
        if info.user.is_empty() {
            return Err(invalid("no user: write postgres://USER@host/db"));
        }
        if info.dbname.is_empty() {
            return Err(invalid("no database: write postgres://user@host/DBNAME"));
        }
        if info.password.is_none() {
            if let Ok(p) = std::env::var(PASSWORD_ENV) {
                info.password = Some(Password::new(p));
            }
        }
        Ok(info)
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Settings for an ordinary tokio-postgres SQL connection to the same server.
    pub fn sql_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("sluice")
            // The text output of snapshot columns without a binary decoder must be what the
            // replication connection (client.rs) streams for them.
            .options("-c DateStyle=ISO,YMD -c TimeZone=UTC -c IntervalStyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex")
            .connect_timeout(std::time::Duration::from_secs(10))
            .ssl_mode(match self.ssl_mode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
            });
        if let Some(p) = &self.password {
            config.password(p.expose());
        }
        config
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| Error::InvalidUrl {
                reason: "truncated %-escape".into(),
            })?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| Error::InvalidUrl {
                reason: format!("bad %-escape %{hex}"),
            })?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::InvalidUrl {
        reason: "not utf-8 after %-decoding".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url_without_leaking_password() {
        let info = ConnInfo::parse("postgres://sluice:p%40ss@127.0.0.1:54329/shop?sslmode=require")
            .unwrap();
        assert_eq!(info.host, "127.0.0.1");
        assert_eq!(info.port, 54329);
        assert_eq!(info.user, "sluice");
        assert_eq!(info.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(info.dbname, "shop");
        assert_eq!(info.ssl_mode, SslMode::Require);
        assert!(!format!("{info:?}").contains("p@ss"));
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for bad in [
            "mysql://a@b/c",
            "postgres://a@b:xx/c",
            "postgres://a@b/c?sslmode=verify-ca",
            "postgres://@b/c",
            "postgres://a@b/",
            "postgres://a@b/c?bogus=1",
        ] {
            let err = ConnInfo::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}: {err}");
        }
    }
}
