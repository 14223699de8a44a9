//! `CorpusTable`: a corpus as a DataFusion table, so that pipelines and `openseek sql` read it alike.
//! Files are spread over partitions (one reader thread each) and streamed batch by batch.

use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};

use super::malformed::{ReadStats, RejectSink};
use super::{Format, SourceSpec, jsonl, parquet_source};

pub struct CorpusTable {
    spec: Arc<SourceSpec>,
    /// The documents' columns, as the readers make them.
    read_schema: SchemaRef,
    /// `read_schema`, with [`POS_COL`] last when positions are on.
    schema: SchemaRef,
    positions: Option<Positions>,
    sink: Arc<dyn RejectSink>,
    stats: Arc<ReadStats>,
}

/// The column that gives each row of a pipeline's input its place in it (see [`Positions`]).
pub const POS_COL: &str = "__os_pos";

/// Where a table's files are in a pipeline's input, so that each row gets its place in the input as
/// `source << 56 | file << 32 | row`: the order of `keep: first` in corpus stages, which otherwise
/// would see rows in the order that parallel readers happened to write them.
#[derive(Clone, Copy, Debug)]
pub struct Positions {
    /// The source's index in the pipeline's input (at most 255).
    pub source: u64,
    /// The index of the table's first file among its source's files.
    pub first_file: u64,
}

impl Positions {
    const MAX_FILES: u64 = 1 << 24;

    /// A row's position; a file's rows past 2^32 share the last one (their order among themselves is
    /// then the read order, which is the file's).
    fn of(&self, file: u64, row: u64) -> u64 {
        self.source << 56 | (self.first_file + file) << 32 | row.min(u64::from(u32::MAX))
    }
}

impl fmt::Debug for CorpusTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CorpusTable")
            .field("dataset", &self.spec.dataset)
            .field("files", &self.spec.files.len())
            .finish()
    }
}

impl CorpusTable {
    /// Opens a corpus: infers its schema from the first file(s); nothing else is read until a query runs.
    pub fn try_new(
        spec: SourceSpec,
        sink: Arc<dyn RejectSink>,
        stats: Arc<ReadStats>,
    ) -> anyhow::Result<Self> {
        let schema = match spec.format {
            Format::Jsonl => jsonl::infer_schema(&spec)?,
            Format::Parquet => parquet_source::infer_schema(&spec)?,
        };
        Ok(Self {
            spec: Arc::new(spec),
            read_schema: Arc::clone(&schema),
            schema,
            positions: None,
            sink,
            stats,
        })
    }

    /// Opens a corpus with a known schema (the run infers it once for all its tasks, so that every
    /// part has the same columns).
    pub fn with_schema(
        spec: SourceSpec,
        schema: SchemaRef,
        sink: Arc<dyn RejectSink>,
        stats: Arc<ReadStats>,
    ) -> Self {
        Self {
            spec: Arc::new(spec),
            read_schema: Arc::clone(&schema),
            schema,
            positions: None,
            sink,
            stats,
        }
    }

    /// Adds [`POS_COL`] to every row: the table's files start at `positions` in the input.
    pub fn with_positions(mut self, positions: Positions) -> anyhow::Result<Self> {
        let files = positions.first_file + self.spec.files.len() as u64;
        if positions.source > 255 || files > Positions::MAX_FILES {
            anyhow::bail!(
                "a pipeline's input numbers at most 256 sources of 2^24 files each \
                 (source {} has {files} files)",
                positions.source
            );
        }
        let mut fields = self.read_schema.fields().to_vec();
        fields.push(Arc::new(Field::new(POS_COL, DataType::UInt64, false)));
        self.schema = Arc::new(Schema::new(fields));
        self.positions = Some(positions);
        Ok(self)
    }
    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    pub fn stats(&self) -> &Arc<ReadStats> {
        &self.stats
    }

    /// Splits the files into `n` groups of similar total size (largest first onto the lightest group),
    /// each file with its index in the table's list.
    fn groups(&self, n: usize) -> Vec<Vec<(u64, std::path::PathBuf)>> {
        let mut files: Vec<(u64, u64, std::path::PathBuf)> = self
            .spec
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                (
                    f.metadata().map(|m| m.len()).unwrap_or(0),
                    i as u64,
                    f.clone(),
                )
            })
            .collect();
        files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.cmp(&b.2)));
        let n = n.clamp(1, files.len().max(1));
        let mut groups: Vec<(u64, Vec<(u64, std::path::PathBuf)>)> = vec![(0, Vec::new()); n];
        for (size, i, f) in files {
            let g = groups.iter_mut().min_by_key(|g| g.0).expect("n >= 1");
            g.0 += size;
            g.1.push((i, f));
        }
        groups
            .into_iter()
            .map(|mut g| {
                g.1.sort_by(|a, b| a.1.cmp(&b.1));
                g.1
            })
            .collect()
    }
}

#[async_trait]
impl TableProvider for CorpusTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let partitions: Vec<Arc<dyn PartitionStream>> = self
            .groups(state.config().target_partitions())
            .into_iter()
            .map(|files| {
                Arc::new(FilesPartition {
                    files,
                    spec: Arc::clone(&self.spec),
                    read_schema: Arc::clone(&self.read_schema),
                    schema: Arc::clone(&self.schema),
                    positions: self.positions,
                    sink: Arc::clone(&self.sink),
                    stats: Arc::clone(&self.stats),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Arc::new(StreamingTableExec::try_new(
            Arc::clone(&self.schema),
            partitions,
            projection,
            [],
            false,
            limit,
        )?))
    }
}

/// One partition: a group of files read in order on a blocking thread.
struct FilesPartition {
    files: Vec<(u64, std::path::PathBuf)>,
    spec: Arc<SourceSpec>,
    read_schema: SchemaRef,
    schema: SchemaRef,
    positions: Option<Positions>,
    sink: Arc<dyn RejectSink>,
    stats: Arc<ReadStats>,
}

impl fmt::Debug for FilesPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilesPartition")
            .field("files", &self.files.len())
            .finish()
    }
}

impl PartitionStream for FilesPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&self.schema), 2);
        let tx = builder.tx();
        let files = self.files.clone();
        let (spec, read_schema, schema, positions, sink, stats) = (
            Arc::clone(&self.spec),
            Arc::clone(&self.read_schema),
            Arc::clone(&self.schema),
            self.positions,
            Arc::clone(&self.sink),
            Arc::clone(&self.stats),
        );
        builder.spawn_blocking(move || {
            for (file_index, file) in &files {
                let mut row = 0u64;
                let mut emit = |b: RecordBatch| {
                    let b = match positions {
                        Some(p) => {
                            let pos: UInt64Array = (row..row + b.num_rows() as u64)
                                .map(|r| p.of(*file_index, r))
                                .collect();
                            row += b.num_rows() as u64;
                            let mut columns = b.columns().to_vec();
                            columns.push(Arc::new(pos));
                            match RecordBatch::try_new(Arc::clone(&schema), columns) {
                                Ok(b) => b,
                                Err(e) => return tx.blocking_send(Err(e.into())).is_ok(),
                            }
                        }
                        None => b,
                    };
                    let t = std::time::Instant::now();
                    let sent = tx.blocking_send(Ok(b)).is_ok();
                    stats.add(&stats.wait_nanos, t.elapsed().as_nanos() as u64);
                    sent
                };
                let schema = &read_schema;
                let read = match spec.format {
                    Format::Jsonl => {
                        jsonl::read_file(file, &spec, schema, sink.as_ref(), &stats, &mut emit)
                    }
                    Format::Parquet => parquet_source::read_file(
                        file,
                        &spec,
                        schema,
                        sink.as_ref(),
                        &stats,
                        &mut emit,
                    ),
                };
                read.map_err(|e| DataFusionError::External(format!("{e:#}").into()))?;
                if tx.is_closed() {
                    break;
                }
            }
            Ok(())
        });
        builder.build()
    }
}
