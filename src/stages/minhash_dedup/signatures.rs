//! Pass 1: every document's signature, as band keys written to Parquet (`band`, `key`, `doc`), and the
//! few facts per document that deciding needs later (text bytes, the `keep` priority, the input
//! position, too short).
//! Signatures are never kept: a document costs `bands` rows of 14 bytes on disk and 12 bytes in memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use arrow::array::{Array, AsArray, RecordBatch, UInt16Builder, UInt32Builder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt64Type};
use openseek_udfs::minhash::{MinHasher, ScriptCount};
use openseek_udfs::string_iter;

use super::options::Keep;
use crate::io::table::POS_COL;
use crate::io::writer::PartWriter;
use crate::stages::units::{Unit, doc_count, for_each_unit, read_unit};

/// The schema of band-key files, which are also what `index: {build}` writes.
pub fn bands_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("band", DataType::UInt16, false),
        Field::new("key", DataType::UInt64, false),
        Field::new("doc", DataType::UInt32, false),
    ]))
}

/// What the later passes need of each document, indexed by document number.
pub struct DocFacts {
    /// Text bytes.
    pub bytes: Vec<u32>,
    /// The `keep` priority (higher stays): text bytes for `longest`, the column for `max:`; empty for
    /// `first`.
    pub priority: Vec<f64>,
    /// Documents shorter than one shingle: never in a cluster.
    pub too_short: Vec<bool>,
    /// Each document's place in the pipeline's input (`__os_pos`), which decides `keep: first` and
    /// the ties of the other rules; empty when the input does not carry it (a `sql` stage may drop
    /// it), and then the document number decides.
    pub order: Vec<u64>,
}

impl DocFacts {
    /// True when document `a` comes before `b` in the input.
    pub fn before(&self, a: u32, b: u32) -> bool {
        match self.order.is_empty() {
            true => a < b,
            false => (self.order[a as usize], a) < (self.order[b as usize], b),
        }
    }
}

struct UnitFacts {
    bytes: Vec<u32>,
    priority: Vec<f64>,
    too_short: Vec<bool>,
    order: Vec<u64>,
}

/// Pass 0 of `unit: auto`: the letters and CJK letters of the whole input, which decide one unit for
/// every document of the stage.
pub fn count_scripts(
    units: &[Unit],
    text_column: &str,
    threads: usize,
    done: &AtomicU64,
) -> Result<ScriptCount> {
    let columns = [text_column];
    let counts = for_each_unit(units, threads, |_, unit| {
        let mut count = ScriptCount::default();
        for batch in read_unit(unit, Some(&columns))? {
            let batch = batch?;
            done.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            for text in string_iter(batch.column(0))?.flatten() {
                count.add(text);
            }
        }
        Ok(count)
    })?;
    let mut total = ScriptCount::default();
    counts.into_iter().for_each(|c| total.merge(c));
    Ok(total)
}

/// Computes the band keys of every document of `units` into `dir/bands-T.parquet` (one file per
/// thread) and returns the documents' facts; `with_order` reads their input positions too.
#[allow(clippy::too_many_arguments)]
pub fn write_band_keys(
    units: &[Unit],
    hasher: &MinHasher,
    keep: &Keep,
    text_column: &str,
    with_order: bool,
    dir: &Path,
    threads: usize,
    done: &AtomicU64,
) -> Result<(DocFacts, Vec<PathBuf>)> {
    if doc_count(units) > u64::from(u32::MAX) {
        anyhow::bail!(
            "minhash_dedup numbers documents in 32 bits; this input has {} (split it into runs)",
            doc_count(units)
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let threads = threads.clamp(1, units.len().max(1));
    let writers: Vec<Mutex<Option<PartWriter>>> = (0..threads).map(|_| Mutex::new(None)).collect();
    let paths: Vec<PathBuf> = (0..threads)
        .map(|t| dir.join(format!("bands-{t:03}.parquet")))
        .collect();
    let mut columns = vec![text_column];
    if let Keep::Max(c) = keep {
        columns.push(c.as_str());
    }
    let order_column = with_order.then(|| {
        columns.push(POS_COL);
        columns.len() - 1
    });
    let schema = bands_schema();
    let rows = hasher.config().rows;
    let per_unit = for_each_unit(units, threads, |t, unit| {
        let n = unit.rows as usize;
        let mut facts = UnitFacts {
            bytes: Vec::with_capacity(n),
            priority: Vec::new(),
            too_short: Vec::with_capacity(n),
            order: Vec::new(),
        };
        let mut doc = unit.first_doc as u32;
        for batch in read_unit(unit, Some(&columns))? {
            let batch = batch?;
            done.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            let bands = hasher.config().bands;
            let mut band = UInt16Builder::with_capacity(batch.num_rows() * bands);
            let mut key = UInt64Builder::with_capacity(batch.num_rows() * bands);
            let mut docs = UInt32Builder::with_capacity(batch.num_rows() * bands);
            for text in string_iter(batch.column(0))? {
                let text = text.unwrap_or("");
                facts.bytes.push(text.len().min(u32::MAX as usize) as u32);
                match hasher.signature(text) {
                    Some(sig) => {
                        facts.too_short.push(false);
                        for (b, k) in openseek_udfs::minhash::band_keys(&sig, rows)
                            .into_iter()
                            .enumerate()
                        {
                            band.append_value(b as u16);
                            key.append_value(k);
                            docs.append_value(doc);
                        }
                    }
                    None => facts.too_short.push(true),
                }
                doc += 1;
            }
            match keep {
                Keep::First => {}
                Keep::Longest => facts.priority.extend(
                    facts.bytes[facts.priority.len()..]
                        .iter()
                        .map(|&b| b as f64),
                ),
                Keep::Max(c) => {
                    let values = arrow::compute::cast(batch.column(1), &DataType::Float64)
                        .with_context(|| {
                            format!(
                                "keep: max:{c}: the column is not numeric in {}",
                                unit.file.display()
                            )
                        })?;
                    let values = values.as_primitive::<Float64Type>();
                    facts.priority.extend((0..values.len()).map(|i| {
                        if values.is_null(i) || values.value(i).is_nan() {
                            f64::NEG_INFINITY
                        } else {
                            values.value(i)
                        }
                    }));
                }
            }
            if let Some(i) = order_column {
                let order = batch
                    .column(i)
                    .as_primitive_opt::<UInt64Type>()
                    .with_context(|| {
                        format!("{POS_COL} is not UInt64 in {}", unit.file.display())
                    })?;
                facts
                    .order
                    .extend(order.iter().map(|p| p.unwrap_or(u64::MAX)));
            }
            let out = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(band.finish()),
                    Arc::new(key.finish()),
                    Arc::new(docs.finish()),
                ],
            )?;
            let mut w = writers[t].lock().expect("writer lock");
            if w.is_none() {
                *w = Some(PartWriter::create_uncompressed(&paths[t], &schema)?);
            }
            w.as_mut().expect("created").write(&out)?;
        }
        anyhow::ensure!(
            facts.bytes.len() as u64 == unit.rows,
            "{}: row group {} has {} rows, its footer says {}",
            unit.file.display(),
            unit.row_group,
            facts.bytes.len(),
            unit.rows
        );
        Ok(facts)
    })?;
    let mut written = Vec::new();
    for (w, path) in writers.into_iter().zip(paths) {
        if let Some(w) = w.into_inner().expect("writer lock") {
            w.finish()?;
            written.push(path);
        }
    }
    let n = doc_count(units) as usize;
    let mut facts = DocFacts {
        bytes: Vec::with_capacity(n),
        priority: Vec::with_capacity(if matches!(keep, Keep::First) { 0 } else { n }),
        too_short: Vec::with_capacity(n),
        order: Vec::with_capacity(if with_order { n } else { 0 }),
    };
    for u in per_unit {
        facts.bytes.extend(u.bytes);
        facts.priority.extend(u.priority);
        facts.too_short.extend(u.too_short);
        facts.order.extend(u.order);
    }
    Ok((facts, written))
}
