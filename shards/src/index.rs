//! The `.idx` file: its layout, its encoding, and its validation against the `.bin` it describes.
//!
//! ```text
//! offset      size  field
//! 0           9     magic "MMIDIDX\0\0"
//! 9           8     u64 version = 1
//! 17          1     u8 dtype code
//! 18          8     u64 S, sequences
//! 26          8     u64 D, document indices (documents + 1)
//! 34          4·S   i32 sequence lengths, in tokens
//! 34+4S       8·S   i64 byte offsets of the sequences in .bin
//! 34+12S      8·D   i64 document indices: 0, …, S
//! ```

use crate::dtype::DType;
use crate::error::ShardError;

pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
pub const VERSION: u64 = 1;
/// Bytes before the sequence lengths.
pub const HEADER_LEN: usize = 34;

/// The bytes of an `.idx` for these sequence lengths and document boundaries.
pub fn encode(dtype: DType, lengths: &[i32], doc_indices: &[i64]) -> Vec<u8> {
    let s = lengths.len();
    let mut out = Vec::with_capacity(HEADER_LEN + 12 * s + 8 * doc_indices.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(dtype.code());
    out.extend_from_slice(&(s as u64).to_le_bytes());
    out.extend_from_slice(&(doc_indices.len() as u64).to_le_bytes());
    for &l in lengths {
        out.extend_from_slice(&l.to_le_bytes());
    }
    let mut offset = 0i64;
    for &l in lengths {
        out.extend_from_slice(&offset.to_le_bytes());
        offset += i64::from(l) * dtype.size() as i64;
    }
    for &d in doc_indices {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// A validated view of an `.idx`: every offset lies inside the `.bin`, so reads through it never go
/// out of bounds.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub dtype: DType,
    pub sequences: usize,
    pub doc_indices: usize,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl Layout {
    /// Checks the header, the size of the file, and every length, offset and document index against
    /// each other and against `bin_len`, the size of the `.bin`.
    pub fn validate(idx: &[u8], bin_len: u64) -> Result<Self, String> {
        if idx.len() < HEADER_LEN {
            return Err(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                idx.len()
            ));
        }
        if &idx[..9] != MAGIC {
            return Err("no MMIDIDX magic: not a Megatron indexed dataset".into());
        }
        let version = u64_at(idx, 9);
        if version != VERSION {
            return Err(format!("version {version}, only version 1 is known"));
        }
        let dtype =
            DType::from_code(idx[17]).ok_or_else(|| format!("unknown dtype code {}", idx[17]))?;
        let (s, d) = (u64_at(idx, 18), u64_at(idx, 26));
        let expected = (s as u128) * 12 + (d as u128) * 8 + HEADER_LEN as u128;
        if expected != idx.len() as u128 {
            // Megatron's multimodal indexes add one mode byte per sequence.
            let multimodal = expected + s as u128 == idx.len() as u128;
            return Err(if multimodal {
                "a multimodal index (sequence modes), which token shards never are".into()
            } else {
                format!(
                    "{} bytes, but {s} sequences and {d} document indices need {expected} \
                     (truncated or corrupt)",
                    idx.len()
                )
            });
        }
        let (s, d) = (s as usize, d as usize);
        if d == 0 {
            return Err("no document indices (there must be at least the leading 0)".into());
        }
        let lengths = HEADER_LEN;
        let pointers = lengths + 4 * s;
        let docs = pointers + 8 * s;
        let size = dtype.size() as i128;
        let mut expected_offset: i128 = 0;
        for i in 0..s {
            let len = i32_at(idx, lengths + 4 * i);
            if len < 0 {
                return Err(format!("sequence {i} has negative length {len}"));
            }
            let ptr = i64_at(idx, pointers + 8 * i);
            if i128::from(ptr) != expected_offset {
                return Err(format!(
                    "sequence {i} starts at byte {ptr} of .bin, but the lengths before it end at \
                     {expected_offset}"
                ));
            }
            expected_offset += i128::from(len) * size;
        }
        if expected_offset != i128::from(bin_len) {
            return Err(format!(
                "the sequences need {expected_offset} bytes of .bin, which has {bin_len} \
                 (truncated or mismatched)"
            ));
        }
        let mut previous = 0i64;
        for k in 0..d {
            let v = i64_at(idx, docs + 8 * k);
            let bad = if k == 0 {
                v != 0
            } else {
                v < previous || v as u64 > s as u64
            };
            if bad {
                return Err(format!(
                    "document index {k} is {v}; they must rise from 0 to at most {s}"
                ));
            }
            previous = v;
        }
        Ok(Self {
            dtype,
            sequences: s,
            doc_indices: d,
        })
    }

    pub fn length(&self, idx: &[u8], i: usize) -> usize {
        i32_at(idx, HEADER_LEN + 4 * i) as usize
    }

    pub fn offset(&self, idx: &[u8], i: usize) -> usize {
        i64_at(idx, HEADER_LEN + 4 * self.sequences + 8 * i) as usize
    }

    pub fn doc_index(&self, idx: &[u8], k: usize) -> usize {
        i64_at(idx, HEADER_LEN + 12 * self.sequences + 8 * k) as usize
    }
}

/// `ShardError::Corrupt` for an index file.
pub(crate) fn corrupt(path: &std::path::Path, why: String) -> ShardError {
    ShardError::Corrupt {
        path: path.to_path_buf(),
        why,
    }
}
