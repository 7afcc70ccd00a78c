//! `mysql://user[:password]@host[:port]/database[?ssl-mode=…&ssl-ca=…]` → connection options.
//! The password may come from `SLUICE_SOURCE_PASSWORD` instead of the URL; it never appears in
//! `Display`.
//!
//! TLS follows the MySQL client's `--ssl-mode` (rustls underneath):
//!
//! | `ssl-mode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disabled` | no | — |
//! | `preferred` (default) | when the server offers TLS | no |
//! | `required` | yes, or the connection fails | no |
//! | `verify_ca` | yes | signed by `ssl-ca` (or a public root) |
//! | `verify_identity` | yes | as `verify_ca`, and issued for the host |

use std::fmt;
use std::path::PathBuf;

use mysql_async::{Opts, OptsBuilder, SslOpts};

use crate::{Error, Result};

/// Where and as whom to connect.
#[derive(Clone)]
pub struct MyConnInfo {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name.
    pub user: String,
    password: Option<String>,
    /// Default database.
    pub database: Option<String>,
    /// TLS mode.
    pub ssl_mode: SslMode,
    /// CA certificate (PEM) for `verify_ca` / `verify_identity`.
    pub ssl_ca: Option<PathBuf>,
}

/// How the connection uses TLS (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl fmt::Debug for MyConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for MyConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mysql://{}@{}:{}", self.user, self.host, self.port)?;
        if let Some(db) = &self.database {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl MyConnInfo {
    /// Parse a `mysql://` URL; `password` (from the environment) is used when the URL has none.
    pub fn parse(url: &str, password: Option<String>) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUrl {
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if parsed.scheme() != "mysql" {
            return Err(bad("the scheme must be mysql://"));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .to_string();
        let user = match parsed.username() {
            "" => return Err(bad("no user name (mysql://user@host/db)")),
            u => percent_decode(u),
        };
        let url_password = parsed.password().map(percent_decode);
        let mut ssl_mode = SslMode::Preferred;
        let mut ssl_ca = None;
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "ssl-mode" | "ssl_mode" | "sslmode" => {
                    ssl_mode = match value.to_ascii_lowercase().replace('-', "_").as_str() {
                        "disabled" | "disable" => SslMode::Disabled,
                        "preferred" | "prefer" => SslMode::Preferred,
                        "required" | "require" => SslMode::Required,
                        "verify_ca" => SslMode::VerifyCa,
                        "verify_identity" | "verify_full" => SslMode::VerifyIdentity,
                        other => {
                            return Err(bad(&format!(
                                "ssl-mode {other:?} is not supported: use disabled, preferred, required, verify_ca or verify_identity"
                            )))
                        }
                    }
                }
                "ssl-ca" | "ssl_ca" | "sslrootcert" => ssl_ca = Some(PathBuf::from(value.as_ref())),
                other => {
                    return Err(bad(&format!(
                        "unknown URL parameter {other:?}: use ssl-mode or ssl-ca"
                    )))
                }
            }
        }
        if ssl_ca.is_some() && !matches!(ssl_mode, SslMode::VerifyCa | SslMode::VerifyIdentity) {
            return Err(bad(
                "ssl-ca is only used to verify the server: add ssl-mode=verify_identity (or verify_ca)",
            ));
        }
        let database = parsed
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .filter(|d| !d.is_empty())
            .map(percent_decode);
        Ok(MyConnInfo {
            host,
            port: parsed.port().unwrap_or(3306),
            user,
            password: url_password.or(password),
            database,
            ssl_mode,
            ssl_ca,
        })
    }

    /// Options for mysql_async; `tls`: whether to ask for TLS (with this mode's checks).
    pub fn opts(&self, tls: bool) -> Opts {
        let ssl = match self.ssl_mode {
            _ if !tls => None,
            SslMode::Disabled => None,
            SslMode::Preferred | SslMode::Required => Some(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            SslMode::VerifyCa | SslMode::VerifyIdentity => {
                let roots = self.ssl_ca.iter().map(|p| p.clone().into()).collect();
                Some(
                    SslOpts::default()
                        .with_root_certs(roots)
                        .with_danger_skip_domain_validation(self.ssl_mode == SslMode::VerifyCa),
                )
            }
        };
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .db_name(self.database.clone())
            .prefer_socket(false)
            .ssl_opts(ssl)
            .into()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_never_shows_the_password() {
        let info = MyConnInfo::parse("mysql://sluice:s%40cret@127.0.0.1:33069/shop", None).unwrap();
        assert_eq!((info.host.as_str(), info.port), ("127.0.0.1", 33069));
        assert_eq!(info.password.as_deref(), Some("s@cret"));
        assert_eq!(info.to_string(), "mysql://sluice@127.0.0.1:33069/shop");
        let env = MyConnInfo::parse("mysql://sluice@db/shop", Some("pw".into())).unwrap();
        assert_eq!((env.port, env.password.as_deref()), (3306, Some("pw")));
        assert!(MyConnInfo::parse("postgres://a@b/c", None).is_err());
        assert!(MyConnInfo::parse("mysql://db/shop", None).is_err());
    }

    #[test]
    fn tls_modes_parse() {
        assert_eq!(env_free("mysql://u@h/d").ssl_mode, SslMode::Preferred);
        let verify = env_free("mysql://u@h/d?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ca.pem");
        assert_eq!(verify.ssl_mode, SslMode::VerifyIdentity);
        assert_eq!(verify.ssl_ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            env_free("mysql://u@h/d?ssl-mode=disabled").ssl_mode,
            SslMode::Disabled
        );
        for bad in [
            "mysql://u@h/d?ssl-mode=sometimes",
            "mysql://u@h/d?ssl-ca=/ca.pem",
            "mysql://u@h/d?compress=true",
        ] {
            assert!(MyConnInfo::parse(bad, None).is_err(), "{bad}");
        }
    }

    fn env_free(url: &str) -> MyConnInfo {
        MyConnInfo::parse(url, None).unwrap()
    }
}
