//! Binlog ROWS events decoded as the MySQL/MariaDB source decodes them: the input is raw
//! binlog events back to back (the seeds: FORMAT_DESCRIPTION, TABLE_MAP, ROWS, as the server
//! sends them, checksums included). Each TABLE_MAP becomes a table shape, each ROWS event's
//! row images are decoded with that shape and appended to the table's Arrow builder.
//!
//! Events are framed here by their header's size, as the server's packets frame them;
//! mysql_common's `Event::read` panics on an event shorter than its header says, which
//! packets rule out, and its TRANSACTION_PAYLOAD_EVENT parser panics on a short payload
//! (mysql_async parses those itself; the source refuses compressed events): see
//! fuzz/README.md.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{EventData, RowsEventData};
use mysql_common::binlog::EventStreamReader;
use replication::cdc::{Op, RowPosition};
use replication::mysql::events::{self, Kind};
use replication::mysql::rows::{next_row, Images, Present};
use replication::mysql::shape::{MyShape, MyTableBuilder};
use replication::Lsn;

/// Header (19) and a CRC32 (4): the least an event framed by a packet holds.
const MIN_EVENT: usize = 23;

fn charsets() -> HashMap<u16, String> {
    [
        (8, "latin1"),
        (33, "utf8mb3"),
        (45, "utf8mb4"),
        (63, "binary"),
        (255, "utf8mb4"),
    ]
    .into_iter()
    .map(|(id, name)| (id, name.to_string()))
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let charsets = charsets();
    let mut reader = EventStreamReader::new(BinlogVersion::Version4);
    let mut shapes: HashMap<u64, Arc<MyShape>> = HashMap::new();
    let mut rest = data;
    while rest.len() >= MIN_EVENT {
        let size = u32::from_le_bytes(rest[9..13].try_into().unwrap()) as usize;
        if size < MIN_EVENT || size > rest.len() {
            return;
        }
        let (bytes, tail) = rest.split_at(size);
        rest = tail;
        let Ok(Some(event)) = reader.read(bytes) else {
            return;
        };
        // Only the events the source reads the data of (mysql::source::handle): it refuses
        // the others by type first.
        if !matches!(
            events::classify(event.header().event_type_raw()),
            Kind::TableMap | Kind::Rows
        ) {
            continue;
        }
        match event.read_data() {
            Ok(Some(EventData::TableMapEvent(tme))) => {
                if let Ok(shape) = MyShape::from_table_map(&tme, &charsets, "fuzz") {
                    shapes.insert(tme.table_id(), Arc::new(shape));
                }
            }
            Ok(Some(EventData::RowsEvent(rows))) => {
                let Some(shape) = shapes.get(&rows.table_id()) else {
                    continue;
                };
                let _ = decode_rows(&rows, shape);
            }
            _ => {}
        }
    }
});

/// What `mysql::source` does with a ROWS event.
fn decode_rows(rows: &RowsEventData<'_>, shape: &Arc<MyShape>) -> Result<(), String> {
    let op = match rows {
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Insert,
        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
        RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => Op::Update,
        RowsEventData::PartialUpdateRowsEvent(_) => return Err("partial".into()),
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
    let mut builder = MyTableBuilder::new(shape.clone(), 16);
    let describe = || "fuzz".to_string();
    let images = match op {
        Op::Insert => Images::After,
        Op::Delete => Images::Before,
        _ => Images::BeforeAndAfter,
    };
    let mut data = rows.rows_data();
    let (mut old, mut new) = (Vec::new(), Vec::new());
    let mut seq = 0;
    let mut pos = || {
        seq += 1;
        RowPosition {
            lsn: Lsn::ZERO,
            seq,
            commit_ts: 0,
        }
    };
    while !data.is_empty() {
        next_row(
            &mut data,
            &shape.raw,
            images,
            (&before, &after),
            &mut old,
            &mut new,
        )?;
        let mut append = |op, row: &[_]| {
            builder
                .append(op, pos(), row, &describe)
                .map_err(|e| e.to_string())
        };
        match op {
            Op::Insert => append(Op::Insert, &new)?,
            Op::Delete => append(Op::Delete, &old)?,
            _ => {
                append(Op::Delete, &old)?;
                append(Op::Update, &new)?;
            }
        }
    }
    builder.take().map_err(|e| e.to_string())?;
    Ok(())
}
