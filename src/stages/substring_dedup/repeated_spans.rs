//! `repeated_spans('dataset', min_bytes[, limit])`: the table function that shows what
//! `substring_dedup` would remove from a dataset before anything is removed. One row per maximal repeat
//! of `min_bytes` or more ([`super::maximal`]): a preview, its length, its occurrences and documents,
//! the bytes they hold together, and the first occurrences as byte ranges (`at`); the `limit` (1000)
//! largest by total bytes, largest first. With
//! `keep_first` the stage removes all but the first occurrence of each; with `remove_all`, every one.
//!
//! ```sql
//! SELECT preview, bytes, occurrences FROM repeated_spans('fineweb_edu', 100) LIMIT 20;
//! ```
//!
//! The dataset's text must fit one suffix array with its LCP array: 13 bytes a byte at the peak.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, AsArray, ListBuilder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::find::Corpus;
use super::maximal::{Repeat, Repeats, maximal_repeats};

/// Characters of a span shown in `preview`.
const PREVIEW_CHARS: usize = 80;
/// Occurrences listed in `at`, as `id:start-end` byte ranges of their documents.
const LOCATIONS: usize = 10;
/// Rows listed when the call gives no limit.
const DEFAULT_LIMIT: usize = 1000;
/// Bytes of a repeat shown in `span` (its first bytes; `bytes` gives its length).
const MAX_SPAN_BYTES: usize = 4096;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("preview", DataType::Utf8, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("occurrences", DataType::UInt64, false),
        Field::new("documents", DataType::UInt64, false),
        Field::new("bytes_total", DataType::UInt64, false),
        Field::new("first_id", DataType::Utf8, false),
        Field::new(
            "at",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("span", DataType::Utf8, false),
    ]))
});

/// The function, registered as `repeated_spans`.
#[derive(Debug, Default)]
pub struct RepeatedSpansFunc;

impl TableFunctionImpl for RepeatedSpansFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let usage = "repeated_spans('dataset', min_bytes[, limit])";
        let positive = |v: &ScalarValue| match v {
            ScalarValue::Int64(Some(n)) if *n > 0 => Some(*n as usize),
            _ => None,
        };
        let (table, min_bytes, limit) = match args.exprs() {
            [
                Expr::Literal(ScalarValue::Utf8(Some(t)), _),
                Expr::Literal(n, _),
                rest @ ..,
            ] if rest.len() <= 1 => {
                let Some(min_bytes) = positive(n) else {
                    return plan_err!("{usage}: min_bytes must be a positive integer");
                };
                let limit = match rest {
                    [Expr::Literal(l, _)] => match positive(l) {
                        Some(l) => l,
                        None => return plan_err!("{usage}: limit must be a positive integer"),
                    },
                    [_] => return plan_err!("{usage}: limit must be a positive integer"),
                    _ => DEFAULT_LIMIT,
                };
                (t.clone(), min_bytes, limit)
            }
            _ => {
                return plan_err!(
                    "{usage}: a dataset name, a number of bytes and an optional limit"
                );
            }
        };
        Ok(Arc::new(RepeatedSpansTable {
            table,
            min_bytes,
            limit,
        }))
    }
}

#[derive(Debug)]
struct RepeatedSpansTable {
    table: String,
    min_bytes: usize,
    limit: usize,
}

#[async_trait]
impl TableProvider for RepeatedSpansTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&SCHEMA)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return plan_err!("repeated_spans needs a DataFusion session");
        };
        let batch = repeated_spans(state, &self.table, self.min_bytes, self.limit)
            .await
            .map_err(|e| DataFusionError::External(format!("repeated_spans: {e:#}").into()))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&SCHEMA),
            projection.cloned(),
        )?)
    }
}

/// Joins the dataset's texts to a temporary file, finds every repeated span, and counts them by content.
async fn repeated_spans(
    state: &SessionState,
    table: &str,
    min_bytes: usize,
    limit: usize,
) -> anyhow::Result<RecordBatch> {
    let ctx = SessionContext::new_with_state(state.clone());
    let df = ctx.table(table).await?.select_columns(&["id", "text"])?;
    let dir = TempDir::new()?;
    let path = dir.0.join("text.bin");
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    let (mut starts, mut pos) = (Vec::new(), 0u64);
    // Document ids, back to back: what a span's first occurrence is shown with.
    let (mut ids, mut id_ends) = (String::new(), Vec::new());
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let id = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        let text = arrow::compute::cast(batch.column(1), &DataType::Utf8)?;
        let (id, text) = (id.as_string::<i32>(), text.as_string::<i32>());
        for i in 0..batch.num_rows() {
            let t = if text.is_null(i) { "" } else { text.value(i) };
            out.write_all(t.as_bytes())?;
            out.write_all(&[0xFF])?;
            starts.push(pos);
            pos += t.len() as u64 + 1;
            ids.push_str(id.value(i));
            id_ends.push(ids.len());
        }
    }
    starts.push(pos);
    out.flush()?;
    drop(out);
    if starts.len() == 1 {
        return Ok(RecordBatch::new_empty(Arc::clone(&SCHEMA)));
    }
    let map = {
        let f = std::fs::File::open(&path)?;
        // SAFETY: the file is in our own temporary directory and written completely above.
        unsafe { memmap2::Mmap::map(&f)? }
    };
    let text: &[u8] = &map;
    let corpus = Corpus {
        text,
        starts: &starts,
        sep: 0xFF,
        alphabet: 256,
    };
    let threads = state.config().target_partitions().max(1);
    let Repeats { sa, mut repeats } =
        tokio::task::block_in_place(|| maximal_repeats(&corpus, min_bytes, threads))?;
    // The `limit` largest by total bytes. A long run of one character has a repeat of every length
    // below its own, each as often as it fits: what is listed, and what a row costs, stays bounded.
    let total = |r: &Repeat| u64::from(r.len) * r.occurrences();
    let largest_first = |a: &Repeat, b: &Repeat| {
        total(b)
            .cmp(&total(a))
            .then(b.len.cmp(&a.len))
            .then(a.lb.cmp(&b.lb))
    };
    if repeats.len() > limit {
        repeats.select_nth_unstable_by(limit, largest_first);
        repeats.truncate(limit);
    }
    repeats.sort_by(largest_first);

    let id_of = |d: usize| &ids[if d == 0 { 0 } else { id_ends[d - 1] }..id_ends[d]];
    let mut preview = StringBuilder::new();
    let mut span = StringBuilder::new();
    let mut first_id = StringBuilder::new();
    let mut at = ListBuilder::new(StringBuilder::new());
    let (mut bytes, mut occurrences, mut documents, mut bytes_total) = (
        UInt64Builder::new(),
        UInt64Builder::new(),
        UInt64Builder::new(),
        UInt64Builder::new(),
    );
    for r in &repeats {
        let mut positions: Vec<usize> = sa[r.lb as usize..=r.rb as usize]
            .iter()
            .map(|&p| p as usize)
            .collect();
        positions.sort_unstable();
        let docs: Vec<usize> = positions
            .iter()
            .map(|&p| starts.partition_point(|&s| s as usize <= p) - 1)
            .collect();
        let len = r.len as usize;
        // The repeat's bytes, widened to whole characters for display (a repeat may start or end
        // inside one; the stage snaps what it removes the same way).
        let (a, b) = (positions[0], positions[0] + len);
        let doc = docs[0];
        let doc_text =
            std::str::from_utf8(&text[starts[doc] as usize..starts[doc + 1] as usize - 1])?;
        let (mut x, mut y) = (a - starts[doc] as usize, b - starts[doc] as usize);
        while !doc_text.is_char_boundary(x) {
            x -= 1;
        }
        while !doc_text.is_char_boundary(y) {
            y += 1;
        }
        if y - x > MAX_SPAN_BYTES {
            y = x + MAX_SPAN_BYTES;
            while !doc_text.is_char_boundary(y) {
                y -= 1;
            }
        }
        let t = &doc_text[x..y];
        let mut p: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
        if p.chars().count() > PREVIEW_CHARS {
            p = p.chars().take(PREVIEW_CHARS).chain(['…']).collect();
        }
        preview.append_value(p);
        span.append_value(t);
        bytes.append_value(len as u64);
        occurrences.append_value(r.occurrences());
        let mut distinct = docs.clone();
        distinct.dedup();
        documents.append_value(distinct.len() as u64);
        bytes_total.append_value(total(r));
        first_id.append_value(id_of(doc));
        for (&p, &d) in positions.iter().zip(&docs).take(LOCATIONS) {
            let s = p - starts[d] as usize;
            at.values()
                .append_value(format!("{}:{}-{}", id_of(d), s, s + len));
        }
        at.append(true);
    }
    Ok(RecordBatch::try_new(
        Arc::clone(&SCHEMA),
        vec![
            Arc::new(preview.finish()),
            Arc::new(bytes.finish()),
            Arc::new(occurrences.finish()),
            Arc::new(documents.finish()),
            Arc::new(bytes_total.finish()),
            Arc::new(first_id.finish()),
            Arc::new(at.finish()),
            Arc::new(span.finish()),
        ],
    )?)
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "openseek-repeated-spans-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
