//! Reading corpora and writing run outputs.
//!
//! DataFusion's own JSON reader fails a whole query on one bad line, and its Parquet reader fails on an
//! invalid text cell; corpora in the wild have both. The readers here are lenient: a malformed row
//! becomes a reject (stage `read`, reason `malformed:<what>`, with its file and line) and the query
//! goes on, unless the user asks for `on_error: fail`.

pub mod files;
pub mod jsonl;
pub mod malformed;
pub mod parquet_source;
pub mod table;
pub mod writer;

pub use files::{Format, SourceSpec};
pub use malformed::{MalformedRow, OnError, ReadStats, RejectSink};
pub use table::CorpusTable;

/// The id column a source uses unless told otherwise: `id`, as datatrove's readers (`id_key="id"`).
pub fn default_id_column() -> Option<String> {
    Some("id".into())
}
