//! The TOML configuration: plain serde structs, unknown fields rejected, every problem
//! reported at once by [`Config::validate`] before anything connects.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::HashMap;

use replication::change::TableName;
use replication::evolution::{SchemaPolicies, SchemaPolicy};
use replication::health::SourceHealth;
use replication::mysql::conninfo::MyConnInfo;
use replication::postgres::conninfo::ConnInfo;
use serde::Deserialize;
use sinks::hub::HubPosition;
use sinks::rest::RestConfig;
use sinks::webhook::WebhookConfig;

use crate::hub::HubSinkSettings;

/// A whole pipeline: one source, its sinks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Pipeline identity and core settings.
    pub pipeline: PipelineConfig,
    /// Where changes come from.
    pub source: SourceConfig,
    /// Where changes go.
    pub sinks: Vec<SinkConfig>,
    /// The metrics listener (off unless configured).
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
}

/// `[metrics]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`, e.g. `"127.0.0.1:9187"`.
    pub listen: String,
    /// `/readyz` answers 503 while the lag in seconds is above this.
    #[serde(default = "default_ready_lag", with = "humantime_serde")]
    pub ready_max_lag: Duration,
}

fn default_ready_lag() -> Duration {
    Duration::from_secs(60)
}

/// The validated `[metrics]`.
#[derive(Debug, Clone, Copy)]
pub struct MetricsSettings {
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// Readiness bound on the lag.
    pub ready_max_lag: Duration,
}

impl MetricsConfig {
    fn validate(&self, problems: &mut Vec<String>) -> Option<MetricsSettings> {
        match self.listen.parse() {
            Ok(listen) => Some(MetricsSettings {
                listen,
                ready_max_lag: self.ready_max_lag,
            }),
            Err(_) => {
                problems.push(format!(
                    "[metrics] listen = {:?} is not an address:port: write e.g. \"127.0.0.1:9187\" (or \"0.0.0.0:9187\" for every interface)",
                    self.listen
                ));
                None
            }
        }
    }
}

/// `[pipeline]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Names the pipeline: default slot and publication names, the Delta `txn` appId.
    pub name: String,
    /// Memory budget of decoded batches queued between the source and the sinks.
    #[serde(default = "default_inflight", deserialize_with = "de_bytes")]
    pub max_inflight_bytes: usize,
    /// What a change of a source table's columns does: `evolve` (default), `resnapshot` or
    /// `stop` (see the README's schema-drift section).
    #[serde(default)]
    pub on_schema_change: SchemaPolicy,
    /// Per-table overrides of `on_schema_change`: `"schema.table" = "stop"`.
    #[serde(default)]
    pub on_schema_change_tables: HashMap<String, SchemaPolicy>,
    /// Where the changelog is kept when no `kind = "delta"` sink is configured (a local
    /// journal the hub sinks read; default `./sluice-journal`).
    #[serde(default)]
    pub journal: Option<PathBuf>,
}

/// `[source]`
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// PostgreSQL logical replication (pgoutput).
    Postgres {
        /// `postgres://user[:password]@host:port/db?sslmode=…`; the password may instead come
        /// from `SLUICE_SOURCE_PASSWORD`.
        url: String,
        /// Tables to replicate, `schema.table`.
        tables: Vec<String>,
        /// Replication slot; default `sluice_<pipeline name>`.
        slot: Option<String>,
        /// Publication; default `sluice_<pipeline name>`.
        publication: Option<String>,
        /// Copy the tables' existing rows when the slot is created.
        #[serde(default)]
        snapshot: SnapshotMode,
        /// Parallel connections of the initial snapshot; default: the number of cores.
        snapshot_workers: Option<usize>,
        /// Table blocks (8 KiB) per snapshot COPY.
        #[serde(default = "default_chunk_pages")]
        snapshot_chunk_pages: u64,
        /// Most rows per chunk of an incremental snapshot (held in memory while its window is
        /// open; fewer when they would take more than half of max_inflight_bytes).
        #[serde(default = "default_chunk_rows")]
        snapshot_chunk_rows: usize,
        /// While streaming, write a heartbeat into the WAL this often (`"10s"`; off by
        /// default), so that the slot of a database that is idle while others in the same
        /// cluster are busy keeps moving and the lag in seconds stays meaningful. At least 1s.
        #[serde(default, with = "humantime_serde::option")]
        heartbeat: Option<Duration>,
        /// Warn when the WAL the slot retains passes this share of the server's
        /// `max_slot_wal_keep_size` (never when that is -1, unlimited). Between 0 and 1.
        #[serde(default = "default_wal_warn_share")]
        wal_warn_share: f64,
    },
    /// MySQL 8 / MariaDB 10.5+ binlog (ROW events).
    Mysql {
        /// `mysql://user[:password]@host:port/database`; the password may instead come from
        /// `SLUICE_SOURCE_PASSWORD`.
        url: String,
        /// Tables to replicate, `database.table`.
        tables: Vec<String>,
        /// This replica's id, unique among the server's replicas (and not the server's own).
        server_id: Option<u32>,
        /// Copy the tables' existing rows on the first run.
        #[serde(default)]
        snapshot: SnapshotMode,
        /// Most rows per chunk of an incremental snapshot (tables added later, or left by an
        /// interrupted initial load); fewer when they would take more than half of
        /// max_inflight_bytes.
        #[serde(default = "default_chunk_rows")]
        snapshot_chunk_rows: usize,
    },
}

/// `[source] snapshot`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Copy every table when the slot is created, then stream.
    #[default]
    Initial,
    /// Only stream changes made after the slot exists.
    Never,
    /// Copy every table and exit (a temporary slot; nothing streams).
    InitialOnly,
}

/// `[[sinks]]`
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// Delta Lake changelog tables, one per source table under `path/schema/table`.
    Delta {
        /// Directory holding the tables.
        path: PathBuf,
        /// A batch closes (at a transaction boundary) after this many rows.
        #[serde(default = "default_batch_rows")]
        max_batch_rows: usize,
        /// … or after about this many bytes.
        #[serde(default = "default_batch_bytes", deserialize_with = "de_bytes")]
        max_batch_bytes: usize,
        /// … or this long after its first row.
        #[serde(default = "default_latency", with = "humantime_serde")]
        max_batch_latency: Duration,
    },
    /// A hub sink: batches of change events POSTed as JSON, read from the changelog with its
    /// own cursor (see the README's "Hub sinks and webhooks").
    Webhook(WebhookConfig),
    /// A hub sink: one object per source row in a REST API, from templates.
    Rest(Box<RestConfig>),
}

impl SinkConfig {
    /// The name of a hub sink.
    fn hub_name(&self) -> Option<&str> {
        match self {
            SinkConfig::Delta { .. } => None,
            SinkConfig::Webhook(w) => Some(&w.name),
            SinkConfig::Rest(r) => Some(&r.name),
        }
    }
}

fn default_chunk_rows() -> usize {
    100_000
}

fn default_chunk_pages() -> u64 {
    4096
}
fn default_inflight() -> usize {
    64 << 20
}
fn default_batch_rows() -> usize {
    100_000
}
fn default_batch_bytes() -> usize {
    32 << 20
}

fn default_wal_warn_share() -> f64 {
    0.8
}

fn default_latency() -> Duration {
    Duration::from_secs(1)
}

mod humantime_serde {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}): write e.g. \"500ms\" or \"2s\""
            ))
        })
    }

    /// An optional duration (absent: `None`).
    pub mod option {
        use serde::Deserializer;
        use std::time::Duration;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

/// A byte size: a number, or a string like `"64MiB"`, `"512KB"`.
fn de_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n as usize),
        Raw::S(s) => sinks::bytesize::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid size {s:?}: write e.g. \"64MiB\" or 1048576"
            ))
        }),
    }
}

/// A validated configuration, by source kind.
#[derive(Debug, Clone)]
pub enum Validated {
    /// PostgreSQL logical replication.
    Postgres(Settings),
    /// MySQL/MariaDB binlog.
    Mysql(MySettings),
}

/// The sink part of a configuration.
struct Sink {
    lake: PathBuf,
    max_batch_rows: usize,
    max_batch_bytes: usize,
    max_batch_latency: Duration,
}

/// The validated settings of a MySQL/MariaDB → Delta pipeline.
#[derive(Debug, Clone)]
pub struct MySettings {
    pub name: String,
    pub policies: SchemaPolicies,
    pub info: MyConnInfo,
    pub tables: Vec<TableName>,
    pub server_id: u32,
    pub snapshot: SnapshotMode,
    pub snapshot_chunk_rows: usize,
    pub lake: PathBuf,
    pub max_batch_rows: usize,
    pub max_batch_bytes: usize,
    pub max_batch_latency: Duration,
    pub max_inflight_bytes: usize,
    /// The hub sinks (webhooks, REST APIs) reading the changelog.
    pub hub_sinks: Vec<HubSinkSettings>,
    /// Where the Delta sink publishes the hub position (replaced by `sluice run` with the
    /// run's own, which outlives configuration reloads).
    pub hub: HubPosition,
    /// The metrics listener, if configured.
    pub metrics: Option<MetricsSettings>,
    /// What the run shares about the source's health: the newest durable commit time and
    /// (PostgreSQL) the slot's WAL retention. Replaced by `sluice run` with the run's own (see
    /// [`Validated::share_health`]), which outlives configuration reloads.
    pub health: SourceHealth,
}

/// The validated settings of a PostgreSQL → Delta pipeline.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub policies: SchemaPolicies,
    pub conninfo: ConnInfo,
    pub tables: Vec<TableName>,
    pub slot: String,
    pub publication: String,
    pub lake: PathBuf,
    pub max_batch_rows: usize,
    pub max_batch_bytes: usize,
    pub max_batch_latency: Duration,
    pub max_inflight_bytes: usize,
    pub snapshot: SnapshotMode,
    pub snapshot_workers: usize,
    pub snapshot_chunk_pages: u64,
    pub snapshot_chunk_rows: usize,
    /// The hub sinks (webhooks, REST APIs) reading the changelog.
    pub hub_sinks: Vec<HubSinkSettings>,
    /// Where the Delta sink publishes the hub position (see [`MySettings::hub`]).
    pub hub: HubPosition,
    /// The metrics listener, if configured.
    pub metrics: Option<MetricsSettings>,
    /// What the run shares about the source's health (see [`MySettings::health`]).
    pub health: SourceHealth,
    /// How often a heartbeat is written into the WAL while streaming; `None`: never.
    pub heartbeat: Option<Duration>,
    /// Warn when the slot's retained WAL passes this share of `max_slot_wal_keep_size`.
    pub wal_warn_share: f64,
}

/// The schema-change policies, each override naming one of the pipeline's `tables`.
fn policies(
    pipeline: &PipelineConfig,
    tables: &[TableName],
    problems: &mut Vec<String>,
) -> SchemaPolicies {
    let mut out = SchemaPolicies {
        default: pipeline.on_schema_change,
        tables: HashMap::new(),
    };
    let mut names: Vec<_> = pipeline.on_schema_change_tables.iter().collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    for (name, policy) in names {
        match TableName::parse(name).filter(|t| tables.contains(t)) {
            Some(t) => {
                out.tables.insert(t, *policy);
            }
            None => problems.push(format!(
                "[pipeline] on_schema_change_tables names {name:?}, which is not one of the [source] tables: fix the name or remove it"
            )),
        }
    }
    out
}

fn check_chunk_rows(rows: usize, problems: &mut Vec<String>) {
    if !(1..=10_000_000).contains(&rows) {
        problems.push("[source] snapshot_chunk_rows must be between 1 and 10000000".into());
    }
}

impl Config {
    /// Read and parse a config file; the error is one line naming the file and the problem.
    pub fn load(path: &Path) -> Result<Config, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read config {}: {e}", path.display())])?;
        toml::from_str(&text).map_err(|e| {
            let msg = e.message().replace('\n', " ");
            let at = e
                .span()
                .map(|s| format!(" (line {})", text[..s.start].lines().count().max(1)))
                .unwrap_or_default();
            vec![format!("config {}{at}: {msg}", path.display())]
        })
    }

    /// Check everything that can be checked without connecting; all problems at once.
    pub fn validate(self) -> Result<Validated, Vec<String>> {
        if let SourceConfig::Mysql { .. } = self.source {
            return self.validate_mysql().map(Validated::Mysql);
        }
        self.validate_postgres().map(Validated::Postgres)
    }

    /// The pipeline name and the sink: what every source kind shares.
    fn validate_common(&self, problems: &mut Vec<String>) -> Option<Sink> {
        let name = &self.pipeline.name;
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            problems.push(format!(
                "[pipeline] name {name:?} must be non-empty lowercase letters, digits and _ (it names the slot and publication)"
            ));
        }
        if self.pipeline.max_inflight_bytes < 1 << 20 {
            problems.push("[pipeline] max_inflight_bytes must be at least 1MiB".into());
        }
        let deltas: Vec<_> = self
            .sinks
            .iter()
            .filter_map(|s| match s {
                SinkConfig::Delta {
                    path,
                    max_batch_rows,
                    max_batch_bytes,
                    max_batch_latency,
                } => Some((path, max_batch_rows, max_batch_bytes, max_batch_latency)),
                SinkConfig::Webhook(_) | SinkConfig::Rest(_) => None,
            })
            .collect();
        let mut names = Vec::new();
        for name in self.sinks.iter().filter_map(SinkConfig::hub_name) {
            if names.contains(&name) {
                problems.push(format!(
                    "[[sinks]] name {name:?} is used twice: give every hub sink its own name (it names its cursor)"
                ));
            }
            names.push(name);
        }
        match deltas.as_slice() {
            [(path, max_batch_rows, max_batch_bytes, max_batch_latency)] => {
                if **max_batch_rows == 0 {
                    problems.push("[[sinks]] max_batch_rows must be at least 1".into());
                }
                if **max_batch_bytes < 1024 {
                    problems.push("[[sinks]] max_batch_bytes must be at least 1KiB".into());
                }
                if max_batch_latency.is_zero() {
                    problems.push("[[sinks]] max_batch_latency must be above zero".into());
                }
                Some(Sink {
                    lake: (*path).clone(),
                    max_batch_rows: **max_batch_rows,
                    max_batch_bytes: **max_batch_bytes,
                    max_batch_latency: **max_batch_latency,
                })
            }
            [] if !names.is_empty() => Some(Sink {
                lake: self
                    .pipeline
                    .journal
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_JOURNAL)),
                max_batch_rows: default_batch_rows(),
                max_batch_bytes: default_batch_bytes(),
                max_batch_latency: default_latency(),
            }),
            [] => {
                problems.push("no [[sinks]]: add a [[sinks]] block with kind = \"delta\" (the changelog every other sink reads), \"webhook\" or \"rest\"".into());
                None
            }
            _ => {
                problems.push(
                    "several kind = \"delta\" [[sinks]] are not supported yet: keep one".into(),
                );
                None
            }
        }
    }
}

/// Where the changelog is kept without a delta sink.
pub const DEFAULT_JOURNAL: &str = "./sluice-journal";

/// The hub sinks, validated against the pipeline's tables.
fn hub_sinks(
    sinks: &[SinkConfig],
    tables: &[TableName],
    problems: &mut Vec<String>,
) -> Vec<HubSinkSettings> {
    let mut out = Vec::new();
    for s in sinks {
        let validated = match s {
            SinkConfig::Delta { .. } => continue,
            SinkConfig::Webhook(w) => w
                .validate(tables)
                .map(|w| HubSinkSettings::Webhook(Box::new(w))),
            SinkConfig::Rest(r) => r
                .validate(tables)
                .map(|r| HubSinkSettings::Rest(Box::new(r))),
        };
        match validated {
            Ok(v) => out.push(v),
            Err(p) => problems.extend(p),
        }
    }
    out
}

impl Config {
    fn validate_mysql(self) -> Result<MySettings, Vec<String>> {
        let mut problems = Vec::new();
        let sink = self.validate_common(&mut problems);
        let SourceConfig::Mysql {
            url,
            tables,
            server_id,
            snapshot,
            snapshot_chunk_rows,
        } = &self.source
        else {
            return Err(vec!["[source] is not mysql".into()]);
        };
        check_chunk_rows(*snapshot_chunk_rows, &mut problems);
        let info = match MyConnInfo::parse(url, std::env::var("SLUICE_SOURCE_PASSWORD").ok()) {
            Ok(i) => Some(i),
            Err(e) => {
                problems.push(format!("[source] url: {e}"));
                None
            }
        };
        let server_id = match server_id {
            Some(id) if *id > 0 => Some(*id),
            _ => {
                problems.push("[source] server_id is required for mysql: a number from 1 to 4294967295, unique among the server's replicas".into());
                None
            }
        };
        if tables.is_empty() {
            problems.push("[source] tables is empty: list at least one \"database.table\"".into());
        }
        let mut parsed: Vec<TableName> = Vec::new();
        for t in tables {
            match TableName::parse(t).filter(|_| t.contains('.')) {
                Some(t) if !parsed.contains(&t) => parsed.push(t),
                Some(_) => problems.push(format!("[source] tables lists {t} twice")),
                None => problems.push(format!(
                    "[source] tables: {t:?} is not a table name: write \"database.table\""
                )),
            }
        }
        let policies = policies(&self.pipeline, &parsed, &mut problems);
        let hub_sinks = hub_sinks(&self.sinks, &parsed, &mut problems);
        let metrics = self
            .metrics
            .as_ref()
            .and_then(|m| m.validate(&mut problems));
        match (info, server_id, sink) {
            (Some(info), Some(server_id), Some(sink)) if problems.is_empty() => Ok(MySettings {
                name: self.pipeline.name,
                policies,
                info,
                tables: parsed,
                server_id,
                snapshot: *snapshot,
                snapshot_chunk_rows: *snapshot_chunk_rows,
                lake: sink.lake,
                max_batch_rows: sink.max_batch_rows,
                max_batch_bytes: sink.max_batch_bytes,
                max_batch_latency: sink.max_batch_latency,
                max_inflight_bytes: self.pipeline.max_inflight_bytes,
                hub_sinks,
                hub: HubPosition::default(),
                metrics,
                health: SourceHealth::default(),
            }),
            _ => Err(problems),
        }
    }

    fn validate_postgres(self) -> Result<Settings, Vec<String>> {
        let mut problems = Vec::new();
        let sink = self.validate_common(&mut problems);
        let name = self.pipeline.name.clone();
        let name_ok = !problems.iter().any(|p| p.starts_with("[pipeline] name"));
        let SourceConfig::Postgres {
            url,
            tables,
            slot,
            publication,
            snapshot,
            snapshot_workers,
            snapshot_chunk_pages,
            snapshot_chunk_rows,
            heartbeat,
            wal_warn_share,
        } = self.source
        else {
            return Err(vec!["[source] is not postgres".into()]);
        };
        if heartbeat.is_some_and(|h| h < Duration::from_secs(1)) {
            problems.push(
                "[source] heartbeat must be at least 1s (e.g. \"10s\"), or left out to write none"
                    .into(),
            );
        }
        if !(wal_warn_share > 0.0 && wal_warn_share <= 1.0) {
            problems.push(
                "[source] wal_warn_share must be above 0 and at most 1 (a share of max_slot_wal_keep_size, e.g. 0.8)"
                    .into(),
            );
        }
        let snapshot_workers = snapshot_workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        });
        if snapshot_workers == 0 || snapshot_workers > 64 {
            problems.push("[source] snapshot_workers must be between 1 and 64".into());
        }
        if snapshot_chunk_pages == 0 {
            problems.push("[source] snapshot_chunk_pages must be at least 1".into());
        }
        check_chunk_rows(snapshot_chunk_rows, &mut problems);
        let conninfo = match ConnInfo::parse(&url) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(format!("[source] url: {e}"));
                None
            }
        };
        if tables.is_empty() {
            problems.push("[source] tables is empty: list at least one \"schema.table\"".into());
        }
        let mut parsed = Vec::new();
        for t in &tables {
            match TableName::parse(t) {
                Some(t) if !parsed.contains(&t) => parsed.push(t),
                Some(_) => problems.push(format!("[source] tables lists {t} twice")),
                None => problems.push(format!(
                    "[source] tables: {t:?} is not a table name: write \"schema.table\""
                )),
            }
        }
        // Names derived from an invalid pipeline name are not reported twice.
        let explicit = (slot.is_some(), publication.is_some());
        let slot = slot.unwrap_or_else(|| format!("sluice_{name}"));
        let publication = publication.unwrap_or_else(|| format!("sluice_{name}"));
        for (what, v, given) in [
            ("slot", &slot, explicit.0),
            ("publication", &publication, explicit.1),
        ] {
            let valid = !v.is_empty()
                && v.len() <= 63
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if (given || name_ok) && !valid {
                problems.push(format!(
                    "[source] {what} {v:?} must be 1-63 lowercase letters, digits and _"
                ));
            }
        }
        let policies = policies(&self.pipeline, &parsed, &mut problems);
        let hub_sinks = hub_sinks(&self.sinks, &parsed, &mut problems);
        let metrics = self
            .metrics
            .as_ref()
            .and_then(|m| m.validate(&mut problems));
        match (conninfo, sink) {
            (Some(conninfo), Some(sink)) if problems.is_empty() => Ok(Settings {
                name,
                policies,
                conninfo,
                tables: parsed,
                slot,
                publication,
                lake: sink.lake,
                max_batch_rows: sink.max_batch_rows,
                max_batch_bytes: sink.max_batch_bytes,
                max_batch_latency: sink.max_batch_latency,
                max_inflight_bytes: self.pipeline.max_inflight_bytes,
                snapshot,
                snapshot_workers,
                snapshot_chunk_pages,
                snapshot_chunk_rows,
                hub_sinks,
                hub: HubPosition::default(),
                metrics,
                health: SourceHealth::default(),
                heartbeat,
                wal_warn_share,
            }),
            _ => Err(problems),
        }
    }
}

impl Validated {
    /// Use `health` (the run's, which outlives configuration reloads) for the source's health.
    pub fn share_health(&mut self, health: &SourceHealth) {
        match self {
            Validated::Postgres(s) => s.health = health.clone(),
            Validated::Mysql(m) => m.health = health.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(text: &str) -> Result<Validated, Vec<String>> {
        toml::from_str::<Config>(text)
            .map_err(|e| vec![e.to_string()])?
            .validate()
    }

    fn parse(text: &str) -> Result<Settings, Vec<String>> {
        match validate(text)? {
            Validated::Postgres(s) => Ok(s),
            Validated::Mysql(_) => Err(vec!["not postgres".into()]),
        }
    }

    #[test]
    fn mysql_config_needs_server_id_and_database_tables() {
        let problems = validate(
            r#"
            [pipeline]
            name = "shop"
            [source]
            kind = "mysql"
            url = "mysql://sluice@127.0.0.1:33069/shop"
            tables = ["orders"]
            [[sinks]]
            kind = "delta"
            path = "./lake"
            "#,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("server_id is required"));
        assert!(problems[1].contains("write \"database.table\""));
        let ok = validate(
            r#"
            [pipeline]
            name = "shop"
            [source]
            kind = "mysql"
            url = "mysql://sluice:pw@127.0.0.1:33069/shop"
            tables = ["shop.orders"]
            server_id = 4242
            [[sinks]]
            kind = "delta"
            path = "./lake"
            "#,
        )
        .unwrap();
        let Validated::Mysql(m) = ok else {
            panic!("mysql settings")
        };
        assert_eq!(
            (m.server_id, m.tables[0].to_string()),
            (4242, "shop.orders".into())
        );
    }

    #[test]
    fn heartbeat_and_wal_warn_share_are_checked() {
        let config = |extra: &str| {
            format!(
                "[pipeline]\nname = \"shop\"\n[source]\nkind = \"postgres\"\nurl = \"postgres://sluice@127.0.0.1:5432/shop\"\ntables = [\"public.orders\"]\n{extra}\n[[sinks]]\nkind = \"delta\"\npath = \"./lake\"\n"
            )
        };
        let s = parse(&config("")).unwrap();
        assert_eq!((s.heartbeat, s.wal_warn_share), (None, 0.8));
        let s = parse(&config("heartbeat = \"10s\"\nwal_warn_share = 0.5")).unwrap();
        assert_eq!(
            (s.heartbeat, s.wal_warn_share),
            (Some(Duration::from_secs(10)), 0.5)
        );
        let problems = parse(&config("heartbeat = \"500ms\"\nwal_warn_share = 1.5")).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("heartbeat must be at least 1s"));
        assert!(problems[1].contains("wal_warn_share must be above 0 and at most 1"));
        let problems = parse(&config("heartbeat = \"often\"")).unwrap_err();
        assert!(
            problems[0].contains("invalid duration \"often\""),
            "{problems:?}"
        );
        let problems = parse(&config("wal_warn_share = 0")).unwrap_err();
        assert!(problems[0].contains("wal_warn_share"), "{problems:?}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let s = parse(
            r#"
            [pipeline]
            name = "shop"
            [source]
            kind = "postgres"
            url = "postgres://sluice@127.0.0.1:5432/shop"
            tables = ["public.orders"]
            [[sinks]]
            kind = "delta"
            path = "./lake"
            max_batch_latency = "250ms"
            "#,
        )
        .unwrap();
        assert_eq!(s.slot, "sluice_shop");
        assert_eq!(s.max_batch_rows, 100_000);
        assert_eq!(s.max_batch_latency, Duration::from_millis(250));
        assert_eq!(s.max_inflight_bytes, 64 << 20);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let problems = parse(
            r#"
            [pipeline]
            name = "Bad Name"
            [source]
            kind = "postgres"
            url = "mysql://x"
            tables = ["a.b.c"]
            [[sinks]]
            kind = "delta"
            path = "./lake"
            max_batch_rows = 0
            "#,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:#?}");
    }

    #[test]
    fn webhook_sinks_beside_one_delta_sink() {
        let base = r#"
            [pipeline]
            name = "shop"
            [source]
            kind = "postgres"
            url = "postgres://sluice@127.0.0.1:5432/shop"
            tables = ["public.orders", "public.customers"]
            [[sinks]]
            kind = "delta"
            path = "./lake"
            [[sinks]]
            kind = "webhook"
            name = "hook"
            url = "https://hooks.example.com/sluice"
            tables = ["public.orders"]
            rate_limit = ["20/s", "100000/day"]
            max_batch_bytes = "1MiB"
            "#;
        let s = parse(base).unwrap();
        assert_eq!(s.hub_sinks.len(), 1);
        assert_eq!(
            s.hub_sinks[0].shared().tables[0].to_string(),
            "public.orders"
        );
        let twice =
            format!("{base}\n[[sinks]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"ftp://x\"\n");
        let problems = parse(&twice).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("used twice"));
        assert!(problems[1].contains("https://"));
        let no_delta = base.replace("kind = \"delta\"\n            path = \"./lake\"", "kind = \"webhook\"\n            name = \"other\"\n            url = \"http://127.0.0.1:1/\"");
        let journal = parse(&no_delta).unwrap();
        assert_eq!(journal.lake, PathBuf::from(DEFAULT_JOURNAL));
        assert_eq!(journal.hub_sinks.len(), 2);
        let nothing = "sinks = []\n".to_string() + base.split("[[sinks]]").next().unwrap();
        let problems = parse(&nothing).unwrap_err();
        assert!(problems[0].contains("no [[sinks]]"), "{problems:#?}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<Config>(
            "[pipeline]\nname = \"x\"\ncolour = 1\n[source]\nkind = \"postgres\"\nurl = \"\"\ntables = []\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"));
    }
}
