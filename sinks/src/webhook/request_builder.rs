//! One attempt's request: `POST url` with the JSON body, `Idempotency-Key` and `webhook-id`
//! (the same on every attempt), and a fresh `webhook-timestamp` / `webhook-signature` when a
//! secret is configured.

use crate::http::{SigningKey, IDEMPOTENCY_KEY_HEADER, ID_HEADER};

use super::encoder::Encoded;

/// The request of one attempt at `now` (unix seconds).
pub fn build_request(
    client: &reqwest::Client,
    url: &reqwest::Url,
    encoded: &Encoded,
    signing: Option<&SigningKey>,
    now: i64,
) -> reqwest::RequestBuilder {
    let mut rb = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_KEY_HEADER, &encoded.key);
    match signing {
        Some(key) => {
            for (name, value) in key.headers(&encoded.key, now, &encoded.body) {
                rb = rb.header(name, value);
            }
        }
        None => rb = rb.header(ID_HEADER, &encoded.key),
    }
    rb.body(encoded.body.clone())
}
