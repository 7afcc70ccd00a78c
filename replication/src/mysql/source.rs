//! The binlog source task: registers as a replica, reads the binlog from a position, decodes
//! the row events of the configured tables into Arrow, and hands whole transactions to the
//! sinks through the byte-bounded queue, exactly like the PostgreSQL source.
//!
//! ```text
//!  GTID/BEGIN ─ TABLE_MAP ─ ROWS … ─ XID/COMMIT ──▶ builders (rows stamped at the commit)
//!      ──(max rows | bytes | latency, at a commit)──▶ Event::Committed at the commit position
//!  a transaction larger than the limits ──▶ Event::StreamChunk … Event::StreamCommit
//! ```
//!
//! A binlog transaction's position is known only at its commit (the end of the XID event), so
//! its rows are stamped then, in place. A transaction too big for the batch limits is handed
//! over in chunks as the PostgreSQL source does for streamed transactions (the sink spills
//! them and commits once), so memory is bounded whatever the transaction's size.
//!
//! There is no slot to confirm: the position a restart may resume from (`resume`) is what the
//! sinks made durable, or, when nothing is in flight, the last transaction boundary seen
//! (including heartbeats, so an idle or unrelated workload moves it on).
//!
//! Freshness: when nothing is in flight, the time of the last boundary seen (a commit's
//! timestamp, or the arrival of a heartbeat, which the server sends only when it has nothing
//! newer) is recorded as the newest durable commit time, so the lag stays meaningful on an
//! idle server; the core records the commit times of the changes themselves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use mysql_common::binlog::events::{EventData, QueryEvent, RotateEvent, RowsEventData};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conninfo::MyConnInfo;
use super::events::{self, Kind};
use super::gtid::GtidSet;
use super::position::BinlogPosition;
use super::rows::{next_row, Images, Present};
use super::shape::{MyShape, MyTableBuilder};
use crate::cdc::{now_micros, Op, RowPosition};
use crate::change::{Event, TableBatch, TableName};
use crate::evolution::{self, ColumnChange, Columns, SchemaPolicy};
use crate::health::Freshness;
use crate::queue;
use crate::source::{BatchLimits, SourceExit};
use crate::window::{SnapshotLink, Step, Windows};
use crate::{Error, ErrorClass, Lsn, Result};

mod transaction;

/// Heartbeat period asked of the server: an idle server still shows its position this often.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often to look at the clock for batch deadlines and the resume position.
const TICK: Duration = Duration::from_millis(100);

/// What the binlog source needs.
#[derive(Debug, Clone)]
pub struct MySourceOptions {
    /// Server.
    pub info: MyConnInfo,
    /// This replica's id (unique among the server's replicas).
    pub server_id: u32,
    /// Whether the server is MariaDB.
    pub mariadb: bool,
    /// Whether events carry a CRC32 checksum.
    pub checksum: bool,
    /// Tables to read.
    pub tables: Vec<TableName>,
    /// Where to start: a transaction boundary.
    pub start: BinlogPosition,
    /// The GTID set at `start` (MariaDB): when known, the dump starts from it
    /// (`@slave_connect_state`), and `start` only checks that positions move forward.
    pub start_gtid: Option<String>,
    /// MySQL: the complete executed GTID set at `start`; when known, the dump starts from it
    /// (COM_BINLOG_DUMP_GTID), and `start` only checks that positions move forward.
    pub start_executed: Option<String>,
    /// Collation id → character set name.
    pub charsets: HashMap<u16, String>,
    /// Batch closing limits.
    pub limits: BatchLimits,
    /// Close a batch this long after its first row, at the next commit.
    pub max_latency: Duration,
    /// Stop once everything committed before this (packed) position is durable.
    pub until: Option<Lsn>,
    /// What a change of a table's columns does.
    pub policies: crate::evolution::SchemaPolicies,
    /// Each table's columns as the lake last recorded them: under the `stop` policy a table's
    /// first table map is checked against them (a change made while Sluice was stopped).
    pub known: HashMap<TableName, crate::evolution::Columns>,
    /// Where the time of the last boundary is recorded while nothing is in flight.
    pub freshness: Freshness,
}

/// A commit position with the GTID metadata and MySQL's executed set as of it.
type GtidsAt = (Lsn, Option<Arc<str>>, Option<Arc<str>>);

struct Slot {
    builder: MyTableBuilder,
    /// Rows of committed transactions (the open transaction's follow).
    committed: usize,
}

struct Open {
    seq: i64,
    /// Streamed as chunks under this id once it outgrew the limits.
    streamed: Option<u32>,
    rows: usize,
    bytes: usize,
}

struct Source {
    options: MySourceOptions,
    tx: queue::Sender<Event>,
    durable: watch::Receiver<Lsn>,
    resume: watch::Sender<Resume>,
    /// Commit positions handed to the sinks and the GTID set after each (for the resume
    /// point's GTID), oldest first.
    committed_gtids: std::collections::VecDeque<GtidsAt>,
    /// Configured table id → shape (`None`: a table not replicated).
    tables: HashMap<u64, Option<Arc<MyShape>>>,
    slots: HashMap<Arc<TableName>, Slot>,
    /// Builders replaced by a schema change, emitted with the next batch.
    retired: Vec<MyTableBuilder>,
    open: Option<Open>,
    pending_commit: Option<Lsn>,
    pending_rows: usize,
    pending_bytes: usize,
    deadline: Option<Instant>,
    file: String,
    /// Last transaction boundary passed.
    seen_end: Lsn,
    /// When `seen_end` was committed (a heartbeat: when it arrived), microseconds since the
    /// Unix epoch; 0 before the first.
    seen_ts: i64,
    /// The start position, packed: every commit read must lie after it.
    start_packed: Lsn,
    forwarded_end: Lsn,
    next_stream: u32,
    /// Last GTID per replication domain (MariaDB) or source id (MySQL).
    gtids: std::collections::BTreeMap<String, String>,
    /// The GTID set as of the last pending commit.
    pending_gtid: Option<Arc<str>>,
    /// MySQL: the complete executed GTID set as of the last event (`None`: not known complete).
    executed: Option<GtidSet>,
    /// The format description was seen (before it, the rotate event's checksum is not
    /// stripped by the decoder).
    seen_format: bool,
    events: Vec<Event>,
    /// Incremental-snapshot chunks in flight (positioned windows).
    windows: Windows,
    /// Whether the snapshot driver has nothing queued (`None`: no driver).
    snapshots_idle: Option<watch::Receiver<bool>>,
}

/// Where a restart may resume: a transaction boundary, and the GTID sets as of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// File and offset.
    pub position: BinlogPosition,
    /// `gtid_binlog_pos`-style list, when the server has GTIDs.
    pub gtid: Option<String>,
    /// MySQL: the complete executed GTID set, when known.
    pub executed: Option<String>,
}

/// Read the binlog until cancelled, caught up, or an error. `resume` receives the position a
/// restart may resume from as it moves; `link` connects the incremental-snapshot driver.
pub async fn run(
    options: MySourceOptions,
    tx: queue::Sender<Event>,
    durable: watch::Receiver<Lsn>,
    resume: watch::Sender<Resume>,
    link: Option<SnapshotLink>,
    cancel: CancellationToken,
) -> Result<SourceExit> {
    let mut conn = super::catalog::connect(&options.info).await?;
    let setup = |context: &'static str| {
        move |source| Error::Mysql {
            context: context.into(),
            source,
        }
    };
    if options.mariadb {
        // Send MariaDB's GTID events instead of converting them for an old replica.
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(setup("preparing the binlog dump"))?;
    }
    conn.query_drop(format!(
        "SET @master_heartbeat_period = {}",
        HEARTBEAT.as_nanos()
    ))
    .await
    .map_err(setup("preparing the binlog dump"))?;
    let start = options.start.clone();
    // MariaDB names every binlog position's GTID set: knowing it from the start keeps the
    // set recorded with each resume position complete (every domain, not only those seen).
    let start_gtid = match (&options.start_gtid, options.mariadb) {
        (Some(g), _) => Some(g.clone()),
        (None, true) => conn
            .exec_first::<Option<String>, _, _>(
                "SELECT BINLOG_GTID_POS(?, ?)",
                (start.file.as_str(), start.pos),
            )
            .await
            .map_err(setup("reading the GTID position"))?
            .flatten()
            .filter(|g| !g.is_empty()),
        (None, false) => None,
    };
    let by_gtid = options.mariadb && options.start_gtid.is_some();
    let executed = match (&options.start_executed, options.mariadb) {
        (Some(set), false) => GtidSet::parse(set),
        _ => None,
    };
    let executed_sids = executed.as_ref().and_then(GtidSet::sids);
    if let (true, Some(gtid)) = (by_gtid, &options.start_gtid) {
        conn.exec_drop(
            "SET @slave_connect_state = ?, @slave_gtid_strict_mode = 1",
            (gtid.as_str(),),
        )
        .await
        .map_err(setup("preparing the binlog dump"))?;
    }
    let request = if by_gtid {
        BinlogStreamRequest::new(options.server_id)
    } else if let Some(sids) = executed_sids.clone() {
        // MySQL: from right after the executed set, wherever that is in the binlog.
        BinlogStreamRequest::new(options.server_id)
            .with_gtid()
            .with_gtid_set(sids)
    } else {
        BinlogStreamRequest::new(options.server_id)
            .with_filename(start.file.as_bytes())
            .with_pos(start.pos)
    };
    let mut stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| dump_error(e, options.server_id))?;
    let by_gtid = by_gtid || executed_sids.is_some();
    tracing::info!(position = %start, by_gtid, server_id = options.server_id, "binlog streaming started");
    let seen_end = start.packed().unwrap_or(Lsn::ZERO);
    let mut source = Source {
        file: start.file.clone(),
        options,
        tx,
        durable,
        resume,
        committed_gtids: std::collections::VecDeque::new(),
        tables: HashMap::new(),
        slots: HashMap::new(),
        retired: Vec::new(),
        open: None,
        pending_commit: None,
        pending_rows: 0,
        pending_bytes: 0,
        deadline: None,
        seen_end,
        seen_ts: 0,
        start_packed: seen_end,
        forwarded_end: Lsn::ZERO,
        next_stream: 1,
        seen_format: false,
        gtids: start_gtid
            .iter()
            .flat_map(|set| set.split(','))
            .filter_map(|g| Some((g.split('-').next()?.to_string(), g.to_string())))
            .collect(),
        pending_gtid: None,
        executed,
        events: Vec::new(),
        snapshots_idle: link.as_ref().map(|l| l.idle.clone()),
        windows: Windows::positioned(link.map(|l| l.chunks)),
    };
    let result = source.stream(&mut stream, &cancel).await;
    match &result {
        Ok(_) => source.finish().await,
        // Stop at the change that cannot be applied, with everything before it durable.
        Err(e) if e.class() == ErrorClass::Definite => {
            if source.flush_before_error()? && source.deliver_all(&cancel).await? {
                source.finish().await;
            }
        }
        Err(_) => {}
    }
    let _ = stream.close().await;
    result
}

/// Whether `name` ends in a binlog file's numeric suffix (`….000123`).
fn numbered(name: &[u8]) -> bool {
    name.rsplit(|b| *b == b'.')
        .next()
        .is_some_and(|suffix| !suffix.is_empty() && suffix.iter().all(u8::is_ascii_digit))
        && name.contains(&b'.')
}

fn batch_of(builder: &mut MyTableBuilder) -> Result<Option<TableBatch>> {
    Ok(builder.take()?.map(|batch| TableBatch {
        table: builder.shape().table.clone(),
        batch,
    }))
}

fn dump_error(source: mysql_async::Error, server_id: u32) -> Error {
    if let mysql_async::Error::Server(e) = &source {
        if e.message.contains("same server") || e.message.contains("server_id") {
            return Error::Preflight {
                problems: vec![format!(
                    "[source] server_id {server_id} is already used by another replica of this server ({}): choose another id",
                    e.message
                )],
            };
        }
    }
    Error::Mysql {
        context: "reading the binlog".into(),
        source,
    }
}

impl Source {
    fn position(&self, log_pos: u32) -> Result<Lsn> {
        BinlogPosition {
            file: self.file.clone(),
            pos: u64::from(log_pos),
        }
        .packed()
        .ok_or_else(|| {
            Error::Protocol(format!(
                "binlog file {} has no numeric suffix; positions cannot be ordered",
                self.file
            ))
        })
    }

    fn describe(&self, log_pos: u32) -> String {
        format!("{}:{log_pos}", self.file)
    }

    async fn stream(
        &mut self,
        stream: &mut BinlogStream,
        cancel: &CancellationToken,
    ) -> Result<SourceExit> {
        let mut tick = tokio::time::interval(TICK);
        loop {
            if self.open.is_none() && self.deadline.is_some_and(|d| d <= Instant::now()) {
                self.flush()?;
            }
            if self.open.is_none() && self.windows.ready(self.seen_end) {
                // Everything up to the boundary goes first, through the windows.
                self.flush()?;
                if !self.deliver_all(cancel).await? {
                    return Ok(SourceExit::Cancelled);
                }
                let chunks = self.windows.settle_ready(self.seen_end, now_micros())?;
                self.events.extend(chunks);
            }
            if !self.deliver_all(cancel).await? {
                return Ok(SourceExit::Cancelled);
            }
            self.report_resume();
            if let Some(target) = self.options.until {
                if self.idle() && self.snapshots_idle() && self.resume_point() >= target {
                    return Ok(SourceExit::CaughtUp);
                }
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    if self.open.is_none() {
                        self.flush()?;
                        self.deliver_all(cancel).await?;
                    }
                    return Ok(SourceExit::Cancelled);
                }
                _ = tick.tick() => {}
                // A chunk's registration or rows: taken at once (the driver waits on them).
                () = self.windows.message() => {}
                event = stream.next() => {
                    let Some(event) = event else {
                        // A server shutting down closes the dump: reconnect and resume.
                        return Err(Error::Io(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the server ended the binlog stream",
                        )));
                    };
                    let event = event.map_err(|e| dump_error(e, self.options.server_id))?;
                    self.apply(&event)?;
                }
            }
        }
    }

    /// Nothing in flight: no open transaction, nothing pending, all forwarded durable.
    fn idle(&self) -> bool {
        self.open.is_none()
            && self.pending_commit.is_none()
            && *self.durable.borrow() >= self.forwarded_end
    }

    /// No incremental snapshot queued or in flight.
    fn snapshots_idle(&mut self) -> bool {
        !self.windows.busy()
            && self
                .snapshots_idle
                .as_ref()
                .is_none_or(|idle| *idle.borrow())
    }

    fn resume_point(&self) -> Lsn {
        let durable = *self.durable.borrow();
        if self.idle() {
            durable.max(self.seen_end)
        } else {
            durable
        }
    }

    /// The GTID sets (metadata, MySQL's executed set) as of the commit at `lsn` (commits before
    /// it are forgotten).
    fn gtid_at(&mut self, lsn: Lsn) -> (Option<Arc<str>>, Option<Arc<str>>) {
        while self
            .committed_gtids
            .front()
            .is_some_and(|(at, ..)| *at < lsn)
        {
            self.committed_gtids.pop_front();
        }
        match self.committed_gtids.front() {
            Some((at, gtid, executed)) if *at == lsn => (gtid.clone(), executed.clone()),
            _ => (None, None),
        }
    }

    /// The executed set now (MySQL, when complete).
    fn executed_set(&self) -> Option<Arc<str>> {
        self.executed.as_ref().map(|e| e.to_string().into())
    }

    /// Remember the GTID sets as of the commit at `position`.
    fn record_gtids(&mut self, position: Lsn, gtid: Option<Arc<str>>) {
        let executed = self.executed_set();
        self.committed_gtids.push_back((position, gtid, executed));
    }

    fn report_resume(&mut self) {
        if self.idle() {
            self.options.freshness.record(self.seen_ts);
        }
        let point = self.resume_point();
        let moved = self
            .resume
            .borrow()
            .position
            .packed()
            .is_none_or(|current| current < point);
        if point == Lsn::ZERO || !moved {
            return;
        }
        let (gtid, executed) = if self.idle() && point == self.seen_end {
            (self.gtid_set(), self.executed_set())
        } else {
            self.gtid_at(point)
        };
        self.resume.send_replace(Resume {
            position: BinlogPosition::unpack(point, &self.file),
            gtid: gtid.map(|g| g.to_string()),
            executed: executed.map(|g| g.to_string()),
        });
    }

    fn apply(&mut self, event: &mysql_common::binlog::events::Event) -> Result<()> {
        let header = event.header();
        let code = header.event_type_raw();
        let log_pos = header.log_pos();
        let bad = |e: std::io::Error| {
            Error::Protocol(format!(
                "binlog event {code} at {}: {e}",
                self.describe(log_pos)
            ))
        };
        match events::classify(code) {
            Kind::Rotate => {
                let rotate: RotateEvent<'_> = event.read_event().map_err(bad)?;
                let mut name = rotate.name_raw();
                if !self.seen_format && self.options.checksum && !numbered(name) {
                    // The first (fake) rotate precedes the format description: MariaDB
                    // leaves its checksum attached (MySQL does not).
                    name = &name[..name.len().saturating_sub(4)];
                }
                self.file = String::from_utf8_lossy(name).into_owned();
            }
            Kind::FormatDescription => self.seen_format = true,
            Kind::Pass => {}
            Kind::Heartbeat => {
                if self.open.is_none() && log_pos > 0 {
                    self.seen_end = self.seen_end.max(self.position(log_pos)?);
                    self.seen_ts = now_micros();
                }
            }
            Kind::MariadbGtid => {
                let gtid = events::mariadb_gtid(event.data()).ok_or_else(|| {
                    Error::Protocol(format!(
                        "bad MariaDB GTID event at {}",
                        self.describe(log_pos)
                    ))
                })?;
                self.gtids.insert(
                    gtid.domain.to_string(),
                    format!("{}-{}-{}", gtid.domain, header.server_id(), gtid.seq),
                );
                if !gtid.standalone {
                    self.begin();
                }
            }
            Kind::MysqlGtid => {
                if code != 33 {
                    // A tagged GTID (MySQL 8.4+): the executed set is not tracked with tags,
                    // so resuming falls back to file and offset.
                    self.executed = None;
                }
                if let Ok(Some(EventData::GtidEvent(g))) = event.read_data() {
                    let hex: String = g.sid().iter().map(|b| format!("{b:02x}")).collect();
                    let sid = format!(
                        "{}-{}-{}-{}-{}",
                        &hex[..8],
                        &hex[8..12],
                        &hex[12..16],
                        &hex[16..20],
                        &hex[20..]
                    );
                    if let Some(executed) = &mut self.executed {
                        executed.add(&sid, g.gno());
                    }
                    self.gtids.insert(sid.clone(), format!("{sid}:{}", g.gno()));
                } else {
                    // A GTID we could not read: the set would miss it.
                    self.executed = None;
                }
            }
            Kind::Query => {
                let query: QueryEvent<'_> = event.read_event().map_err(bad)?;
                match query.query().trim() {
                    "BEGIN" if self.open.is_none() => self.begin(),
                    "BEGIN" => {}
                    "COMMIT" => self.commit(log_pos, header.timestamp())?,
                    _ if self.open.is_none() => {
                        // A statement on its own (DDL): a transaction boundary.
                        self.seen_end = self.seen_end.max(self.position(log_pos)?);
                        self.seen_ts = i64::from(header.timestamp()) * 1_000_000;
                    }
                    _ => {}
                }
            }
            Kind::Xid => self.commit(log_pos, header.timestamp())?,
            Kind::TableMap => {
                let Some(EventData::TableMapEvent(tme)) = event.read_data().map_err(bad)? else {
                    return Err(Error::Protocol(format!(
                        "bad table map at {}",
                        self.describe(log_pos)
                    )));
                };
                let name = TableName {
                    schema: tme.database_name().into_owned(),
                    name: tme.table_name().into_owned(),
                };
                let shape = if self.options.tables.contains(&name) {
                    let shape = MyShape::from_table_map(
                        &tme,
                        &self.options.charsets,
                        &self.describe(log_pos),
                    )?;
                    Some(self.evolve(shape, log_pos)?)
                } else {
                    None
                };
                self.tables.insert(tme.table_id(), shape);
            }
            Kind::Rows => {
                let Some(EventData::RowsEvent(rows)) = event.read_data().map_err(bad)? else {
                    return Err(Error::Protocol(format!(
                        "bad rows event at {}",
                        self.describe(log_pos)
                    )));
                };
                let table_id = rows.table_id();
                let Some(shape) = self.tables.get(&table_id).cloned().flatten() else {
                    return Ok(());
                };
                self.rows(&rows, &shape, log_pos, event.data().len())?;
            }
            Kind::Refused(why) => {
                return Err(Error::Preflight {
                    problems: vec![format!("binlog at {}: {why}", self.describe(log_pos))],
                })
            }
            Kind::Unknown => {
                return Err(Error::Protocol(format!(
                    "unknown binlog event type {code} at {}: refusing to skip it",
                    self.describe(log_pos)
                )))
            }
        }
        Ok(())
    }

    /// Take a table map's shape. A changed shape retires the table's builder (its rows keep
    /// the old shape; the sink follows the new one, see crate::evolution); under the `stop`
    /// policy any change but added columns is an error instead, also against the lake's
    /// recorded shape for the table's first map (a change made while Sluice was stopped).
    fn evolve(&mut self, shape: MyShape, log_pos: u32) -> Result<Arc<MyShape>> {
        let stop = self.options.policies.of(&shape.table) == SchemaPolicy::Stop;
        if let Some(known) = self.options.known.remove(&*shape.table).filter(|_| stop) {
            self.stop_at(&shape, &known, log_pos)?;
        }
        let Some(slot) = self.slots.get(&shape.table) else {
            return Ok(Arc::new(shape));
        };
        let current = slot.builder.shape().clone();
        if *current == shape {
            return Ok(current);
        }
        if stop {
            self.stop_at(&shape, &current.source_columns(), log_pos)?;
        }
        let shape = Arc::new(shape);
        self.windows.schema_changed(&shape.table);
        if let Some(old) = self.slots.remove(&shape.table) {
            if old.builder.rows() > old.committed {
                return Err(Error::Protocol(format!(
                    "table {} changed inside a transaction at {}",
                    shape.table,
                    self.describe(log_pos)
                )));
            }
            self.retired.push(old.builder);
        }
        tracing::info!(table = %shape.table, columns = shape.columns.len(), "table changed shape");
        Ok(shape)
    }

    /// The `stop` policy's error for the first change from `before` it does not follow.
    fn stop_at(&self, shape: &MyShape, before: &Columns, log_pos: u32) -> Result<()> {
        match evolution::diff(before, &shape.source_columns())
            .into_iter()
            .find(ColumnChange::stops)
        {
            Some(change) => Err(Error::MysqlSchemaChange {
                table: shape.table.to_string(),
                column: change.column().to_string(),
                position: self.describe(log_pos),
                reason: evolution::stop_reason(&change),
            }),
            None => Ok(()),
        }
    }
}
