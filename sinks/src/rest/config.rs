//! `[[sinks]] kind = "rest"`: the configuration and its validation (every problem at once,
//! each with its fix, before anything connects). Templates are checked against the tables'
//! columns by [`RestSettings::check_columns`] once the source's columns are known
//! (`sluice check`, `sluice run`).

use std::collections::{BTreeMap, HashMap};

use replication::change::TableName;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use crate::http::{check_url, ByteSize, SecretSource, SharedFields, SharedSettings};
use crate::webhook::config::{default_bytes, default_concurrency, default_rows, default_timeout};

use super::template::{Body, Text};

/// Most items per batch request accepted by validation.
const MAX_ITEMS: usize = 10_000;

/// A REST sink as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// Unique among the pipeline's sinks; names the cursor and the dead-letter table.
    pub name: String,
    /// Tables delivered, `schema.table` (default: every table of the pipeline).
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Key columns per table (default `id`): one object per key, changes of a key in order.
    #[serde(default)]
    pub keys: HashMap<String, Vec<String>>,
    /// Inserts, snapshot rows and updates of whole rows.
    pub upsert: RequestConfig,
    /// Updates of rows with unchanged (TOAST) columns: absent fields are left out (default:
    /// the upsert template with `PATCH` when the upsert is a `PUT`, else the upsert itself).
    #[serde(default)]
    pub update: Option<RequestConfig>,
    /// Deletes (404 and 410 count as done: the object is already gone).
    pub delete: RequestConfig,
    /// A batch endpoint, when the API has one.
    #[serde(default)]
    pub batch: Option<BatchConfig>,
    /// Extra request headers: a value, or `{ env = "VAR", prefix = "Bearer " }`.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderConfig>,
    /// Most changes the hub hands over at once (split into requests by key and `batch`).
    #[serde(default = "default_rows")]
    pub max_batch_rows: usize,
    /// Most bytes of rows the hub hands over at once.
    #[serde(default = "default_bytes")]
    pub max_batch_bytes: ByteSize,
    /// Rate windows, all respected at once: `["100/10s", "250000/day"]`.
    #[serde(default)]
    pub rate_limit: Vec<String>,
    /// Cap of requests in flight (AIMD adapts below it).
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Whole-request timeout (`"30s"`).
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

/// One request template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// `PUT`, `POST`, `PATCH` or `DELETE` (default `PUT` for upserts, `DELETE` for deletes).
    #[serde(default)]
    pub method: Option<String>,
    /// URL template (`https://api.example.com/contacts/{id}`); optional for an upsert sent
    /// only through a `format = "rows"` batch endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// JSON body template (default for upserts: the row's columns; deletes: no body).
    #[serde(default)]
    pub body: Option<Value>,
}

/// How the API batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchFormat {
    /// `{"requests": [{"method", "path", "body"}, …]}` answered by
    /// `{"responses": [{"status", "body"}, …]}` in the same order (Kinto's `/v1/batch`).
    Requests,
    /// `{"<field>": [<upsert body>, …]}`, all accepted or all refused (Datasette's
    /// `/-/upsert`); deletes and partial updates go one by one.
    Rows,
}

/// `batch = { url, max_items, format }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// The batch endpoint.
    pub url: String,
    /// Most items per request: the API's limit (a larger batch is never sent).
    pub max_items: usize,
    /// Request and response shape.
    pub format: BatchFormat,
    /// For `format = "rows"`: the field holding the list (default `"rows"`).
    #[serde(default)]
    pub field: Option<String>,
}

/// A header value as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderConfig {
    /// Sent as written.
    Value(String),
    /// From an environment variable (never logged).
    Secret(SecretSource),
}

/// A validated request template.
#[derive(Debug, Clone)]
pub struct Template {
    /// HTTP method.
    pub method: reqwest::Method,
    /// URL template (`None`: only through the batch endpoint).
    pub url: Option<Text>,
    /// Body template (`None`: the row as it is for upserts, nothing for deletes).
    pub body: Option<Body>,
}

/// A validated batch endpoint.
#[derive(Debug, Clone)]
pub struct Batching {
    /// The endpoint.
    pub url: reqwest::Url,
    /// Most items per request.
    pub max_items: usize,
    /// Shape.
    pub format: BatchFormat,
    /// The list's field for `rows`.
    pub field: String,
}

/// A validated REST sink.
#[derive(Clone)]
pub struct RestSettings {
    /// Name, tables, keys, batch limits, traffic shaping.
    pub shared: SharedSettings,
    /// Whole-row upserts.
    pub upsert: Template,
    /// Partial updates.
    pub update: Template,
    /// Deletes.
    pub delete: Template,
    /// The batch endpoint, if any.
    pub batch: Option<Batching>,
    /// Headers of every request (secret values marked sensitive).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for RestSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestSettings")
            .field("name", &self.shared.name)
            .field("tables", &self.shared.tables)
            .field(
                "batch",
                &self.batch.as_ref().map(|b| (b.format, b.max_items)),
            )
            .finish_non_exhaustive()
    }
}

impl RestConfig {
    /// Checks everything but the columns; `pipeline_tables` are the source's tables.
    pub fn validate(&self, pipeline_tables: &[TableName]) -> Result<RestSettings, Vec<String>> {
        let fields = SharedFields {
            kind: "rest",
            name: &self.name,
            tables: &self.tables,
            keys: &self.keys,
            max_batch_rows: self.max_batch_rows,
            max_batch_bytes: &self.max_batch_bytes,
            rate_limit: &self.rate_limit,
            max_concurrency: self.max_concurrency,
            timeout: &self.timeout,
        };
        let at = fields.at();
        let mut problems = Vec::new();
        let batch = self.batch.as_ref().and_then(|b| {
            let url = check_url(&at, "batch.url", &b.url, &mut problems);
            if !(1..=MAX_ITEMS).contains(&b.max_items) {
                problems.push(format!("{at}: batch.max_items {} is impossible: set it to the API's limit, between 1 and {MAX_ITEMS} (Kinto: 25, Datasette: its max_insert_rows)", b.max_items));
            }
            if b.field.is_some() && b.format != BatchFormat::Rows {
                problems.push(format!(
                    "{at}: batch.field is only read with format = \"rows\": remove it"
                ));
            }
            Some(Batching {
                url: url?,
                max_items: b.max_items,
                format: b.format,
                field: b.field.clone().unwrap_or_else(|| "rows".into()),
            })
        });
        let rows_batch = matches!(&batch, Some(b) if b.format == BatchFormat::Rows);
        let upsert = template(
            &at,
            "upsert",
            &self.upsert,
            "PUT",
            !rows_batch,
            &mut problems,
        );
        let update = match &self.update {
            Some(u) => template(&at, "update", u, "PATCH", true, &mut problems),
            None => upsert.clone().map(|mut t| {
                if t.method == reqwest::Method::PUT {
                    t.method = reqwest::Method::PATCH;
                }
                t
            }),
        };
        if self.update.is_none() && rows_batch && self.upsert.url.is_none() {
            problems.push(format!("{at}: rows with unchanged (TOAST) columns cannot go through a rows batch: add update = {{ method = \"PATCH\", url = \"…/{{id}}\" }}"));
        }
        let delete = template(&at, "delete", &self.delete, "DELETE", true, &mut problems);
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            let Ok(name_h) = HeaderName::from_bytes(name.as_bytes()) else {
                problems.push(format!(
                    "{at}: headers: {name:?} is not a header name: use letters, digits and -"
                ));
                continue;
            };
            let value = match value {
                HeaderConfig::Value(v) => HeaderValue::from_str(v).map_err(|_| {
                    format!("{at}: headers.{name}: the value holds characters not allowed in a header: remove control characters")
                }),
                HeaderConfig::Secret(source) => source
                    .resolve()
                    .and_then(|s| s.header_value(name))
                    .map_err(|e| format!("{at}: headers.{name}: {e}: export it before starting sluice")),
            };
            match value {
                Ok(v) => headers.push((name_h, v)),
                Err(p) => problems.push(p),
            }
        }
        let shared = fields.validate(pipeline_tables, &mut problems);
        match (shared, upsert, update, delete) {
            (Some(shared), Some(upsert), Some(update), Some(delete)) if problems.is_empty() => {
                Ok(RestSettings {
                    shared,
                    upsert,
                    update,
                    delete,
                    batch,
                    headers,
                })
            }
            _ => Err(problems),
        }
    }
}

fn template(
    at: &str,
    what: &str,
    c: &RequestConfig,
    default_method: &str,
    url_required: bool,
    problems: &mut Vec<String>,
) -> Option<Template> {
    let before = problems.len();
    let method = c
        .method
        .as_deref()
        .unwrap_or(default_method)
        .to_ascii_uppercase();
    let method = match method.as_str() {
        "PUT" | "POST" | "PATCH" | "DELETE" => reqwest::Method::from_bytes(method.as_bytes()).ok(),
        _ => {
            problems.push(format!(
                "{at}: {what}.method {method:?} is not one of PUT, POST, PATCH, DELETE"
            ));
            None
        }
    };
    let url = match &c.url {
        None if url_required => {
            problems.push(format!(
                "{at}: {what}.url is missing: write e.g. url = \"https://api.example.com/contacts/{{id}}\""
            ));
            None
        }
        None => None,
        Some(u) => match Text::parse(u) {
            Ok(t) => {
                // The host must be written out: a placeholder there could send rows anywhere.
                let prefix = t.prefix();
                let host_written = prefix
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.contains('/') || t.columns().next().is_none());
                if !host_written {
                    problems.push(format!("{at}: {what}.url must spell out scheme and host before any {{column}}, e.g. \"https://api.example.com/contacts/{{id}}\""));
                } else {
                    check_url(at, &format!("{what}.url"), &t.sample("x"), problems);
                }
                Some(t)
            }
            Err(e) => {
                problems.push(format!("{at}: {what}.url: {e}"));
                None
            }
        },
    };
    let body = match &c.body {
        None => None,
        Some(b) => match Body::parse(b) {
            Ok(b) => Some(b),
            Err(e) => {
                problems.push(format!("{at}: {what}.body: {e}"));
                None
            }
        },
    };
    if problems.len() > before {
        return None;
    }
    Some(Template {
        method: method?,
        url,
        body,
    })
}

impl RestSettings {
    /// Every template column not among `columns` of `table`, as problems with their fix.
    pub fn check_columns(&self, table: &TableName, columns: &[String]) -> Vec<String> {
        let at = format!("[[sinks]] rest {:?}", self.shared.name);
        let mut problems = Vec::new();
        let keys = self
            .shared
            .keys
            .0
            .get(table)
            .cloned()
            .unwrap_or_else(|| vec!["id".to_string()]);
        for k in &keys {
            if !columns.contains(k) {
                problems.push(format!("{at}: table {table} has no key column {k:?}: set keys = {{ \"{table}\" = [\"<primary key column>\"] }}"));
            }
        }
        for (what, t) in [
            ("upsert", &self.upsert),
            ("update", &self.update),
            ("delete", &self.delete),
        ] {
            let mut named: Vec<&str> = t.url.iter().flat_map(|u| u.columns()).collect();
            if let Some(b) = &t.body {
                named.extend(b.columns());
            }
            named.sort_unstable();
            named.dedup();
            for c in named {
                if !columns.iter().any(|have| have == c) {
                    problems.push(format!("{at}: {what} names column {{{c}}}, which table {table} does not have: use one of {}", columns.join(", ")));
                }
            }
            if what == "delete" {
                // A delete carries only the key: other columns are not in the changelog row
                // of a delete under REPLICA IDENTITY DEFAULT.
                for c in t.url.iter().flat_map(|u| u.columns()) {
                    if columns.iter().any(|have| have == c) && !keys.iter().any(|k| k == c) {
                        problems.push(format!("{at}: delete.url names {{{c}}}, which is not a key column of {table}: a delete carries only its key ({})", keys.join(", ")));
                    }
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> RestConfig {
        toml::from_str(text).unwrap()
    }

    fn customers() -> Vec<TableName> {
        vec![TableName::parse("public.customers").unwrap()]
    }

    #[test]
    fn reports_every_problem_with_its_fix() {
        let c = config(
            r#"
            name = "crm"
            upsert = { method = "FETCH", url = "https://{host}/c/{id}" }
            delete = { url = "ftp://x/{id}" }
            batch = { url = "https://crm.example.com/batch", max_items = 0, format = "requests", field = "x" }
            headers = { Authorization = { env = "SLUICE_TEST_SURELY_UNSET_TOKEN", prefix = "Bearer " } }
            "#,
        );
        let problems = c.validate(&customers()).unwrap_err();
        for fix in [
            "between 1 and",
            "remove it",
            "PUT, POST, PATCH, DELETE",
            "spell out scheme and host",
            "http:// or https://",
            "export it",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(fix)),
                "{fix}: {problems:#?}"
            );
        }
        assert!(
            !problems.iter().any(|p| p.contains("SURELY_UNSET_TOKEN=")),
            "{problems:#?}"
        );
    }

    #[test]
    fn defaults_and_column_checks() {
        let ok = config(
            r#"
            name = "crm"
            upsert = { url = "https://crm.example.com/c/{id}", body = { data = { email = "{email}" } } }
            delete = { url = "https://crm.example.com/c/{id}?by={email}" }
            headers = { "X-Api-Version" = "2" }
            "#,
        )
        .validate(&customers())
        .unwrap();
        assert_eq!(ok.upsert.method, reqwest::Method::PUT);
        assert_eq!(ok.update.method, reqwest::Method::PATCH);
        assert_eq!(ok.delete.method, reqwest::Method::DELETE);
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let t = &customers()[0];
        let problems = ok.check_columns(t, &cols(&["id", "mail"]));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("{email}") && p.contains("id, mail")),
            "{problems:#?}"
        );
        let problems = ok.check_columns(t, &cols(&["id", "email"]));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("carries only its key"),
            "{problems:#?}"
        );
        let problems = ok.check_columns(t, &cols(&["cid", "email"]));
        assert!(
            problems.iter().any(|p| p.contains("no key column \"id\"")),
            "{problems:#?}"
        );
    }

    #[test]
    fn rows_batches_need_an_update_template_without_an_upsert_url() {
        let text = r#"
            name = "ds"
            upsert = { method = "POST" }
            delete = { method = "POST", url = "http://127.0.0.1:8001/shop/c/{id}/-/delete" }
            batch = { url = "http://127.0.0.1:8001/shop/c/-/upsert", max_items = 100, format = "rows" }
            "#;
        let problems = config(text).validate(&customers()).unwrap_err();
        assert!(problems[0].contains("add update ="), "{problems:#?}");
        let ok = config(&format!(
            "{text}\nupdate = {{ method = \"POST\", url = \"http://127.0.0.1:8001/shop/c/{{id}}/-/update\", body = {{ update = {{ n = \"{{n}}\" }} }} }}"
        ))
        .validate(&customers())
        .unwrap();
        assert_eq!(ok.batch.unwrap().field, "rows");
    }
}
