//! Standard Webhooks signing and verification (<https://www.standardwebhooks.com/>,
//! `spec/standard-webhooks.md` in github.com/standard-webhooks/standard-webhooks).
//!
//! Every request carries three headers:
//! - `webhook-id`: the message id, stable across retries (Sluice uses the idempotency key);
//! - `webhook-timestamp`: unix seconds of this attempt;
//! - `webhook-signature`: `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`; several
//!   space-separated signatures may be present (key rotation), one valid is enough.
//!
//! The secret is given as `whsec_<base64>` (the key is the decoded bytes) or as raw text (the
//! key is its bytes). Invariants: the key never appears in `Debug` output or in errors;
//! verification compares in constant time and rejects timestamps outside the tolerance
//! ([`TIMESTAMP_TOLERANCE`]), as the spec requires against replays.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{Error, Result};

/// How far a `webhook-timestamp` may be from the verifier's clock; the spec's reference
/// libraries use five minutes.
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The prefix marking a base64 secret.
const SECRET_PREFIX: &str = "whsec_";

/// Header names of the spec.
pub const ID_HEADER: &str = "webhook-id";
/// Unix seconds of the attempt.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// `v1,<base64 signature>`.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

type HmacSha256 = Hmac<Sha256>;

/// An HMAC key for Standard Webhooks; prints as `***`.
#[derive(Clone)]
pub struct SigningKey {
    key: Vec<u8>,
}

/// Why a signature did not verify (no secret material in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `webhook-timestamp` is not a unix time in seconds.
    #[error("webhook-timestamp is not a unix time in seconds")]
    BadTimestamp,
    /// The timestamp is too far from now (replay or clock skew).
    #[error("webhook-timestamp is outside the tolerance of {}s", TIMESTAMP_TOLERANCE.as_secs())]
    Expired,
    /// No `v1` signature in the header matches.
    #[error("no webhook-signature matches")]
    Mismatch,
}

impl SigningKey {
    /// A key from a configured secret: `whsec_<base64>` or raw text.
    pub fn from_secret(secret: &str) -> Result<Self> {
        let key = match secret.strip_prefix(SECRET_PREFIX) {
            Some(b64) => STANDARD.decode(b64).map_err(|_| Error::InvalidSecret {
                reason: "a secret starting with whsec_ must continue with base64",
            })?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(Error::InvalidSecret {
                reason: "the signing secret is empty",
            });
        }
        Ok(SigningKey { key })
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length; new_from_slice cannot fail for it.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("hmac accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .mac(id, &timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// The three headers for one attempt at `timestamp` (unix seconds).
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        [
            (ID_HEADER, id.to_string()),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (SIGNATURE_HEADER, self.sign(id, timestamp, body)),
        ]
    }

    /// Verifies the headers of a received request at `now` (unix seconds).
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now: i64,
    ) -> std::result::Result<(), VerifyError> {
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| VerifyError::BadTimestamp)?;
        if ts.abs_diff(now) > TIMESTAMP_TOLERANCE.as_secs() {
            return Err(VerifyError::Expired);
        }
        let mac = self.mac(id, timestamp.trim(), body);
        let matched = signatures.split_whitespace().any(|sig| {
            sig.strip_prefix("v1,")
                .and_then(|b64| STANDARD.decode(b64).ok())
                .is_some_and(|tag| mac.clone().verify_slice(&tag).is_ok())
        });
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks reference libraries (also Svix's docs); we
    // recomputed it with Python's hmac module:
    // base64(hmac.new(b64decode(key), b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}', sha256))
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_published_vector() {
        let key = SigningKey::from_secret(SECRET).unwrap();
        assert_eq!(key.sign(ID, TS, BODY), SIG);
        let h = key.headers(ID, TS, BODY);
        assert_eq!(h[0], ("webhook-id", ID.to_string()));
        assert_eq!(h[1], ("webhook-timestamp", "1614265330".to_string()));
        assert_eq!(h[2].1, SIG);
    }

    #[test]
    fn verifies_and_rejects() {
        let key = SigningKey::from_secret(SECRET).unwrap();
        let ts = TS.to_string();
        assert_eq!(key.verify(ID, &ts, SIG, BODY, TS + 10), Ok(()));
        // One of several (rotation) is enough.
        let several = format!("v1,AAAA {SIG} v2,whatever");
        assert_eq!(key.verify(ID, &ts, &several, BODY, TS), Ok(()));
        let m = Err(VerifyError::Mismatch);
        assert_eq!(key.verify(ID, &ts, SIG, br#"{"test": 2432232315}"#, TS), m);
        assert_eq!(key.verify("msg_other", &ts, SIG, BODY, TS), m);
        assert_eq!(key.verify(ID, &ts, "v1,not base64!", BODY, TS), m);
        assert_eq!(key.verify(ID, &ts, "", BODY, TS), m);
        let other = SigningKey::from_secret("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(other.verify(ID, &ts, SIG, BODY, TS), m);
        assert_eq!(
            key.verify(ID, &ts, SIG, BODY, TS + 301),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            key.verify(ID, "yesterday", SIG, BODY, TS),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn raw_secrets_and_bad_secrets() {
        let raw = SigningKey::from_secret("plain secret").unwrap();
        let sig = raw.sign("id", 1, b"x");
        assert_eq!(raw.verify("id", "1", &sig, b"x", 1), Ok(()));
        let e = SigningKey::from_secret("whsec_***")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("***"), "{e}");
        assert!(SigningKey::from_secret("").is_err());
        assert!(SigningKey::from_secret("whsec_").is_err());
        assert_eq!(format!("{raw:?}"), "SigningKey(***)");
    }
}
