//! Malformed input rows: where they go and how reading is counted.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// What to do with a malformed row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Send it to the rejects with its file and line (default).
    #[default]
    Reject,
    /// Fail the run with the file and line in the message.
    Fail,
}

/// An input row that could not be read as a document.
#[derive(Debug, Clone)]
pub struct MalformedRow {
    pub id: String,
    pub dataset: String,
    pub file: String,
    /// 1-based line (JSONL) or row (Parquet) number in the file.
    pub line: u64,
    /// `malformed:<what>`.
    pub reason: String,
    /// The parser's message, when there is one.
    pub detail: Option<String>,
    pub text: Option<String>,
}

impl fmt::Display for MalformedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// Where readers send malformed rows.
pub trait RejectSink: Send + Sync + fmt::Debug {
    fn push(&self, row: MalformedRow);
}

/// Keeps malformed rows until the run writes them to its rejects.
#[derive(Debug, Default)]
pub struct RejectBuffer(Mutex<Vec<MalformedRow>>);

impl RejectBuffer {
    pub fn take(&self) -> Vec<MalformedRow> {
        std::mem::take(&mut *self.0.lock().expect("reject buffer lock"))
    }
}

impl RejectSink for RejectBuffer {
    fn push(&self, row: MalformedRow) {
        self.0.lock().expect("reject buffer lock").push(row);
    }
}

/// For interactive queries (`openseek sql`): malformed rows are counted and the first few logged, so
/// that a query over a dirty corpus still answers and says what it skipped.
#[derive(Debug, Default)]
pub struct RejectLog {
    count: AtomicU64,
}

impl RejectLog {
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl RejectSink for RejectLog {
    fn push(&self, row: MalformedRow) {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        if n < 10 {
            tracing::warn!("skipped malformed row {row}");
        }
    }
}

/// Counters the readers update as they go; the progress bar and the `read` stage of the report read them.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Rows seen, good or malformed.
    pub rows: AtomicU64,
    /// Rows handed to the query.
    pub rows_ok: AtomicU64,
    pub malformed: AtomicU64,
    /// Bytes of text handed to the query.
    pub text_bytes: AtomicU64,
    /// Time spent in the readers, summed over reader threads, including `wait_nanos`.
    pub nanos: AtomicU64,
    /// Time the readers spent waiting for the query to take their batches.
    pub wait_nanos: AtomicU64,
}

impl ReadStats {
    pub fn add(&self, field: &AtomicU64, n: u64) {
        field.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(field: &AtomicU64) -> u64 {
        field.load(Ordering::Relaxed)
    }
}
