//! The Parquet reader: row groups streamed batch by batch, columns mapped onto the document contract,
//! null or invalid text rows turned into rejects.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, new_null_array,
};
use arrow::compute::{cast, filter};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::SourceSpec;
use super::jsonl::doc_fields;
use super::malformed::{MalformedRow, OnError, ReadStats, RejectSink};

/// Rows per batch: documents average a few KB but reach MBs; small batches keep the bytes in flight, and
/// so peak memory, low and steady.
const BATCH_ROWS: usize = 512;

fn is_text_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// The table schema from the first file's footer: `id`, `text`, `dataset`, then the other columns.
pub fn infer_schema(spec: &SourceSpec) -> Result<SchemaRef> {
    let first = spec.files.first().context("no input files")?;
    let file = File::open(first).with_context(|| format!("opening {}", first.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading Parquet footer of {}", first.display()))?;
    let source = builder.schema();
    let text = source.field_with_name(&spec.text_column).map_err(|_| {
        anyhow!(
            "{}: no text column '{}' (columns: {})",
            first.display(),
            spec.text_column,
            names(source)
        )
    })?;
    if !is_text_type(text.data_type()) {
        bail!(
            "{}: text column '{}' is {}, not a string",
            first.display(),
            spec.text_column,
            text.data_type()
        );
    }
    let mut fields = doc_fields();
    for f in source.fields() {
        let n = f.name();
        if n == &spec.text_column
            || Some(n) == spec.id_column.as_ref()
            || n == "id"
            || n == "text"
            || n == "dataset"
        {
            continue;
        }
        fields.push(Field::new(n, f.data_type().clone(), true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

fn names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads one Parquet file into batches of the table schema.
pub fn read_file(
    path: &Path,
    spec: &SourceSpec,
    schema: &SchemaRef,
    sink: &dyn RejectSink,
    stats: &ReadStats,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<()> {
    let started = Instant::now();
    let file_name = path.to_string_lossy().to_string();
    let short_name = spec.file_label(path);
    let opened = File::open(path)
        .map_err(anyhow::Error::from)
        .and_then(open_reader);
    let corrupt = |e: anyhow::Error| {
        file_error(
            spec,
            sink,
            stats,
            &file_name,
            &short_name,
            "corrupt_file",
            e,
        )
    };
    let (reader, source_schema) = match opened {
        Ok(r) => r,
        Err(e) => return corrupt(e),
    };
    let text_idx = source_schema.index_of(&spec.text_column).map_err(|_| {
        anyhow!(
            "{file_name}: no text column '{}' (columns: {})",
            spec.text_column,
            names(&source_schema)
        )
    })?;
    if !is_text_type(source_schema.field(text_idx).data_type()) {
        bail!(
            "{file_name}: text column '{}' is {}, not a string",
            spec.text_column,
            source_schema.field(text_idx).data_type()
        );
    }
    let mut id_idx = spec
        .id_column
        .as_ref()
        .and_then(|c| source_schema.index_of(c).ok());
    // The default id column (`id`) is taken when it is text-like; a source whose `id` is a struct or a
    // list gets generated ids (with a warning) instead of failing, unlike a column the user named.
    if let Some(i) = id_idx
        && spec.id_column == super::default_id_column()
        && !arrow::compute::can_cast_types(source_schema.field(i).data_type(), &DataType::Utf8)
    {
        tracing::warn!(
            "{file_name}: its `id` column is {}, not text: ids generated instead",
            source_schema.field(i).data_type()
        );
        id_idx = None;
    }
    let mut row_base: u64 = 0;
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => return corrupt(e.into()),
        };
        let n = batch.num_rows();
        // Text: nulls and invalid UTF-8 are rejects; everything else becomes Utf8.
        let raw_text = batch.column(text_idx);
        let (texts, valid_utf8): (ArrayRef, Option<Vec<bool>>) = match raw_text.data_type() {
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                let bin = cast(raw_text, &DataType::LargeBinary)?;
                let bin = bin.as_binary::<i64>();
                let ok: Vec<bool> = (0..n)
                    .map(|i| bin.is_null(i) || std::str::from_utf8(bin.value(i)).is_ok())
                    .collect();
                let strs: StringArray = (0..n)
                    .map(|i| {
                        if bin.is_valid(i) && ok[i] {
                            std::str::from_utf8(bin.value(i)).ok()
                        } else {
                            None
                        }
                    })
                    .collect();
                (Arc::new(strs), Some(ok))
            }
            _ => (cast(raw_text, &DataType::Utf8)?, None),
        };
        let ids: Option<ArrayRef> = match id_idx {
            Some(i) => Some(
                cast(batch.column(i), &DataType::Utf8)
                    .with_context(|| format!("{file_name}: id column"))?,
            ),
            None => None,
        };
        let ids = ids.as_ref().map(|a| a.as_string::<i32>());
        let texts_s = texts.as_string::<i32>();
        let mut keep = vec![true; n];
        let mut id_col: Vec<String> = Vec::with_capacity(n);
        for i in 0..n {
            let line = row_base + i as u64 + 1;
            let id = match ids {
                Some(a) if a.is_valid(i) => a.value(i).to_string(),
                _ => format!("{}/{}:{}", spec.dataset, short_name, line),
            };
            let bad = if valid_utf8.as_ref().is_some_and(|ok| !ok[i]) {
                Some("invalid_utf8")
            } else if texts_s.is_null(i) {
                Some("null_text")
            } else {
                None
            };
            if let Some(reason) = bad {
                keep[i] = false;
                stats.add(&stats.malformed, 1);
                let row = MalformedRow {
                    id: id.clone(),
                    dataset: spec.dataset.clone(),
                    file: file_name.clone(),
                    line,
                    reason: format!("malformed:{reason}"),
                    detail: None,
                    text: None,
                };
                if spec.on_error == OnError::Fail {
                    return Err(anyhow!("{row}"));
                }
                sink.push(row);
            } else {
                stats.add(&stats.text_bytes, texts_s.value(i).len() as u64);
            }
            id_col.push(id);
        }
        stats.add(&stats.rows, n as u64);
        let dataset: ArrayRef = Arc::new(StringArray::from(vec![spec.dataset.as_str(); n]));
        let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(id_col)), texts, dataset];
        for f in schema.fields().iter().skip(3) {
            let col = match source_schema.index_of(f.name()) {
                Ok(i) => cast(batch.column(i), f.data_type()).with_context(|| {
                    format!(
                        "{file_name}: column '{}' cannot be read as {}",
                        f.name(),
                        f.data_type()
                    )
                })?,
                Err(_) => new_null_array(f.data_type(), n),
            };
            cols.push(col);
        }
        // Rejected rows leave before the batch is built: `text` is declared non-null.
        let cols = if keep.iter().all(|&k| k) {
            cols
        } else {
            let mask = BooleanArray::from(keep);
            cols.iter()
                .map(|c| filter(c, &mask))
                .collect::<std::result::Result<Vec<_>, _>>()?
        };
        let out = RecordBatch::try_new(Arc::clone(schema), cols)
            .with_context(|| format!("{file_name}: batch"))?;
        row_base += n as u64;
        stats.add(&stats.rows_ok, out.num_rows() as u64);
        if out.num_rows() > 0 && !emit(out) {
            return Ok(());
        }
    }
    stats.add(&stats.nanos, started.elapsed().as_nanos() as u64);
    Ok(())
}

/// Opens a Parquet file; returns the reader and the file's schema. (A text column stored as STRING is
/// validated as UTF-8 by the decoder, which arrow-rs will not read as bytes instead; a text column
/// stored as BINARY is checked row by row below.)
fn open_reader(
    file: File,
) -> Result<(
    parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    SchemaRef,
)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let schema = Arc::clone(builder.schema());
    Ok((builder.with_batch_size(BATCH_ROWS).build()?, schema))
}

/// A file that cannot be read at all (bad footer, corrupt page): one reject for the file, or an error.
fn file_error(
    spec: &SourceSpec,
    sink: &dyn RejectSink,
    stats: &ReadStats,
    file: &str,
    short: &str,
    what: &str,
    err: anyhow::Error,
) -> Result<()> {
    let row = MalformedRow {
        id: format!("{}/{}", spec.dataset, short),
        dataset: spec.dataset.clone(),
        file: file.to_string(),
        line: 0,
        reason: format!("malformed:{what}"),
        detail: Some(format!("{err:#}")),
        text: None,
    };
    if spec.on_error == OnError::Fail {
        return Err(anyhow!("{row}"));
    }
    tracing::warn!("{row}");
    stats.add(&stats.rows, 1);
    stats.add(&stats.malformed, 1);
    sink.push(row);
    Ok(())
}
