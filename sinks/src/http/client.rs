//! The HTTP client of the HTTP sinks and one classified attempt ([`send`]).
//!
//! Invariants:
//! - TLS is rustls (ring), never OpenSSL; the user agent is `sluice/<version>`.
//! - Redirects are not followed: a 3xx reaches the retry policy and is rejected (a POST
//!   silently turned into a GET by a 302 would look delivered and deliver nothing).
//! - [`send`] never fails: every attempt ends as an [`Attempt`] that the retry policy
//!   ([`super::retry::classify`]) decides on.
//! - Nothing here logs bodies or header values. A response keeps at most
//!   [`EXCERPT_BYTES`] of its body, for dead-letter records; request bodies are never kept.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::retry::parse_retry_after;
use crate::{Error, Result};

/// Most bytes of a response body kept for dead-letter records.
pub const EXCERPT_BYTES: usize = 512;

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));

/// Settings of the client of one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Whole-request timeout (connect, send, response headers and excerpt).
    pub timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per host (at least the concurrency cap is right).
    pub pool_max_idle_per_host: usize,
    /// How long an idle connection is kept.
    pub pool_idle_timeout: Duration,
}

impl Default for ClientConfig {
    /// 30 s timeout, 10 s connect, 32 idle connections for 90 s.
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            pool_max_idle_per_host: 32,
            pool_idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Builds the client: rustls, timeouts, pool, user agent, no redirects.
pub fn build_client(config: &ClientConfig) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .pool_idle_timeout(config.pool_idle_timeout)
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::HttpClient {
            source: e.without_url(),
        })
}

/// A response, reduced to what delivery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `Retry-After` wait, if the header was present and readable.
    pub retry_after: Option<Duration>,
    /// From sending to having the headers and the excerpt.
    pub latency: Duration,
    /// At most [`EXCERPT_BYTES`] of the body, lossy UTF-8, cut at a character boundary.
    pub excerpt: String,
    /// The body when the caller asked to keep it (batch endpoints answer per item), else
    /// empty.
    pub body: bytes::Bytes,
}

/// Why an attempt got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// The request or connect timed out.
    Timeout,
    /// No connection could be made (refused, DNS, TLS handshake).
    Connect,
    /// The connection broke before a whole response arrived (reset, closed, body error).
    Closed,
}

/// One attempt's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The server answered (any status).
    Response(Response),
    /// No response; `latency` until the failure.
    Failed {
        error: TransportError,
        latency: Duration,
    },
}

impl Attempt {
    /// The `Retry-After` wait the server asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Attempt::Response(r) => r.retry_after,
            Attempt::Failed { .. } => None,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Attempt::Response(r) => Some(r.status),
            Attempt::Failed { .. } => None,
        }
    }
}

/// Performs one attempt of `request` on `client`, keeping at most `keep` bytes of the body
/// in [`Response::body`] (0: only the excerpt).
pub async fn send(client: &reqwest::Client, request: reqwest::Request, keep: usize) -> Attempt {
    let start = Instant::now();
    let failed = |e: reqwest::Error, start: Instant| Attempt::Failed {
        error: transport_error(&e),
        latency: start.elapsed(),
    };
    let mut response = match client.execute(request).await {
        Ok(r) => r,
        Err(e) => return failed(e, start),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let mut body = Vec::new();
    let mut complete = false;
    while body.len() <= EXCERPT_BYTES.max(keep) {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => {
                complete = true;
                break;
            }
            // The status arrived: a broken body does not change the verdict on it.
            Err(_) => break,
        }
    }
    Attempt::Response(Response {
        status,
        retry_after,
        latency: start.elapsed(),
        excerpt: excerpt(&body),
        body: if keep > 0 && complete && body.len() <= keep {
            bytes::Bytes::from(body)
        } else {
            bytes::Bytes::new()
        },
    })
}

fn transport_error(e: &reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else if e.is_connect() {
        TransportError::Connect
    } else {
        TransportError::Closed
    }
}

/// At most [`EXCERPT_BYTES`] of `body` as text, never splitting a character.
pub fn excerpt(body: &[u8]) -> String {
    let mut end = body.len().min(EXCERPT_BYTES);
    let text = loop {
        match std::str::from_utf8(&body[..end]) {
            Ok(t) => break t.to_string(),
            // An incomplete character at the cut: drop its bytes.
            Err(e) if e.error_len().is_none() => end = e.valid_up_to(),
            Err(_) => break String::from_utf8_lossy(&body[..end]).into_owned(),
        }
    };
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_bounded_and_cut_at_characters() {
        assert_eq!(excerpt(b"bad key"), "bad key");
        let long = "é".repeat(400); // 800 bytes
        let e = excerpt(long.as_bytes());
        assert!(
            e.len() <= EXCERPT_BYTES && e.len() >= EXCERPT_BYTES - 1,
            "{}",
            e.len()
        );
        assert!(e.chars().all(|c| c == 'é'));
        let garbage = [0xff_u8; 600];
        assert!(excerpt(&garbage).chars().count() <= EXCERPT_BYTES);
        assert_eq!(excerpt(b""), "");
    }

    #[test]
    fn user_agent_names_the_version() {
        assert!(USER_AGENT.starts_with("sluice/0."));
        build_client(&ClientConfig::default()).unwrap();
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        // Bind and drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = build_client(&ClientConfig::default()).unwrap();
        let req = client
            .post(format!("http://127.0.0.1:{port}/"))
            .build()
            .unwrap();
        match send(&client, req, 0).await {
            Attempt::Failed { error, .. } => assert_eq!(error, TransportError::Connect),
            other => panic!("{other:?}"),
        }
    }
}
