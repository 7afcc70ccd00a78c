//! `mysql://user[:password]@host[:port]/database` → connection options. The password may come
//! from `SLUICE_SOURCE_PASSWORD` instead of the URL; it never appears in `Display`.

use std::fmt;

use mysql_async::{Opts, OptsBuilder};

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
        if let Some((key, _)) = parsed.query_pairs().next() {
            return Err(bad(&format!("unknown URL parameter {key}")));
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
        })
    }

    /// Options for mysql_async.
    pub fn opts(&self) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .db_name(self.database.clone())
            .prefer_socket(false)
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
}
