//! Every metric Sluice exports, by name, in one place. Values are recorded through the
//! `metrics` facade wherever they arise (the Delta sink, the hub runner, the core) and served
//! in the Prometheus text format by the binary's metrics listener (`[metrics] listen`).
//!
//! Conventions: the `sluice_` prefix, base units in the name (`_bytes`, `_seconds`), counters
//! end in `_total`; labels are few and bounded: `table` (a configured source table), `op`
//! (`c`, `u`, `d`, `r`, `t`), `sink` (a configured sink name). The pipeline name is a global
//! label on every series.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `sluice_source_position` | gauge | | commit position of the newest event read from the source |
//! | `sluice_durable_position` | gauge | | newest position durable in every changelog table (what the source may confirm) |
//! | `sluice_lag_bytes` | gauge | | PostgreSQL: `pg_current_wal_lsn() - confirmed_flush_lsn`; MySQL/MariaDB: binlog bytes after the resume position |
//! | `sluice_lag_seconds` | gauge | | now minus the source commit time of the newest durable change |
//! | `sluice_changes_total` | counter | table, op | rows committed to the changelog |
//! | `sluice_delta_commits_total` | counter | table | Delta commits |
//! | `sluice_commit_latency_seconds` | histogram | | source commit → durable in the lake |
//! | `sluice_delta_batch_rows` | histogram | | rows per Delta commit |
//! | `sluice_delta_batch_bytes` | histogram | | Arrow bytes per Delta commit |
//! | `sluice_queue_bytes` / `sluice_queue_budget_bytes` | gauge | | decoded batches queued, and the budget (`max_inflight_bytes`) |
//! | `sluice_snapshot_rows` / `sluice_snapshot_rows_estimated` | gauge | table | initial-snapshot rows copied, and the estimate |
//! | `sluice_sink_cursor_position` | gauge | sink | position a hub sink's cursor stands on |
//! | `sluice_hub_position` | gauge | | the hub position W hub sinks read up to |
//! | `sluice_sink_lag_seconds` | gauge | sink | now minus the commit time of the oldest change the sink has not passed (0 when caught up) |
//! | `sluice_sink_delivered_total` / `sluice_sink_parked_total` | counter | sink | changes acknowledged / parked |
//! | `sluice_sink_requests_in_flight` / `sluice_sink_concurrency_limit` | gauge | sink | requests in flight, adaptive limit |
//! | `sluice_sink_retries_total` / `sluice_sink_throttled_total` | counter | sink | attempts retried / answered 429 |
//! | `sluice_streaming` | gauge | | 1 while a source session streams |
//! | `sluice_source_retries_total` | counter | | source sessions retried after a transient failure (a cut connection) |
//! | `sluice_slot_retained_wal_bytes` / `sluice_slot_safe_wal_size_bytes` / `sluice_slot_max_wal_keep_size_bytes` | gauge | | PostgreSQL slot WAL retention, `safe_wal_size`, `max_slot_wal_keep_size` (the WAL guard's reading, every 10 s) |
//! | `sluice_slot_wal_status` | gauge | status | 1 for the slot's `wal_status` (`reserved`, `extended`, `unreserved`, `lost`) |
//! | `sluice_process_resident_memory_bytes` | gauge | | RSS of the process |

/// Commit position of the newest event read from the source.
pub const SOURCE_POSITION: &str = "sluice_source_position";
/// Newest position durable in every changelog table.
pub const DURABLE_POSITION: &str = "sluice_durable_position";
/// Bytes of source log after the confirmed position.
pub const LAG_BYTES: &str = "sluice_lag_bytes";
/// Now minus the commit time of the newest durable change.
pub const LAG_SECONDS: &str = "sluice_lag_seconds";
/// Rows committed to the changelog, by table and op.
pub const CHANGES: &str = "sluice_changes_total";
/// Delta commits, by table.
pub const DELTA_COMMITS: &str = "sluice_delta_commits_total";
/// Source commit → durable, seconds.
pub const COMMIT_LATENCY: &str = "sluice_commit_latency_seconds";
/// Rows per Delta commit.
pub const BATCH_ROWS: &str = "sluice_delta_batch_rows";
/// Arrow bytes per Delta commit.
pub const BATCH_BYTES: &str = "sluice_delta_batch_bytes";
/// Bytes of decoded batches queued between source and sink.
pub const QUEUE_BYTES: &str = "sluice_queue_bytes";
/// The queue's budget.
pub const QUEUE_BUDGET: &str = "sluice_queue_budget_bytes";
/// Initial-snapshot rows copied, by table.
pub const SNAPSHOT_ROWS: &str = "sluice_snapshot_rows";
/// Initial-snapshot rows estimated, by table.
pub const SNAPSHOT_ROWS_ESTIMATED: &str = "sluice_snapshot_rows_estimated";
/// The hub position W.
pub const HUB_POSITION: &str = "sluice_hub_position";
/// Position of a hub sink's cursor.
pub const SINK_CURSOR_POSITION: &str = "sluice_sink_cursor_position";
/// Seconds a hub sink is behind.
pub const SINK_LAG_SECONDS: &str = "sluice_sink_lag_seconds";
/// Changes a hub sink had acknowledged.
pub const SINK_DELIVERED: &str = "sluice_sink_delivered_total";
/// Changes a hub sink parked.
pub const SINK_PARKED: &str = "sluice_sink_parked_total";
/// Requests of a hub sink in flight.
pub const SINK_IN_FLIGHT: &str = "sluice_sink_requests_in_flight";
/// A hub sink's adaptive concurrency limit.
pub const SINK_CONCURRENCY_LIMIT: &str = "sluice_sink_concurrency_limit";
/// Attempts of a hub sink that are retried.
pub const SINK_RETRIES: &str = "sluice_sink_retries_total";
/// Attempts of a hub sink answered 429.
pub const SINK_THROTTLED: &str = "sluice_sink_throttled_total";
/// 1 while a source session streams.
pub const STREAMING: &str = "sluice_streaming";
/// Sessions of the source that failed transiently and were retried.
pub const SOURCE_RETRIES: &str = "sluice_source_retries_total";
/// WAL the PostgreSQL slot retains (`pg_current_wal_lsn() - restart_lsn`).
pub const SLOT_RETAINED_WAL: &str = "sluice_slot_retained_wal_bytes";
/// The slot's `safe_wal_size`.
pub const SLOT_SAFE_WAL_SIZE: &str = "sluice_slot_safe_wal_size_bytes";
/// The server's `max_slot_wal_keep_size` (absent when unlimited).
pub const SLOT_MAX_WAL_KEEP: &str = "sluice_slot_max_wal_keep_size_bytes";
/// 1 for the slot's current `wal_status`, 0 for the others.
pub const SLOT_WAL_STATUS: &str = "sluice_slot_wal_status";
/// Resident set size of the process.
pub const RSS: &str = "sluice_process_resident_memory_bytes";

/// Registers every metric's type, unit and help text with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        SOURCE_POSITION,
        "Commit position of the newest event read from the source."
    );
    describe_gauge!(
        DURABLE_POSITION,
        "Newest position durable in every changelog table: what the source may confirm."
    );
    describe_gauge!(LAG_BYTES, Unit::Bytes, "Source log after the confirmed position (PostgreSQL: pg_current_wal_lsn() - confirmed_flush_lsn; MySQL/MariaDB: binlog bytes within the current file).");
    describe_gauge!(
        LAG_SECONDS,
        Unit::Seconds,
        "Now minus the source commit time of the newest durable change."
    );
    describe_counter!(
        CHANGES,
        "Rows committed to the changelog, by table and op (c, u, d, r, t)."
    );
    describe_counter!(DELTA_COMMITS, "Delta commits, by table.");
    describe_histogram!(
        COMMIT_LATENCY,
        Unit::Seconds,
        "Source commit to durable in the lake."
    );
    describe_histogram!(BATCH_ROWS, Unit::Count, "Rows per Delta commit.");
    describe_histogram!(BATCH_BYTES, Unit::Bytes, "Arrow bytes per Delta commit.");
    describe_gauge!(
        QUEUE_BYTES,
        Unit::Bytes,
        "Decoded batches queued between the source and the sink."
    );
    describe_gauge!(
        QUEUE_BUDGET,
        Unit::Bytes,
        "The queue's budget (max_inflight_bytes)."
    );
    describe_gauge!(
        SNAPSHOT_ROWS,
        Unit::Count,
        "Initial-snapshot rows copied, by table."
    );
    describe_gauge!(
        SNAPSHOT_ROWS_ESTIMATED,
        Unit::Count,
        "Initial-snapshot rows estimated, by table."
    );
    describe_gauge!(
        HUB_POSITION,
        "The hub position W: hub sinks read the changelog up to it."
    );
    describe_gauge!(
        SINK_CURSOR_POSITION,
        "Position a hub sink's cursor stands on."
    );
    describe_gauge!(SINK_LAG_SECONDS, Unit::Seconds, "Now minus the commit time of the oldest change a hub sink has not passed (0 when caught up).");
    describe_counter!(SINK_DELIVERED, "Changes a hub sink had acknowledged.");
    describe_counter!(
        SINK_PARKED,
        "Changes a hub sink parked in its dead-letter table."
    );
    describe_gauge!(SINK_IN_FLIGHT, "Requests of a hub sink in flight.");
    describe_gauge!(
        SINK_CONCURRENCY_LIMIT,
        "A hub sink's adaptive concurrency limit."
    );
    describe_counter!(
        SINK_RETRIES,
        "Attempts of a hub sink that were retried (429, 5xx, timeouts, connection errors)."
    );
    describe_counter!(SINK_THROTTLED, "Attempts of a hub sink answered 429.");
    describe_gauge!(STREAMING, "1 while a source session streams.");
    describe_counter!(
        SOURCE_RETRIES,
        "Source sessions retried after a transient failure."
    );
    describe_gauge!(
        SLOT_RETAINED_WAL,
        Unit::Bytes,
        "WAL the PostgreSQL slot retains: pg_current_wal_lsn() - restart_lsn."
    );
    describe_gauge!(SLOT_SAFE_WAL_SIZE, Unit::Bytes, "The slot's safe_wal_size.");
    describe_gauge!(
        SLOT_MAX_WAL_KEEP,
        Unit::Bytes,
        "The server's max_slot_wal_keep_size (absent when unlimited)."
    );
    describe_gauge!(
        SLOT_WAL_STATUS,
        "1 for the slot's current wal_status, 0 for the others."
    );
    describe_gauge!(RSS, Unit::Bytes, "Resident set size of the process.");
}
