//! `substring_dedup`: exact-substring removal over the whole input with suffix arrays, after
//! google-research's deduplicate-text-datasets (ExactSubstr).
//!
//! 1. Join ([`corpus_text`]): the input's texts (or token ids) into one mapped file.
//! 2. Find ([`find`]): suffix arrays of parts of it ([`suffix_array`]), merged across parts
//!    ([`merge`]) on all cores; the spans of each document covered by a repeat of `min_bytes` or more
//!    (every occurrence but the first, or all).
//! 3. Remove ([`output`]): the input streamed again; spans snapped to character, word or line
//!    boundaries ([`snap`]) and cut; documents left too short rejected.
//!
//! Memory: the suffix array of one part (4 bytes a symbol) and libsais's work space, bounded by
//! `memory_mb`; a bit a symbol for groups and flags; the spans found (12 bytes each). The joined text is
//! mapped, so the kernel keeps what fits of it.

pub mod bits;
pub mod corpus_text;
pub mod find;
pub mod maximal;
pub mod merge;
pub mod options;
pub mod output;
pub mod repeated_spans;
pub mod snap;
pub mod suffix_array;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result};
use datafusion::prelude::DataFrame;
use serde::{Deserialize, Serialize};

use crate::context::Engine;
use crate::progress::Progress;
use crate::report::{PartInfo, StageReport};
use crate::stages::units::{UnitBatches, checkpoint_schema, doc_count, plan_units, unit_table};
use corpus_text::{Joined, join_bytes, join_tokens};
use find::{FindOptions, Found, Span, find_repeats};
use options::{SubstringDedupOptions, Unit as SymbolUnit};
use output::Removal;
use suffix_array::Symbol;

/// What `substring_dedup` found and removed, beside its row counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubstringSummary {
    /// `bytes` or `tokens`, and the shortest repeat removed in that unit.
    pub unit: String,
    pub min_length: u64,
    pub policy: String,
    pub snap: String,
    /// Symbols indexed (text and separators) and the parts they were cut into.
    pub symbols: u64,
    pub parts: u64,
    /// Spans removed (after snapping) and their bytes, from every document, kept or rejected.
    pub duplicate_spans: u64,
    pub bytes_removed: u64,
    pub documents_changed: u64,
    /// Documents that lost text and kept fewer than `min_words_after` words.
    pub documents_too_short: u64,
    /// Wall seconds of each pass (the removal runs as the next stages read).
    pub seconds_join: f64,
    pub seconds_suffix_arrays: f64,
    pub seconds_merge: f64,
    pub seconds_mark: f64,
    pub seconds_remove: f64,
}

/// A planned `substring_dedup`: the spans are found; `df` streams the documents without them.
pub struct SubstringRun {
    pub df: DataFrame,
    removal: Arc<Removal>,
    report: StageReport,
    summary: SubstringSummary,
    started: Instant,
}

impl SubstringRun {
    /// The stage's report and rejects, once `df` was streamed to the end.
    pub fn finish(self) -> Result<(StageReport, Option<PartInfo>)> {
        let rejects = self.removal.finish()?;
        let c = &self.removal.counts;
        let mut report = self.report;
        let mut summary = self.summary;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        summary.duplicate_spans = get(&c.spans);
        summary.bytes_removed = get(&c.bytes_removed);
        summary.documents_changed = get(&c.documents_changed);
        summary.documents_too_short = get(&c.rejected);
        summary.seconds_remove = self.started.elapsed().as_secs_f64();
        if summary.documents_too_short > 0 {
            report.reject(self.removal.reason(), summary.documents_too_short);
        }
        report.rows_out = get(&c.rows_out);
        report.bytes_out = get(&c.bytes_out);
        report.seconds += summary.seconds_remove;
        report.substring = Some(summary);
        Ok((report, rejects))
    }
}

/// Finds the spans over the checkpoint in `input_dir` (using `work_dir` for the joined text and the
/// parts' suffix arrays) and plans the removal. `base` resolves a tokenizer path.
#[allow(clippy::too_many_arguments)]
pub async fn plan(
    engine: &Engine,
    opts: &SubstringDedupOptions,
    label: &str,
    input_dir: &Path,
    work_dir: &Path,
    base: &Path,
    keep_text: bool,
    rejects_path: &Path,
    progress: &Progress,
) -> Result<SubstringRun> {
    let threads = engine.ctx.state().config().target_partitions().max(1);
    let units = plan_units(input_dir)?;
    let n = doc_count(&units);
    let input_schema = checkpoint_schema(input_dir)?;
    for c in ["id", "text", "dataset"] {
        input_schema
            .index_of(c)
            .with_context(|| format!("{label}: the input has no column `{c}`"))?;
    }
    let _ = std::fs::remove_dir_all(work_dir);
    let unit = opts.unit()?;
    let find_opts = FindOptions {
        min_len: opts.min_len(),
        policy: opts.policy()?,
        max_part_len: opts.max_part_len(),
        threads,
    };
    tracing::info!(
        "{label}: repeats of {} {} or more in {n} documents, on {threads} threads",
        find_opts.min_len,
        match unit {
            SymbolUnit::Bytes => "bytes",
            SymbolUnit::Tokens => "tokens",
        }
    );
    let mut summary = SubstringSummary {
        unit: match unit {
            SymbolUnit::Bytes => "bytes".into(),
            SymbolUnit::Tokens => "tokens".into(),
        },
        min_length: find_opts.min_len as u64,
        policy: find_opts.policy.name().into(),
        snap: format!("{:?}", opts.snap()?).to_lowercase(),
        ..Default::default()
    };
    let t = Instant::now();
    let done = progress.phase(format!("{label}: joining the texts"), Some(n));
    let (spans, found, text_bytes, input_doc) = tokio::task::block_in_place(|| -> Result<_> {
        match unit {
            SymbolUnit::Bytes => {
                let mut joined = join_bytes(&units, work_dir, threads, &done)?;
                summary.seconds_join = t.elapsed().as_secs_f64();
                let (mut found, bytes) = find_in(&joined, &find_opts, work_dir, progress, label)?;
                let spans = std::mem::take(&mut found.spans);
                Ok((spans, found, bytes, joined.input_doc.take()))
            }
            SymbolUnit::Tokens => {
                let name = opts.tokenizer.as_deref().expect("checked by parse");
                let tokenizer = crate::stages::tokenize::tokenizer::load(name, base)?;
                let mut joined =
                    join_tokens(&units, work_dir, threads, &done, &tokenizer.tokenizer)?;
                summary.seconds_join = t.elapsed().as_secs_f64();
                let (mut found, bytes) = find_in(&joined, &find_opts, work_dir, progress, label)?;
                // Token positions to byte ranges of the documents. A character split into several
                // tokens gives each of them its whole byte range, so spans apart in tokens may
                // overlap in bytes: merged.
                let mut spans: Vec<Span> = std::mem::take(&mut found.spans)
                    .into_iter()
                    .filter_map(|s| {
                        let (a, b) =
                            joined.byte_range(s.doc as usize, s.start as usize, s.end as usize)?;
                        Some(Span {
                            doc: s.doc,
                            start: a as u32,
                            end: b as u32,
                        })
                    })
                    .collect();
                spans.sort_unstable();
                spans.dedup_by(|next, kept| {
                    let overlaps = next.doc == kept.doc && next.start <= kept.end;
                    if overlaps {
                        kept.end = kept.end.max(next.end);
                    }
                    overlaps
                });
                Ok((spans, found, bytes, joined.input_doc.take()))
            }
        }
    })
    .with_context(|| format!("stage {label}"))?;
    // The spans by the input's document numbers, which the output pass streams in.
    let spans = match input_doc {
        Some(input_doc) => {
            let mut spans: Vec<Span> = spans
                .into_iter()
                .map(|s| Span {
                    doc: input_doc[s.doc as usize],
                    ..s
                })
                .collect();
            spans.sort_unstable();
            spans
        }
        None => spans,
    };
    // The joined text and the parts' arrays are no longer needed.
    let _ = std::fs::remove_dir_all(work_dir);
    summary.symbols = found.symbols;
    summary.parts = found.parts as u64;
    summary.seconds_suffix_arrays = found.seconds_suffix_arrays;
    summary.seconds_merge = found.seconds_merge;
    summary.seconds_mark = found.seconds_mark;
    tracing::info!(
        "{label}: {} spans to remove in {} part(s)",
        spans.len(),
        found.parts
    );

    let mut report = StageReport::new(label);
    report.rows_in = n;
    report.bytes_in = text_bytes;
    report.seconds = summary.seconds_join
        + summary.seconds_suffix_arrays
        + summary.seconds_merge
        + summary.seconds_mark;
    let removal = Arc::new(Removal::new(
        spans,
        opts.snap()?,
        opts.min_words_after,
        opts.annotate,
        label,
        keep_text,
        &input_schema,
        rejects_path,
        progress.phase(format!("{label}: removing"), Some(n)),
    ));
    let table = unit_table(units, Arc::clone(&removal) as Arc<dyn UnitBatches>, threads)?;
    let df = engine.ctx.read_table(Arc::new(table))?;
    Ok(SubstringRun {
        df,
        removal,
        report,
        summary,
        started: Instant::now(),
    })
}

/// Runs the find over a joined corpus; also returns its text bytes.
fn find_in<T: Symbol>(
    joined: &Joined<T>,
    opts: &FindOptions,
    work_dir: &Path,
    progress: &Progress,
    label: &str,
) -> Result<(Found, u64)> {
    let corpus = find::Corpus {
        text: joined.text(),
        starts: &joined.starts,
        sep: joined.sep,
        alphabet: joined.alphabet,
    };
    let found = find_repeats(&corpus, opts, &work_dir.join("parts"), progress, label)?;
    Ok((found, joined.text_bytes))
}
