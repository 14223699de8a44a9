//! `PREFIX.json`: what a prefix holds and how it was made, beside the two Megatron files. Megatron
//! never reads it; `openseek shards` and the trainer do, to count tokens without opening the index
//! and to refuse shards made by a different tokenizer.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dtype::DType;
use crate::error::{Result, ShardError};

/// The tokenizer a shard was made with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// The name it was given by (a bundled name or a path).
    pub name: String,
    /// sha256 of its `tokenizer.json`.
    pub sha256: String,
    /// One more than the largest token id (added tokens included): every id is below it.
    pub vocab_size: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Always "megatron-mmidx-v1".
    pub format: String,
    pub dtype: DType,
    pub tokenizer: Option<TokenizerInfo>,
    /// How each document was framed, e.g. `"{text}<|endoftext|>"`.
    pub template: Option<String>,
    pub documents: u64,
    pub sequences: u64,
    pub tokens: u64,
    /// The group this prefix holds (a dataset, or a value of the `by` column).
    pub group: Option<String>,
    pub created_by: String,
}

pub const FORMAT: &str = "megatron-mmidx-v1";

impl Sidecar {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(ShardError::io(path))?;
        serde_json::from_slice(&bytes).map_err(|e| ShardError::Corrupt {
            path: path.to_path_buf(),
            why: format!("not a shard sidecar: {e}"),
        })
    }
}
