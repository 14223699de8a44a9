//! The end of a segment: splits each batch into output rows and rejects, writes both as parts, and
//! counts every stage from the bookkeeping columns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::compute::{filter_record_batch, is_not_null, is_null};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};

use super::plan::{REASON_COL, STAGE_COL, VALUE_COL, bytes_col, is_internal};
use crate::io::MalformedRow;
use crate::io::table::POS_COL;
use crate::io::writer::{OutFormat, PartWriter};
use crate::report::{PartInfo, StageReport};

/// The schema of `rejects/` parts.
pub fn rejects_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("file", DataType::Utf8, true),
        Field::new("line", DataType::Int64, true),
        Field::new("detail", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, true),
    ]))
}

/// A corpus stage's rejects part: created with the first rows, shared by the stage's output partitions.
pub struct RejectsPart {
    path: PathBuf,
    writer: Mutex<Option<PartWriter>>,
}

impl RejectsPart {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            writer: Mutex::new(None),
        }
    }

    pub fn write(&self, rows: RejectRows) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut w = self.writer.lock().expect("rejects lock");
        if w.is_none() {
            *w = Some(PartWriter::create_rejects(&self.path, &rejects_schema())?);
        }
        w.as_mut().expect("created").write(&rows.into_batch()?)?;
        Ok(())
    }

    /// Closes the part, if rows were written; call once the output was streamed.
    pub fn finish(&self) -> Result<Option<PartInfo>> {
        Ok(match self.writer.lock().expect("rejects lock").take() {
            Some(w) => Some(PartInfo {
                path: self.path.to_string_lossy().into_owned(),
                rows: w.finish()?,
            }),
            None => None,
        })
    }
}

/// Rejects as rows of the rejects schema.
pub struct RejectRows {
    pub id: Vec<String>,
    pub dataset: Vec<String>,
    pub stage: Vec<String>,
    pub reason: Vec<String>,
    pub value: Vec<Option<f64>>,
    pub file: Vec<Option<String>>,
    pub line: Vec<Option<i64>>,
    pub detail: Vec<Option<String>>,
    pub text: Vec<Option<String>>,
}

impl RejectRows {
    pub fn from_malformed(rows: Vec<MalformedRow>) -> Self {
        let mut r = Self::with_capacity(rows.len());
        for m in rows {
            r.id.push(m.id);
            r.dataset.push(m.dataset);
            r.stage.push("read".into());
            r.reason.push(m.reason);
            r.value.push(None);
            r.file.push(Some(m.file));
            r.line.push(Some(m.line as i64));
            r.detail.push(m.detail);
            r.text.push(m.text);
        }
        r
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            dataset: Vec::with_capacity(n),
            stage: Vec::with_capacity(n),
            reason: Vec::with_capacity(n),
            value: Vec::with_capacity(n),
            file: Vec::with_capacity(n),
            line: Vec::with_capacity(n),
            detail: Vec::with_capacity(n),
            text: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    pub fn into_batch(self) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.id)),
            Arc::new(StringArray::from(self.dataset)),
            Arc::new(StringArray::from(self.stage)),
            Arc::new(StringArray::from(self.reason)),
            Arc::new(Float64Array::from(self.value)),
            Arc::new(StringArray::from(self.file)),
            Arc::new(Int64Array::from(self.line)),
            Arc::new(StringArray::from(self.detail)),
            Arc::new(StringArray::from(self.text)),
        ];
        Ok(RecordBatch::try_new(rejects_schema(), cols)?)
    }
}

/// One row stage of the segment, as the sink counts it.
#[derive(Clone)]
pub struct SinkStage {
    /// Index in the pipeline's stage list.
    pub idx: usize,
    pub label: String,
    /// True when the stage rewrites the text (it has a bytes column).
    pub rewrites: bool,
}

pub struct SegmentSink {
    stages: Vec<SinkStage>,
    labels: std::collections::HashMap<i32, String>,
    pub reports: Vec<StageReport>,
    data_path: PathBuf,
    rejects_path: PathBuf,
    format: OutFormat,
    keep_text: bool,
    /// Write the data part even when empty (checkpoints are read by the next segment).
    always_write: bool,
    data: Option<PartWriter>,
    rejects: Option<PartWriter>,
    /// The output schema, for the empty part of `always_write`.
    out_schema: Option<SchemaRef>,
    /// Rows that left the segment alive, and their text bytes.
    pub rows_out: u64,
    pub rows_entered: u64,
    pub bytes_entered: u64,
}

impl SegmentSink {
    pub fn new(
        stages: Vec<SinkStage>,
        data_path: &Path,
        rejects_path: &Path,
        format: OutFormat,
        keep_text: bool,
        always_write: bool,
    ) -> Self {
        let labels = stages
            .iter()
            .map(|s| (s.idx as i32, s.label.clone()))
            .collect();
        let reports = stages.iter().map(|s| StageReport::new(&s.label)).collect();
        Self {
            stages,
            labels,
            reports,
            data_path: data_path.to_path_buf(),
            rejects_path: rejects_path.to_path_buf(),
            format,
            keep_text,
            always_write,
            data: None,
            rejects: None,
            out_schema: None,
            rows_out: 0,
            rows_entered: 0,
            bytes_entered: 0,
        }
    }

    /// Counts, splits and writes one batch of the segment's result.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let stage_col = batch
            .column_by_name(STAGE_COL)
            .expect("bookkeeping column")
            .as_primitive::<Int32Type>();
        let bytes_in = batch
            .column_by_name(&bytes_col(None))
            .expect("bytes column")
            .as_primitive::<Int64Type>();
        // The bytes column in force at each stage: after the last rewrite before it.
        let rewrite_cols: Vec<Option<&arrow::array::PrimitiveArray<Int64Type>>> = self
            .stages
            .iter()
            .map(|s| {
                s.rewrites.then(|| {
                    batch
                        .column_by_name(&bytes_col(Some(s.idx)))
                        .expect("bytes column")
                        .as_primitive::<Int64Type>()
                })
            })
            .collect();
        let reasons = batch
            .column_by_name(REASON_COL)
            .expect("reason column")
            .as_string::<i32>();
        for row in 0..batch.num_rows() {
            let rejected_at = stage_col
                .is_valid(row)
                .then(|| stage_col.value(row) as usize);
            let mut bytes = if bytes_in.is_valid(row) {
                bytes_in.value(row) as u64
            } else {
                0
            };
            self.rows_entered += 1;
            self.bytes_entered += bytes;
            for (k, s) in self.stages.iter().enumerate() {
                let rep = &mut self.reports[k];
                rep.rows_in += 1;
                rep.bytes_in += bytes;
                if rejected_at == Some(s.idx) {
                    let reason = if reasons.is_valid(row) {
                        reasons.value(row)
                    } else {
                        "rejected"
                    };
                    rep.reject(reason, 1);
                    break;
                }
                if let Some(Some(col)) = rewrite_cols.get(k)
                    && col.is_valid(row)
                {
                    bytes = col.value(row) as u64;
                }
                rep.rows_out += 1;
                rep.bytes_out += bytes;
            }
        }
        let alive = is_null(batch.column_by_name(STAGE_COL).expect("stage column"))?;
        let data = filter_record_batch(batch, &alive)?;
        if data.num_rows() > 0 {
            self.rows_out += data.num_rows() as u64;
            let data = strip_internal(&data, self.always_write)?;
            if self.data.is_none() {
                self.data = Some(self.data_writer(&data.schema())?);
            }
            self.data.as_mut().expect("created").write(&data)?;
        }
        let dead: BooleanArray =
            is_not_null(batch.column_by_name(STAGE_COL).expect("stage column"))?;
        if dead.true_count() > 0 {
            let rej = filter_record_batch(batch, &dead)?;
            self.write_rejects(self.reject_rows(&rej))?;
        }
        Ok(())
    }

    fn reject_rows(&self, rej: &RecordBatch) -> RejectRows {
        let n = rej.num_rows();
        let ids = rej.column_by_name("id").expect("id");
        let ids = arrow::compute::cast(ids, &DataType::Utf8).expect("id as text");
        let ids = ids.as_string::<i32>();
        let datasets = arrow::compute::cast(
            rej.column_by_name("dataset").expect("dataset"),
            &DataType::Utf8,
        )
        .expect("dataset as text");
        let datasets = datasets.as_string::<i32>();
        let stages = rej
            .column_by_name(STAGE_COL)
            .expect("stage")
            .as_primitive::<Int32Type>();
        let reasons = rej
            .column_by_name(REASON_COL)
            .expect("reason")
            .as_string::<i32>();
        let values = rej
            .column_by_name(VALUE_COL)
            .expect("value")
            .as_primitive::<arrow::datatypes::Float64Type>();
        let texts = self.keep_text.then(|| {
            arrow::compute::cast(rej.column_by_name("text").expect("text"), &DataType::Utf8)
                .expect("text")
        });
        let mut r = RejectRows::with_capacity(n);
        for i in 0..n {
            r.id.push(ids.value(i).to_string());
            r.dataset.push(datasets.value(i).to_string());
            r.stage.push(
                self.labels
                    .get(&stages.value(i))
                    .cloned()
                    .unwrap_or_default(),
            );
            r.reason.push(reasons.value(i).to_string());
            r.value.push(values.is_valid(i).then(|| values.value(i)));
            r.file.push(None);
            r.line.push(None);
            r.detail.push(None);
            r.text.push(
                texts
                    .as_ref()
                    .map(|t| t.as_string::<i32>().value(i).to_string()),
            );
        }
        r
    }

    fn data_writer(&self, schema: &SchemaRef) -> Result<PartWriter> {
        if self.always_write {
            PartWriter::create_checkpoint(&self.data_path, schema)
        } else {
            PartWriter::create(&self.data_path, self.format, schema)
        }
    }

    /// Appends rejects to this segment's rejects part.
    pub fn write_rejects(&mut self, rows: RejectRows) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.rejects.is_none() {
            self.rejects = Some(PartWriter::create_rejects(
                &self.rejects_path,
                &rejects_schema(),
            )?);
        }
        self.rejects
            .as_mut()
            .expect("created")
            .write(&rows.into_batch()?)
    }

    /// The schema of the segment's result (with bookkeeping columns, which are left out).
    pub fn set_schema(&mut self, schema: &Schema) {
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| is_written(f.name(), self.always_write))
            .cloned()
            .collect();
        self.out_schema = Some(Arc::new(Schema::new(fields)));
    }

    /// Renames the parts into place; returns what was written.
    pub fn finish(mut self) -> Result<(Vec<StageReport>, Option<PartInfo>, Option<PartInfo>)> {
        if self.always_write
            && self.data.is_none()
            && let Some(schema) = &self.out_schema
        {
            self.data = Some(self.data_writer(schema)?);
        }
        let part = |w: Option<PartWriter>, path: &Path| -> Result<Option<PartInfo>> {
            Ok(match w {
                Some(w) => Some(PartInfo {
                    path: path.to_string_lossy().into_owned(),
                    rows: w.finish()?,
                }),
                None => None,
            })
        };
        let data = part(self.data, &self.data_path)?;
        let rejects = part(self.rejects, &self.rejects_path)?;
        Ok((self.reports, data, rejects))
    }
}

/// Whether a column is written: the user's columns, and in checkpoints also the rows' input positions,
/// which the corpus stages of later segments order by.
fn is_written(name: &str, checkpoint: bool) -> bool {
    !is_internal(name) || (checkpoint && name == POS_COL)
}

/// The columns written: everything but the bookkeeping.
fn strip_internal(batch: &RecordBatch, checkpoint: bool) -> Result<RecordBatch> {
    let keep: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| is_written(f.name(), checkpoint))
        .map(|(i, _)| i)
        .collect();
    Ok(batch.project(&keep)?)
}
