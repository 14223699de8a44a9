//! Deduplication against an existing corpus. `index: {build: DIR}` writes the band keys of the documents
//! a run keeps (`bands-*.parquet`: band, key, doc), their ids (`docs.parquet`: doc, id, dataset) and the
//! MinHash settings (`index.json`); `index: {against: DIR}` joins a new corpus's band keys with those in
//! DataFusion, so each matching document is removed with the id of the indexed document it matched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::UInt32Type;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use super::options::MinhashDedupOptions;
use super::signatures::bands_schema;
use crate::io::writer::PartWriter;

/// `index.json`: what the band keys were computed with; an index only matches the same settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexManifest {
    pub format: u32,
    pub unit: String,
    pub ngram: usize,
    pub bands: usize,
    pub rows: usize,
    pub seed: u64,
    pub normalize: String,
    pub documents: u64,
    pub band_files: Vec<String>,
}

impl IndexManifest {
    /// The settings of `opts`, with the unit the stage decided (`auto` resolved over its input).
    pub fn new(opts: &MinhashDedupOptions, unit: &str) -> Self {
        Self {
            format: 1,
            unit: unit.to_string(),
            ngram: opts.ngram,
            bands: opts.bands,
            rows: opts.rows,
            seed: opts.seed,
            normalize: opts.normalize.clone(),
            documents: 0,
            band_files: vec![],
        }
    }

    fn settings(&self) -> String {
        format!(
            "unit {}, ngram {}, bands {}, rows {}, seed {}, normalize {}",
            self.unit, self.ngram, self.bands, self.rows, self.seed, self.normalize
        )
    }
}

/// Writes the band keys of the documents `indexed` names (those that stay as their cluster's kept one,
/// not the removed ones, which the index would otherwise report as matches) to `dir`. Their ids follow
/// as the output streams (`docs.parquet`, by the same rule), and the manifest is written last by
/// [`finish_build`], so a directory without `index.json` is not an index.
pub fn build_bands(
    dir: &Path,
    band_files: &[PathBuf],
    indexed: impl Fn(u32) -> bool,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating index {}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join("index.json"));
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("bands-") && name.ends_with(".parquet") {
            std::fs::remove_file(&p)?;
        }
    }
    let mut names = Vec::new();
    for (i, src) in band_files.iter().enumerate() {
        let name = format!("bands-{i:03}.parquet");
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(src)?)?.build()?;
        let mut w = PartWriter::create_uncompressed(&dir.join(&name), &bands_schema())?;
        for batch in reader {
            let batch = batch?;
            let docs = batch.column(2).as_primitive::<UInt32Type>();
            let keep: BooleanArray = docs
                .iter()
                .map(|d| Some(indexed(d.expect("non-null"))))
                .collect();
            let kept: RecordBatch = arrow::compute::filter_record_batch(&batch, &keep)?;
            w.write(&kept)?;
        }
        w.finish()?;
        names.push(name);
    }
    Ok(names)
}

pub fn finish_build(
    dir: &Path,
    mut manifest: IndexManifest,
    band_files: Vec<String>,
    documents: u64,
) -> Result<()> {
    // The ids written as the output streamed must be those of the band keys: the same rule decides
    // both, so a difference is a bug, and an index that says otherwise would miss matches.
    let docs_path = dir.join("docs.parquet");
    let written: u64 = ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&docs_path)
            .with_context(|| format!("index: {} was not written", docs_path.display()))?,
    )?
    .metadata()
    .file_metadata()
    .num_rows() as u64;
    if written != documents {
        bail!(
            "index {}: {written} ids written for {documents} indexed documents; this is a bug",
            dir.display()
        );
    }
    manifest.band_files = band_files;
    manifest.documents = documents;
    let path = dir.join("index.json");
    let tmp = crate::io::writer::temp_name(&path);
    std::fs::write(&tmp, serde_json::to_vec_pretty(&manifest)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The manifest of the index in `dir`.
pub fn read_manifest(dir: &Path) -> Result<IndexManifest> {
    let manifest_path = dir.join("index.json");
    serde_json::from_slice(&std::fs::read(&manifest_path).with_context(|| {
        format!(
            "index: against: {} has no index.json (build it with index: {{build: DIR}})",
            dir.display()
        )
    })?)
    .with_context(|| format!("reading {}", manifest_path.display()))
}

/// For each document of the new corpus (table `bands`) that shares a band key with the index in `dir`:
/// the id of the lowest-numbered indexed document it matches.
pub async fn match_index(
    ctx: &SessionContext,
    dir: &Path,
    opts: &MinhashDedupOptions,
    unit: &str,
) -> Result<HashMap<u32, String>> {
    let manifest = read_manifest(dir)?;
    let wanted = IndexManifest::new(opts, unit);
    if manifest.settings() != wanted.settings() {
        bail!(
            "index {} was built with {}; this stage uses {}: band keys only match under the same settings",
            dir.display(),
            manifest.settings(),
            wanted.settings()
        );
    }
    let files: Vec<String> = manifest
        .band_files
        .iter()
        .map(|f| dir.join(f).to_string_lossy().into_owned())
        .collect();
    if files.is_empty() {
        return Ok(HashMap::new());
    }
    let idx = ctx
        .read_parquet(files, ParquetReadOptions::default())
        .await?;
    ctx.register_table("index_bands", idx.into_view())?;
    let docs = ctx
        .read_parquet(
            dir.join("docs.parquet").to_string_lossy().into_owned(),
            ParquetReadOptions::default(),
        )
        .await?;
    ctx.register_table("index_docs", docs.into_view())?;
    let df = ctx
        .sql(
            "SELECT m.doc, d.id FROM ( \
               SELECT b.doc AS doc, min(i.doc) AS idx_doc FROM bands b \
               JOIN index_bands i ON b.band = i.band AND b.key = i.key GROUP BY b.doc \
             ) m JOIN index_docs d ON d.doc = m.idx_doc",
        )
        .await?;
    let mut out = HashMap::new();
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch.context("matching the index")?;
        let docs = batch.column(0).as_primitive::<UInt32Type>();
        let ids = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        for i in 0..batch.num_rows() {
            out.insert(docs.value(i), ids.value(i).to_string());
        }
    }
    Ok(out)
}
