//! The lenient JSON Lines reader: plain, gzip or zstd files, one object a line.
//!
//! Each line is parsed on its own, into raw values that are decoded only for the columns the table has,
//! so one bad line costs one reject, not the file. Hand-written rather than arrow-json's decoder because
//! that decoder fails a whole batch on one mistyped value and cannot say which line it was.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::value::RawValue;

use super::SourceSpec;
use super::malformed::{MalformedRow, OnError, ReadStats, RejectSink};

/// Rows per batch, and the text bytes after which a batch is cut early (huge documents).
pub const BATCH_ROWS: usize = 4096;
pub const BATCH_TEXT_BYTES: usize = 8 << 20;
/// Lines sampled to infer the types of the passed-through columns.
const SAMPLE_LINES: usize = 1000;

/// Opens a file, decompressing by extension, with a large buffer.
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let name = path.to_string_lossy().to_ascii_lowercase();
    let inner: Box<dyn Read + Send> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            1 << 20,
            file,
        )))
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        Box::new(
            zstd::Decoder::new(file).with_context(|| format!("opening zstd {}", path.display()))?,
        )
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, inner)))
}

/// Infers the table schema from the first lines of the first files: `id`, `text`, `dataset`, then every
/// other key in order of first appearance, typed Int64, Float64, Boolean or Utf8 (mixed types, objects
/// and arrays become Utf8 holding JSON).
pub fn infer_schema(spec: &SourceSpec) -> Result<SchemaRef> {
    let mut keys: Vec<(String, Option<DataType>)> = Vec::new();
    let mut seen = 0;
    'files: for path in &spec.files {
        let mut reader = match open(path) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let Ok(line) = std::str::from_utf8(&buf) else {
                continue;
            };
            let Ok(obj) =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line.trim())
            else {
                continue;
            };
            for (k, v) in obj {
                if k == spec.text_column
                    || Some(&k) == spec.id_column.as_ref()
                    || k == "dataset"
                    || k == "id"
                    || k == "text"
                {
                    continue;
                }
                let t = value_type(&v);
                match keys.iter_mut().find(|e| e.0 == k) {
                    Some(e) => e.1 = merge(e.1.take(), t),
                    None => keys.push((k, t)),
                }
            }
            seen += 1;
            if seen >= SAMPLE_LINES {
                break 'files;
            }
        }
    }
    let mut fields = doc_fields();
    for (k, t) in keys {
        fields.push(Field::new(k, t.unwrap_or(DataType::Utf8), true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The columns every document has, first in every table.
pub fn doc_fields() -> Vec<Field> {
    vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, false),
    ]
}

fn value_type(v: &serde_json::Value) -> Option<DataType> {
    use serde_json::Value as V;
    match v {
        V::Null => None,
        V::Bool(_) => Some(DataType::Boolean),
        V::Number(n) if n.is_i64() => Some(DataType::Int64),
        V::Number(_) => Some(DataType::Float64),
        _ => Some(DataType::Utf8),
    }
}

fn merge(a: Option<DataType>, b: Option<DataType>) -> Option<DataType> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) if a == b => Some(a),
        (Some(DataType::Int64), Some(DataType::Float64))
        | (Some(DataType::Float64), Some(DataType::Int64)) => Some(DataType::Float64),
        _ => Some(DataType::Utf8),
    }
}

enum ColBuilder {
    Utf8(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
}

/// A decoded cell of a passed-through column.
enum Cell {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl ColBuilder {
    /// The builder that decodes JSON values for a column of type `t` (the table schema may come from a
    /// Parquet source: narrower integers and floats decode as 64-bit and are cast at the end).
    fn new(t: &DataType) -> Self {
        match t {
            t if t.is_integer() => ColBuilder::Int64(Int64Builder::new()),
            t if t.is_floating() => ColBuilder::Float64(Float64Builder::new()),
            DataType::Boolean => ColBuilder::Boolean(BooleanBuilder::new()),
            _ => ColBuilder::Utf8(StringBuilder::new()),
        }
    }

    /// Decodes a raw JSON value for this column; `None` when it has the wrong type.
    fn decode(&self, raw: Option<&RawValue>) -> Option<Cell> {
        let Some(raw) = raw else {
            return Some(Cell::Null);
        };
        let s = raw.get();
        if s == "null" {
            return Some(Cell::Null);
        }
        match self {
            ColBuilder::Utf8(_) => {
                if s.starts_with('"') {
                    serde_json::from_str::<String>(s).ok().map(Cell::Str)
                } else {
                    Some(Cell::Str(s.to_string()))
                }
            }
            ColBuilder::Int64(_) => s.parse::<i64>().ok().map(Cell::Int),
            ColBuilder::Float64(_) => {
                if s.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
                    s.parse::<f64>().ok().map(Cell::Float)
                } else {
                    None
                }
            }
            ColBuilder::Boolean(_) => match s {
                "true" => Some(Cell::Bool(true)),
                "false" => Some(Cell::Bool(false)),
                _ => None,
            },
        }
    }

    fn append(&mut self, cell: Cell) {
        match (self, cell) {
            (ColBuilder::Utf8(b), Cell::Str(s)) => b.append_value(s),
            (ColBuilder::Utf8(b), _) => b.append_null(),
            (ColBuilder::Int64(b), Cell::Int(v)) => b.append_value(v),
            (ColBuilder::Int64(b), _) => b.append_null(),
            (ColBuilder::Float64(b), Cell::Float(v)) => b.append_value(v),
            (ColBuilder::Float64(b), _) => b.append_null(),
            (ColBuilder::Boolean(b), Cell::Bool(v)) => b.append_value(v),
            (ColBuilder::Boolean(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Utf8(b) => Arc::new(b.finish()),
            ColBuilder::Int64(b) => Arc::new(b.finish()),
            ColBuilder::Float64(b) => Arc::new(b.finish()),
            ColBuilder::Boolean(b) => Arc::new(b.finish()),
        }
    }
}

/// Builds batches of the table schema from parsed lines.
struct BatchBuilder {
    schema: SchemaRef,
    ids: StringBuilder,
    texts: StringBuilder,
    datasets: StringBuilder,
    extras: Vec<(String, ColBuilder)>,
    rows: usize,
    text_bytes: usize,
}

impl BatchBuilder {
    fn new(schema: &SchemaRef) -> Self {
        let extras = schema
            .fields()
            .iter()
            .skip(3)
            .map(|f| (f.name().clone(), ColBuilder::new(f.data_type())))
            .collect();
        Self {
            schema: Arc::clone(schema),
            ids: StringBuilder::new(),
            texts: StringBuilder::new(),
            datasets: StringBuilder::new(),
            extras,
            rows: 0,
            text_bytes: 0,
        }
    }

    fn full(&self) -> bool {
        self.rows >= BATCH_ROWS || self.text_bytes >= BATCH_TEXT_BYTES
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.ids.finish()),
            Arc::new(self.texts.finish()),
            Arc::new(self.datasets.finish()),
        ];
        for ((name, b), field) in self
            .extras
            .iter_mut()
            .zip(self.schema.fields().iter().skip(3))
        {
            let built = b.finish();
            let col = if built.data_type() == field.data_type() {
                built
            } else {
                match arrow::compute::cast(&built, field.data_type()) {
                    Ok(c) => c,
                    Err(e) => {
                        // A column typed by another source (a list, a timestamp) that JSON values
                        // cannot fill: left null, said once per batch.
                        tracing::warn!(
                            "column '{name}' cannot be read from JSON as {}: left null ({e})",
                            field.data_type()
                        );
                        arrow::array::new_null_array(field.data_type(), built.len())
                    }
                }
            };
            cols.push(col);
        }
        self.rows = 0;
        self.text_bytes = 0;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }
}

/// Reads one file, handing batches to `emit` (which returns false when the consumer has gone away) and
/// malformed rows to `sink`.
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
    let mut builder = BatchBuilder::new(schema);
    let mut buf = Vec::with_capacity(1 << 16);
    let mut line_no: u64 = 0;
    let reject = |line: u64,
                  reason: &str,
                  detail: Option<String>,
                  id: Option<String>,
                  text: Option<String>|
     -> Result<()> {
        let row = MalformedRow {
            id: id.unwrap_or_else(|| format!("{}/{}:{}", spec.dataset, short_name, line)),
            dataset: spec.dataset.clone(),
            file: file_name.clone(),
            line,
            reason: format!("malformed:{reason}"),
            detail,
            text: if spec.keep_rejected_text { text } else { None },
        };
        stats.add(&stats.rows, 1);
        stats.add(&stats.malformed, 1);
        if spec.on_error == OnError::Fail {
            return Err(anyhow!("{row}"));
        }
        sink.push(row);
        Ok(())
    };
    let mut reader = match open(path) {
        Ok(r) => r,
        Err(e) => {
            reject(
                0,
                "unreadable_file",
                Some(format!("{e:#}")),
                Some(format!("{}/{}", spec.dataset, short_name)),
                None,
            )?;
            return Ok(());
        }
    };
    loop {
        buf.clear();
        line_no += 1;
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                // A truncated or corrupt archive: what was read so far is kept, the rest of the file
                // cannot be, and the reject says where it stopped.
                let what = if file_name.ends_with(".gz")
                    || file_name.ends_with(".zst")
                    || file_name.ends_with(".zstd")
                {
                    "truncated_archive"
                } else {
                    "read_error"
                };
                reject(line_no, what, Some(e.to_string()), None, None)?;
                break;
            }
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            let err = std::str::from_utf8(&buf).unwrap_err();
            reject(
                line_no,
                "invalid_utf8",
                Some(err.to_string()),
                None,
                Some(String::from_utf8_lossy(&buf).into_owned()),
            )?;
            continue;
        };
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue; // a blank line holds no row
        }
        let obj: HashMap<String, &RawValue> = match serde_json::from_str(line) {
            Ok(o) => o,
            Err(e) => {
                let what = if line.starts_with('{') {
                    "bad_json"
                } else {
                    "not_object"
                };
                reject(
                    line_no,
                    what,
                    Some(e.to_string()),
                    None,
                    Some(line.to_string()),
                )?;
                continue;
            }
        };
        let id = spec
            .id_column
            .as_ref()
            .and_then(|c| obj.get(c))
            .and_then(|raw| {
                let s = raw.get();
                if s == "null" {
                    None
                } else if s.starts_with('"') {
                    serde_json::from_str::<String>(s).ok()
                } else {
                    Some(s.to_string())
                }
            });
        let text = match obj.get(&spec.text_column) {
            None => {
                reject(
                    line_no,
                    "missing_text",
                    Some(format!("no key '{}'", spec.text_column)),
                    id,
                    Some(line.to_string()),
                )?;
                continue;
            }
            Some(raw) if raw.get() == "null" => {
                reject(line_no, "null_text", None, id, None)?;
                continue;
            }
            Some(raw) if !raw.get().starts_with('"') => {
                reject(
                    line_no,
                    "non_string_text",
                    Some(format!("'{}' is not a string", spec.text_column)),
                    id,
                    Some(line.to_string()),
                )?;
                continue;
            }
            Some(raw) => match serde_json::from_str::<String>(raw.get()) {
                Ok(t) => t,
                Err(e) => {
                    reject(
                        line_no,
                        "bad_json",
                        Some(e.to_string()),
                        id,
                        Some(line.to_string()),
                    )?;
                    continue;
                }
            },
        };
        let mut cells = Vec::with_capacity(builder.extras.len());
        let mut mistyped = None;
        for (key, b) in &builder.extras {
            match b.decode(obj.get(key).copied()) {
                Some(c) => cells.push(c),
                None => {
                    mistyped = Some(key.clone());
                    break;
                }
            }
        }
        if let Some(key) = mistyped {
            let want = schema
                .field_with_name(&key)
                .map(|f| f.data_type().to_string())
                .unwrap_or_default();
            reject(
                line_no,
                &format!("mistyped:{key}"),
                Some(format!("expected {want}")),
                id,
                Some(line.to_string()),
            )?;
            continue;
        }
        let id = id.unwrap_or_else(|| format!("{}/{}:{}", spec.dataset, short_name, line_no));
        builder.ids.append_value(&id);
        builder.text_bytes += text.len();
        stats.add(&stats.text_bytes, text.len() as u64);
        builder.texts.append_value(&text);
        builder.datasets.append_value(&spec.dataset);
        for ((_, b), cell) in builder.extras.iter_mut().zip(cells) {
            b.append(cell);
        }
        builder.rows += 1;
        stats.add(&stats.rows, 1);
        stats.add(&stats.rows_ok, 1);
        if builder.full() {
            let batch = builder.finish()?;
            if !emit(batch) {
                return Ok(());
            }
        }
    }
    if builder.rows > 0 {
        let batch = builder.finish()?;
        emit(batch);
    }
    stats.add(&stats.nanos, started.elapsed().as_nanos() as u64);
    Ok(())
}
