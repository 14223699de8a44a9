//! `tokenize`: documents into Megatron token shards, one set of prefixes per dataset (or per value of a
//! `by` column), with the rows passing on to the next stages with a `tokens` column.
//!
//! It is a corpus stage: it reads the previous segment's checkpoint in order, so the shards come out
//! the same on every run. A reader thread decodes the checkpoint while Hugging Face `tokenizers`
//! encodes batches of `batch_docs` documents (or `batch_mb` of text) on all cores
//! (`encode_fast`: no offsets, and the faster pre-tokenizer and normalizer of `encoder.rs`); each
//! document is framed by the template and appended to its group's [`ShardSetWriter`], whose prefixes
//! appear only when complete.

pub mod encoder;
mod fast_split;
pub mod options;
pub mod template;
pub mod tokenizer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::DataFrame;
use openseek_shards::{DType, Provenance, ShardSetWriter};
use openseek_udfs::string_iter;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::context::Engine;
use crate::progress::Progress;
use crate::report::StageReport;
use crate::stages::units::{Unit, checkpoint_schema, doc_count, plan_units, read_unit};
use options::TokenizeOptions;
use template::Template;

/// The column added to every row: its tokens, framing included.
pub const TOKENS_COL: &str = "tokens";

/// What `tokenize` wrote, in the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenizeSummary {
    pub tokenizer: String,
    pub dtype: String,
    pub output: String,
    pub documents: u64,
    pub tokens: u64,
    pub prefixes: Vec<PrefixSummary>,
    /// Wall seconds of the stage (reading, encoding, writing).
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefixSummary {
    pub prefix: String,
    pub group: String,
    pub documents: u64,
    pub tokens: u64,
}

/// A planned `tokenize`: `df` streams the rows (with `tokens`) and writes the shards as it goes.
pub struct TokenizeRun {
    pub df: DataFrame,
    shared: Arc<Shared>,
    label: String,
}

struct Shared {
    units: Vec<Unit>,
    schema: SchemaRef,
    by: String,
    template: Template,
    /// What encodes the documents (`encoder.rs`); the loaded tokenizer itself is not kept.
    encoder: encoder::Encoder,
    tokenizer: openseek_shards::TokenizerInfo,
    template_source: String,
    dtype: DType,
    output: PathBuf,
    max_bytes: Option<u64>,
    batch_docs: usize,
    batch_bytes: usize,
    done: Arc<AtomicU64>,
    /// Set when the stream ends: what was written.
    result: Mutex<Option<TokenizeSummary>>,
    /// Text bytes read (every row goes on, so also the bytes out).
    bytes: AtomicU64,
}

impl TokenizeRun {
    /// The stage's report, once `df` was streamed to the end.
    pub fn finish(self) -> Result<StageReport> {
        let summary = self
            .shared
            .result
            .lock()
            .expect("tokenize lock")
            .take()
            .context("the tokenize output was not streamed to its end")?;
        let mut report = StageReport::new(&self.label);
        // Every row is a document of the shards.
        report.rows_in = summary.documents;
        report.rows_out = report.rows_in;
        report.bytes_in = self.shared.bytes.load(Ordering::Relaxed);
        report.bytes_out = report.bytes_in;
        report.seconds = summary.seconds;
        report.tokenize = Some(summary);
        Ok(report)
    }
}

/// Prepares the stage over the checkpoint in `input_dir`. `base` (the pipeline's directory) resolves
/// a tokenizer path, `run_dir` (the run's output directory) a relative `output`.
pub fn plan(
    engine: &Engine,
    opts: &TokenizeOptions,
    label: &str,
    input_dir: &Path,
    (base, run_dir): (&Path, &Path),
    progress: &Progress,
) -> Result<TokenizeRun> {
    let tokenizer = tokenizer::load(&opts.tokenizer, base)?;
    let template = Template::parse(&opts.template, &tokenizer.tokenizer, &opts.tokenizer)?;
    let dtype = match opts.dtype()? {
        Some(d) => d,
        None => DType::for_vocab(tokenizer.info.vocab_size),
    };
    let output = run_dir.join(&opts.output);
    clear_output(&output)?;
    let units = plan_units(input_dir)?;
    let input_schema = checkpoint_schema(input_dir)?;
    if input_schema.index_of(&opts.by).is_err() {
        anyhow::bail!("{label}: by: the input has no column `{}`", opts.by);
    }
    let mut fields: Vec<_> = input_schema
        .fields()
        .iter()
        .filter(|f| f.name() != TOKENS_COL)
        .cloned()
        .collect();
    fields.push(Arc::new(Field::new(TOKENS_COL, DataType::Int64, false)));
    let schema = Arc::new(Schema::new(fields));
    let n = doc_count(&units);
    tracing::info!(
        "{label}: {n} documents with {} ({} ids, {dtype}) into {}",
        opts.tokenizer,
        tokenizer.info.vocab_size,
        output.display()
    );
    let shared = Arc::new(Shared {
        units,
        schema: Arc::clone(&schema),
        by: opts.by.clone(),
        template,
        encoder: encoder::encoder(&tokenizer.tokenizer)?,
        tokenizer: tokenizer.info,
        template_source: opts.template.clone(),
        dtype,
        output,
        max_bytes: match opts.max_shard_mb {
            Some(mb) => Some(
                mb.checked_mul(1 << 20)
                    .with_context(|| format!("{label}: max_shard_mb {mb} is too large"))?,
            ),
            None => None,
        },
        batch_docs: opts.batch_docs,
        batch_bytes: usize::try_from(opts.batch_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        done: progress.phase(format!("{label}: documents"), Some(n)),
        result: Mutex::new(None),
        bytes: AtomicU64::new(0),
    });
    let partition: Arc<dyn PartitionStream> = Arc::new(TokenizePartition {
        shared: Arc::clone(&shared),
    });
    let table =
        StreamingTable::try_new(schema, vec![partition]).context("planning the tokenize output")?;
    let df = engine.ctx.read_table(Arc::new(table))?;
    Ok(TokenizeRun {
        df,
        shared,
        label: label.to_string(),
    })
}

/// Removes the temporaries an interrupted attempt left in `dir` (`P.bin.tmp`, `P.idx.tmp`,
/// `P.json.tmp`); its complete prefixes are overwritten, or removed once the groups are written.
fn clear_output(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let path = e?.path();
        let ours = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            [".bin.tmp", ".idx.tmp", ".json.tmp"]
                .iter()
                .any(|ext| n.ends_with(ext))
        });
        if ours && path.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing {} of an earlier attempt", path.display()))?;
        }
    }
    Ok(())
}

#[derive(Debug)]
struct TokenizePartition {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tokenize over {} units", self.units.len())
    }
}

impl PartitionStream for TokenizePartition {
    fn schema(&self) -> &SchemaRef {
        &self.shared.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&self.shared.schema), 2);
        let tx = builder.tx();
        let shared = Arc::clone(&self.shared);
        builder.spawn_blocking(move || {
            let emit = |b: RecordBatch| tx.blocking_send(Ok(b)).is_ok();
            shared
                .run(emit)
                .map_err(|e| DataFusionError::External(format!("{e:#}").into()))
        });
        builder.build()
    }
}

impl Shared {
    /// Reads, encodes, writes and emits every document; records the summary at the end.
    fn run(&self, mut emit: impl FnMut(RecordBatch) -> bool) -> Result<()> {
        let started = Instant::now();
        let mut writers = Writers::default();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<RecordBatch>>(2);
        std::thread::scope(|scope| -> Result<()> {
            // The reader: checkpoint batches cut and gathered into batches of at most `batch_docs`
            // documents and `batch_mb` of text, decoded while the previous batch is encoded.
            scope.spawn(move || {
                let mut batcher = Batcher::new(self.batch_docs, self.batch_bytes);
                let result = (|| -> Result<()> {
                    for unit in &self.units {
                        for batch in read_unit(unit, None)? {
                            for ready in batcher.push(batch?)? {
                                if tx.send(Ok(ready)).is_err() {
                                    return Ok(());
                                }
                            }
                        }
                    }
                    if let Some(last) = batcher.flush()? {
                        let _ = tx.send(Ok(last));
                    }
                    Ok(())
                })();
                if let Err(e) = result {
                    let _ = tx.send(Err(e));
                }
            });
            for batch in rx {
                let batch = batch?;
                let out = self.encode(&batch, &mut writers)?;
                if !emit(out) {
                    // The consumer failed: its error is the run's; these shards must not look whole.
                    anyhow::bail!("the tokenize output stopped before its end");
                }
            }
            Ok(())
        })?;
        let mut summary = TokenizeSummary {
            tokenizer: self.tokenizer.name.clone(),
            dtype: self.dtype.to_string(),
            output: self.output.to_string_lossy().into_owned(),
            ..Default::default()
        };
        for (group, (name, w)) in writers.by_group {
            let written = w.finish()?;
            remove_stale_prefixes(&self.output, &name, written.len())?;
            let group = group.unwrap_or_else(|| "null".to_string());
            for (prefix, sidecar) in written {
                summary.documents += sidecar.documents;
                summary.tokens += sidecar.tokens;
                summary.prefixes.push(PrefixSummary {
                    prefix: prefix.to_string_lossy().into_owned(),
                    group: group.clone(),
                    documents: sidecar.documents,
                    tokens: sidecar.tokens,
                });
            }
        }
        summary.seconds = started.elapsed().as_secs_f64();
        *self.result.lock().expect("tokenize lock") = Some(summary);
        Ok(())
    }

    /// One batch: its documents encoded on all cores, framed, appended to their groups' shards; the
    /// batch returned with its `tokens` column.
    fn encode(&self, batch: &RecordBatch, writers: &mut Writers) -> Result<RecordBatch> {
        let texts: Vec<&str> =
            string_iter(batch.column_by_name("text").context("no text column")?)?
                .map(|t| t.unwrap_or(""))
                .collect();
        let groups = arrow::compute::cast(
            batch.column_by_name(&self.by).context("the `by` column")?,
            &DataType::Utf8,
        )?;
        let groups = groups.as_string::<i32>();
        let bytes: usize = texts.iter().map(|t| t.len()).sum();
        let framed = self.encode_texts(&texts)?;
        let mut counts = Vec::with_capacity(framed.len());
        for (i, ids) in framed.iter().enumerate() {
            let group = (!groups.is_null(i)).then(|| groups.value(i));
            self.writer(writers, group).add_document(ids)?;
            counts.push(ids.len() as i64);
        }
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.done
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let mut columns: Vec<Arc<dyn Array>> =
            self.schema
                .fields()
                .iter()
                .filter(|f| f.name() != TOKENS_COL)
                .map(|f| {
                    batch.column_by_name(f.name()).cloned().with_context(|| {
                        format!("column {} missing from a checkpoint part", f.name())
                    })
                })
                .collect::<Result<_>>()?;
        columns.push(Arc::new(Int64Array::from(counts)));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// The framed ids of each text, encoded on all cores. Each document's `Encoding` is dropped as soon
    /// as its ids are framed: it holds ~100 bytes per byte of text while it lives (a String per token,
    /// and the normalizer's alignments, 16 bytes per byte, once for the text and once for its splits),
    /// so a batch keeps 4 bytes a token, not all its encodings as `encode_batch_fast` would.
    /// Documents over [`HUGE_DOC_BYTES`] are encoded one at a time, beside the others: two 2 MB
    /// documents at once took 400 MB, which made the peak depend on how the big documents happened to
    /// meet, and so grow with the corpus. With them serialised the peak is set by the largest document.
    fn encode_texts(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encode = |text: &str| -> tokenizers::Result<Vec<u32>> {
            let encoding = self.encoder.encode_fast(text, false)?;
            let mut ids = Vec::new();
            self.template.frame(encoding.get_ids(), &mut ids);
            Ok(ids)
        };
        let (huge, small): (Vec<usize>, Vec<usize>) =
            (0..texts.len()).partition(|&i| texts[i].len() > HUGE_DOC_BYTES);
        let (huge_ids, small_ids) = rayon::join(
            || huge.iter().map(|&i| encode(texts[i])).collect::<Vec<_>>(),
            || {
                small
                    .par_iter()
                    .map(|&i| encode(texts[i]))
                    .collect::<Vec<_>>()
            },
        );
        let mut framed = vec![Vec::new(); texts.len()];
        for (i, ids) in huge
            .into_iter()
            .zip(huge_ids)
            .chain(small.into_iter().zip(small_ids))
        {
            framed[i] = ids.map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        }
        Ok(framed)
    }
}

/// Text above which a document is encoded on its own (see [`Shared::encode_texts`]).
const HUGE_DOC_BYTES: usize = 256 << 10;

/// Cuts and gathers record batches into batches of at most `max_docs` rows and about `max_bytes` of
/// text (a batch holds at least one row), so that a batch of long documents is as bounded as one of
/// short ones.
struct Batcher {
    max_docs: usize,
    max_bytes: usize,
    pending: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

impl Batcher {
    fn new(max_docs: usize, max_bytes: usize) -> Self {
        Self {
            max_docs,
            max_bytes,
            pending: Vec::new(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Takes `batch`; returns the batches it completed.
    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let lengths: Vec<usize> =
            string_iter(batch.column_by_name("text").context("no text column")?)?
                .map(|t| t.map_or(0, str::len))
                .collect();
        let mut ready = Vec::new();
        let mut start = 0;
        for (i, len) in lengths.iter().enumerate() {
            self.rows += 1;
            self.bytes += len;
            if self.rows >= self.max_docs || self.bytes >= self.max_bytes {
                self.pending.push(batch.slice(start, i + 1 - start));
                start = i + 1;
                ready.extend(self.flush()?);
            }
        }
        if start < batch.num_rows() {
            self.pending
                .push(batch.slice(start, batch.num_rows() - start));
        }
        Ok(ready)
    }

    /// The rows taken and not yet returned, as one batch.
    fn flush(&mut self) -> Result<Option<RecordBatch>> {
        self.rows = 0;
        self.bytes = 0;
        if self.pending.is_empty() {
            return Ok(None);
        }
        let batch = arrow::compute::concat_batches(&self.pending[0].schema(), self.pending.iter())?;
        self.pending.clear();
        Ok(Some(batch))
    }
}

/// One set of prefixes per group (NULL is a group of its own), and the file names taken.
#[derive(Default)]
struct Writers {
    by_group: BTreeMap<Option<String>, (String, ShardSetWriter)>,
    names: std::collections::HashSet<String>,
}

impl Shared {
    fn writer<'w>(&self, writers: &'w mut Writers, group: Option<&str>) -> &'w mut ShardSetWriter {
        let key = group.map(str::to_string);
        if !writers.by_group.contains_key(&key) {
            // Two groups whose names sanitise alike ("en/us", "en_us") get distinct files.
            let base = group.map_or_else(|| "null".to_string(), prefix_name);
            let mut name = base.clone();
            let mut k = 2;
            while !writers.names.insert(name.clone()) {
                name = format!("{base}~{k}");
                k += 1;
            }
            let w = ShardSetWriter::new(
                &self.output,
                &name,
                self.dtype,
                self.max_bytes,
                Provenance {
                    tokenizer: Some(self.tokenizer.clone()),
                    template: Some(self.template_source.clone()),
                    group: group.map(str::to_string),
                },
            );
            writers.by_group.insert(key.clone(), (name, w));
        }
        &mut writers.by_group.get_mut(&key).expect("inserted").1
    }
}

/// After a group's prefixes `NAME-00000 … NAME-{n-1}` were written, removes `NAME-{n}`, … that an
/// earlier attempt (with a smaller `max_shard_mb`) left, so that the directory holds one attempt.
fn remove_stale_prefixes(dir: &Path, name: &str, n: usize) -> Result<()> {
    for k in n.. {
        let prefix = dir.join(format!("{name}-{k:05}"));
        let json = openseek_shards::json_path(&prefix);
        if !json.exists() {
            return Ok(());
        }
        for f in [
            json,
            openseek_shards::bin_path(&prefix),
            openseek_shards::idx_path(&prefix),
        ] {
            if f.exists() {
                std::fs::remove_file(&f)
                    .with_context(|| format!("removing {} of an earlier attempt", f.display()))?;
            }
        }
    }
    Ok(())
}

/// A group's value as a file name: letters, digits, `-`, `_` and `.` kept, anything else `_`.
fn prefix_name(group: &str) -> String {
    let name: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        format!("_{name}")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    fn texts(lengths: &[usize]) -> RecordBatch {
        let texts: Vec<String> = lengths.iter().map(|&n| "x".repeat(n)).collect();
        RecordBatch::try_from_iter([("text", Arc::new(StringArray::from(texts)) as Arc<dyn Array>)])
            .unwrap()
    }

    fn lengths(batch: &RecordBatch) -> Vec<usize> {
        string_iter(batch.column(0))
            .unwrap()
            .map(|t| t.unwrap().len())
            .collect()
    }

    /// Batches end at `max_docs` rows or once `max_bytes` of text is reached, across and within the
    /// record batches that come in, and every row comes out once, in order.
    #[test]
    fn batches_are_bounded_by_rows_and_bytes() {
        let mut b = Batcher::new(4, 100);
        let mut out = Vec::new();
        for input in [texts(&[60]), texts(&[50, 5, 5, 5, 5, 5]), texts(&[200])] {
            out.extend(b.push(input).unwrap());
        }
        out.extend(b.flush().unwrap());
        let got: Vec<Vec<usize>> = out.iter().map(lengths).collect();
        assert_eq!(got, vec![vec![60, 50], vec![5, 5, 5, 5], vec![5, 200]]);
        assert!(b.flush().unwrap().is_none());
    }
}
