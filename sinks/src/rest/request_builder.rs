//! The REST sink's requests: one item alone, or several in one batch request (Kinto-style
//! sub-requests, or a list of rows). Every request carries the configured headers and the
//! deterministic `Idempotency-Key` of the changes it covers.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::http::IDEMPOTENCY_KEY_HEADER;

use super::config::{Batching, RestSettings};
use super::encoder::Item;

/// A request's method, URL and body, before headers.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Method.
    pub method: reqwest::Method,
    /// Absolute URL.
    pub url: String,
    /// JSON body, if any.
    pub body: Option<Bytes>,
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// One item as its own request (an upsert without a URL goes as a one-row batch; validation
/// allows no URL only with one, so `None` does not happen).
pub fn single(item: &Item, batch: Option<&Batching>) -> Option<Prepared> {
    match (&item.url, batch) {
        (Some(url), _) => Some(Prepared {
            method: item.method.clone(),
            url: url.clone(),
            body: item.body.as_ref().map(to_bytes),
        }),
        (None, Some(b)) => Some(rows(b, &[item])),
        (None, None) => None,
    }
}

/// Items as one `{"requests": [...]}` batch: each sub-request's path is its URL's path and
/// query (the batch endpoint's server runs them).
pub fn requests(batch: &Batching, items: &[&Item]) -> Prepared {
    let subs: Vec<Value> = items
        .iter()
        .map(|item| {
            let url = item.url.as_deref().unwrap_or_default();
            let path = reqwest::Url::parse(url).map_or_else(
                |_| url.to_string(),
                |u| match u.query() {
                    Some(q) => format!("{}?{q}", u.path()),
                    None => u.path().to_string(),
                },
            );
            let mut sub = json!({"method": item.method.as_str(), "path": path});
            if let Some(body) = &item.body {
                sub["body"] = body.clone();
            }
            sub
        })
        .collect();
    Prepared {
        method: reqwest::Method::POST,
        url: batch.url.to_string(),
        body: Some(to_bytes(&json!({ "requests": subs }))),
    }
}

/// Whole-row upserts as one `{"<field>": [<body>, ...]}` batch.
pub fn rows(batch: &Batching, items: &[&Item]) -> Prepared {
    let list: Vec<Value> = items
        .iter()
        .map(|i| i.body.clone().unwrap_or(Value::Null))
        .collect();
    let mut body = serde_json::Map::new();
    body.insert(batch.field.clone(), Value::Array(list));
    Prepared {
        method: reqwest::Method::POST,
        url: batch.url.to_string(),
        body: Some(to_bytes(&Value::Object(body))),
    }
}

/// The request of one attempt: method, URL, configured headers, idempotency key, body.
pub fn build(
    client: &reqwest::Client,
    settings: &RestSettings,
    prepared: &Prepared,
    key: &str,
) -> reqwest::RequestBuilder {
    let mut rb = client
        .request(prepared.method.clone(), &prepared.url)
        .header(IDEMPOTENCY_KEY_HEADER, key);
    for (name, value) in &settings.headers {
        rb = rb.header(name.clone(), value.clone());
    }
    if let Some(body) = &prepared.body {
        rb = rb
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
    }
    rb
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::config::BatchFormat;

    fn item(method: reqwest::Method, url: &str, body: Option<Value>) -> Item {
        Item {
            method,
            url: Some(url.into()),
            body,
            upsert: true,
            delete: false,
        }
    }

    #[test]
    fn batch_bodies() {
        let b = Batching {
            url: reqwest::Url::parse("http://127.0.0.1:8888/v1/batch").unwrap(),
            max_items: 25,
            format: BatchFormat::Requests,
            field: "rows".into(),
        };
        let a = item(
            reqwest::Method::PUT,
            "http://127.0.0.1:8888/v1/buckets/b/collections/c/records/1?x=%2F",
            Some(json!({"data": {"n": 1}})),
        );
        let d = item(
            reqwest::Method::DELETE,
            "http://127.0.0.1:8888/v1/buckets/b/collections/c/records/2",
            None,
        );
        let p = requests(&b, &[&a, &d]);
        let v: Value = serde_json::from_slice(p.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"requests": [
                {"method": "PUT", "path": "/v1/buckets/b/collections/c/records/1?x=%2F", "body": {"data": {"n": 1}}},
                {"method": "DELETE", "path": "/v1/buckets/b/collections/c/records/2"}]})
        );
        let p = rows(&b, &[&a]);
        let v: Value = serde_json::from_slice(p.body.as_ref().unwrap()).unwrap();
        assert_eq!(v, json!({"rows": [{"data": {"n": 1}}]}));
        assert_eq!(p.url, "http://127.0.0.1:8888/v1/batch");
    }
}
