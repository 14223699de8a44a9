//! A memory-mapped Megatron indexed dataset, validated when opened.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dtype::DType;
use crate::error::{Result, ShardError};
use crate::index::{Layout, corrupt};
use crate::{bin_path, idx_path};

/// An opened prefix. Opening checks every length, offset and document index against the file sizes
/// (O(sequences)), so that no read through it can leave the `.bin`.
pub struct IndexedDataset {
    prefix: PathBuf,
    idx: Map,
    bin: Map,
    layout: Layout,
}

/// A read-only mapping; empty files are not mapped (mmap refuses length 0).
enum Map {
    Empty,
    Mapped(Mmap),
}

impl std::ops::Deref for Map {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Map::Empty => &[],
            Map::Mapped(m) => m,
        }
    }
}

fn map(path: &Path) -> Result<Map> {
    let file = File::open(path).map_err(ShardError::io(path))?;
    let len = file.metadata().map_err(ShardError::io(path))?.len();
    if len == 0 {
        return Ok(Map::Empty);
    }
    // SAFETY: shards are immutable once renamed into place; a file truncated under us by another
    // process would fault, as with any mmap reader (Megatron's included).
    let m = unsafe { Mmap::map(&file) }.map_err(ShardError::io(path))?;
    Ok(Map::Mapped(m))
}

impl IndexedDataset {
    /// Opens `PREFIX.idx` and `PREFIX.bin`.
    pub fn open(prefix: impl AsRef<Path>) -> Result<Self> {
        let prefix = prefix.as_ref().to_path_buf();
        let (idx_file, bin_file) = (idx_path(&prefix), bin_path(&prefix));
        let idx = map(&idx_file)?;
        let bin = map(&bin_file)?;
        let layout =
            Layout::validate(&idx, bin.len() as u64).map_err(|why| corrupt(&idx_file, why))?;
        Ok(Self {
            prefix,
            idx,
            bin,
            layout,
        })
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub fn dtype(&self) -> DType {
        self.layout.dtype
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.layout.sequences
    }

    pub fn is_empty(&self) -> bool {
        self.layout.sequences == 0
    }

    /// Number of documents.
    pub fn documents(&self) -> usize {
        self.layout.doc_indices - 1
    }

    /// The sequences of document `d`.
    pub fn document(&self, d: usize) -> Range<usize> {
        assert!(d < self.documents(), "document {d} of {}", self.documents());
        self.layout.doc_index(&self.idx, d)..self.layout.doc_index(&self.idx, d + 1)
    }

    /// Tokens in sequence `i`.
    pub fn sequence_len(&self, i: usize) -> usize {
        assert!(i < self.len(), "sequence {i} of {}", self.len());
        self.layout.length(&self.idx, i)
    }

    /// Tokens in all sequences.
    pub fn total_tokens(&self) -> u64 {
        (self.bin.len() / self.dtype().size()) as u64
    }

    /// `count` tokens of sequence `i` from token `start`, appended to `out` (Megatron's
    /// `get(idx, offset, length)`); the range must lie inside the sequence.
    pub fn read(&self, i: usize, start: usize, count: usize, out: &mut Vec<i64>) {
        let len = self.sequence_len(i);
        assert!(
            start <= len && count <= len - start,
            "tokens {start}..{} of a sequence of {len}",
            start + count
        );
        let size = self.dtype().size();
        let from = self.layout.offset(&self.idx, i) + start * size;
        let bytes = &self.bin[from..from + count * size];
        out.extend(bytes.chunks_exact(size).map(|b| self.dtype().get(b)));
    }

    /// All tokens of sequence `i`.
    pub fn sequence(&self, i: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.sequence_len(i));
        self.read(i, 0, self.sequence_len(i), &mut out);
        out
    }

    /// The raw bytes of sequence `i` in `.bin`.
    pub fn sequence_bytes(&self, i: usize) -> &[u8] {
        let len = self.sequence_len(i);
        let size = self.dtype().size();
        let from = self.layout.offset(&self.idx, i);
        &self.bin[from..from + len * size]
    }
}
