//! Running a pipeline: input files split into tasks, stages split into segments at `sql` stages, every
//! task written as parts under temporary names and recorded by a marker once renamed into place.
//!
//! A rerun of a finished run does nothing; a rerun after a kill skips the tasks whose markers exist and
//! redoes the rest, whose temporaries it removes first, so no row is written twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::AsArray;
use datafusion::common::JoinType;
use datafusion::execution::SessionStateBuilder;
use datafusion::functions::expr_fn::octet_length;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::prelude::{DataFrame, ParquetReadOptions, col, lit};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::plan;
use super::sink::{RejectRows, SegmentSink, SinkStage};
use super::spec::PipelineSpec;
use super::stage::{Stage, StageKind, parse_stages};
use crate::catalog::Catalog;
use crate::context::Engine;
use crate::io::files::{expand, infer_format};
use crate::io::malformed::RejectBuffer;
use crate::io::table::Positions;
use crate::io::writer::OutFormat;
use crate::io::{CorpusTable, Format, ReadStats, SourceSpec};
use crate::progress::Progress;
use crate::report::{PartInfo, Report, StageReport};
use datafusion::datasource::TableProvider;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Overrides the pipeline's `output.path`.
    pub output: Option<PathBuf>,
    /// Replace whatever the output directory holds.
    pub fresh: bool,
    /// The catalog for `input: {dataset: …}` (default: `datasets.yaml`).
    pub catalog: Option<PathBuf>,
    /// Input bytes (on disk) per task: the unit of restart and of output parts.
    pub task_bytes: u64,
    /// Input files per task at most.
    pub task_files: usize,
    /// Print the closing table.
    pub print_summary: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            output: None,
            fresh: false,
            catalog: None,
            task_bytes: 256 << 20,
            task_files: 1000,
            print_summary: true,
        }
    }
}

/// What a finished task recorded: its stage counts and the parts it renamed into place.
#[derive(Debug, Serialize, Deserialize)]
struct TaskMarker {
    stages: Vec<StageReport>,
    /// The task's parts, one per output partition that wrote one.
    data: Vec<PartInfo>,
    rejects: Vec<PartInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RunIdentity {
    pipeline: String,
    fingerprint: String,
}

/// A run of row stages: segment 0 starts at the input, later ones at a corpus stage (`sql`,
/// `minhash_dedup`), which reads the previous segment's checkpoint.
struct Segment {
    corpus: Option<usize>,
    rows: Vec<usize>,
}

pub async fn run_pipeline(engine: &Engine, pipeline: &Path, opts: &RunOptions) -> Result<Report> {
    let started = Instant::now();
    let spec = PipelineSpec::load(pipeline)?;
    let base = pipeline.parent().unwrap_or(Path::new("."));
    let stages = parse_stages(&spec.stages, base)
        .with_context(|| format!("pipeline {}", pipeline.display()))?;
    for s in &stages {
        if let Some((kind, path)) = &s.lexicon_file {
            engine.load_lexicon(*kind, path)?;
        }
    }
    let sources = resolve_input(&spec, opts)?;
    let (out_dir, out_format) = match (&opts.output, &spec.output) {
        (Some(p), o) => (p.clone(), o.as_ref().map(|o| o.format).unwrap_or_default()),
        (None, Some(o)) => (PathBuf::from(&o.path), o.format),
        (None, None) => bail!(
            "{}: no `output:` in the pipeline and no --output",
            pipeline.display()
        ),
    };
    let schema = union_schema(&sources)?;
    if let Some(done) = prepare_dir(&out_dir, &spec, (&stages, base), &sources, out_format, opts)? {
        tracing::info!("{} is already complete: nothing to do", out_dir.display());
        if opts.print_summary {
            println!(
                "{}\n(already complete: {})",
                done.table(),
                out_dir.join("report.json").display()
            );
        }
        return Ok(done);
    }

    let mut segments = vec![Segment {
        corpus: None,
        rows: vec![],
    }];
    for (i, s) in stages.iter().enumerate() {
        if s.kind.is_corpus() {
            segments.push(Segment {
                corpus: Some(i),
                rows: vec![],
            });
        } else {
            segments.last_mut().expect("one segment").rows.push(i);
        }
    }
    let progress = Arc::new(Progress::default());
    let ticker = progress.spawn(&spec.name);
    let result = run_segments(
        engine,
        &stages,
        &segments,
        &sources,
        schema,
        &out_dir,
        out_format,
        spec.keep_rejected_text,
        opts,
        &progress,
        base,
    )
    .await;
    progress.stop();
    let _ = ticker.join();
    let markers = result?;

    let mut report = Report {
        pipeline: spec.name.clone(),
        input: describe_input(&spec),
        output: out_dir.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let mut by_name: BTreeMap<String, StageReport> = BTreeMap::new();
    for (final_seg, m) in &markers {
        for s in &m.stages {
            by_name
                .entry(s.name.clone())
                .or_insert_with(|| StageReport::new(&s.name))
                .merge(s);
        }
        if *final_seg {
            report.parts.extend(m.data.iter().cloned());
        }
        report.rejects.extend(m.rejects.iter().cloned());
    }
    let order = std::iter::once("read".to_string()).chain(stages.iter().map(|s| s.label.clone()));
    report.stages = order
        .map(|n| by_name.remove(&n).unwrap_or_else(|| StageReport::new(&n)))
        .collect();
    report.rows_read = report.stages[0].rows_in;
    report.rows_written = report.parts.iter().map(|p| p.rows).sum();
    report.rows_rejected = report.stages.iter().map(|s| s.rows_rejected).sum();
    report.seconds = started.elapsed().as_secs_f64();
    for p in report.parts.iter_mut().chain(report.rejects.iter_mut()) {
        p.path = Path::new(&p.path)
            .strip_prefix(&out_dir)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or(p.path.clone());
    }
    if let Err(e) = report.check() {
        bail!("the counts of this run do not add up ({e}); this is a bug, please report it");
    }
    report.write(&out_dir.join("report.json"))?;
    let _ = std::fs::remove_dir_all(out_dir.join("_stages"));
    if opts.print_summary {
        println!("{}", report.table());
        println!("output: {}", out_dir.display());
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn run_segments(
    engine: &Engine,
    stages: &[Stage],
    segments: &[Segment],
    sources: &[SourceSpec],
    schema: arrow::datatypes::SchemaRef,
    out_dir: &Path,
    out_format: OutFormat,
    keep_text: bool,
    opts: &RunOptions,
    progress: &Arc<Progress>,
    base: &Path,
) -> Result<Vec<(bool, TaskMarker)>> {
    let mut markers = Vec::new();
    let last = segments.len() - 1;
    for (j, seg) in segments.iter().enumerate() {
        let final_seg = j == last;
        let (data_dir, format) = if final_seg {
            (out_dir.join("data"), out_format)
        } else {
            (
                out_dir.join("_stages").join(j.to_string()),
                OutFormat::Parquet,
            )
        };
        let row_stages: Vec<(usize, &Stage)> = seg.rows.iter().map(|&i| (i, &stages[i])).collect();
        match seg.corpus {
            None => {
                let all_tasks = sources.iter().enumerate().flat_map(|(si, s)| {
                    let mut first_file = 0;
                    tasks(&s.files, opts.task_bytes, opts.task_files)
                        .into_iter()
                        .map(move |f| {
                            let positions = Positions {
                                source: si as u64,
                                first_file,
                            };
                            first_file += f.len() as u64;
                            (s, positions, f)
                        })
                });
                for (t, (source, positions, files)) in all_tasks.enumerate() {
                    let marker_path = out_dir.join("_tasks").join(format!("{j}-{t:05}.json"));
                    if let Some(m) = read_marker(&marker_path)? {
                        markers.push((final_seg, m));
                        continue;
                    }
                    tracing::info!("segment {j} task {t}: {} file(s)", files.len());
                    let stats = Arc::new(ReadStats::default());
                    let buffer = Arc::new(RejectBuffer::default());
                    let disk_bytes: u64 = files
                        .iter()
                        .filter_map(|f| f.metadata().ok())
                        .map(|m| m.len())
                        .sum();
                    let task_source = SourceSpec {
                        files,
                        ..source.clone()
                    };
                    let table = CorpusTable::with_schema(
                        task_source,
                        Arc::clone(&schema),
                        buffer.clone(),
                        Arc::clone(&stats),
                    )
                    .with_positions(positions)?;
                    progress.track(&stats);
                    let df = engine.ctx.read_table(Arc::new(table))?;
                    let name = format!("part-{j}-{t:05}");
                    let new_part = PartNames::new(
                        &row_stages,
                        &data_dir,
                        out_dir,
                        &name,
                        format,
                        keep_text,
                        !final_seg,
                    )?;
                    let (mut sinks, timers) =
                        stream_segment(engine, df, &row_stages, &new_part).await?;
                    // The read stage: what the readers saw, and the malformed rows they set aside.
                    let malformed = buffer.take();
                    let mut read = StageReport::new("read");
                    read.rows_in = ReadStats::get(&stats.rows);
                    read.rows_out = ReadStats::get(&stats.rows_ok);
                    read.bytes_in = disk_bytes; // the files as stored (compressed)
                    read.bytes_out = ReadStats::get(&stats.text_bytes);
                    read.seconds = ReadStats::get(&stats.nanos)
                        .saturating_sub(ReadStats::get(&stats.wait_nanos))
                        as f64
                        / 1e9;
                    for m in &malformed {
                        read.reject(&m.reason, 1);
                    }
                    sinks[0].write_rejects(RejectRows::from_malformed(malformed))?;
                    let marker =
                        finish_task(sinks, timers, Some(read), None, vec![], &marker_path)?;
                    progress.finish_task();
                    markers.push((final_seg, marker));
                }
            }
            Some(sql_idx) => {
                let marker_path = out_dir.join("_tasks").join(format!("{j}-00000.json"));
                if let Some(m) = read_marker(&marker_path)? {
                    markers.push((final_seg, m));
                    continue;
                }
                // One task: its parts, and the stale ones of an interrupted attempt removed.
                let name = format!("part-{j}-00000");
                let new_part = PartNames::new(
                    &row_stages,
                    &data_dir,
                    out_dir,
                    &name,
                    format,
                    keep_text,
                    !final_seg,
                )?;
                // The previous segment's checkpoint, which a corpus stage reads.
                let prev = out_dir.join("_stages").join((j - 1).to_string());
                // A corpus stage: planned over the checkpoint, streamed into the rest of the segment,
                // then finished (its report and rejects, once its output was read to the end).
                let label = &stages[sql_idx].label;
                let stage_rejects = |kind: &str| {
                    out_dir
                        .join("rejects")
                        .join(format!("{name}-{kind}.parquet"))
                };
                let planned: Option<(DataFrame, CorpusFinish)> = match &stages[sql_idx].kind {
                    StageKind::MinhashDedup(options) => {
                        let run = crate::stages::minhash_dedup::plan(
                            engine,
                            options,
                            label,
                            &prev,
                            &out_dir.join("_stages").join(format!("{j}-minhash")),
                            keep_text,
                            &stage_rejects("dedup"),
                            progress,
                        )
                        .await
                        .with_context(|| format!("stage {label}"))?;
                        Some((
                            run.df.clone(),
                            Box::new(move || {
                                let report = run.report.clone();
                                Ok((report, run.finish()?.into_iter().collect()))
                            }),
                        ))
                    }
                    StageKind::SubstringDedup(options) => {
                        let run = crate::stages::substring_dedup::plan(
                            engine,
                            options,
                            label,
                            &prev,
                            &out_dir.join("_stages").join(format!("{j}-substring")),
                            base,
                            keep_text,
                            &stage_rejects("substring"),
                            progress,
                        )
                        .await
                        .with_context(|| format!("stage {label}"))?;
                        Some((
                            run.df.clone(),
                            Box::new(move || {
                                let (report, rejects) = run.finish()?;
                                Ok((report, rejects.into_iter().collect()))
                            }),
                        ))
                    }
                    StageKind::Tokenize(options) => {
                        let run = crate::stages::tokenize::plan(
                            engine,
                            options,
                            label,
                            &prev,
                            (base, out_dir),
                            progress,
                        )
                        .with_context(|| format!("stage {label}"))?;
                        Some((
                            run.df.clone(),
                            Box::new(move || Ok((run.finish()?, vec![]))),
                        ))
                    }
                    StageKind::Synth(options) => {
                        let run = crate::stages::synth::plan(
                            engine,
                            options,
                            label,
                            &prev,
                            (base, out_dir),
                            keep_text,
                            &stage_rejects("synthesis"),
                            progress,
                        )
                        .with_context(|| format!("stage {label}"))?;
                        Some((
                            run.df.clone(),
                            Box::new(move || {
                                let (report, rejects) = run.finish()?;
                                Ok((report, rejects.into_iter().collect()))
                            }),
                        ))
                    }
                    _ => None,
                };
                if let Some((df, finish)) = planned {
                    let streamed = stream_segment(engine, df, &row_stages, &new_part).await;
                    progress.end_phase();
                    let (sinks, timers) = streamed.with_context(|| format!("stage {label}"))?;
                    let (report, rejects) = finish().with_context(|| format!("stage {label}"))?;
                    let marker = finish_corpus_task(sinks, timers, report, rejects, &marker_path)?;
                    markers.push((final_seg, marker));
                    continue;
                }
                if let StageKind::TagTaxonomy(options) = &stages[sql_idx].kind {
                    let label = &stages[sql_idx].label;
                    register_dir(engine, "__os_tagged", &prev).await?;
                    let input = engine.ctx.table("__os_tagged").await?;
                    let report = crate::stages::tag_taxonomy::write_taxonomy(
                        &engine.ctx,
                        options,
                        label,
                        input.clone(),
                        out_dir,
                    )
                    .await
                    .with_context(|| format!("stage {label}"))?;
                    let (sinks, timers) =
                        stream_segment(engine, input, &row_stages, &new_part).await?;
                    let _ = engine.ctx.deregister_table("__os_tagged");
                    let marker = finish_corpus_task(sinks, timers, report, vec![], &marker_path)?;
                    markers.push((final_seg, marker));
                    continue;
                }
                let StageKind::Sql(query) = &stages[sql_idx].kind else {
                    unreachable!("sql segment")
                };
                let label = &stages[sql_idx].label;
                register_dir(engine, "input", &prev).await?;
                let input = engine.ctx.table("input").await?;
                let (rows_in, bytes_in) = count_rows_bytes(input.clone()).await?;
                let query_df = engine
                    .ctx
                    .sql(query)
                    .await
                    .with_context(|| format!("{label}: {query}"))?;
                for c in ["id", "text", "dataset"] {
                    if query_df.schema().field_with_unqualified_name(c).is_err() {
                        bail!(
                            "{label}: the query must keep the `{c}` column (it returns {})",
                            query_df.schema().field_names().join(", ")
                        );
                    }
                }
                // The query runs once, into a checkpoint that both the anti-join and the next stages read,
                // so that a query that is not deterministic (LIMIT, sampling) still accounts exactly.
                let result_dir = out_dir.join("_stages").join(format!("{j}-sql"));
                let _ = std::fs::remove_dir_all(&result_dir);
                {
                    let mut stream = query_df.execute_stream().await?;
                    let mut w = crate::io::writer::PartWriter::create(
                        &result_dir.join("part.parquet"),
                        OutFormat::Parquet,
                        &stream.schema(),
                    )?;
                    while let Some(b) = stream.next().await {
                        w.write(&b?)?;
                    }
                    w.finish()?;
                }
                register_dir(engine, "__os_sql_result", &result_dir).await?;
                // Before anything streams on: every id the query returned is one of its input's, at
                // most as often. A failure names an id and leaves nothing behind.
                if let Err(e) = check_sql_ids(engine, label).await {
                    let _ = engine.ctx.deregister_table("__os_sql_result");
                    let _ = std::fs::remove_dir_all(&result_dir);
                    return Err(e);
                }
                let out = engine.ctx.table("__os_sql_result").await?;
                let mut sql_rejects = Vec::new();
                // Rows of `input` that the query did not return are its rejects.
                let kept = out.clone().select(vec![col("id").alias("__os_kept_id")])?;
                let dropped =
                    input.join(kept, JoinType::LeftAnti, &["id"], &["__os_kept_id"], None)?;
                let mut dropped = dropped
                    .select(vec![col("id"), col("dataset"), col("text")])?
                    .execute_stream()
                    .await?;
                let mut sql_report = StageReport::new(label);
                sql_report.rows_in = rows_in;
                sql_report.bytes_in = bytes_in;
                let reason = format!("{label}: not selected");
                while let Some(b) = dropped.next().await {
                    let b = b?;
                    let utf8 = |i: usize| {
                        arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8)
                    };
                    let (ids, ds, texts) = (utf8(0)?, utf8(1)?, utf8(2)?);
                    let (ids, ds, texts) = (
                        ids.as_string::<i32>(),
                        ds.as_string::<i32>(),
                        texts.as_string::<i32>(),
                    );
                    let mut rows = RejectRows::with_capacity(b.num_rows());
                    for i in 0..b.num_rows() {
                        rows.id.push(ids.value(i).to_string());
                        rows.dataset.push(ds.value(i).to_string());
                        rows.stage.push(label.clone());
                        rows.reason.push(reason.clone());
                        rows.value.push(None);
                        rows.file.push(None);
                        rows.line.push(None);
                        rows.detail.push(None);
                        rows.text
                            .push(keep_text.then(|| texts.value(i).to_string()));
                    }
                    sql_report.reject(&reason, b.num_rows() as u64);
                    sql_rejects.push(rows);
                }
                let (mut sinks, timers) =
                    stream_segment(engine, out, &row_stages, &new_part).await?;
                for rows in sql_rejects {
                    sinks[0].write_rejects(rows)?;
                }
                sql_report.rows_out = sinks.iter().map(|s| s.rows_entered).sum();
                sql_report.bytes_out = sinks.iter().map(|s| s.bytes_entered).sum();
                if sql_report.rows_in != sql_report.rows_out + sql_report.rows_rejected {
                    bail!(
                        "{label}: {} rows in, {} out, {} not returned, although its ids were checked; \
                         this is a bug",
                        sql_report.rows_in,
                        sql_report.rows_out,
                        sql_report.rows_rejected
                    );
                }
                let marker =
                    finish_task(sinks, timers, None, Some(sql_report), vec![], &marker_path)?;
                markers.push((final_seg, marker));
                let _ = engine.ctx.deregister_table("input");
                let _ = engine.ctx.deregister_table("__os_sql_result");
            }
        }
    }
    Ok(markers)
}

/// Fails when the `sql` stage's result (table `__os_sql_result`) holds an id that its input (table
/// `input`) does not, or more often than the input does: a query may drop rows and change columns,
/// not duplicate or invent documents, whose rejects could then not be accounted for. Also refused: an
/// id that the input holds several times and the result only some of them, as which copy was dropped
/// is unknowable. One DataFusion aggregation per side and a join of the counts (memory as any query
/// of the session), ids compared as text whatever type the query gave them; the first offending id is
/// named. Counts per id cannot tell the copies of an id apart: with an id twice in the input, a query
/// that returns one copy twice and drops the other passes (generated ids are unique; a source's own
/// ids may not be).
async fn check_sql_ids(engine: &Engine, label: &str) -> Result<()> {
    let df = engine
        .ctx
        .sql(
            "SELECT r.id, r.n AS returned, coalesce(i.n, 0) AS held \
             FROM (SELECT CAST(id AS VARCHAR) AS id, count(*) AS n FROM __os_sql_result GROUP BY 1) r \
             LEFT JOIN (SELECT CAST(id AS VARCHAR) AS id, count(*) AS n FROM input GROUP BY 1) i \
             ON r.id = i.id \
             WHERE i.n IS NULL OR r.n <> i.n \
             LIMIT 1",
        )
        .await
        .with_context(|| format!("{label}: checking the ids the query returned"))?;
    for b in df.collect().await? {
        if b.num_rows() == 0 {
            continue;
        }
        let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        let n = |i: usize| -> Result<u64> {
            let c = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::UInt64)?;
            Ok(c.as_primitive::<arrow::datatypes::UInt64Type>().value(0))
        };
        let id = match arrow::array::Array::is_null(ids.as_ref(), 0) {
            true => "NULL".to_string(),
            false => ids.as_string::<i32>().value(0).to_string(),
        };
        let (returned, held) = (n(1)?, n(2)?);
        if held == 0 {
            bail!(
                "{label}: the query returned id '{id}', which is not in its input: a sql stage may drop \
                 rows and change columns, but not make new rows or change `id`"
            );
        }
        if returned > held {
            bail!(
                "{label}: the query returned id '{id}' {returned} times, and its input holds it {held} \
                 time(s): a sql stage may drop rows, not duplicate them (a join that matches twice?)"
            );
        }
        bail!(
            "{label}: id '{id}' is {held} rows of the input and the query kept {returned} of them: \
             with duplicate ids, the rows a sql stage drops cannot be told apart; make `id` unique first"
        );
    }
    Ok(())
}

/// What finishes a corpus stage once its output was streamed: its report and its rejects parts.
type CorpusFinish = Box<dyn FnOnce() -> Result<(StageReport, Vec<PartInfo>)> + Send>;

/// Registers a directory of Parquet parts (a checkpoint) as a table, replacing any of that name.
async fn register_dir(engine: &Engine, name: &str, dir: &Path) -> Result<()> {
    let _ = engine.ctx.deregister_table(name);
    engine
        .ctx
        .register_parquet(
            name,
            dir.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
    Ok(())
}

/// Where the sinks of one task write: for output partition `p`, the data part `NAME-p.EXT` under
/// `data_dir` and the rejects part `NAME-p.parquet` under `out_dir/rejects`.
struct PartNames {
    stages: Vec<SinkStage>,
    data_dir: PathBuf,
    rejects_dir: PathBuf,
    name: String,
    format: OutFormat,
    keep_text: bool,
    checkpoint: bool,
}

impl PartNames {
    /// Also deletes the parts that an interrupted earlier attempt at this task left, whatever its
    /// number of partitions, so that a rerun never leaves a duplicate behind.
    fn new(
        row_stages: &[(usize, &Stage)],
        data_dir: &Path,
        out_dir: &Path,
        name: &str,
        format: OutFormat,
        keep_text: bool,
        checkpoint: bool,
    ) -> Result<Self> {
        let rejects_dir = out_dir.join("rejects");
        for dir in [data_dir, rejects_dir.as_path()] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries {
                let e = e?;
                let file = e.file_name().to_string_lossy().into_owned();
                if file
                    .trim_start_matches('.')
                    .starts_with(&format!("{name}-"))
                {
                    std::fs::remove_file(e.path())
                        .with_context(|| format!("removing stale part {}", e.path().display()))?;
                }
            }
        }
        Ok(Self {
            stages: sink_stages(row_stages),
            data_dir: data_dir.to_path_buf(),
            rejects_dir,
            name: name.to_string(),
            format,
            keep_text,
            checkpoint,
        })
    }

    fn sink(&self, partition: usize) -> SegmentSink {
        let name = format!("{}-{partition:02}", self.name);
        SegmentSink::new(
            self.stages.iter().map(SinkStage::clone).collect(),
            &self
                .data_dir
                .join(format!("{name}.{}", self.format.extension())),
            &self.rejects_dir.join(format!("{name}.parquet")),
            self.format,
            self.keep_text,
            self.checkpoint,
        )
    }
}

fn sink_stages(row_stages: &[(usize, &Stage)]) -> Vec<SinkStage> {
    row_stages
        .iter()
        .map(|(i, s)| SinkStage {
            idx: *i,
            label: s.label.clone(),
            rewrites: matches!(s.kind, StageKind::Map(_)),
        })
        .collect()
}

/// Plans the row stages over `df` and streams each output partition into a sink of its own, all at once:
/// a partition's stages and its writes run on one tokio task, so that encoding and compressing the
/// output spreads over the cores as the functions do. Returns the sinks (at least one) and the stage
/// timers.
async fn stream_segment(
    engine: &Engine,
    df: DataFrame,
    row_stages: &[(usize, &Stage)],
    parts: &PartNames,
) -> Result<(Vec<SegmentSink>, Vec<Arc<AtomicU64>>)> {
    let timers: Vec<Arc<AtomicU64>> = row_stages
        .iter()
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let df = if row_stages.is_empty() {
        without_round_robin(df)
    } else {
        df
    };
    let df = plan::apply(&engine.ctx, plan::start(df)?, row_stages, &timers)?;
    let schema = df.schema().as_arrow().clone();
    let streams = df.execute_stream_partitioned().await?;
    let mut handles = Vec::with_capacity(streams.len());
    for (p, mut stream) in streams.into_iter().enumerate() {
        let mut sink = parts.sink(p);
        sink.set_schema(&schema);
        handles.push(tokio::spawn(async move {
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| anyhow::anyhow!("{e}"))?;
                sink.push(&batch)?;
            }
            anyhow::Ok(sink)
        }));
    }
    let mut sinks = Vec::with_capacity(handles.len());
    for h in handles {
        sinks.push(h.await.context("output partition task")??);
    }
    if sinks.is_empty() {
        let mut sink = parts.sink(0);
        sink.set_schema(&schema);
        sinks.push(sink);
    }
    Ok((sinks, timers))
}

/// `df` planned without round-robin repartitioning. With no row stage there is no work to spread, only
/// writes, and DataFusion's round robin from one stream (a corpus stage's) into several buffers without
/// bound whenever one writer lags: after `tokenize`, the heap rose and fell by 150 MB as the writers
/// starved and caught up, and its peak grew with the corpus.
fn without_round_robin(df: DataFrame) -> DataFrame {
    let (state, plan) = df.into_parts();
    let mut config = state.config().clone();
    config
        .options_mut()
        .optimizer
        .enable_round_robin_repartition = false;
    let state = SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build();
    DataFrame::new(state, plan)
}

/// The marker of a corpus stage's task, once the rows that came out of the stage are checked against
/// the rows it says it gave (kept plus made).
fn finish_corpus_task(
    sinks: Vec<SegmentSink>,
    timers: Vec<Arc<AtomicU64>>,
    report: StageReport,
    rejects: Vec<PartInfo>,
    marker_path: &Path,
) -> Result<TaskMarker> {
    let entered: u64 = sinks.iter().map(|s| s.rows_entered).sum();
    let gave = report.rows_out + report.rows_added;
    if entered != gave {
        bail!(
            "{}: gave {gave} rows but {entered} came out; this is a bug",
            report.name
        );
    }
    finish_task(sinks, timers, None, Some(report), rejects, marker_path)
}

fn finish_task(
    sinks: Vec<SegmentSink>,
    timers: Vec<Arc<AtomicU64>>,
    read: Option<StageReport>,
    corpus: Option<StageReport>,
    corpus_rejects: Vec<PartInfo>,
    marker_path: &Path,
) -> Result<TaskMarker> {
    let mut reports: Vec<StageReport> = Vec::new();
    let (mut data, mut rejects) = (Vec::new(), corpus_rejects);
    for sink in sinks {
        let (part_reports, d, r) = sink.finish()?;
        if reports.is_empty() {
            reports = part_reports;
        } else {
            for (acc, r) in reports.iter_mut().zip(&part_reports) {
                acc.merge(r);
            }
        }
        data.extend(d);
        rejects.extend(r);
    }
    for (r, t) in reports.iter_mut().zip(&timers) {
        r.seconds = t.load(Ordering::Relaxed) as f64 / 1e9;
    }
    let stages = read.into_iter().chain(corpus).chain(reports).collect();
    let marker = TaskMarker {
        stages,
        data,
        rejects,
    };
    std::fs::create_dir_all(marker_path.parent().expect("marker dir"))?;
    let tmp = crate::io::writer::temp_name(marker_path);
    std::fs::write(&tmp, serde_json::to_vec_pretty(&marker)?)?;
    std::fs::rename(&tmp, marker_path)?;
    Ok(marker)
}

fn read_marker(path: &Path) -> Result<Option<TaskMarker>> {
    if !path.exists() {
        return Ok(None);
    }
    let m: TaskMarker = serde_json::from_slice(&std::fs::read(path)?)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(m))
}

async fn count_rows_bytes(df: DataFrame) -> Result<(u64, u64)> {
    let agg = df.aggregate(
        vec![],
        vec![
            count(lit(1)).alias("n"),
            sum(octet_length(col("text"))).alias("b"),
        ],
    )?;
    let batches = agg.collect().await?;
    let b = &batches[0];
    let n = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::UInt64)?;
    let s = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::UInt64)?;
    let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::UInt64Type>(&n);
    let s = arrow::array::AsArray::as_primitive::<arrow::datatypes::UInt64Type>(&s);
    Ok((
        n.value(0),
        if arrow::array::Array::is_null(s, 0) {
            0
        } else {
            s.value(0)
        },
    ))
}

/// Groups files into tasks of about `bytes` on disk and at most `max_files` files, in name order.
fn tasks(files: &[PathBuf], bytes: u64, max_files: usize) -> Vec<Vec<PathBuf>> {
    let mut out: Vec<Vec<PathBuf>> = vec![];
    let mut size = 0;
    for f in files {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if out.is_empty() || size >= bytes || out.last().expect("non-empty").len() >= max_files {
            out.push(vec![]);
            size = 0;
        }
        out.last_mut().expect("non-empty").push(f.clone());
        size += len;
    }
    out
}

/// The sources of the input: one per dataset, or one per file format of a `path` (a directory may mix
/// Parquet and JSONL files).
fn resolve_input(spec: &PipelineSpec, opts: &RunOptions) -> Result<Vec<SourceSpec>> {
    let input = &spec.input;
    let names: Vec<&String> = input.dataset.iter().chain(&input.datasets).collect();
    if !names.is_empty() {
        let catalog = Catalog::load(&opts.catalog.clone().unwrap_or_else(Catalog::default_path))?;
        return names
            .into_iter()
            .map(|n| catalog.source(n, spec.on_error, spec.keep_rejected_text))
            .collect();
    }
    let path = input.path.as_ref().expect("checked at load");
    let files = expand(path, input.format)?;
    if files.is_empty() {
        bail!("input {path} matches no files");
    }
    let mut by_format: BTreeMap<String, (Format, Vec<PathBuf>)> = BTreeMap::new();
    for f in files {
        let format = match input.format {
            Some(fmt) => fmt,
            None => infer_format(std::slice::from_ref(&f))?,
        };
        by_format
            .entry(format!("{format:?}"))
            .or_insert_with(|| (format, vec![]))
            .1
            .push(f);
    }
    Ok(by_format
        .into_values()
        .map(|(format, files)| SourceSpec {
            dataset: input.name.clone().unwrap_or_else(|| spec.name.clone()),
            root: crate::io::files::common_root(&files),
            files,
            format,
            text_column: input.text.clone().unwrap_or_else(|| "text".into()),
            id_column: input.id.clone(),
            on_error: spec.on_error,
            keep_rejected_text: spec.keep_rejected_text,
        })
        .collect())
}

/// The union of the sources' schemas: the document columns, then every other column once, typed as
/// where it was first seen (readers cast or null-fill to it).
fn union_schema(sources: &[SourceSpec]) -> Result<arrow::datatypes::SchemaRef> {
    let mut fields: Vec<arrow::datatypes::FieldRef> = Vec::new();
    for s in sources {
        let schema = CorpusTable::try_new(
            s.clone(),
            Arc::new(RejectBuffer::default()),
            Arc::new(ReadStats::default()),
        )?
        .schema();
        for f in schema.fields() {
            if !fields.iter().any(|g| g.name() == f.name()) {
                fields.push(Arc::clone(f));
            }
        }
    }
    Ok(Arc::new(arrow::datatypes::Schema::new(fields)))
}

fn describe_input(spec: &PipelineSpec) -> String {
    match (&spec.input.dataset, &spec.input.path) {
        (Some(d), _) => format!("dataset:{d}"),
        (_, Some(p)) => p.clone(),
        _ => format!("datasets:{}", spec.input.datasets.join(",")),
    }
}

/// Makes the output directory ready. Returns the finished report when this exact run is complete. The
/// run's identity covers everything that decides which tasks exist and what they hold: the pipeline,
/// the input files and their sizes, the column mapping, the task size, and the contents of the lexicon
/// and tokenizer files.
fn prepare_dir(
    out: &Path,
    spec: &PipelineSpec,
    (stages, base): (&[Stage], &Path),
    sources: &[SourceSpec],
    format: OutFormat,
    opts: &RunOptions,
) -> Result<Option<Report>> {
    let fresh = opts.fresh;
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(spec)?);
    h.update(serde_json::to_vec(&format)?);
    h.update(opts.task_bytes.to_le_bytes());
    h.update((opts.task_files as u64).to_le_bytes());
    for s in sources {
        h.update(
            format!(
                "{}|{}|{:?}|{:?}|{:?}",
                s.dataset, s.text_column, s.id_column, s.format, s.root
            )
            .as_bytes(),
        );
    }
    for s in stages {
        if let Some((_, path)) = &s.lexicon_file {
            h.update(std::fs::read(path).with_context(|| format!("reading lexicon {path}"))?);
        }
        if let StageKind::Tokenize(o) = &s.kind {
            h.update(crate::stages::tokenize::tokenizer::sha256(
                &o.tokenizer,
                base,
            )?);
        }
        if let StageKind::SubstringDedup(o) = &s.kind
            && let Some(t) = &o.tokenizer
        {
            h.update(crate::stages::tokenize::tokenizer::sha256(t, base)?);
        }
        if let StageKind::Synth(o) = &s.kind {
            for source in crate::stages::synth::template_sources(o, base)? {
                h.update(source.as_bytes());
            }
        }
    }
    for f in sources.iter().flat_map(|s| &s.files) {
        h.update(f.to_string_lossy().as_bytes());
        h.update(f.metadata().map(|m| m.len()).unwrap_or(0).to_le_bytes());
    }
    let fingerprint = hex::encode(h.finalize());
    let identity_path = out.join("_run.json");
    if fresh && out.exists() {
        // Only a run directory (or an empty one) is ever deleted: a mistaken --output must not cost data.
        let empty = !std::fs::read_dir(out)?
            .filter_map(|e| e.ok())
            .any(|e| !KEPT_BY_FRESH.contains(&e.file_name().to_string_lossy().as_ref()));
        if !identity_path.exists() && !empty {
            bail!(
                "{} is not an openseek run directory (no _run.json): refusing to delete it with --fresh",
                out.display()
            );
        }
        // Everything but what KEPT_BY_FRESH names.
        for entry in std::fs::read_dir(out)? {
            let path = entry?.path();
            if path
                .file_name()
                .is_some_and(|n| KEPT_BY_FRESH.contains(&n.to_string_lossy().as_ref()))
            {
                continue;
            }
            if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
            .with_context(|| format!("removing {}", path.display()))?;
        }
    }
    if identity_path.exists() {
        let id: RunIdentity = serde_json::from_slice(&std::fs::read(&identity_path)?)?;
        if id.fingerprint != fingerprint {
            bail!(
                "{} holds a run of another pipeline or input ({}); use --fresh to replace it or choose another --output",
                out.display(),
                id.pipeline
            );
        }
        let report = out.join("report.json");
        if report.exists() {
            return Ok(Some(Report::read(&report)?));
        }
    } else if out.exists()
        && std::fs::read_dir(out)?
            .filter_map(|e| e.ok())
            .any(|e| !KEPT_BY_FRESH.contains(&e.file_name().to_string_lossy().as_ref()))
    {
        bail!(
            "{} exists and is not an openseek run directory; use --fresh to replace it",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tmp = crate::io::writer::temp_name(&identity_path);
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&RunIdentity {
            pipeline: spec.name.clone(),
            fingerprint,
        })?,
    )?;
    std::fs::rename(&tmp, &identity_path)?;
    // Temporaries of a killed run: their tasks have no marker and run again.
    for dir in ["data", "rejects", "_tasks", "_stages"] {
        remove_temporaries(&out.join(dir))?;
    }
    Ok(None)
}

/// What `--fresh` keeps of a run directory: the LLM responses, which were paid for (a synthesis
/// stage's cache is keyed by the request, so a fresh run asks again only what it asks differently),
/// and `cot_rag`'s indexes (named by their documents' files, so a changed input gets a new one).
const KEPT_BY_FRESH: &[&str] = &["llm_cache", "rag_index"];

fn remove_temporaries(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            remove_temporaries(&p)?;
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
        {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}
