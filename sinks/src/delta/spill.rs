//! Local spill files for rows of large in-progress transactions.
//!
//! PostgreSQL streams a transaction larger than `logical_decoding_work_mem` before it commits,
//! and its rows cannot be stamped with a commit position until it does. Rather than hold it in
//! memory, each chunk is written to an Arrow IPC file as it arrives; at stream commit the
//! files are read back one batch at a time, stamped and written to Delta in one commit; at
//! abort they are deleted. Memory stays bounded by the chunk size, whatever the transaction.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::ipc::reader::StreamReader;
use deltalake::arrow::ipc::writer::StreamWriter;
use deltalake::arrow::record_batch::RecordBatch;
use replication::change::TableName;

use crate::{Error, Result};

/// Spill files of the open streamed transactions, under one directory.
pub struct Spill {
    dir: PathBuf,
    /// Files per top-level xid, in arrival order: (subxid, table, path).
    files: BTreeMap<u32, Vec<(u32, Arc<TableName>, PathBuf)>>,
    next: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn arrow(table: &TableName) -> impl FnOnce(deltalake::arrow::error::ArrowError) -> Error + '_ {
    move |source| Error::Arrow {
        table: table.to_string(),
        source,
    }
}

impl Spill {
    /// Use `dir`, removing what a previous run left (those transactions will be re-sent).
    pub fn open(dir: PathBuf) -> Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Spill {
            dir,
            files: BTreeMap::new(),
            next: 0,
        })
    }

    /// A spill that has no directory yet (read-only use).
    pub fn unopened() -> Self {
        Spill {
            dir: PathBuf::new(),
            files: BTreeMap::new(),
            next: 0,
        }
    }

    /// Write one chunk of `xid`'s rows to a new file.
    pub fn write(
        &mut self,
        xid: u32,
        subxid: u32,
        table: &Arc<TableName>,
        batch: &RecordBatch,
    ) -> Result<()> {
        let path = self.dir.join(format!("{xid}-{subxid}-{}.arrow", self.next));
        self.next += 1;
        let file = File::create(&path).map_err(io(&path))?;
        let mut writer =
            StreamWriter::try_new(BufWriter::new(file), &batch.schema()).map_err(arrow(table))?;
        writer.write(batch).map_err(arrow(table))?;
        writer.finish().map_err(arrow(table))?;
        self.files
            .entry(xid)
            .or_default()
            .push((subxid, table.clone(), path));
        Ok(())
    }

    /// Forget an aborted (sub)transaction's rows.
    pub fn abort(&mut self, xid: u32, subxid: u32) {
        let Some(files) = self.files.get_mut(&xid) else {
            return;
        };
        files.retain(|(s, _, path)| {
            let drop = subxid == xid || *s == subxid;
            if drop {
                let _ = std::fs::remove_file(path);
            }
            !drop
        });
        if subxid == xid {
            self.files.remove(&xid);
        }
    }

    /// Take the spill files of a committed transaction for `table`, in arrival order.
    pub fn take(&mut self, xid: u32) -> Vec<(Arc<TableName>, PathBuf)> {
        self.files
            .remove(&xid)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, t, p)| (t, p))
            .collect()
    }
}

/// Read back one spill file's batches, then delete it.
pub fn read(table: &TableName, path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(io(path))?;
    let reader = StreamReader::try_new(BufReader::new(file), None).map_err(arrow(table))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(arrow(table))?;
    std::fs::remove_file(path).map_err(io(path))?;
    Ok(batches)
}
