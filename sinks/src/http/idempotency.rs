//! Deterministic idempotency keys for HTTP deliveries.
//!
//! A request delivers the changes of one table from position `first` to `last` (both
//! inclusive, each a (commit lsn, seq) pair of the changelog). Its key is
//!
//! ```text
//!   hex(SHA-256("sluice-idem-v1" ‖ len‖pipeline ‖ len‖sink ‖ len‖table ‖
//!               first.lsn ‖ first.seq ‖ last.lsn ‖ last.seq)[..16])
//! ```
//!
//! with lengths and numbers as big-endian u64 (so `("ab","c")` and `("a","bc")` differ). 32
//! hex characters (128 bits): short enough for every API's key limit, collision-free in
//! practice. Invariants: the same changes of the same sink always get the same key, after
//! any restart or retry, so an idempotent receiver applies them once; changing the pipeline,
//! sink or table name, or the batch boundaries, gives a new key. The sink must therefore cut
//! batches deterministically (or remember the boundaries it sent) for retries to reuse keys.
//! The same key is sent as `Idempotency-Key` and as `webhook-id`.

use sha2::{Digest, Sha256};

/// Version tag of the derivation; a new scheme would change it (and so every key).
const DOMAIN: &[u8] = b"sluice-idem-v1";

/// Bytes of the hash kept (hex doubles them).
const KEY_BYTES: usize = 16;

/// The `Idempotency-Key` header name (IETF draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// A changelog position: commit position and ordinal in the transaction.
pub type ChangePosition = (u64, i64);

/// The key of the request delivering `table`'s changes `first..=last` for `sink` of
/// `pipeline`.
pub fn idempotency_key(
    pipeline: &str,
    sink: &str,
    table: &str,
    first: ChangePosition,
    last: ChangePosition,
) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    for s in [pipeline, sink, table] {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    for (lsn, seq) in [first, last] {
        h.update(lsn.to_be_bytes());
        h.update(seq.to_be_bytes());
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(KEY_BYTES * 2);
    for b in &digest[..KEY_BYTES] {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_short_and_distinct() {
        let k = idempotency_key("shop", "orders_hook", "public.orders", (100, 0), (100, 9));
        assert_eq!(k.len(), 32);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        // Pinned (computed independently with Python hashlib): the derivation is a contract
        // with receivers that stored earlier keys.
        assert_eq!(
            k,
            idempotency_key("shop", "orders_hook", "public.orders", (100, 0), (100, 9))
        );
        assert_eq!(k, "0654c12c14feee8eab623a52cbb94f5b");
        let others = [
            idempotency_key("shop2", "orders_hook", "public.orders", (100, 0), (100, 9)),
            idempotency_key("shop", "orders_hook2", "public.orders", (100, 0), (100, 9)),
            idempotency_key("shop", "orders_hook", "public.order", (100, 0), (100, 9)),
            idempotency_key("shop", "orders_hook", "public.orders", (100, 1), (100, 9)),
            idempotency_key("shop", "orders_hook", "public.orders", (100, 0), (101, 9)),
            // Length prefixes: moving a character between fields changes the key.
            idempotency_key("sho", "porders_hook", "public.orders", (100, 0), (100, 9)),
        ];
        for o in others {
            assert_ne!(k, o);
        }
    }
}
