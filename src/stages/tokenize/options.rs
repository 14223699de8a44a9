//! The options of `tokenize`, as a pipeline writes them.

use anyhow::{Context, Result, bail};
use openseek_shards::DType;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenizeOptions {
    /// A `tokenizer.json` (or a directory holding one, or GPT-2's `vocab.json` + `merges.txt`), or
    /// a bundled name: `qwen3`, `gpt2` (built into the binary).
    pub tokenizer: String,
    /// How each document is framed; `{text}` is the document, special tokens are named as the
    /// tokenizer names them, e.g. `"{text}<|endoftext|>"`.
    #[serde(default = "default_template")]
    pub template: String,
    /// The directory that receives `PREFIX.bin/.idx/.json`; a relative one is inside the run's output
    /// directory.
    pub output: String,
    /// One prefix per value of this column (default: the dataset).
    #[serde(default = "default_by")]
    pub by: String,
    /// Token type: u16 or i32 (default: as Megatron chooses from the vocabulary size).
    pub dtype: Option<String>,
    /// Start a new prefix of a group when its `.bin` reaches this size.
    pub max_shard_mb: Option<u64>,
    /// Documents encoded per batch (spread over all cores).
    #[serde(default = "default_batch")]
    pub batch_docs: usize,
    /// Text per batch, in MB: a batch holds its text and its ids (~1 byte of ids per byte of text).
    #[serde(default = "default_batch_mb")]
    pub batch_mb: u64,
}

fn default_batch_mb() -> u64 {
    4
}

fn default_template() -> String {
    "{text}".to_string()
}

fn default_by() -> String {
    "dataset".to_string()
}

fn default_batch() -> usize {
    1024
}

impl TokenizeOptions {
    pub fn parse(value: serde_norway::Value) -> Result<Self> {
        if value.is_null() {
            bail!("tokenize needs at least `tokenizer` and `output`");
        }
        let o: Self = serde_norway::from_value(value).context("tokenize options")?;
        if o.batch_docs == 0 || o.batch_mb == 0 {
            bail!("tokenize: batch_docs and batch_mb must be at least 1");
        }
        if o.max_shard_mb == Some(0) {
            bail!("tokenize: max_shard_mb must be at least 1");
        }
        o.dtype()?;
        Ok(o)
    }

    /// The forced dtype, if any.
    pub fn dtype(&self) -> Result<Option<DType>> {
        self.dtype
            .as_deref()
            .map(|d| d.parse::<DType>().map_err(anyhow::Error::msg))
            .transpose()
    }
}
