//! The input of a corpus stage as numbered work units: the previous segment's checkpoint, one unit per
//! Parquet row group, in file-name order. A document's number is its position in that order, read from
//! the files' footers, so every pass over the input (signatures, ids, output) numbers documents the same
//! way without a column for it, and `keep: first` means first in input order.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};

/// One row group of one checkpoint file.
#[derive(Debug, Clone)]
pub struct Unit {
    pub file: PathBuf,
    pub row_group: usize,
    /// The number of the unit's first document.
    pub first_doc: u64,
    pub rows: u64,
}

/// The `*.parquet` files of a checkpoint, in name order.
fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading checkpoint {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "parquet")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The columns of a checkpoint: those of its first part (every part has the same; the segment before
/// writes one even when empty), or the document columns when it has none.
pub fn checkpoint_schema(dir: &Path) -> Result<SchemaRef> {
    Ok(match checkpoint_files(dir)?.first() {
        Some(f) => ParquetRecordBatchReaderBuilder::try_new(
            File::open(f).with_context(|| format!("opening {}", f.display()))?,
        )
        .with_context(|| format!("reading the footer of {}", f.display()))?
        .schema()
        .clone(),
        None => std::sync::Arc::new(arrow::datatypes::Schema::new(crate::io::jsonl::doc_fields())),
    })
}

/// The units of every `*.parquet` file under `dir`, in name order, numbered from 0.
pub fn plan_units(dir: &Path) -> Result<Vec<Unit>> {
    let files = checkpoint_files(dir)?;
    let mut units = Vec::new();
    let mut next = 0u64;
    for file in files {
        let reader = SerializedFileReader::new(
            File::open(&file).with_context(|| format!("opening {}", file.display()))?,
        )
        .with_context(|| format!("reading the footer of {}", file.display()))?;
        for (rg, meta) in reader.metadata().row_groups().iter().enumerate() {
            let rows = meta.num_rows() as u64;
            units.push(Unit {
                file: file.clone(),
                row_group: rg,
                first_doc: next,
                rows,
            });
            next += rows;
        }
    }
    Ok(units)
}

/// Total documents of the units.
pub fn doc_count(units: &[Unit]) -> u64 {
    units.last().map(|u| u.first_doc + u.rows).unwrap_or(0)
}

/// The batches of one unit, with only `columns` in that order (all columns when `None`), in row order.
pub fn read_unit(
    unit: &Unit,
    columns: Option<&[&str]>,
) -> Result<impl Iterator<Item = Result<RecordBatch>> + Send + use<>> {
    let file =
        File::open(&unit.file).with_context(|| format!("opening {}", unit.file.display()))?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading {}", unit.file.display()))?
        .with_row_groups(vec![unit.row_group])
        .with_batch_size(1024);
    // The reader returns projected columns in the file's order: `order` puts them in the order asked.
    let mut order: Option<Vec<usize>> = None;
    if let Some(cols) = columns {
        let schema = builder.schema().clone();
        let mut indices = Vec::with_capacity(cols.len());
        for c in cols {
            indices.push(schema.index_of(c).with_context(|| {
                format!(
                    "{}: the checkpoint has no column `{c}`",
                    unit.file.display()
                )
            })?);
        }
        let mut sorted = indices.clone();
        sorted.sort_unstable();
        order = Some(
            indices
                .iter()
                .map(|i| sorted.binary_search(i).expect("present"))
                .collect(),
        );
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
        builder = builder.with_projection(mask);
    }
    let reader = builder.build()?;
    let file = unit.file.clone();
    Ok(reader.map(move |b| {
        let b = b.with_context(|| format!("reading {}", file.display()))?;
        Ok(match &order {
            Some(order) => b.project(order)?,
            None => b,
        })
    }))
}

/// Runs `work(thread, unit)` over the units on `threads` threads, each taking the next unit when it is
/// free (units differ in size), and returns the results in unit order.
pub fn for_each_unit<T, F>(units: &[Unit], threads: usize, work: F) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize, &Unit) -> Result<T> + Sync,
{
    let threads = threads.clamp(1, units.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<T>> = (0..units.len()).map(|_| None).collect();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (work, next) = (&work, &next);
                s.spawn(move || -> Result<Vec<(usize, T)>> {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= units.len() {
                            return Ok(out);
                        }
                        out.push((i, work(t, &units[i])?));
                    }
                })
            })
            .collect();
        for h in handles {
            for (i, r) in h.join().expect("unit worker panicked")? {
                results[i] = Some(r);
            }
        }
        Ok(())
    })?;
    Ok(results
        .into_iter()
        .map(|r| r.expect("every unit ran"))
        .collect())
}

/// What a corpus stage does to each batch of its input as the next stages stream its output.
pub trait UnitBatches: Send + Sync + 'static {
    /// The output's columns.
    fn schema(&self) -> SchemaRef;
    /// The rows of `batch` (documents `first`, `first + 1`, …) that go on, with the output's columns.
    fn process(&self, batch: &RecordBatch, first: u64) -> Result<RecordBatch>;
}

/// `processor` over `units` as a DataFusion table of `partitions` streams, each taking the next unit
/// when it is free (units differ in size).
pub fn unit_table(
    units: Vec<Unit>,
    processor: Arc<dyn UnitBatches>,
    partitions: usize,
) -> Result<StreamingTable> {
    let schema = processor.schema();
    let queue = Arc::new(UnitQueue {
        units,
        next: AtomicUsize::new(0),
        processor,
    });
    let partitions: Vec<Arc<dyn PartitionStream>> = (0..partitions.max(1))
        .map(|_| {
            Arc::new(UnitPartition {
                queue: Arc::clone(&queue),
                schema: Arc::clone(&schema),
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    StreamingTable::try_new(schema, partitions).context("planning a corpus stage's output")
}

struct UnitQueue {
    units: Vec<Unit>,
    /// The next unit a partition takes.
    next: AtomicUsize,
    processor: Arc<dyn UnitBatches>,
}

struct UnitPartition {
    queue: Arc<UnitQueue>,
    schema: SchemaRef,
}

impl std::fmt::Debug for UnitPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "corpus stage output over {} units",
            self.queue.units.len()
        )
    }
}

impl PartitionStream for UnitPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let queue = Arc::clone(&self.queue);
        let units = std::iter::from_fn({
            let queue = Arc::clone(&queue);
            move || {
                let i = queue.next.fetch_add(1, Ordering::Relaxed);
                queue.units.get(i).cloned()
            }
        });
        let batches = units.flat_map(move |unit| {
            let queue = Arc::clone(&queue);
            let mut next = unit.first_doc;
            let reader: Box<dyn Iterator<Item = Result<RecordBatch>> + Send> =
                match read_unit(&unit, None) {
                    Ok(r) => Box::new(r),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
            reader.map(move |batch| {
                let batch = batch?;
                let first = next;
                next += batch.num_rows() as u64;
                queue.processor.process(&batch, first)
            })
        });
        let batches =
            batches.map(|r| r.map_err(|e| datafusion::error::DataFusionError::External(e.into())));
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(batches),
        ))
    }
}
