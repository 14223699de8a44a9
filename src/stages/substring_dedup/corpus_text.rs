//! Pass 1 of `substring_dedup`: the texts of the input, in document order, joined into one file that
//! the later passes map rather than load. ExactSubstr leaves this to its users ("concatenate your files
//! first"); here it is the stage's first pass, over any input a pipeline reads.
//!
//! Bytes: each document's UTF-8 then 0xFF, a byte UTF-8 never holds. Tokens: each document's ids then
//! one id past the vocabulary, and beside them each token's byte range in its document, so that spans
//! found in tokens are removed as bytes.
//!
//! Documents are joined in corpus order, the order of the pipeline's input (sources, files by name,
//! rows), by the position every row carries from its reader, so that `keep_first` keeps what came
//! first in the input. The stage's input (a checkpoint written by parallel sinks) may hold them in
//! another order: they are read in its order, on all cores, and then copied into corpus order.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, UInt64Type};
use tokenizers::Tokenizer;

use super::suffix_array::Symbol;
use crate::io::table::POS_COL;
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
    /// The input's number of each joined document, when the two orders differ.
    pub input_doc: Option<Vec<u32>>,
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

/// What [`join`] wrote.
struct Written {
    text: PathBuf,
    offsets: Option<PathBuf>,
    starts: Vec<u64>,
    text_bytes: u64,
    input_doc: Option<Vec<u32>>,
}

/// Writes the pieces of the units in order, `threads` units at a time.
fn join<T: Symbol>(
    units: &[Unit],
    dir: &Path,
    threads: usize,
    done: &AtomicU64,
    with_offsets: bool,
    piece: impl Fn(&[&str]) -> Result<Piece<T>> + Sync,
) -> Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text_path = dir.join("input-order.bin");
    let offsets_path = dir.join("input-order-offsets.bin");
    let with_positions = units
        .first()
        .map(|u| checkpoint_has(u, POS_COL))
        .transpose()?
        .unwrap_or(false);
    let mut positions: Vec<u64> = Vec::new();
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
        let columns: &[&str] = if with_positions {
            &["text", POS_COL]
        } else {
            &["text"]
        };
        let pieces = for_each_unit(window, threads, |_, unit| {
            let mut texts: Vec<String> = Vec::new();
            let mut unit_positions: Vec<u64> = Vec::new();
            for batch in read_unit(unit, Some(columns))? {
                let batch = batch?;
                let column = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
                let column = column.as_string::<i32>();
                // A NULL text is an empty document, as the output pass reads it.
                texts.extend((0..column.len()).map(|i| {
                    if column.is_null(i) {
                        ""
                    } else {
                        column.value(i)
                    }
                    .to_string()
                }));
                if with_positions {
                    let p = batch
                        .column(1)
                        .as_primitive_opt::<UInt64Type>()
                        .with_context(|| {
                            format!("{POS_COL} is not UInt64 in {}", unit.file.display())
                        })?;
                    unit_positions.extend(p.values().iter().copied());
                }
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let p = piece(&refs).with_context(|| format!("{}", unit.file.display()))?;
            done.fetch_add(refs.len() as u64, Ordering::Relaxed);
            Ok((p, unit_positions))
        })?;
        for (p, unit_positions) in pieces {
            positions.extend(unit_positions);
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
    drop(text_out);
    if let Some(mut o) = offsets_out {
        o.flush()?;
    }
    let written = Written {
        text: text_path,
        offsets: with_offsets.then_some(offsets_path),
        starts,
        text_bytes,
        input_doc: None,
    };
    if positions.is_sorted() {
        return Ok(written);
    }
    into_corpus_order::<T>(written, &positions, dir)
}

/// Whether the checkpoint file of `unit` has column `name`.
fn checkpoint_has(unit: &Unit, name: &str) -> Result<bool> {
    let file = std::fs::File::open(&unit.file)
        .with_context(|| format!("opening {}", unit.file.display()))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading {}", unit.file.display()))?;
    Ok(builder.schema().index_of(name).is_ok())
}

/// Copies the documents of `written` (in the input's order) into the order of `positions`.
fn into_corpus_order<T: Symbol>(
    written: Written,
    positions: &[u64],
    dir: &Path,
) -> Result<Written> {
    let mut order: Vec<u32> = (0..positions.len() as u32).collect();
    order.sort_by_key(|&d| positions[d as usize]);
    let from = map(&written.text)?;
    let from: &[T] = cast(&from);
    let old = &written.starts;
    let mut starts = Vec::with_capacity(old.len());
    let text_path = dir.join("text.bin");
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&text_path)?);
    let mut at = 0u64;
    for &d in &order {
        let piece = &from[old[d as usize] as usize..old[d as usize + 1] as usize];
        out.write_all(as_bytes(piece))?;
        starts.push(at);
        at += piece.len() as u64;
    }
    starts.push(at);
    out.flush()?;
    let offsets = match &written.offsets {
        Some(path) => {
            let from = map(path)?;
            let from: &[u32] = cast(&from);
            let offsets_path = dir.join("offsets.bin");
            let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&offsets_path)?);
            for &d in &order {
                let (a, b) = (old[d as usize] as usize, old[d as usize + 1] as usize);
                out.write_all(as_bytes(&from[2 * a..2 * b]))?;
            }
            out.flush()?;
            let _ = std::fs::remove_file(path);
            Some(offsets_path)
        }
        None => None,
    };
    let _ = std::fs::remove_file(&written.text);
    Ok(Written {
        text: text_path,
        offsets,
        starts,
        text_bytes: written.text_bytes,
        input_doc: Some(order),
    })
}

/// The documents' bytes, each followed by 0xFF.
pub fn join_bytes(
    units: &[Unit],
    dir: &Path,
    threads: usize,
    done: &AtomicU64,
) -> Result<Joined<u8>> {
    let written = join(units, dir, threads, done, false, |texts| {
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
        text: map(&written.text)?,
        starts: written.starts,
        sep: 0xFF,
        alphabet: 256,
        offsets: None,
        text_bytes: written.text_bytes,
        input_doc: written.input_doc,
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
    // One past the largest id: added tokens may leave gaps, so the vocabulary's size is not enough.
    let vocab = tokenizer
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |&m| m + 1)
        .max(tokenizer.get_vocab_size(true) as u32);
    let encoder: Encoder = encoder(tokenizer)?;
    let written = join(units, dir, threads, done, true, |texts| {
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
        text: map(&written.text)?,
        starts: written.starts,
        sep: vocab,
        alphabet: vocab + 1,
        offsets: Some(map(written
            .offsets
            .as_ref()
            .expect("written with offsets"))?),
        text_bytes: written.text_bytes,
        input_doc: written.input_doc,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{RecordBatch, StringArray, UInt64Array};
    use arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::stages::units::plan_units;

    /// A checkpoint of two parts whose rows are not in input order (as parallel sinks write them):
    /// the joined text is in the order of the readers' positions.
    #[test]
    fn documents_are_joined_in_corpus_order() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new(POS_COL, DataType::UInt64, false),
            Field::new("id", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, true),
        ]));
        for (name, pos, texts) in [
            ("part-0.parquet", [20u64, 21], [Some("c"), None]),
            ("part-1.parquet", [0, 1], [Some("a"), Some("bb")]),
        ] {
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(UInt64Array::from(pos.to_vec())),
                    Arc::new(StringArray::from(vec!["x", "y"])),
                    Arc::new(StringArray::from(texts.to_vec())),
                ],
            )
            .unwrap();
            let f = std::fs::File::create(dir.path().join(name)).unwrap();
            let mut w = parquet::arrow::ArrowWriter::try_new(f, Arc::clone(&schema), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        }
        let units = plan_units(dir.path()).unwrap();
        let joined = join_bytes(&units, &dir.path().join("work"), 2, &AtomicU64::new(0)).unwrap();
        assert_eq!(joined.text(), b"a\xffbb\xffc\xff\xff");
        assert_eq!(joined.starts, vec![0, 2, 5, 7, 8]);
        // Joined document i is the input's document input_doc[i].
        assert_eq!(joined.input_doc, Some(vec![2, 3, 0, 1]));
        assert_eq!(joined.text_bytes, 4);
    }
}
