//! Megatron indexed datasets (`MMIDIDX` version 1), the token shards that Megatron-LM and FlagScale
//! train on: the engine's `tokenize` stage writes them, `openseek shards` inspects them, and the
//! trainer reads them.
//!
//! A prefix `P` is `P.bin` (the tokens of all sequences, concatenated) and `P.idx` (the layout in
//! [`index`]), plus our sidecar `P.json` ([`Sidecar`]). Writers are atomic ([`ShardWriter`]); the
//! reader ([`IndexedDataset`]) validates every offset against the file sizes when it opens a prefix,
//! so a truncated or corrupt shard is a clear error, never an out-of-bounds read.

mod dtype;
mod error;
pub mod index;
mod reader;
mod sidecar;
mod writer;

use std::path::{Path, PathBuf};

pub use dtype::DType;
pub use error::{Result, ShardError};
pub use reader::IndexedDataset;
pub use sidecar::{Sidecar, TokenizerInfo};
pub use writer::{Provenance, ShardSetWriter, ShardWriter};

fn with_extension(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// `PREFIX.bin` (the prefix may contain dots, so the extension is appended, not replaced).
pub fn bin_path(prefix: &Path) -> PathBuf {
    with_extension(prefix, "bin")
}

pub fn idx_path(prefix: &Path) -> PathBuf {
    with_extension(prefix, "idx")
}

pub fn json_path(prefix: &Path) -> PathBuf {
    with_extension(prefix, "json")
}

/// The complete prefixes under `dir` (those with a sidecar), sorted.
pub fn prefixes_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(ShardError::io(dir))? {
        let path = entry.map_err(ShardError::io(dir))?.path();
        if let Some(name) = path.to_str().and_then(|p| p.strip_suffix(".json"))
            && bin_path(Path::new(name)).exists()
            && idx_path(Path::new(name)).exists()
        {
            out.push(PathBuf::from(name));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DESIGN.md §6's worked example: sequences [151849, 9707, 151850] and [151849, 1, 2, 151850]
    /// as int32 give a 28-byte `.bin` and an 82-byte `.idx`, byte for byte as below.
    #[test]
    fn the_worked_example_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("example");
        let mut w = ShardWriter::create(&prefix, DType::I32).unwrap();
        w.add_document(&[151849, 9707, 151850]).unwrap();
        w.add_document(&[151849, 1, 2, 151850]).unwrap();
        let sidecar = w.finish(&Provenance::default()).unwrap();
        assert_eq!((sidecar.documents, sidecar.tokens), (2, 7));

        let mut bin = Vec::new();
        for t in [151849i32, 9707, 151850, 151849, 1, 2, 151850] {
            bin.extend_from_slice(&t.to_le_bytes());
        }
        let mut idx = b"MMIDIDX\x00\x00".to_vec();
        idx.extend_from_slice(&1u64.to_le_bytes()); // version
        idx.push(4); // int32
        idx.extend_from_slice(&2u64.to_le_bytes()); // sequences
        idx.extend_from_slice(&3u64.to_le_bytes()); // document indices
        idx.extend_from_slice(&3i32.to_le_bytes());
        idx.extend_from_slice(&4i32.to_le_bytes());
        idx.extend_from_slice(&0i64.to_le_bytes());
        idx.extend_from_slice(&12i64.to_le_bytes());
        for d in [0i64, 1, 2] {
            idx.extend_from_slice(&d.to_le_bytes());
        }
        assert_eq!(bin.len(), 28);
        assert_eq!(idx.len(), 82);
        assert_eq!(std::fs::read(bin_path(&prefix)).unwrap(), bin);
        assert_eq!(std::fs::read(idx_path(&prefix)).unwrap(), idx);

        let ds = IndexedDataset::open(&prefix).unwrap();
        assert_eq!((ds.len(), ds.documents(), ds.total_tokens()), (2, 2, 7));
        assert_eq!(ds.sequence(1), vec![151849, 1, 2, 151850]);
        let mut part = Vec::new();
        ds.read(1, 1, 2, &mut part);
        assert_eq!(part, vec![1, 2]);
        assert_eq!(ds.document(1), 1..2);
        assert_eq!(prefixes_in(dir.path()).unwrap(), vec![prefix]);
    }

    #[test]
    fn nothing_is_in_place_until_finish() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("p");
        let mut w = ShardWriter::create(&prefix, DType::U16).unwrap();
        w.add_document(&[1, 2, 3]).unwrap();
        assert!(!bin_path(&prefix).exists() && !idx_path(&prefix).exists());
        assert!(prefixes_in(dir.path()).unwrap().is_empty());
        assert!(tmp_files(dir.path()) > 0);
        drop(w); // an error before finish: no temporaries left behind either
        assert!(prefixes_in(dir.path()).unwrap().is_empty());
        assert_eq!(tmp_files(dir.path()), 0);
    }

    fn tmp_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count()
    }

    /// Replacing a prefix: the new files take its place whole.
    #[test]
    fn a_prefix_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("p");
        for tokens in [[1u32, 2, 3], [7, 8, 9]] {
            let mut w = ShardWriter::create(&prefix, DType::U16).unwrap();
            w.add_document(&tokens).unwrap();
            w.add_document(&tokens[..1]).unwrap();
            w.finish(&Provenance::default()).unwrap();
        }
        let ds = IndexedDataset::open(&prefix).unwrap();
        assert_eq!(ds.sequence(0), vec![7, 8, 9]);
        assert_eq!(tmp_files(dir.path()), 0);
    }

    #[test]
    fn a_token_that_does_not_fit_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::create(dir.path().join("p"), DType::U16).unwrap();
        let e = w.add_document(&[1, 70_000]).unwrap_err().to_string();
        assert!(e.contains("70000") && e.contains("uint16"), "{e}");
        assert!(ShardWriter::create(dir.path().join("q"), DType::F32).is_err());
    }

    #[test]
    fn sets_split_at_the_size_without_splitting_documents() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = ShardSetWriter::new(
            dir.path(),
            "web",
            DType::U16,
            Some(10),
            Provenance::default(),
        );
        for d in 0..5u32 {
            set.add_document(&[d, d, d]).unwrap(); // 6 bytes each
        }
        let written = set.finish().unwrap();
        let docs: Vec<u64> = written.iter().map(|(_, s)| s.documents).collect();
        assert_eq!(docs, vec![2, 2, 1]);
        let ds = IndexedDataset::open(&written[2].0).unwrap();
        assert_eq!(ds.sequence(0), vec![4, 4, 4]);
        assert!(written[0].0.ends_with("web-00000"));
    }

    #[test]
    fn truncated_or_mismatched_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("p");
        let mut w = ShardWriter::create(&prefix, DType::I32).unwrap();
        w.add_document(&[5, 6, 7]).unwrap();
        w.finish(&Provenance::default()).unwrap();
        let idx = std::fs::read(idx_path(&prefix)).unwrap();
        std::fs::write(idx_path(&prefix), &idx[..idx.len() - 3]).unwrap();
        let e = IndexedDataset::open(&prefix).err().unwrap().to_string();
        assert!(e.contains("p.idx") && e.contains("truncated"), "{e}");
        std::fs::write(idx_path(&prefix), &idx).unwrap();
        let bin = std::fs::read(bin_path(&prefix)).unwrap();
        std::fs::write(bin_path(&prefix), &bin[..8]).unwrap();
        let e = IndexedDataset::open(&prefix).err().unwrap().to_string();
        assert!(e.contains("12 bytes of .bin, which has 8"), "{e}");
        std::fs::remove_file(bin_path(&prefix)).unwrap();
        let e = IndexedDataset::open(&prefix).err().unwrap().to_string();
        assert!(e.contains("p.bin"), "{e}");
    }

    /// Random corruption of a valid shard (bytes flipped, files cut or extended) never panics the
    /// reader: it either refuses the prefix or every read through it stays inside the files.
    #[test]
    fn random_corruption_never_panics_or_reads_out_of_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("p");
        let mut w = ShardWriter::create(&prefix, DType::U16).unwrap();
        for d in 0..20u32 {
            let doc: Vec<u32> = (0..(d % 7)).map(|t| t * 100 + d).collect();
            w.add_document(&doc).unwrap();
        }
        w.finish(&Provenance::default()).unwrap();
        let (idx0, bin0) = (
            std::fs::read(idx_path(&prefix)).unwrap(),
            std::fs::read(bin_path(&prefix)).unwrap(),
        );
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut refused, mut accepted) = (0, 0);
        for _ in 0..3000 {
            let (mut idx, mut bin) = (idx0.clone(), bin0.clone());
            for _ in 0..1 + next() % 4 {
                let target = if next() % 4 == 0 { &mut bin } else { &mut idx };
                match next() % 5 {
                    0 if !target.is_empty() => {
                        let cut = (next() % target.len() as u64) as usize;
                        target.truncate(cut);
                    }
                    1 => target.extend((0..1 + next() % 16).map(|_| next() as u8)),
                    _ if !target.is_empty() => {
                        let at = (next() % target.len() as u64) as usize;
                        target[at] = next() as u8;
                    }
                    _ => {}
                }
            }
            std::fs::write(idx_path(&prefix), &idx).unwrap();
            std::fs::write(bin_path(&prefix), &bin).unwrap();
            match IndexedDataset::open(&prefix) {
                Err(e) => {
                    assert!(e.to_string().contains("p."), "{e}");
                    refused += 1;
                }
                Ok(ds) => {
                    accepted += 1;
                    for i in 0..ds.len() {
                        let _ = ds.sequence(i);
                    }
                    for d in 0..ds.documents() {
                        let r = ds.document(d);
                        assert!(r.start <= r.end && r.end <= ds.len());
                    }
                }
            }
        }
        assert!(refused > 2000, "{refused} refused, {accepted} accepted");
    }
}
