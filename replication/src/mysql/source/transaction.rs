//! The transaction side of the binlog source: a transaction's rows gathered into the tables'
//! builders as its events arrive (BEGIN, ROWS), stamped and handed to the queue at its commit,
//! split into stream chunks when it outgrows the batch limits, and the wait for the sinks to
//! make it durable. The event dispatch and the stream itself are in the parent module.

use super::*;

impl Source {
    pub(super) fn begin(&mut self) {
        self.open = Some(Open {
            seq: 0,
            streamed: None,
            rows: 0,
            bytes: 0,
        });
    }

    pub(super) fn rows(
        &mut self,
        rows: &RowsEventData<'_>,
        shape: &Arc<MyShape>,
        log_pos: u32,
        size: usize,
    ) -> Result<()> {
        if self.open.is_none() {
            // Row events outside BEGIN…COMMIT (a non-transactional engine without GTIDs).
            self.begin();
        }
        let capacity = self.options.limits.max_rows.min(8192);
        let slot = self
            .slots
            .entry(shape.table.clone())
            .or_insert_with(|| Slot {
                builder: MyTableBuilder::new(shape.clone(), capacity),
                committed: 0,
            });
        let open = self
            .open
            .as_mut()
            .ok_or_else(|| Error::Protocol("no transaction".into()))?;
        let file = &self.file;
        let describe = || format!("{file}:{log_pos}");
        let bad = |reason: String| {
            Error::Protocol(format!(
                "cannot decode rows of {} at {}: {reason}",
                shape.table,
                describe()
            ))
        };
        let kind = match rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Insert,
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
            RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => Op::Update,
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(bad(
                    "partial JSON updates: SET GLOBAL binlog_row_value_options = ''".into(),
                ))
            }
        };
        let before = Present::new(
            rows.columns_before_image()
                .map(|b| b.iter().by_vals().collect())
                .unwrap_or_default(),
        );
        let after = Present::new(
            rows.columns_after_image()
                .map(|b| b.iter().by_vals().collect())
                .unwrap_or_default(),
        );
        let images = match kind {
            Op::Insert => Images::After,
            Op::Delete => Images::Before,
            _ => Images::BeforeAndAfter,
        };
        let mut data = rows.rows_data();
        let (mut old, mut new) = (Vec::new(), Vec::new());
        let mut added = 0;
        while !data.is_empty() {
            let mut next_pos = || {
                let pos = RowPosition {
                    lsn: Lsn::ZERO,
                    seq: open.seq,
                    commit_ts: 0,
                };
                open.seq += 1;
                pos
            };
            next_row(
                &mut data,
                &shape.raw,
                images,
                (&before, &after),
                &mut old,
                &mut new,
            )
            .map_err(bad)?;
            match kind {
                Op::Insert => {
                    slot.builder
                        .append(Op::Insert, next_pos(), &new, &describe)?;
                }
                Op::Delete => {
                    slot.builder
                        .append(Op::Delete, next_pos(), &old, &describe)?;
                }
                _ => {
                    if shape.key.iter().any(|&k| old.get(k) != new.get(k)) {
                        slot.builder
                            .append(Op::Delete, next_pos(), &old, &describe)?;
                    }
                    slot.builder
                        .append(Op::Update, next_pos(), &new, &describe)?;
                }
            }
            added += 1;
        }
        open.rows += added;
        open.bytes += size;
        if open.rows >= self.options.limits.max_rows || open.bytes >= self.options.limits.max_bytes
        {
            self.stream_open()?;
        }
        Ok(())
    }

    /// Hand the open transaction's rows over as a chunk (it is too big to hold).
    pub(super) fn stream_open(&mut self) -> Result<()> {
        let xid = match self.open.as_ref().and_then(|o| o.streamed) {
            Some(xid) => xid,
            None => {
                let xid = self.next_stream;
                self.next_stream += 1;
                // What is committed goes first, as its own event.
                self.split_committed()?;
                xid
            }
        };
        let tables = self.take_all()?;
        if let Some(open) = self.open.as_mut() {
            open.streamed = Some(xid);
            open.rows = 0;
            open.bytes = 0;
        }
        if !tables.is_empty() {
            self.events.push(Event::StreamChunk {
                xid,
                subxid: xid,
                tables,
            });
        }
        Ok(())
    }

    /// Emit the committed rows, keeping the open transaction's rows in the builders.
    pub(super) fn split_committed(&mut self) -> Result<()> {
        let Some(commit) = self.pending_commit.take() else {
            return Ok(());
        };
        let mut committed = Vec::new();
        let mut open_rows = Vec::new();
        for mut b in self.retired.drain(..) {
            committed.extend(batch_of(&mut b)?);
        }
        for slot in self.slots.values_mut() {
            let Some(batch) = slot.builder.take()? else {
                continue;
            };
            let table = slot.builder.shape().table.clone();
            let split = slot.committed.min(batch.num_rows());
            if split > 0 {
                committed.push(TableBatch {
                    table: table.clone(),
                    batch: batch.slice(0, split),
                });
            }
            if split < batch.num_rows() {
                open_rows.push(TableBatch {
                    table,
                    batch: batch.slice(split, batch.num_rows() - split),
                });
            }
            slot.committed = 0;
        }
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.deadline = None;
        self.events.push(Event::Committed {
            tables: committed,
            commit_lsn: commit,
            end_lsn: commit,
            gtid: self.pending_gtid.take(),
        });
        let xid = self.next_stream - 1;
        if !open_rows.is_empty() {
            self.events.push(Event::StreamChunk {
                xid,
                subxid: xid,
                tables: open_rows,
            });
        }
        Ok(())
    }

    pub(super) fn commit(&mut self, log_pos: u32, timestamp: u32) -> Result<()> {
        let position = self.position(log_pos)?;
        if position <= self.start_packed {
            // Resuming by GTID on a server whose binlog numbering is behind the stored
            // position (another server after a failover): positions would go backwards and
            // the sinks would drop these changes as already applied.
            return Err(Error::Preflight {
                problems: vec![format!(
                    "binlog position {} is not after the stored position: this looks like another server (a failover); the Delta positions are file offsets of the old one, so re-snapshot: delete the pipeline's tables and state file and run again",
                    self.describe(log_pos)
                )],
            });
        }
        self.seen_end = self.seen_end.max(position);
        self.seen_ts = i64::from(timestamp) * 1_000_000;
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let commit_ts = i64::from(timestamp) * 1_000_000;
        if let Some(xid) = open.streamed {
            let tables = self.take_all()?;
            self.pending_gtid = None;
            self.record_gtids(position, self.gtid_set());
            self.events.push(Event::StreamCommit {
                xid,
                tables,
                commit_lsn: position,
                end_lsn: position,
                commit_ts,
            });
            return Ok(());
        }
        if open.rows == 0 {
            return Ok(());
        }
        let pos = RowPosition {
            lsn: position,
            seq: 0,
            commit_ts,
        };
        for slot in self.slots.values_mut() {
            if slot.builder.rows() > slot.committed {
                slot.builder.stamp_since(slot.committed, pos);
                slot.committed = slot.builder.rows();
            }
        }
        self.pending_commit = Some(position);
        self.pending_gtid = self.gtid_set();
        self.record_gtids(position, self.pending_gtid.clone());
        self.pending_rows += open.rows;
        self.pending_bytes += open.bytes;
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.options.max_latency);
        }
        if self.pending_rows >= self.options.limits.max_rows
            || self.pending_bytes >= self.options.limits.max_bytes
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Every row in the builders (retired ones first), leaving them empty.
    pub(super) fn take_all(&mut self) -> Result<Vec<TableBatch>> {
        let mut tables = Vec::new();
        for mut b in self.retired.drain(..) {
            tables.extend(batch_of(&mut b)?);
        }
        for slot in self.slots.values_mut() {
            tables.extend(batch_of(&mut slot.builder)?);
            slot.committed = 0;
        }
        Ok(tables)
    }

    /// The last GTID of each domain, as MariaDB's `gtid_binlog_pos` writes them.
    pub(super) fn gtid_set(&self) -> Option<Arc<str>> {
        (!self.gtids.is_empty()).then(|| {
            self.gtids
                .values()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(",")
                .into()
        })
    }

    /// Emit the committed transactions as one event (only between transactions).
    pub(super) fn flush(&mut self) -> Result<()> {
        if self.open.is_some() {
            return Ok(());
        }
        let Some(commit) = self.pending_commit.take() else {
            return Ok(());
        };
        let tables = self.take_all()?;
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.deadline = None;
        self.events.push(Event::Committed {
            tables,
            commit_lsn: commit,
            end_lsn: commit,
            gtid: self.pending_gtid.take(),
        });
        Ok(())
    }

    /// Emit the committed transactions before a definite error, when the open transaction (if
    /// any) has no rows yet; its rows would otherwise be mixed in. Returns whether anything
    /// could be flushed.
    pub(super) fn flush_before_error(&mut self) -> Result<bool> {
        let busy = self
            .open
            .as_ref()
            .is_some_and(|o| o.rows > 0 || o.streamed.is_some());
        if busy || self.pending_commit.is_none() {
            return Ok(false);
        }
        let open = self.open.take();
        let flushed = self.flush();
        self.open = open;
        flushed.map(|()| true)
    }

    /// Queue the events; false when cancelled first.
    pub(super) async fn deliver_all(&mut self, cancel: &CancellationToken) -> Result<bool> {
        for event in std::mem::take(&mut self.events) {
            // The binlog carries no requests: every step is a delivery.
            let (Step::Deliver(event) | Step::Request(_, event)) = self.windows.observe(event)?;
            let end = match &event {
                Event::Committed { end_lsn, .. }
                | Event::StreamCommit { end_lsn, .. }
                | Event::SnapshotChunk { end_lsn, .. } => Some(*end_lsn),
                _ => None,
            };
            let permit = tokio::select! {
                biased;
                permit = self.tx.reserve(event.memory_size()) => permit.map_err(|_| Error::SinkStopped)?,
                () = cancel.cancelled() => return Ok(false),
            };
            self.tx
                .send(event, permit)
                .map_err(|_| Error::SinkStopped)?;
            if let Some(end) = end {
                self.forwarded_end = end;
            }
        }
        Ok(true)
    }

    /// Wait until everything forwarded is durable and report where to resume.
    pub(super) async fn finish(&mut self) {
        let (tx, _) = queue::channel::<Event>(1);
        drop(std::mem::replace(&mut self.tx, tx));
        while *self.durable.borrow() < self.forwarded_end {
            if self.durable.changed().await.is_err() {
                break;
            }
        }
        self.report_resume();
        let position = self.resume.borrow().position.clone();
        tracing::info!(%position, "binlog streaming stopped");
    }
}
