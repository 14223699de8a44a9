//! Pass 3: the stage's result as a DataFusion table, streamed once by the next row stages. Each
//! partition reads its share of the checkpoint's units, adds `minhash_cluster` (the id of the document
//! its cluster keeps) and `minhash_cluster_size`, and sends the removed rows to the rejects with the id
//! of the document they duplicate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, StringBuilder, UInt32Builder};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::clusters::Clusters;
use crate::io::writer::PartWriter;
use crate::pipeline::sink::{RejectRows, RejectsPart};
use crate::report::PartInfo;
use crate::stages::units::UnitBatches;

pub const CLUSTER_COL: &str = "minhash_cluster";
pub const CLUSTER_SIZE_COL: &str = "minhash_cluster_size";
pub const REASON: &str = "near_duplicate";
pub const REASON_INDEX: &str = "near_duplicate_of_index";

/// The schema of `index: {build}`'s `docs.parquet`: document number to id.
pub fn index_docs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("doc", DataType::UInt32, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, false),
    ]))
}

/// Why document `d` leaves the output, if it does: the one rule behind both the stage's counts and its
/// output. Too short: stays. In a cluster that matches the index: removed, whether kept or not.
/// Otherwise removed unless kept (or `annotate`).
pub fn removal_reason(
    d: u32,
    too_short: &[bool],
    clusters: &Clusters,
    index_matches: &HashMap<u32, String>,
    annotate: bool,
) -> Option<&'static str> {
    if too_short[d as usize] {
        None
    } else if index_matches.contains_key(&clusters.root[d as usize]) {
        Some(REASON_INDEX)
    } else if annotate || clusters.is_kept(d) {
        None
    } else {
        Some(REASON)
    }
}

/// Whether document `d` is one that `index: {build}` holds: a document with band keys that stays as
/// its cluster's kept one. The one rule behind the index's band keys, its `docs.parquet` and its count.
pub fn indexed(
    d: u32,
    too_short: &[bool],
    clusters: &Clusters,
    index_matches: &HashMap<u32, String>,
) -> bool {
    !too_short[d as usize]
        && clusters.is_kept(d)
        && !index_matches.contains_key(&clusters.root[d as usize])
}

/// Everything the output partitions share.
pub struct Decided {
    pub clusters: Clusters,
    pub too_short: Vec<bool>,
    /// Ids of the kept documents of clusters of two or more.
    pub kept_ids: HashMap<u32, String>,
    /// Clusters (by root) that match an indexed document: its id.
    pub index_matches: HashMap<u32, String>,
    /// Keep every row, annotated, instead of removing duplicates.
    pub annotate: bool,
    pub label: String,
    pub keep_text: bool,
    pub schema: SchemaRef,
    rejects: RejectsPart,
    /// `index: {build}`'s `docs.parquet`, open from the start so that an input that ends empty still
    /// writes it; taken by `finish`.
    index_docs: Option<Mutex<Option<PartWriter>>>,
    /// Rows streamed so far, for the progress bar.
    rows_done: Arc<AtomicU64>,
}

impl UnitBatches for Decided {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process(&self, batch: &RecordBatch, first: u64) -> Result<RecordBatch> {
        self.process_batch(batch, first as u32)
    }
}

impl Decided {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        clusters: Clusters,
        too_short: Vec<bool>,
        kept_ids: HashMap<u32, String>,
        index_matches: HashMap<u32, String>,
        annotate: bool,
        label: String,
        keep_text: bool,
        input_schema: &Schema,
        rejects_path: &Path,
        index_docs_path: Option<PathBuf>,
        rows_done: Arc<AtomicU64>,
    ) -> Result<Self> {
        let mut fields: Vec<_> = input_schema
            .fields()
            .iter()
            .filter(|f| f.name() != CLUSTER_COL && f.name() != CLUSTER_SIZE_COL)
            .cloned()
            .collect();
        fields.push(Arc::new(Field::new(CLUSTER_COL, DataType::Utf8, true)));
        fields.push(Arc::new(Field::new(
            CLUSTER_SIZE_COL,
            DataType::UInt32,
            false,
        )));
        let index_docs = match index_docs_path {
            Some(path) => Some(Mutex::new(Some(PartWriter::create(
                &path,
                crate::io::writer::OutFormat::Parquet,
                &index_docs_schema(),
            )?))),
            None => None,
        };
        Ok(Self {
            clusters,
            too_short,
            kept_ids,
            index_matches,
            annotate,
            label,
            keep_text,
            schema: Arc::new(Schema::new(fields)),
            rejects: RejectsPart::new(rejects_path),
            index_docs,
            rows_done,
        })
    }

    /// Whether document `d` stays, and if not, the reason and the id it duplicates.
    fn fate(&self, d: u32) -> Option<(&'static str, &str)> {
        let reason = removal_reason(
            d,
            &self.too_short,
            &self.clusters,
            &self.index_matches,
            self.annotate,
        )?;
        let id = if reason == REASON_INDEX {
            self.index_matches.get(&self.clusters.root[d as usize])
        } else {
            self.kept_ids.get(&self.clusters.kept_of(d))
        };
        Some((reason, id.map(String::as_str).unwrap_or("")))
    }

    /// The cluster id of document `d` whose own id is `own`: the kept document's id.
    fn cluster_of<'a>(&'a self, d: u32, own: &'a str) -> Option<&'a str> {
        if self.too_short[d as usize] {
            return None;
        }
        let kept = self.clusters.kept_of(d);
        if kept == d {
            Some(own)
        } else {
            self.kept_ids.get(&kept).map(String::as_str)
        }
    }

    /// One batch of unit rows starting at document `first`: the rows that stay, annotated.
    fn process_batch(&self, batch: &RecordBatch, first: u32) -> Result<RecordBatch> {
        self.rows_done
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let schema = batch.schema();
        let col = |name: &str| -> Result<ArrayRef> {
            let i = schema.index_of(name)?;
            Ok(arrow::compute::cast(batch.column(i), &DataType::Utf8)?)
        };
        let (ids, datasets) = (col("id")?, col("dataset")?);
        let (ids, datasets) = (ids.as_string::<i32>(), datasets.as_string::<i32>());
        let n = batch.num_rows();
        let mut keep = Vec::with_capacity(n);
        let mut rejects = RejectRows::with_capacity(0);
        let mut cluster = StringBuilder::with_capacity(n, n * 16);
        let mut size = UInt32Builder::with_capacity(n);
        let mut index_docs = (
            UInt32Builder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let texts = if self.keep_text {
            Some(col("text")?)
        } else {
            None
        };
        for i in 0..n {
            let d = first + i as u32;
            match self.fate(d) {
                None => {
                    keep.push(true);
                    cluster.append_option(self.cluster_of(d, ids.value(i)));
                    size.append_value(if self.too_short[d as usize] {
                        1
                    } else {
                        self.clusters.cluster_size(d)
                    });
                    if self.index_docs.is_some()
                        && indexed(d, &self.too_short, &self.clusters, &self.index_matches)
                    {
                        index_docs.0.append_value(d);
                        index_docs.1.append_value(ids.value(i));
                        index_docs.2.append_value(datasets.value(i));
                    }
                }
                Some((reason, dup_of)) => {
                    keep.push(false);
                    rejects.id.push(ids.value(i).to_string());
                    rejects.dataset.push(datasets.value(i).to_string());
                    rejects.stage.push(self.label.clone());
                    rejects.reason.push(reason.to_string());
                    rejects
                        .value
                        .push(Some(f64::from(self.clusters.cluster_size(d))));
                    rejects.file.push(None);
                    rejects.line.push(None);
                    rejects.detail.push(Some(dup_of.to_string()));
                    rejects.text.push(
                        texts
                            .as_ref()
                            .map(|t| t.as_string::<i32>().value(i).to_string()),
                    );
                }
            }
        }
        self.rejects.write(rejects)?;
        if let Some(writer) = &self.index_docs {
            let docs = index_docs.0.finish();
            if !docs.is_empty() {
                let b = RecordBatch::try_new(
                    index_docs_schema(),
                    vec![
                        Arc::new(docs),
                        Arc::new(index_docs.1.finish()),
                        Arc::new(index_docs.2.finish()),
                    ],
                )?;
                let mut w = writer.lock().expect("index lock");
                w.as_mut()
                    .context("the index's docs.parquet was written after finish")?
                    .write(&b)?;
            }
        }
        let kept = filter_record_batch(batch, &BooleanArray::from(keep))?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for f in self.schema.fields() {
            match f.name().as_str() {
                CLUSTER_COL => columns.push(Arc::new(cluster.finish())),
                CLUSTER_SIZE_COL => columns.push(Arc::new(size.finish())),
                name => columns.push(Arc::clone(kept.column(kept.schema().index_of(name)?))),
            }
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// Closes the rejects part and the index's id file (written, empty, when no document stays); call
    /// once the output was streamed.
    pub fn finish(&self) -> Result<Option<PartInfo>> {
        if let Some(writer) = &self.index_docs
            && let Some(w) = writer.lock().expect("index lock").take()
        {
            w.finish()?;
        }
        self.rejects.finish()
    }
}
