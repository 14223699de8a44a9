//! Output parts written atomically: to a hidden temporary name first, renamed once closed and synced, so
//! that a part that exists is complete and a killed run leaves only temporaries behind.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::json::writer::{LineDelimited, Writer as JsonWriter, WriterBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutFormat {
    #[default]
    Parquet,
    Jsonl,
}

impl OutFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutFormat::Parquet => "parquet",
            OutFormat::Jsonl => "jsonl",
        }
    }
}

/// Rows per Parquet row group: documents are large (10 KB on average in FineWeb-Edu), so groups stay at
/// a few to tens of MB.
const ROW_GROUP_ROWS: usize = 4096;

/// Encoded bytes per row group, whatever its rows: a writer holds its group in memory until it is
/// complete, so long documents must not make it hold more.
const ROW_GROUP_BYTES: usize = 32 << 20;

/// Rows per row group of a checkpoint: a corpus stage spreads a checkpoint over the cores by row group,
/// so groups are small enough to balance the cores to the end.
const CHECKPOINT_ROW_GROUP_ROWS: usize = 256;

enum Inner {
    Parquet(ArrowWriter<File>),
    Jsonl(JsonWriter<BufWriter<File>, LineDelimited>),
}

pub struct PartWriter {
    tmp: PathBuf,
    path: PathBuf,
    inner: Inner,
    rows: u64,
}

/// The temporary name of a part: hidden, so that readers of the directory never pick it up.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

impl PartWriter {
    /// A data part: Parquet at zstd level 3, DataFusion's default.
    pub fn create(path: &Path, format: OutFormat, schema: &SchemaRef) -> Result<Self> {
        Self::create_at_level(path, format, schema, 3, ROW_GROUP_ROWS)
    }

    /// A checkpoint between segments: read once by the next segment, so zstd level 1 and small groups.
    pub fn create_checkpoint(path: &Path, schema: &SchemaRef) -> Result<Self> {
        Self::create_at_level(
            path,
            OutFormat::Parquet,
            schema,
            1,
            CHECKPOINT_ROW_GROUP_ROWS,
        )
    }

    /// A rejects part: zstd level 1. With `keep_rejected_text` rejects hold most of the input's text and
    /// are read rarely; level 3 would spend a tenth of a rule-filter run compressing them.
    pub fn create_rejects(path: &Path, schema: &SchemaRef) -> Result<Self> {
        Self::create_at_level(path, OutFormat::Parquet, schema, 1, ROW_GROUP_ROWS)
    }

    /// An intermediate Parquet file of random keys (band keys): zstd would spend time and save nothing.
    pub fn create_uncompressed(path: &Path, schema: &SchemaRef) -> Result<Self> {
        Self::create_at_level(path, OutFormat::Parquet, schema, 0, 1 << 20)
    }

    /// `zstd_level` 0 writes uncompressed Parquet.
    fn create_at_level(
        path: &Path,
        format: OutFormat,
        schema: &SchemaRef,
        zstd_level: i32,
        row_group_rows: usize,
    ) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = temp_name(path);
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let inner = match format {
            OutFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(if zstd_level == 0 {
                        Compression::UNCOMPRESSED
                    } else {
                        Compression::ZSTD(ZstdLevel::try_new(zstd_level)?)
                    })
                    .set_max_row_group_row_count(Some(row_group_rows))
                    .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
                    .build();
                Inner::Parquet(ArrowWriter::try_new(
                    file,
                    SchemaRef::clone(schema),
                    Some(props),
                )?)
            }
            OutFormat::Jsonl => Inner::Jsonl(
                WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(BufWriter::with_capacity(1 << 20, file)),
            ),
        };
        Ok(Self {
            tmp,
            path: path.to_path_buf(),
            inner,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        match &mut self.inner {
            Inner::Parquet(w) => w.write(batch)?,
            Inner::Jsonl(w) => w.write(batch)?,
        }
        Ok(())
    }

    /// Closes, syncs and renames the part into place; returns its row count.
    pub fn finish(self) -> Result<u64> {
        let file = match self.inner {
            Inner::Parquet(w) => w.into_inner()?,
            Inner::Jsonl(mut w) => {
                w.finish()?;
                w.into_inner().into_inner().map_err(|e| e.into_error())?
            }
        };
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("renaming {} into place", self.path.display()))?;
        Ok(self.rows)
    }
}
