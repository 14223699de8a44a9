//! `minhash_dedup`: near-duplicate removal over the whole input by MinHash-LSH.
//!
//! 1. Signatures ([`signatures`]): each document's band keys, written to Parquet by all cores.
//! 2. Clusters ([`clusters`]): band keys grouped by a spilling DataFusion aggregation; the members of
//!    each group joined by union-find (after a true-Jaccard check with `verify`); one document kept per
//!    cluster (`keep`).
//! 3. Output ([`output`]): the input streamed again as a table, the duplicates sent to the rejects with
//!    the id of the document kept in their place.
//!
//! Memory: union-find, cluster sizes and kept documents take 12 bytes per document, the document facts
//! 13 more (input position, text bytes, too short; 21 with `keep: longest|max:`), and the ids of the
//! kept documents of non-singleton clusters;
//! everything else is on disk or in DataFusion's memory pool (`memory_mb`).

pub mod clusters;
pub mod index;
pub mod options;
pub mod output;
pub mod signatures;
pub mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use datafusion::prelude::DataFrame;
use openseek_udfs::minhash::{MinHasher, ShingleUnit};

use crate::context::Engine;
use crate::io::table::POS_COL;
use crate::progress::Progress;
use crate::report::{DedupSummary, PartInfo, StageReport};
use crate::stages::union_find::UnionFind;
use crate::stages::units::{
    UnitBatches, checkpoint_schema, doc_count, for_each_unit, plan_units, read_unit, unit_table,
};
use clusters::{Clusters, candidate_groups, register_bands, size_histogram, spilling_session};
use options::MinhashDedupOptions;
use output::{Decided, REASON_INDEX, removal_reason};

/// A planned `minhash_dedup`: the decisions are made; `df` streams the rows that stay.
pub struct MinhashRun {
    pub df: DataFrame,
    pub report: StageReport,
    decided: Arc<Decided>,
    index_build: Option<(PathBuf, index::IndexManifest, Vec<String>, u64)>,
}

impl MinhashRun {
    /// Closes the rejects part and completes the index; call after `df` was streamed to the end.
    pub fn finish(self) -> Result<Option<PartInfo>> {
        let rejects = self.decided.finish()?;
        if let Some((dir, manifest, files, docs)) = self.index_build {
            index::finish_build(&dir, manifest, files, docs)?;
        }
        Ok(rejects)
    }
}

/// Runs passes 1 and 2 over the checkpoint in `input_dir` (using `work_dir` for band keys and spills)
/// and plans pass 3.
#[allow(clippy::too_many_arguments)]
pub async fn plan(
    engine: &Engine,
    opts: &MinhashDedupOptions,
    label: &str,
    input_dir: &Path,
    work_dir: &Path,
    keep_text: bool,
    rejects_path: &Path,
    progress: &Progress,
) -> Result<MinhashRun> {
    let threads = engine.ctx.state().config().target_partitions().max(1);
    let keep = opts.keep()?;
    let units = plan_units(input_dir)?;
    let n = doc_count(&units);
    let input_schema = checkpoint_schema(input_dir)?;
    if let options::Keep::Max(c) = &keep
        && input_schema.index_of(c).is_err()
    {
        anyhow::bail!("{label}: keep: max:{c}, but the input has no column `{c}`");
    }

    // Pass 0, for `unit: auto`: one unit for the whole input, never one per document.
    let t = Instant::now();
    let mut config = opts.config()?;
    if config.unit == ShingleUnit::Auto
        && let Some(dir) = &opts.index.against
    {
        // Against an index, `auto` is the unit the index was built with: band keys only match under
        // one unit, and a small new batch must not be refused for a mix of scripts unlike the index's.
        let manifest = index::read_manifest(Path::new(dir))?;
        config.unit = manifest
            .unit
            .parse::<ShingleUnit>()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("index {dir}: unit"))?;
        tracing::info!("{label}: unit auto: {}, as index {dir}", manifest.unit);
    }
    if config.unit == ShingleUnit::Auto {
        let done = progress.phase(format!("{label}: scripts (unit: auto)"), Some(n));
        let count = tokio::task::block_in_place(|| {
            signatures::count_scripts(&units, "text", threads, &done)
        })?;
        config.unit = count.unit();
        tracing::info!(
            "{label}: unit auto: {} of {} letters are CJK, so {}",
            count.cjk,
            count.letters,
            config.unit.name()
        );
    }
    let hasher = MinHasher::new(config).map_err(anyhow::Error::msg)?;
    let unit = hasher.config().unit.name();

    // Pass 1.
    tracing::info!("{label}: signatures of {n} documents on {threads} threads");
    let bands_dir = work_dir.join("bands");
    let done = progress.phase(format!("{label}: signatures"), Some(n));
    let (facts, band_files) = tokio::task::block_in_place(|| {
        signatures::write_band_keys(
            &units,
            &hasher,
            &keep,
            "text",
            input_schema.index_of(POS_COL).is_ok(),
            &bands_dir,
            threads,
            &done,
        )
    })?;
    let seconds_signatures = t.elapsed().as_secs_f64();

    // Pass 2.
    let t = Instant::now();
    let ctx = spilling_session(opts.memory_mb, &work_dir.join("spill"), threads)?;
    let mut uf = UnionFind::new(n as usize);
    let mut summary = DedupSummary {
        unit: unit.to_string(),
        too_short: facts.too_short.iter().filter(|&&s| s).count() as u64,
        seconds_signatures,
        ..Default::default()
    };
    if !band_files.is_empty() {
        register_bands(&ctx, "bands", &band_files).await?;
        // With `verify`, the candidate pairs: a quarter of `memory_mb` in memory, the rest on disk.
        let mut spill = match opts.verify {
            true => Some(verify::PairSpill::new(
                &work_dir.join("pairs"),
                ((opts.memory_mb as usize) << 20) / 4,
            )?),
            false => None,
        };
        let groups = progress.phase(format!("{label}: grouping band keys, groups"), None);
        summary.candidate_groups = candidate_groups(&ctx, |rep, members| {
            groups.fetch_add(1, Ordering::Relaxed);
            match spill.as_mut() {
                Some(spill) => spill.add_group(rep, members)?,
                None => members.iter().for_each(|&m| {
                    uf.union(rep, m);
                }),
            }
            Ok(())
        })
        .await?;
        if let Some(spill) = spill {
            let runs = spill.finish()?;
            let verified = verify::verify_pairs(
                &runs,
                &work_dir.join("spill"),
                &units,
                &facts,
                &hasher,
                opts.threshold,
                (opts.memory_mb / 2, ((opts.memory_mb as usize) << 20) / 2),
                threads,
                (progress, label),
                &mut uf,
            )
            .await?;
            summary.candidate_pairs = Some(verified.candidates);
            summary.pairs_below_threshold = Some(verified.candidates - verified.merged);
        }
    }
    let clusters = Clusters::decide(uf, &facts, &keep);

    // Clusters that match the index lose every member, each reported with the indexed id.
    let mut index_matches: HashMap<u32, String> = HashMap::new();
    if let Some(dir) = &opts.index.against {
        if !band_files.is_empty() {
            let mut by_doc: Vec<(u32, String)> =
                index::match_index(&ctx, Path::new(dir), opts, unit)
                    .await?
                    .into_iter()
                    .collect();
            by_doc.sort();
            for (d, id) in by_doc {
                index_matches.entry(clusters.root[d as usize]).or_insert(id);
            }
        } else {
            index::match_index(&ctx, Path::new(dir), opts, unit).await?;
        }
    }

    // The ids of kept documents that others point to.
    let mut wanted = vec![false; clusters.len()];
    let mut any = false;
    for d in 0..clusters.len() as u32 {
        if !facts.too_short[d as usize] && clusters.cluster_size(d) > 1 && clusters.is_kept(d) {
            wanted[d as usize] = true;
            any = true;
        }
    }
    let kept_ids: HashMap<u32, String> = if any {
        let done = progress.phase(format!("{label}: ids of kept documents"), Some(n));
        let found = Mutex::new(HashMap::new());
        tokio::task::block_in_place(|| {
            for_each_unit(&units, threads, |_, unit| {
                let mut d = unit.first_doc as u32;
                for batch in read_unit(unit, Some(&["id"]))? {
                    let batch = batch?;
                    done.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    let ids =
                        arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
                    let ids = arrow::array::AsArray::as_string::<i32>(&ids);
                    for i in 0..batch.num_rows() {
                        if wanted[d as usize] {
                            found
                                .lock()
                                .expect("ids lock")
                                .insert(d, ids.value(i).to_string());
                        }
                        d += 1;
                    }
                }
                Ok(())
            })
        })?;
        found.into_inner().expect("ids lock")
    } else {
        HashMap::new()
    };
    drop(wanted);

    // The counts, before anything streams.
    let mut report = StageReport::new(label);
    report.rows_in = n;
    report.bytes_in = facts.bytes.iter().map(|&b| u64::from(b)).sum();
    let mut largest = 0u32;
    let mut removed_bytes = 0u64;
    let mut indexed_docs = 0u64;
    for d in 0..clusters.len() as u32 {
        let i = d as usize;
        if facts.too_short[i] {
            continue;
        }
        let size = clusters.cluster_size(d);
        if size > 1 {
            summary.documents_in_clusters += 1;
            largest = largest.max(size);
            if clusters.root[i] == d {
                summary.clusters += 1;
            }
        }
        indexed_docs += u64::from(output::indexed(
            d,
            &facts.too_short,
            &clusters,
            &index_matches,
        ));
        let Some(reason) = removal_reason(
            d,
            &facts.too_short,
            &clusters,
            &index_matches,
            opts.annotate,
        ) else {
            continue;
        };
        if reason == REASON_INDEX {
            summary.removed_by_index += 1;
        }
        report.reject(reason, 1);
        removed_bytes += u64::from(facts.bytes[i]);
    }
    report.rows_out = n - report.rows_rejected;
    report.bytes_out = report.bytes_in - removed_bytes;
    summary.largest_cluster = u64::from(largest);
    summary.cluster_sizes = size_histogram(&clusters);

    let index_build = match &opts.index.build {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let files = tokio::task::block_in_place(|| {
                index::build_bands(&dir, &band_files, |d| {
                    output::indexed(d, &facts.too_short, &clusters, &index_matches)
                })
            })?;
            Some((
                dir,
                index::IndexManifest::new(opts, unit),
                files,
                indexed_docs,
            ))
        }
        None => None,
    };
    summary.seconds_clustering = t.elapsed().as_secs_f64();
    report.seconds = summary.seconds_signatures + summary.seconds_clustering;
    report.dedup = Some(summary);
    tracing::info!(
        "{label}: {} removed, {} clusters",
        report.rows_rejected,
        report.dedup.as_ref().map(|d| d.clusters).unwrap_or(0)
    );

    let index_docs_path = index_build
        .as_ref()
        .map(|(dir, ..)| dir.join("docs.parquet"));
    let decided = Arc::new(Decided::new(
        clusters,
        facts.too_short,
        kept_ids,
        index_matches,
        opts.annotate,
        label.to_string(),
        keep_text,
        &input_schema,
        rejects_path,
        index_docs_path,
        progress.phase(format!("{label}: output"), Some(n)),
    )?);
    let table = unit_table(units, Arc::clone(&decided) as Arc<dyn UnitBatches>, threads)
        .context("planning the minhash_dedup output")?;
    let df = engine.ctx.read_table(Arc::new(table))?;
    Ok(MinhashRun {
        df,
        report,
        decided,
        index_build,
    })
}
