//! Pass 1 of `substring_dedup`: the texts of the input, in document order, joined into one file that
//! the later passes map rather than load. ExactSubstr leaves this to its users ("concatenate your files
//! first"); here it is the stage's first pass, over any input a pipeline reads.
//!
//! Bytes: each document's UTF-8 then 0xFF, a byte UTF-8 never holds. Tokens: each document's ids then
//! one id past the vocabulary, and beside them each token's byte range in its document, so that spans
//! found in tokens are removed as bytes.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow};
use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use tokenizers::Tokenizer;

use super::suffix_array::Symbol;
use crate::stages::tokenize::encoder::{Encoder, encoder};
use crate::stages::units::{Unit, for_each_unit, read_unit};

/// The joined corpus, mapped.
pub struct Joined<T: Symbol> {
    text: memmap2::Mmap,
    /// Each document's first position, then the text's length.
    pub starts: Vec<u64>,
    pub sep: T,
    /// Symbols are below this (the separator included).
    pub alphabet: u32,
    /// With tokens: each position's byte range in its document, as two u32s.
    offsets: Option<memmap2::Mmap>,
    /// Text bytes of the documents (without separators).
    pub text_bytes: u64,
}

impl<T: Symbol> Joined<T> {
    pub fn text(&self) -> &[T] {
        cast(&self.text)
    }

    /// Byte ranges of positions `[a, b)` of document `doc` (tokens only).
    pub fn byte_range(&self, doc: usize, a: usize, b: usize) -> Option<(usize, usize)> {
        let offsets: &[u32] = cast(self.offsets.as_ref()?);
        let first = self.starts[doc] as usize;
        let start = offsets[2 * (first + a)] as usize;
        let end = offsets[2 * (first + b - 1) + 1] as usize;
        Some((start, end.max(start)))
    }
}

fn cast<T>(bytes: &[u8]) -> &[T] {
    // SAFETY: the file was written as whole values of T by this module, a mapping is page-aligned,
    // and T is u8 or u32, for which every bit pattern is valid.
    let (head, values, tail) = unsafe { bytes.align_to::<T>() };
    assert!(
        head.is_empty() && tail.is_empty(),
        "a joined file holds whole symbols"
    );
    values
}

fn as_bytes<T>(values: &[T]) -> &[u8] {
    // SAFETY: u8 and u32 have no padding; this views the same memory as bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) }
}

fn map(path: &Path) -> Result<memmap2::Mmap> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: the file is in the stage's own work directory and nothing writes it while mapped.
    unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("mapping {}", path.display()))
}

/// One unit's documents, joined: symbols, each document's length, and (tokens) byte ranges.
struct Piece<T> {
    symbols: Vec<T>,
    lens: Vec<u64>,
    offsets: Vec<u32>,
    bytes: u64,
}

/// Writes the pieces of the units in order, `threads` units at a time.
fn join<T: Symbol>(
    units: &[Unit],
    dir: &Path,
    threads: usize,
    done: &AtomicU64,
    with_offsets: bool,
    piece: impl Fn(&[&str]) -> Result<Piece<T>> + Sync,
) -> Result<(PathBuf, Option<PathBuf>, Vec<u64>, u64)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text_path = dir.join("text.bin");
    let offsets_path = dir.join("offsets.bin");
    let create = |p: &Path| -> Result<BufWriter<std::fs::File>> {
        Ok(BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ))
    };
    let mut text_out = create(&text_path)?;
    let mut offsets_out = if with_offsets {
        Some(create(&offsets_path)?)
    } else {
        None
    };
    let mut starts = Vec::new();
    let (mut pos, mut text_bytes) = (0u64, 0u64);
    // A window of units read at once bounds memory to a few units' text.
    for window in units.chunks(threads.max(1) * 2) {
        let pieces = for_each_unit(window, threads, |_, unit| {
            let mut texts: Vec<String> = Vec::new();
            for batch in read_unit(unit, Some(&["text"]))? {
                let column = arrow::compute::cast(batch?.column(0), &DataType::Utf8)?;
                let column = column.as_string::<i32>();
                texts.extend((0..column.len()).map(|i| column.value(i).to_string()));
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let p = piece(&refs).with_context(|| format!("{}", unit.file.display()))?;
            done.fetch_add(refs.len() as u64, Ordering::Relaxed);
            Ok(p)
        })?;
        for p in pieces {
            text_out.write_all(as_bytes(&p.symbols))?;
            if let Some(o) = offsets_out.as_mut() {
                o.write_all(as_bytes(&p.offsets))?;
            }
            for len in p.lens {
                starts.push(pos);
                pos += len + 1;
            }
            text_bytes += p.bytes;
        }
    }
    starts.push(pos);
    text_out.flush()?;
    if let Some(mut o) = offsets_out {
        o.flush()?;
    }
    Ok((
        text_path,
        with_offsets.then_some(offsets_path),
        starts,
        text_bytes,
    ))
}

/// The documents' bytes, each followed by 0xFF.
pub fn join_bytes(
    units: &[Unit],
    dir: &Path,
    threads: usize,
    done: &AtomicU64,
) -> Result<Joined<u8>> {
    let (text, _, starts, text_bytes) = join(units, dir, threads, done, false, |texts| {
        let mut symbols = Vec::with_capacity(texts.iter().map(|t| t.len() + 1).sum());
        let mut lens = Vec::with_capacity(texts.len());
        for t in texts {
            symbols.extend_from_slice(t.as_bytes());
            symbols.push(0xFF);
            lens.push(t.len() as u64);
        }
        Ok(Piece {
            bytes: symbols.len() as u64 - lens.len() as u64,
            symbols,
            lens,
            offsets: Vec::new(),
        })
    })?;
    Ok(Joined {
        text: map(&text)?,
        starts,
        sep: 0xFF,
        alphabet: 256,
        offsets: None,
        text_bytes,
    })
}

/// The documents' token ids, each document followed by the id one past the vocabulary.
pub fn join_tokens(
    units: &[Unit],
    dir: &Path,
    threads: usize,
    done: &AtomicU64,
    tokenizer: &Tokenizer,
) -> Result<Joined<u32>> {
    let vocab = tokenizer.get_vocab_size(true) as u32;
    let encoder: Encoder = encoder(tokenizer)?;
    let (text, offsets, starts, text_bytes) = join(units, dir, threads, done, true, |texts| {
        let mut p = Piece {
            symbols: Vec::new(),
            lens: Vec::with_capacity(texts.len()),
            offsets: Vec::new(),
            bytes: 0,
        };
        for t in texts {
            // Byte offsets (what `encode` gives; `encode_fast` leaves them out).
            let encoding = encoder
                .encode(*t, false)
                .map_err(|e| anyhow!("tokenizing: {e}"))?;
            for (&id, &(a, b)) in encoding.get_ids().iter().zip(encoding.get_offsets()) {
                if id >= vocab {
                    return Err(anyhow!(
                        "token id {id} is outside the vocabulary of {vocab}"
                    ));
                }
                p.symbols.push(id);
                p.offsets.extend([a as u32, b as u32]);
            }
            p.lens.push(encoding.get_ids().len() as u64);
            p.symbols.push(vocab);
            p.offsets.extend([t.len() as u32, t.len() as u32]);
            p.bytes += t.len() as u64;
        }
        Ok(p)
    })?;
    Ok(Joined {
        text: map(&text)?,
        starts,
        sep: vocab,
        alphabet: vocab + 1,
        offsets: Some(map(&offsets.expect("written with offsets"))?),
        text_bytes,
    })
}
