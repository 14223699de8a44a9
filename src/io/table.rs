//! `CorpusTable`: a corpus as a DataFusion table, so that pipelines and `openseek sql` read it alike.
//! Files are spread over partitions (one reader thread each) and streamed batch by batch.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
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
    schema: SchemaRef,
    sink: Arc<dyn RejectSink>,
    stats: Arc<ReadStats>,
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
            schema,
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
            schema,
            sink,
            stats,
        }
    }

    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    pub fn stats(&self) -> &Arc<ReadStats> {
        &self.stats
    }

    /// Splits the files into `n` groups of similar total size (largest first onto the lightest group).
    fn groups(&self, n: usize) -> Vec<Vec<std::path::PathBuf>> {
        let mut files: Vec<(u64, std::path::PathBuf)> = self
            .spec
            .files
            .iter()
            .map(|f| (f.metadata().map(|m| m.len()).unwrap_or(0), f.clone()))
            .collect();
        files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let n = n.clamp(1, files.len().max(1));
        let mut groups: Vec<(u64, Vec<std::path::PathBuf>)> = vec![(0, Vec::new()); n];
        for (size, f) in files {
            let g = groups.iter_mut().min_by_key(|g| g.0).expect("n >= 1");
            g.0 += size;
            g.1.push(f);
        }
        groups
            .into_iter()
            .map(|mut g| {
                g.1.sort();
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
                    schema: Arc::clone(&self.schema),
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
    files: Vec<std::path::PathBuf>,
    spec: Arc<SourceSpec>,
    schema: SchemaRef,
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
        let (spec, schema, sink, stats) = (
            Arc::clone(&self.spec),
            Arc::clone(&self.schema),
            Arc::clone(&self.sink),
            Arc::clone(&self.stats),
        );
        builder.spawn_blocking(move || {
            let mut emit = |b| {
                let t = std::time::Instant::now();
                let sent = tx.blocking_send(Ok(b)).is_ok();
                stats.add(&stats.wait_nanos, t.elapsed().as_nanos() as u64);
                sent
            };
            for file in &files {
                let read = match spec.format {
                    Format::Jsonl => {
                        jsonl::read_file(file, &spec, &schema, sink.as_ref(), &stats, &mut emit)
                    }
                    Format::Parquet => parquet_source::read_file(
                        file,
                        &spec,
                        &schema,
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
