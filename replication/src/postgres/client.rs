//! A minimal PostgreSQL wire-protocol client for the replication connection.
//!
//! tokio-postgres cannot open a connection with `replication=database`, so this module speaks
//! the protocol itself, using postgres-protocol only to encode frontend messages and for the
//! SCRAM/MD5 arithmetic. It implements exactly what the replication connection needs:
//!
//! ```text
//!  connect ─▶ [SSLRequest ─▶ TLS] ─▶ StartupMessage ─▶ auth (trust|cleartext|md5|SCRAM)
//!          ─▶ ReadyForQuery ─▶ simple Query* ─▶ START_REPLICATION ─▶ 'W' CopyBothResponse
//!          ─▶ CopyData ('w' XLogData | 'k' keepalive) in, CopyData ('r' status) out
//! ```
//!
//! Reading is cancel-safe: [`Client::recv_copy_data`] only ever `read_buf`s into an owned
//! buffer and parses complete frames from it, so the reader may drop the future in a
//! `select!` to send a status update and call it again without losing bytes.
//! Protocol: <https://www.postgresql.org/docs/current/protocol-flow.html>.

use std::collections::HashMap;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conninfo::{ConnInfo, SslMode};
use super::tls;
use crate::{Error, Result};

/// Largest backend message accepted; larger lengths are treated as a protocol violation
/// rather than an allocation request (1 GiB is PostgreSQL's own limit on a field).
const MAX_MESSAGE_LEN: usize = 1 << 30;
/// Initial read buffer; grows with the largest message seen.
const READ_BUFFER: usize = 128 * 1024;
/// The SSLRequest code from the protocol documentation.
const SSL_REQUEST_CODE: i32 = 80877103;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One backend message: its tag byte and body.
struct Message {
    tag: u8,
    body: Bytes,
}

/// The result rows of a simple query, as text.
pub type Rows = Vec<Vec<Option<String>>>;

/// A connection speaking the replication protocol.
pub struct Client {
    io: Box<dyn Io>,
    read: BytesMut,
    write: BytesMut,
    params: HashMap<String, String>,
}

impl Client {
    /// Connect, negotiate TLS, authenticate, and wait for ReadyForQuery.
    ///
    /// `replication` is the value of the `replication` startup parameter (`database` for
    /// logical replication), or `None` for an ordinary session.
    pub async fn connect(info: &ConnInfo, replication: Option<&str>) -> Result<Self> {
        let tcp = TcpStream::connect((info.host.as_str(), info.port))
            .await
            .map_err(|source| Error::Connect {
                addr: info.addr(),
                source,
            })?;
        tcp.set_nodelay(true)?;
        let io = negotiate_tls(tcp, info).await?;
        let mut client = Client {
            io,
            read: BytesMut::with_capacity(READ_BUFFER),
            write: BytesMut::with_capacity(1024),
            params: HashMap::new(),
        };
        client.startup(info, replication).await?;
        Ok(client)
    }

    /// A server parameter reported at startup, such as `server_version`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The server's major version (e.g. 15), from `server_version`.
    pub fn server_major_version(&self) -> u32 {
        self.parameter("server_version")
            .and_then(|v| {
                v.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse().ok())
            })
            .unwrap_or(0)
    }

    async fn startup(&mut self, info: &ConnInfo, replication: Option<&str>) -> Result<()> {
        // Text-format output (the per-column fallback) must not depend on server defaults.
        let mut params = vec![
            ("user", info.user.as_str()),
            ("database", info.dbname.as_str()),
            ("application_name", "sluice"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, YMD"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "iso_8601"),
            ("extra_float_digits", "3"),
            ("bytea_output", "hex"),
        ];
        if let Some(r) = replication {
            params.push(("replication", r));
        }
        frontend::startup_message(params, &mut self.write)?;
        self.flush().await?;
        self.authenticate(info).await?;
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'Z' => return Ok(()),
                b'S' => {
                    let mut parts = msg.body.split(|b| *b == 0);
                    if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                        self.params.insert(
                            String::from_utf8_lossy(name).into_owned(),
                            String::from_utf8_lossy(value).into_owned(),
                        );
                    }
                }
                b'K' | b'N' => {}
                b'E' => return Err(server_error(&msg.body)),
                tag => return Err(unexpected(tag, "startup")),
            }
        }
    }

    async fn authenticate(&mut self, info: &ConnInfo) -> Result<()> {
        let password = || {
            info.password.clone().ok_or_else(|| Error::Auth {
                user: info.user.clone(),
                message: format!(
                    "the server asks for a password: put it in the url or in {}",
                    super::conninfo::PASSWORD_ENV
                ),
            })
        };
        let auth_error = |body: &Bytes| match server_error(body) {
            Error::Server { message, .. } => Error::Auth {
                user: info.user.clone(),
                message,
            },
            other => other,
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'R' => {}
                b'E' => return Err(auth_error(&msg.body)),
                tag => return Err(unexpected(tag, "authentication")),
            }
            let mut body = msg.body;
            let code = get_i32(&mut body)?;
            match code {
                0 => return Ok(()),
                3 => {
                    let p = password()?;
                    frontend::password_message(p.expose().as_bytes(), &mut self.write)?;
                }
                5 => {
                    let salt: [u8; 4] = body
                        .get(..4)
                        .and_then(|s| s.try_into().ok())
                        .ok_or_else(|| Error::Protocol("short md5 salt".into()))?;
                    let p = password()?;
                    let hash = md5_hash(info.user.as_bytes(), p.expose().as_bytes(), salt);
                    frontend::password_message(hash.as_bytes(), &mut self.write)?;
                }
                10 => {
                    let offers_scram = body
                        .split(|b| *b == 0)
                        .any(|m| m == SCRAM_SHA_256.as_bytes());
                    if !offers_scram {
                        return Err(Error::UnsupportedAuth { code });
                    }
                    let p = password()?;
                    // Channel binding is not offered: 'n' is accepted with or without TLS.
                    let s = ScramSha256::new(p.expose().as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.write)?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| Error::Protocol("SASL continue without start".into()))?;
                    s.update(&body).map_err(|e| Error::Auth {
                        user: info.user.clone(),
                        message: e.to_string(),
                    })?;
                    frontend::sasl_response(s.message(), &mut self.write)?;
                }
                12 => {
                    let mut s = scram
                        .take()
                        .ok_or_else(|| Error::Protocol("SASL final without start".into()))?;
                    s.finish(&body).map_err(|e| Error::Auth {
                        user: info.user.clone(),
                        message: format!("server signature rejected: {e}"),
                    })?;
                    continue;
                }
                code => return Err(Error::UnsupportedAuth { code }),
            }
            self.flush().await?;
        }
    }

    /// Run one statement with the simple query protocol and return its rows as text.
    ///
    /// Used only for replication commands and statements without values: values are bound on
    /// the SQL connection, never pasted into text here.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Rows> {
        frontend::query(sql, &mut self.write)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'T' | b'C' | b'I' | b'N' | b'S' => {}
                b'D' => rows.push(parse_data_row(msg.body)?),
                b'E' => error = Some(server_error(&msg.body)),
                b'Z' => return error.map_or(Ok(rows), Err),
                tag => return Err(unexpected(tag, "simple query")),
            }
        }
    }

    /// Send a `START_REPLICATION` command and wait for CopyBothResponse ('W', which
    /// postgres-protocol does not parse: it is handled here).
    pub async fn start_copy_both(&mut self, command: &str) -> Result<()> {
        frontend::query(command, &mut self.write)?;
        self.flush().await?;
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'W' => return Ok(()),
                b'N' | b'S' => {}
                b'E' => return Err(server_error(&msg.body)),
                tag => return Err(unexpected(tag, "START_REPLICATION")),
            }
        }
    }

    /// The next CopyData payload; `None` when the server ends the copy (CopyDone, or the
    /// CommandComplete a walsender sends when it stops the stream at shutdown). Cancel-safe.
    pub async fn recv_copy_data(&mut self) -> Result<Option<Bytes>> {
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'd' => return Ok(Some(msg.body)),
                b'c' | b'C' => return Ok(None),
                b'N' | b'S' => {}
                b'E' => return Err(server_error(&msg.body)),
                tag => return Err(unexpected(tag, "replication stream")),
            }
        }
    }

    /// Send one CopyData message and flush it.
    pub async fn send_copy_data(&mut self, payload: &[u8]) -> Result<()> {
        self.write.extend_from_slice(b"d");
        self.write
            .extend_from_slice(&((payload.len() + 4) as i32).to_be_bytes());
        self.write.extend_from_slice(payload);
        self.flush().await
    }

    /// End COPY BOTH: send CopyDone and read (discarding any remaining stream data) until the
    /// server has finished the command. Everything sent before, such as a final status update,
    /// has then been processed; closing the socket with unread data could instead reset the
    /// connection and lose it.
    pub async fn end_copy(&mut self) -> Result<()> {
        frontend::copy_done(&mut self.write);
        self.flush().await?;
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'Z' => return Ok(()),
                b'd' | b'c' | b'C' | b'N' | b'S' => {}
                b'E' => return Err(server_error(&msg.body)),
                tag => return Err(unexpected(tag, "ending replication")),
            }
        }
    }

    /// Politely end the session.
    pub async fn terminate(mut self) {
        frontend::terminate(&mut self.write);
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }

    async fn flush(&mut self) -> Result<()> {
        self.io.write_all(&self.write).await?;
        self.io.flush().await?;
        self.write.clear();
        Ok(())
    }

    /// Read one complete backend message. Cancel-safe (see the module docs).
    async fn read_message(&mut self) -> Result<Message> {
        loop {
            if self.read.len() >= 5 {
                let len =
                    i32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]]);
                let len = usize::try_from(len)
                    .ok()
                    .filter(|l| (4..=MAX_MESSAGE_LEN).contains(l))
                    .ok_or_else(|| Error::Protocol(format!("invalid message length {len}")))?;
                if self.read.len() > len {
                    let tag = self.read[0];
                    self.read.advance(5);
                    let body = self.read.split_to(len - 4).freeze();
                    return Ok(Message { tag, body });
                }
                self.read.reserve(len + 1 - self.read.len());
            }
            if self.read.capacity() - self.read.len() < 8192 {
                self.read.reserve(READ_BUFFER);
            }
            let n = self.io.read_buf(&mut self.read).await?;
            if n == 0 {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )));
            }
        }
    }
}

async fn negotiate_tls(mut tcp: TcpStream, info: &ConnInfo) -> Result<Box<dyn Io>> {
    let Some(config) = tls::client_config(info)? else {
        return Ok(Box::new(tcp));
    };
    let mut request = [0u8; 8];
    request[..4].copy_from_slice(&8i32.to_be_bytes());
    request[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    tcp.write_all(&request).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let connector = tokio_rustls::TlsConnector::from(config);
            let stream = connector
                .connect(tls::server_name(info)?, tcp)
                .await
                .map_err(|e| Error::Tls {
                    reason: format!("handshake with {} failed: {e}", info.addr()),
                })?;
            Ok(Box::new(stream))
        }
        b'N' if info.ssl_mode == SslMode::Prefer => Ok(Box::new(tcp)),
        b'N' => Err(Error::Tls {
            reason: format!(
                "server {} does not accept tls but sslmode requires it: enable ssl on the server or use sslmode=prefer",
                info.addr()
            ),
        }),
        other => Err(unexpected(other, "ssl negotiation")),
    }
}

fn get_i32(body: &mut Bytes) -> Result<i32> {
    if body.remaining() < 4 {
        return Err(Error::Protocol("short message".into()));
    }
    Ok(body.get_i32())
}

fn parse_data_row(mut body: Bytes) -> Result<Vec<Option<String>>> {
    if body.remaining() < 2 {
        return Err(Error::Protocol("short DataRow".into()));
    }
    let n = body.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = get_i32(&mut body)?;
        if len < 0 {
            row.push(None);
            continue;
        }
        let len = len as usize;
        if body.remaining() < len {
            return Err(Error::Protocol("short DataRow value".into()));
        }
        let value = body.split_to(len);
        row.push(Some(String::from_utf8_lossy(&value).into_owned()));
    }
    Ok(row)
}

/// Turn an ErrorResponse body into [`Error::Server`] (code and message only: the detail
/// field can quote row values, which must never reach logs).
fn server_error(body: &[u8]) -> Error {
    let mut code = String::new();
    let mut message = String::new();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match field {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    Error::Server { code, message }
}

fn unexpected(tag: u8, during: &str) -> Error {
    Error::Protocol(format!(
        "unexpected message {:?} during {during}",
        char::from(tag)
    ))
}
