//! The synthesis stages (`quality_annotate`, `knowledge_tags`, `qa_simple`, `cot_backward`,
//! `cot_forward`, `cot_rag`): each input row goes to an LLM through the stage's [`LlmClient`], and
//! comes out as rows (the document with new columns, or new rows that carry `source_id` and their
//! document's other columns) or as a reject with its reason. With `where:`, rows that do not match
//! pass on untouched: routing documents to one method or another is two stages with opposite
//! predicates.
//!
//! A corpus stage, so that its requests are one stream over the whole input: a reader thread decodes
//! the previous segment's checkpoint, every row becomes a request future, and `buffered` keeps up to
//! four times `max_concurrency` of them going (the client's semaphore bounds what is in flight), so
//! that a slow response or a retry does not idle the others, and the output keeps the input's order.
//! Restart: the stage is one task, redone whole after a kill, and every response it had received is
//! in the [`ResponseCache`] (the run's `llm_cache/` or the stage's `cache:`), so the rerun sends only
//! the requests that were never answered.

pub mod methods;
pub mod options;
pub mod rag_index;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::DataFrame;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::context::Engine;
use crate::llm::cache::ResponseCache;
use crate::llm::client::LlmClient;
use crate::llm::prompts::Prompts;
use crate::pipeline::sink::{RejectRows, RejectsPart};
use crate::progress::Progress;
use crate::report::{PartInfo, StageReport};
use crate::stages::units::{Unit, checkpoint_schema, doc_count, plan_units, read_unit};
use methods::{Cell, Ctx, Doc, Outcome, Produced};
use options::SynthOptions;

/// The column of generated rows that names the document they came from.
pub const SOURCE_ID_COL: &str = "source_id";

/// What a synthesis stage did, in the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SynthesisSummary {
    pub method: String,
    pub endpoint: String,
    pub model: String,
    /// HTTP requests sent this run, retries included.
    pub requests: u64,
    /// Requests answered without being sent: from the cache (paid for by an earlier run), or by an
    /// identical request of this run that was in flight.
    pub cached: u64,
    pub retries: u64,
    /// Responses that failed validation (asked again, or rejected at the last attempt).
    pub invalid_responses: u64,
    /// Tokens the endpoint reported for this run's requests.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Tokens of the answers taken from the cache.
    pub cached_prompt_tokens: u64,
    pub cached_completion_tokens: u64,
    /// Rows the model made (new rows, or annotated documents; not the rows `where:` passed on).
    pub rows_made: u64,
    /// `cot_rag`: searches of the index.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub searches: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A planned synthesis stage: `df` streams its rows, writing rejects as it goes.
pub struct SynthRun {
    pub df: DataFrame,
    shared: Arc<Shared>,
}

struct Shared {
    units: Vec<Unit>,
    /// `where:`, planned against the input's columns.
    gate: Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    /// `cot_rag`: the documents to index and where the index lives.
    index_plan: Option<(crate::io::SourceSpec, PathBuf)>,
    session: datafusion::prelude::SessionContext,
    input_schema: SchemaRef,
    schema: SchemaRef,
    ctx: Ctx,
    keep_text: bool,
    rejects: RejectsPart,
    report: Mutex<StageReport>,
    done: Arc<AtomicU64>,
    /// Rows the model made (not those passed on).
    made: AtomicU64,
    finished: Mutex<Option<f64>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} over {} units", self.ctx.label, self.units.len())
    }
}

/// Plans the stage over the checkpoint in `input_dir`. `base` (the pipeline's directory) resolves
/// `prompts` and `cache`; the cache defaults to `run_dir/llm_cache`.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    engine: &Engine,
    opts: &SynthOptions,
    label: &str,
    input_dir: &Path,
    (base, run_dir): (&Path, &Path),
    keep_text: bool,
    rejects_path: &Path,
    progress: &Progress,
) -> Result<SynthRun> {
    let prompts = prompts_of(opts, base)?;
    // Every template the stage renders is there, in both languages, before anything is asked.
    sources_of(&prompts, opts)?;
    let cache_dir = match &opts.cache {
        Some(dir) => base.join(dir),
        None => run_dir.join("llm_cache"),
    };
    let cache = Arc::new(ResponseCache::open(&cache_dir.join("responses.jsonl"))?);
    let client = LlmClient::new(&opts.llm, cache)?;
    let units = plan_units(input_dir)?;
    let input_schema = checkpoint_schema(input_dir)?;
    let needed: &[(&String, &str)] = match opts.method {
        options::Method::CotForward => &[
            (&opts.query_column, "query_column"),
            (&opts.cot_column, "cot_column"),
        ],
        options::Method::CotRag => &[(&opts.instruction_column, "instruction_column")],
        _ => &[],
    };
    for (c, option) in needed {
        if input_schema.index_of(c).is_err() {
            anyhow::bail!("{label}: the input has no column `{c}` ({option})");
        }
    }
    let added = methods::columns(opts);
    // Annotations keep the rows' columns and add theirs; made rows also get `source_id` (and keep
    // their document's other columns, for lineage).
    let mut fields: Vec<_> = input_schema
        .fields()
        .iter()
        .filter(|f| !added.iter().any(|a| a.name() == f.name()))
        .filter(|f| opts.method.annotates() || f.name() != SOURCE_ID_COL)
        .map(|f| {
            if !opts.method.annotates() && ["id", "text"].contains(&f.name().as_str()) {
                Arc::new(Field::new(f.name(), DataType::Utf8, true))
            } else {
                Arc::clone(f)
            }
        })
        .collect();
    if !opts.method.annotates() {
        fields.push(Arc::new(Field::new(SOURCE_ID_COL, DataType::Utf8, true)));
    }
    fields.extend(added.into_iter().map(Arc::new));
    let schema = Arc::new(Schema::new(fields));
    let gate = match &opts.where_ {
        Some(w) => {
            let df_schema = datafusion::common::DFSchema::try_from(input_schema.as_ref().clone())?;
            let expr = engine
                .ctx
                .parse_sql_expr(w, &df_schema)
                .with_context(|| format!("{label}: where: {w}"))?;
            Some(engine.ctx.create_physical_expr(expr, &df_schema)?)
        }
        None => None,
    };
    let index_plan = match &opts.index {
        Some(source) if opts.method == options::Method::CotRag => {
            let spec = index_source(source, base)?;
            Some((
                spec.clone(),
                run_dir.join("rag_index").join(index_name(&spec)),
            ))
        }
        _ => None,
    };
    let n = doc_count(&units);
    tracing::info!(
        "{label}: {n} rows to {} ({}), {} in flight at most",
        opts.llm.endpoint,
        opts.llm.model,
        opts.llm.max_concurrency
    );
    let shared = Arc::new(Shared {
        units,
        gate,
        index_plan,
        session: engine.ctx.clone(),
        input_schema,
        schema: Arc::clone(&schema),
        ctx: Ctx {
            client,
            prompts,
            opts: opts.clone(),
            label: label.to_string(),
            invalid: AtomicU64::new(0),
            index: std::sync::OnceLock::new(),
            searches: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        },
        keep_text,
        rejects: RejectsPart::new(rejects_path),
        report: Mutex::new(StageReport::new(label)),
        done: progress.phase(format!("{label}: rows"), Some(n)),
        made: AtomicU64::new(0),
        finished: Mutex::new(None),
    });
    let partition: Arc<dyn PartitionStream> = Arc::new(SynthPartition {
        shared: Arc::clone(&shared),
    });
    let table = StreamingTable::try_new(schema, vec![partition])
        .context("planning the synthesis output")?;
    let df = engine.ctx.read_table(Arc::new(table))?;
    Ok(SynthRun { df, shared })
}

/// The fingerprint inputs of a stage: its templates' sources, so that an edited prompt is a new run.
pub fn template_sources(opts: &SynthOptions, base: &Path) -> Result<Vec<String>> {
    sources_of(&prompts_of(opts, base)?, opts)
}

/// The stage's templates: its `prompts:` directory over the bundled ones.
fn prompts_of(opts: &SynthOptions, base: &Path) -> Result<Prompts> {
    match &opts.prompts {
        Some(dir) => Prompts::new(&base.join(dir)),
        None => Ok(Prompts::bundled()),
    }
}

/// The sources of the templates the stage renders, in both languages.
fn sources_of(prompts: &Prompts, opts: &SynthOptions) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in opts.method.templates() {
        for lang in ["en", "zh"] {
            out.push(prompts.source(t, lang)?);
        }
    }
    Ok(out)
}

impl SynthRun {
    /// The stage's report and its rejects part, once `df` was streamed to the end.
    pub fn finish(self) -> Result<(StageReport, Option<PartInfo>)> {
        let seconds = self
            .shared
            .finished
            .lock()
            .expect("synth lock")
            .take()
            .context("the synthesis output was not streamed to its end")?;
        let shared = &self.shared;
        let mut report = shared.report.lock().expect("synth lock").clone();
        let usage = &shared.ctx.client.usage;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let opts = &shared.ctx.opts;
        let requests = get(&usage.requests);
        report.seconds = seconds;
        report.synthesis = Some(SynthesisSummary {
            method: opts.method.name().to_string(),
            endpoint: opts.llm.endpoint.clone(),
            model: opts.llm.model.clone(),
            requests,
            cached: get(&usage.cached),
            retries: get(&usage.retries),
            invalid_responses: get(&shared.ctx.invalid),
            prompt_tokens: get(&usage.prompt_tokens),
            completion_tokens: get(&usage.completion_tokens),
            cached_prompt_tokens: get(&usage.cached_prompt_tokens),
            cached_completion_tokens: get(&usage.cached_completion_tokens),
            rows_made: get(&shared.made),
            searches: get(&shared.ctx.searches),
            seconds,
            requests_per_second: requests as f64 / seconds.max(1e-9),
        });
        let rejects = shared.rejects.finish()?;
        Ok((report, rejects))
    }
}

#[derive(Debug)]
struct SynthPartition {
    shared: Arc<Shared>,
}

impl PartitionStream for SynthPartition {
    fn schema(&self) -> &SchemaRef {
        &self.shared.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&self.shared.schema), 2);
        let tx = builder.tx();
        let shared = Arc::clone(&self.shared);
        builder.spawn(async move {
            shared
                .run(tx)
                .await
                .map_err(|e| DataFusionError::External(format!("{e:#}").into()))
        });
        builder.build()
    }
}

/// One input row, with the batch it came from (output rows keep its columns).
struct Input {
    batch: Arc<RecordBatch>,
    row: usize,
    doc: Doc,
    dataset: String,
    /// The row's own `source_id`, when a stage before made it.
    existing_source: Option<String>,
    /// Whether `where:` sends the row to the model.
    routed: bool,
    bytes: u64,
}

impl Input {
    /// The document a made row comes from: the row's `source_id`, or the row itself.
    fn source_id(&self) -> &str {
        self.existing_source.as_deref().unwrap_or(&self.doc.id)
    }
}

/// What became of a row: the model's outcome, or passed on (not routed here).
enum Fate {
    Asked(Outcome),
    Passed,
}

impl Shared {
    async fn run(
        self: &Arc<Self>,
        tx: tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>,
    ) -> Result<()> {
        let started = Instant::now();
        if let Some((source, dir)) = &self.index_plan {
            let index = build_index(&self.session, source, dir, &self.ctx.label).await?;
            let _ = self.ctx.index.set(index);
        }
        // The reader: checkpoint batches, decoded on a blocking thread.
        let (btx, brx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let units = self.units.clone();
        let reader = tokio::task::spawn_blocking(move || {
            for unit in &units {
                let batches = match read_unit(unit, None) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = btx.blocking_send(Err(e));
                        return;
                    }
                };
                for b in batches {
                    if btx.blocking_send(b).is_err() {
                        return;
                    }
                }
            }
        });
        let this = Arc::clone(self);
        let inputs = tokio_stream_of(brx).flat_map(move |batch| {
            let rows = match batch.and_then(|b| this.inputs(b)) {
                Ok(rows) => rows.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(rows)
        });
        let window = self.ctx.opts.llm.max_concurrency * 4;
        let mut outcomes = inputs
            .map(|input| {
                let this = Arc::clone(self);
                async move {
                    let input = input?;
                    let fate = if input.routed {
                        Fate::Asked(this.ctx.run(&input.doc).await?)
                    } else {
                        Fate::Passed
                    };
                    anyhow::Ok((input, fate))
                }
            })
            .buffered(window)
            .ready_chunks(256);
        while let Some(chunk) = outcomes.next().await {
            let chunk = chunk.into_iter().collect::<Result<Vec<_>>>()?;
            let batch = self.output(chunk)?;
            if tx.send(Ok(batch)).await.is_err() {
                anyhow::bail!("the synthesis output stopped before its end");
            }
        }
        reader.await.context("the checkpoint reader")?;
        *self.finished.lock().expect("synth lock") = Some(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The rows of one checkpoint batch as method inputs.
    fn inputs(&self, batch: RecordBatch) -> Result<Vec<Input>> {
        let opts = &self.ctx.opts;
        let utf8 = |name: &str| -> Result<Option<ArrayRef>> {
            Ok(match batch.column_by_name(name) {
                Some(c) => Some(arrow::compute::cast(c, &DataType::Utf8)?),
                None => None,
            })
        };
        let ids = utf8("id")?.context("the input has no `id` column")?;
        let texts = utf8("text")?.context("the input has no `text` column")?;
        let datasets = utf8("dataset")?;
        let langs = if opts.lang == "auto" {
            utf8(&opts.lang_column)?
        } else {
            None
        };
        let (queries, cots) = if opts.method == options::Method::CotForward {
            (utf8(&opts.query_column)?, utf8(&opts.cot_column)?)
        } else {
            (None, None)
        };
        let instructions = if opts.method == options::Method::CotRag {
            utf8(&opts.instruction_column)?
        } else {
            None
        };
        let sources = utf8(SOURCE_ID_COL)?;
        let routed = match &self.gate {
            Some(gate) => {
                let v = gate.evaluate(&batch)?.into_array(batch.num_rows())?;
                let v = arrow::compute::cast(&v, &DataType::Boolean)?;
                // NULL is not a match, as in SQL.
                let v = v.as_boolean();
                Some(if v.null_count() > 0 {
                    arrow::compute::prep_null_mask_filter(v)
                } else {
                    v.clone()
                })
            }
            None => None,
        };
        let get = |a: &ArrayRef, i: usize| -> Option<String> {
            let s = a.as_string::<i32>();
            (!s.is_null(i)).then(|| s.value(i).to_string())
        };
        let value = |a: &Option<ArrayRef>, i: usize| a.as_ref().and_then(|a| get(a, i));
        let batch = Arc::new(batch);
        let mut out = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let text = get(&texts, i).unwrap_or_default();
            let routed = routed.as_ref().is_none_or(|r| r.value(i));
            // Only rows that go to the model need their language.
            let lang = match opts.lang.as_str() {
                "en" => "en",
                "zh" => "zh",
                _ if routed => methods::detect_lang(value(&langs, i).as_deref(), &text),
                _ => "en",
            };
            out.push(Input {
                batch: Arc::clone(&batch),
                row: i,
                bytes: text.len() as u64,
                dataset: value(&datasets, i).unwrap_or_default(),
                existing_source: value(&sources, i),
                routed,
                doc: Doc {
                    id: get(&ids, i).unwrap_or_default(),
                    text,
                    lang,
                    query: value(&queries, i),
                    cot: value(&cots, i),
                    instruction: value(&instructions, i),
                },
            });
        }
        Ok(out)
    }

    /// The output batch of a chunk of outcomes; the rejects written on the way.
    fn output(&self, chunk: Vec<(Input, Fate)>) -> Result<RecordBatch> {
        // Each output row: its input's place in the chunk, and what the model made (None: passed).
        let mut rows: Vec<(usize, Option<&Produced>)> = Vec::new();
        let mut rejects = RejectRows::with_capacity(0);
        {
            let mut report = self.report.lock().expect("synth lock");
            for (k, (input, fate)) in chunk.iter().enumerate() {
                report.rows_in += 1;
                report.bytes_in += input.bytes;
                match fate {
                    Fate::Passed => {
                        report.rows_out += 1;
                        report.bytes_out += input.bytes;
                        rows.push((k, None));
                    }
                    Fate::Asked(Outcome::Rows(made)) => {
                        anyhow::ensure!(!made.is_empty(), "a method made no row and no reject");
                        report.rows_out += 1;
                        report.rows_added += made.len() as u64 - 1;
                        self.made.fetch_add(made.len() as u64, Ordering::Relaxed);
                        for p in made {
                            report.bytes_out += p.text.len() as u64;
                            rows.push((k, Some(p)));
                        }
                    }
                    Fate::Asked(Outcome::Reject { reason, detail }) => {
                        report.reject(reason, 1);
                        rejects.id.push(input.doc.id.clone());
                        rejects.dataset.push(input.dataset.clone());
                        rejects.stage.push(self.ctx.label.clone());
                        rejects.reason.push(reason.clone());
                        rejects.value.push(None);
                        rejects.file.push(None);
                        rejects.line.push(None);
                        rejects.detail.push(Some(detail.clone()));
                        rejects
                            .text
                            .push(self.keep_text.then(|| input.doc.text.clone()));
                    }
                }
            }
        }
        self.done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        self.rejects.write(rejects)?;
        let annotates = self.ctx.opts.method.annotates();
        let added = methods::columns(&self.ctx.opts);
        let batches: Vec<&RecordBatch> = chunk.iter().map(|(i, _)| i.batch.as_ref()).collect();
        let picks: Vec<(usize, usize)> = rows.iter().map(|&(k, _)| (k, chunk[k].0.row)).collect();
        let strings = |f: &dyn Fn(&Input, Option<&Produced>) -> Option<String>| -> ArrayRef {
            let mut b = StringBuilder::new();
            for &(k, p) in &rows {
                b.append_option(f(&chunk[k].0, p));
            }
            Arc::new(b.finish())
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let name = field.name().as_str();
            if let Some(a) = added.iter().position(|a| a.name() == name) {
                let made = cells_array(&added[a], rows.iter().map(|(_, p)| p.map(|p| &p.cells[a])));
                // A row passed on keeps the value an earlier stage of the same kind gave it
                // (`quality_annotate` for English rows, then for Chinese ones).
                let kept = match self.input_schema.index_of(name) {
                    Ok(idx) if rows.iter().any(|(_, p)| p.is_none()) => {
                        let arrays: Vec<&dyn Array> =
                            batches.iter().map(|b| b.column(idx).as_ref()).collect();
                        let before = arrow::compute::interleave(&arrays, &picks)?;
                        Some(arrow::compute::cast(&before, added[a].data_type())?)
                    }
                    _ => None,
                };
                columns.push(match kept {
                    Some(before) => {
                        let asked: arrow::array::BooleanArray =
                            rows.iter().map(|(_, p)| Some(p.is_some())).collect();
                        arrow::compute::kernels::zip::zip(&asked, &made, &before)?
                    }
                    None => made,
                });
            } else if !annotates && name == "id" {
                columns.push(strings(&|i, p| {
                    Some(p.map_or(&i.doc.id, |p| &p.id).clone())
                }));
            } else if !annotates && name == "text" {
                columns.push(strings(&|i, p| {
                    Some(p.map_or(&i.doc.text, |p| &p.text).clone())
                }));
            } else if !annotates && name == SOURCE_ID_COL {
                columns.push(strings(&|i, p| match p {
                    Some(_) => Some(i.source_id().to_string()),
                    None => i.existing_source.clone(),
                }));
            } else {
                let idx = self.input_schema.index_of(name)?;
                let arrays: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(idx).as_ref()).collect();
                columns.push(arrow::compute::interleave(&arrays, &picks)?);
            }
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// The catalog's or the files' source of a `cot_rag` index.
fn index_source(source: &options::IndexSource, base: &Path) -> Result<crate::io::SourceSpec> {
    if let Some(name) = &source.dataset {
        let catalog = crate::catalog::Catalog::load(&crate::catalog::Catalog::default_path())?;
        return catalog.source(name, crate::io::OnError::Reject, false);
    }
    let path = source.path.as_deref().expect("checked at parse");
    let path = base.join(path).to_string_lossy().into_owned();
    let files = crate::io::files::expand(&path, None)?;
    anyhow::ensure!(!files.is_empty(), "index: {path} matches no files");
    let format = crate::io::files::infer_format(&files)?;
    Ok(crate::io::SourceSpec {
        dataset: "index".into(),
        root: crate::io::files::common_root(&files),
        files,
        format,
        text_column: source.text.clone().unwrap_or_else(|| "text".into()),
        id_column: source.id.clone(),
        on_error: crate::io::OnError::Reject,
        keep_rejected_text: false,
    })
}

/// The index directory's name: a hash of the source's files, their sizes and its columns, so that a
/// changed dataset gets a new index.
fn index_name(spec: &crate::io::SourceSpec) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!(
        "{}|{:?}|{:?}",
        spec.text_column, spec.id_column, spec.format
    ));
    for f in &spec.files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(f.metadata().map(|m| m.len()).unwrap_or(0).to_le_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

/// Opens the index in `dir`, or builds it there from `source`'s documents (read by the engine's
/// readers, streamed to a blocking indexing thread).
async fn build_index(
    session: &datafusion::prelude::SessionContext,
    source: &crate::io::SourceSpec,
    dir: &Path,
    label: &str,
) -> Result<rag_index::RagIndex> {
    if rag_index::RagIndex::is_complete(dir) {
        let dir = dir.to_path_buf();
        return tokio::task::spawn_blocking(move || {
            rag_index::RagIndex::open_or_build(&dir, std::iter::empty())
        })
        .await?;
    }
    tracing::info!(
        "{label}: indexing {} file(s) into {}",
        source.files.len(),
        dir.display()
    );
    let table = crate::io::CorpusTable::try_new(
        source.clone(),
        Arc::new(crate::io::malformed::RejectBuffer::default()),
        Arc::new(crate::io::ReadStats::default()),
    )?;
    let df = session
        .read_table(Arc::new(table))?
        .select_columns(&["id", "text"])?;
    let mut stream = df.execute_stream().await?;
    // Batches of documents through a small bounded channel: the reader waits for the indexer. The
    // last message says the input ended; without it (an error, a cancelled stage) the indexer fails
    // instead of marking a partial index complete.
    let (dtx, drx) = std::sync::mpsc::sync_channel::<Option<Vec<(String, String)>>>(2);
    let dir_owned = dir.to_path_buf();
    let builder = tokio::task::spawn_blocking(move || {
        let ended = std::cell::Cell::new(false);
        let docs = drx
            .iter()
            .map_while(|m| {
                ended.set(m.is_none());
                m
            })
            .flatten()
            .map(Ok)
            .chain(std::iter::from_fn(|| {
                (!ended.get()).then(|| Err(anyhow::anyhow!("the documents to index ended early")))
            }));
        rag_index::RagIndex::open_or_build(&dir_owned, docs)
    });
    let send = |m: Option<Vec<(String, String)>>| {
        let tx = dtx.clone();
        tokio::task::spawn_blocking(move || tx.send(m))
    };
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let ids = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        let texts = arrow::compute::cast(batch.column(1), &DataType::Utf8)?;
        let (ids, texts) = (ids.as_string::<i32>(), texts.as_string::<i32>());
        let docs: Vec<(String, String)> = (0..batch.num_rows())
            .map(|i| (ids.value(i).to_string(), texts.value(i).to_string()))
            .collect();
        if send(Some(docs)).await?.is_err() {
            break;
        }
    }
    let _ = send(None).await?;
    drop(dtx);
    let index = builder.await??;
    tracing::info!("{label}: index of {} documents ready", index.documents);
    Ok(index)
}

/// A method column's values; `None` (a row passed on) is NULL.
fn cells_array<'a>(field: &Field, cells: impl Iterator<Item = Option<&'a Cell>>) -> ArrayRef {
    match field.data_type() {
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            for c in cells {
                match c {
                    Some(Cell::Int(v)) => b.append_value(*v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        DataType::List(_) => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for c in cells {
                match c {
                    Some(Cell::Strs(v)) => {
                        for s in v {
                            b.values().append_value(s);
                        }
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
        _ => {
            let mut b = StringBuilder::new();
            for c in cells {
                match c {
                    Some(Cell::Str(v)) => b.append_value(v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// A tokio receiver as a stream (tokio-stream's wrapper, without the dependency).
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
