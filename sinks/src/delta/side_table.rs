//! Small append-only Delta tables beside the lake (dead letters and their resolutions): created
//! on the first append, one commit per append, read back whole. Any Delta reader can query
//! them; nothing here is on the replication path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::Schema;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::StructType;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use object_store::ObjectStoreExt;

use crate::{Error, Result};

/// One side table.
pub struct SideTable {
    path: PathBuf,
    name: String,
    schema: Arc<Schema>,
    table: Option<DeltaTable>,
}

/// The `file://` URL of a local directory.
pub(crate) fn url(path: &Path) -> Result<url::Url> {
    let absolute = std::path::absolute(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    url::Url::from_directory_path(&absolute).map_err(|()| Error::InvalidPath {
        path: path.display().to_string(),
        reason: "not an absolute local path".into(),
    })
}

impl SideTable {
    /// The table at `path` named `name` (Delta table name) with `schema`.
    pub fn new(path: PathBuf, name: String, schema: Arc<Schema>) -> Self {
        SideTable {
            path,
            name,
            schema,
            table: None,
        }
    }

    /// Its schema.
    pub fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    fn delta(&self, source: deltalake::DeltaTableError) -> Error {
        Error::Delta {
            table: self.path.display().to_string(),
            source,
        }
    }

    async fn open(&mut self) -> Result<&mut DeltaTable> {
        if self.table.is_none() {
            std::fs::create_dir_all(&self.path).map_err(|source| Error::Io {
                path: self.path.display().to_string(),
                source,
            })?;
            let url = url(&self.path)?;
            let table = if self.path.join("_delta_log").is_dir() {
                deltalake::open_table(url)
                    .await
                    .map_err(|e| self.delta(e))?
            } else {
                let schema: StructType =
                    self.schema.as_ref().try_into_kernel().map_err(|e| {
                        self.delta(deltalake::DeltaTableError::Generic(e.to_string()))
                    })?;
                DeltaTable::try_from_url(url)
                    .await
                    .map_err(|e| self.delta(e))?
                    .create()
                    .with_table_name(self.name.clone())
                    .with_columns(schema.fields().cloned())
                    .await
                    .map_err(|e| self.delta(e))?
            };
            self.table = Some(table);
        }
        self.table.as_mut().ok_or_else(|| Error::InvalidPath {
            path: String::new(),
            reason: "side table vanished".into(),
        })
    }

    /// Appends `batch` durably (one Delta commit).
    pub async fn append(&mut self, batch: RecordBatch) -> Result<()> {
        let path = self.path.display().to_string();
        let table = self.open().await?;
        let delta = |source| Error::Delta {
            table: path.clone(),
            source,
        };
        let mut writer = RecordBatchWriter::for_table(table).map_err(delta)?;
        writer.write(batch).await.map_err(delta)?;
        writer.flush_and_commit(table).await.map_err(delta)?;
        Ok(())
    }

    /// Every row of the table at `path` (none if it does not exist yet).
    pub async fn scan(path: &Path) -> Result<Vec<RecordBatch>> {
        if !path.join("_delta_log").is_dir() {
            return Ok(Vec::new());
        }
        let delta = |source| Error::Delta {
            table: path.display().to_string(),
            source,
        };
        let table = deltalake::open_table(url(path)?).await.map_err(delta)?;
        Self::scan_table(&table, path).await
    }

    /// Every row of the open `table` (at `path`, for errors).
    pub async fn scan_table(table: &DeltaTable, path: &Path) -> Result<Vec<RecordBatch>> {
        let delta = |source| Error::Delta {
            table: path.display().to_string(),
            source,
        };
        let snapshot = table.snapshot().map_err(delta)?;
        let store = table.log_store().object_store(None);
        let files: Vec<_> = snapshot
            .log_data()
            .into_iter()
            .map(|f| f.object_store_path())
            .collect();
        let mut out = Vec::new();
        for file in files {
            let bytes = store
                .get(&file)
                .await
                .map_err(|e| delta(e.into()))?
                .bytes()
                .await
                .map_err(|e| delta(e.into()))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(|b| b.build())
                .map_err(|e| delta(e.into()))?;
            for batch in reader {
                out.push(batch.map_err(|source| Error::Arrow {
                    table: path.display().to_string(),
                    source,
                })?);
            }
        }
        Ok(out)
    }
}
