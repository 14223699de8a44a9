//! Pass 3: the input streamed again as the stage's output. Each document loses its spans (snapped),
//! gains `substring_removed_bytes` and `substring_spans` (what was cut, in the original's bytes), and
//! goes to the rejects if too few words are left. With `annotate` it keeps its text and only gains the
//! columns: what the stage would do, to inspect first.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListArray, RecordBatch, StringBuilder, StructArray,
    UInt32Array, UInt64Builder,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use openseek_udfs::word_count::word_count;

use super::find::Span;
use super::options::Snap;
use super::snap::snap_span;
use crate::pipeline::sink::{RejectRows, RejectsPart};
use crate::report::PartInfo;
use crate::stages::units::UnitBatches;

pub const REMOVED_COL: &str = "substring_removed_bytes";
/// The byte ranges `{start, end}` of the original text that were removed (or, with `annotate`, would be).
pub const SPANS_COL: &str = "substring_spans";

fn span_fields() -> Fields {
    Fields::from(vec![
        Field::new("start", DataType::UInt32, false),
        Field::new("end", DataType::UInt32, false),
    ])
}

fn spans_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(span_fields()),
        false,
    )))
}

/// What the output pass counted, for the report.
#[derive(Debug, Default)]
pub struct Counts {
    pub spans: AtomicU64,
    pub bytes_removed: AtomicU64,
    pub documents_changed: AtomicU64,
    pub rejected: AtomicU64,
    pub rows_out: AtomicU64,
    pub bytes_out: AtomicU64,
}

pub struct Removal {
    /// Byte spans, in document order.
    spans: Vec<Span>,
    snap: Snap,
    min_words_after: u64,
    /// Keep every document whole; only say what would go.
    annotate: bool,
    label: String,
    reason: String,
    keep_text: bool,
    schema: SchemaRef,
    rejects: RejectsPart,
    pub counts: Counts,
    rows_done: Arc<AtomicU64>,
}

impl Removal {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spans: Vec<Span>,
        snap: Snap,
        min_words_after: u64,
        annotate: bool,
        label: &str,
        keep_text: bool,
        input_schema: &Schema,
        rejects_path: &Path,
        rows_done: Arc<AtomicU64>,
    ) -> Self {
        let mut fields: Vec<_> = input_schema
            .fields()
            .iter()
            .filter(|f| f.name() != REMOVED_COL && f.name() != SPANS_COL)
            .map(|f| {
                if f.name() == "text" {
                    Arc::new(Field::new("text", DataType::Utf8, f.is_nullable()))
                } else {
                    Arc::clone(f)
                }
            })
            .collect();
        fields.push(Arc::new(Field::new(REMOVED_COL, DataType::UInt64, false)));
        fields.push(Arc::new(Field::new(SPANS_COL, spans_type(), false)));
        Self {
            spans,
            snap,
            min_words_after,
            annotate,
            label: label.to_string(),
            reason: format!("{label}:too_short"),
            keep_text,
            schema: Arc::new(Schema::new(fields)),
            rejects: RejectsPart::new(rejects_path),
            counts: Counts::default(),
            rows_done,
        }
    }

    /// The reason of the documents left too short.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Closes the rejects part; call once the output was streamed.
    pub fn finish(&self) -> Result<Option<PartInfo>> {
        self.rejects.finish()
    }
}

/// `text` without `cuts` (in order, on character boundaries; an overlap is cut once).
fn without(text: &str, cuts: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for &(a, b) in cuts {
        out.push_str(&text[at..a.max(at)]);
        at = at.max(b);
    }
    out.push_str(&text[at..]);
    out
}

impl UnitBatches for Removal {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process(&self, batch: &RecordBatch, first: u64) -> Result<RecordBatch> {
        let n = batch.num_rows();
        self.rows_done.fetch_add(n as u64, Ordering::Relaxed);
        let schema = batch.schema();
        let col = |name: &str| -> Result<ArrayRef> {
            Ok(arrow::compute::cast(
                batch.column(schema.index_of(name)?),
                &DataType::Utf8,
            )?)
        };
        let (texts, ids, datasets) = (col("text")?, col("id")?, col("dataset")?);
        let (texts, ids, datasets) = (
            texts.as_string::<i32>(),
            ids.as_string::<i32>(),
            datasets.as_string::<i32>(),
        );
        let mut cursor = self.spans.partition_point(|s| u64::from(s.doc) < first);
        let mut keep = Vec::with_capacity(n);
        let mut out_text = StringBuilder::with_capacity(n, texts.value_data().len());
        let mut removed = UInt64Builder::with_capacity(n);
        // The kept rows' spans, as the list column's offsets and its starts and ends.
        let (mut span_offsets, mut span_starts, mut span_ends) =
            (vec![0i32], Vec::<u32>::new(), Vec::<u32>::new());
        let mut rejects = RejectRows::with_capacity(0);
        let (mut spans, mut bytes_removed, mut changed, mut bytes_out) = (0, 0, 0, 0);
        let mut cuts = Vec::new();
        for i in 0..n {
            let d = first + i as u64;
            let text = if texts.is_null(i) { "" } else { texts.value(i) };
            cuts.clear();
            while let Some(s) = self.spans.get(cursor).filter(|s| u64::from(s.doc) == d) {
                cuts.extend(snap_span(text, s.start as usize, s.end as usize, self.snap));
                cursor += 1;
            }
            if cuts.is_empty() {
                keep.push(true);
                if texts.is_null(i) {
                    out_text.append_null();
                } else {
                    out_text.append_value(text);
                }
                removed.append_value(0);
                span_offsets.push(span_starts.len() as i32);
                bytes_out += text.len() as u64;
                continue;
            }
            let left = without(text, &cuts);
            let gone = (text.len() - left.len()) as u64;
            spans += cuts.len() as u64;
            bytes_removed += gone;
            changed += 1;
            let words = word_count(&left) as u64;
            if self.annotate || words >= self.min_words_after {
                keep.push(true);
                let kept = if self.annotate { text } else { &left };
                out_text.append_value(kept);
                removed.append_value(gone);
                span_starts.extend(cuts.iter().map(|c| c.0 as u32));
                span_ends.extend(cuts.iter().map(|c| c.1 as u32));
                span_offsets.push(span_starts.len() as i32);
                bytes_out += kept.len() as u64;
            } else {
                keep.push(false);
                rejects.id.push(ids.value(i).to_string());
                rejects.dataset.push(datasets.value(i).to_string());
                rejects.stage.push(self.label.clone());
                rejects.reason.push(self.reason.clone());
                rejects.value.push(Some(words as f64));
                rejects.file.push(None);
                rejects.line.push(None);
                rejects.detail.push(Some(format!(
                    "{gone} of {} bytes removed in {} span(s); {words} words left",
                    text.len(),
                    cuts.len()
                )));
                rejects.text.push(self.keep_text.then(|| text.to_string()));
            }
        }
        let c = &self.counts;
        c.spans.fetch_add(spans, Ordering::Relaxed);
        c.bytes_removed.fetch_add(bytes_removed, Ordering::Relaxed);
        c.documents_changed.fetch_add(changed, Ordering::Relaxed);
        c.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        let rejected = rejects.id.len() as u64;
        c.rejected.fetch_add(rejected, Ordering::Relaxed);
        c.rows_out.fetch_add(n as u64 - rejected, Ordering::Relaxed);
        self.rejects.write(rejects)?;
        let kept = filter_record_batch(batch, &BooleanArray::from(keep))?;
        let spans_array = ListArray::try_new(
            Arc::new(Field::new("item", DataType::Struct(span_fields()), false)),
            OffsetBuffer::new(span_offsets.into()),
            Arc::new(StructArray::try_new(
                span_fields(),
                vec![
                    Arc::new(UInt32Array::from(span_starts)),
                    Arc::new(UInt32Array::from(span_ends)),
                ],
                None,
            )?),
            None,
        )?;
        let (mut out_text, mut removed, mut spans_array) = (
            Some(out_text.finish()),
            Some(removed.finish()),
            Some(spans_array),
        );
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|f| -> Result<ArrayRef> {
                Ok(match f.name().as_str() {
                    "text" => Arc::new(out_text.take().expect("one text column")),
                    REMOVED_COL => Arc::new(removed.take().expect("one column")),
                    SPANS_COL => Arc::new(spans_array.take().expect("one column")),
                    name => Arc::clone(kept.column(kept.schema().index_of(name)?)),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_leave_the_rest_in_order() {
        assert_eq!(without("abcdefgh", &[(1, 3), (5, 6)]), "adegh");
        assert_eq!(without("abc", &[]), "abc");
        assert_eq!(without("abc", &[(0, 3)]), "");
        assert_eq!(without("abcdef", &[(1, 4), (2, 5)]), "af");
    }
}
