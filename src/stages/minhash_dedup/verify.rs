//! `verify: true`: a candidate pair is merged only when the true Jaccard similarity of the two
//! documents' shingle sets reaches the threshold, which removes LSH's false positives (pairs that share
//! a band by chance). A group of up to [`ALL_PAIRS_UP_TO`] documents gives all its pairs, a larger one
//! the pairs of its lowest document with each other member.
//!
//! Memory is bounded by `memory_mb` however many pairs there are: [`PairSpill`] writes the pairs to
//! disk in sorted runs as the groups stream by, and a DataFusion query (half the stage's memory, spilling
//! past it) gives them back sorted and distinct. They are then checked a chunk at a time: the first
//! documents' shingle sets of a chunk fit the other half of `memory_mb`, and the second documents are
//! compared as a second pass over the input streams by.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use futures::StreamExt;
use openseek_udfs::minhash::{MinHasher, ShingleUnit, sorted_set_jaccard};
use openseek_udfs::string_iter;

use super::clusters::{register_bands, spilling_session};
use super::signatures::DocFacts;
use crate::io::writer::PartWriter;
use crate::progress::Progress;
use crate::stages::union_find::UnionFind;
use crate::stages::units::{Unit, for_each_unit, read_unit};

/// Groups up to this size are verified pair by pair (at most 120 pairs).
pub const ALL_PAIRS_UP_TO: usize = 16;

/// Bytes a buffered or chunked pair takes in memory: the pair, and its copy by member in a chunk's
/// lookup (two 8-byte entries), with room for the vectors' growth.
const PAIR_BYTES: usize = 24;

/// Bytes of a document's shingle set, at most: 8 a shingle, and at most one shingle a unit, where a
/// character is at least one byte and a word (with the space or mark after it) at least two.
fn set_bytes(unit: ShingleUnit, text_bytes: u32) -> usize {
    let units = match unit {
        ShingleUnit::Word => text_bytes as usize / 2 + 1,
        _ => text_bytes as usize,
    };
    8 * units + 64
}

fn pairs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::UInt32, false),
        Field::new("b", DataType::UInt32, false),
    ]))
}

/// The candidate pairs of the groups, buffered up to a budget and written to disk in sorted runs.
pub struct PairSpill {
    dir: PathBuf,
    buffer: Vec<(u32, u32)>,
    capacity: usize,
    runs: Vec<PathBuf>,
}

impl PairSpill {
    /// Pairs buffered in `budget_bytes` at most, runs written under `dir`.
    pub fn new(dir: &Path, budget_bytes: usize) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            buffer: Vec::new(),
            capacity: (budget_bytes / PAIR_BYTES).max(1024),
            runs: Vec::new(),
        })
    }

    /// The pairs of one candidate group (`rep` is its lowest document; `members` includes it).
    pub fn add_group(&mut self, rep: u32, members: &[u32]) -> Result<()> {
        if members.len() <= ALL_PAIRS_UP_TO {
            // Every pair of a small group: a true pair must not depend on which document happens to
            // be the group's lowest.
            for (i, &a) in members.iter().enumerate() {
                for &b in &members[i + 1..] {
                    self.push((a.min(b), a.max(b)))?;
                }
            }
        } else {
            for &m in members.iter().filter(|&&m| m != rep) {
                self.push((rep, m))?;
            }
        }
        Ok(())
    }

    fn push(&mut self, pair: (u32, u32)) -> Result<()> {
        self.buffer.push(pair);
        if self.buffer.len() >= self.capacity {
            self.write_run()?;
        }
        Ok(())
    }

    fn write_run(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.buffer.sort_unstable();
        self.buffer.dedup();
        let path = self
            .dir
            .join(format!("pairs-{:05}.parquet", self.runs.len()));
        let mut w = PartWriter::create_uncompressed(&path, &pairs_schema())?;
        for chunk in self.buffer.chunks(1 << 16) {
            let a: UInt32Array = chunk.iter().map(|p| p.0).collect();
            let b: UInt32Array = chunk.iter().map(|p| p.1).collect();
            w.write(&RecordBatch::try_new(
                pairs_schema(),
                vec![Arc::new(a), Arc::new(b)],
            )?)?;
        }
        w.finish()?;
        self.runs.push(path);
        self.buffer.clear();
        Ok(())
    }

    /// Writes what is buffered; the runs.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.write_run()?;
        Ok(self.runs)
    }
}

/// What verification found.
pub struct Verified {
    /// Distinct candidate pairs checked.
    pub candidates: u64,
    /// Those at or above the threshold, merged as they were found.
    pub merged: u64,
}

/// Checks every distinct pair of `runs` (from [`PairSpill`]) and merges in `uf` those whose true
/// Jaccard similarity is at least `threshold`, a chunk at a time (nothing grows with the pairs found). The pairs are sorted in `sort_mb` of memory (spilling past it),
/// and a chunk's shingle sets and pairs take at most `chunk_bytes` (the stage gives each half of its
/// `memory_mb`).
#[allow(clippy::too_many_arguments)]
pub async fn verify_pairs(
    runs: &[PathBuf],
    spill_dir: &Path,
    units: &[Unit],
    facts: &DocFacts,
    hasher: &MinHasher,
    threshold: f64,
    (sort_mb, chunk_bytes): (u64, usize),
    threads: usize,
    progress: (&Progress, &str),
    uf: &mut UnionFind,
) -> Result<Verified> {
    let mut verified = Verified {
        candidates: 0,
        merged: 0,
    };
    let unit = hasher.config().unit;
    if runs.is_empty() {
        return Ok(verified);
    }
    let ctx = spilling_session(sort_mb, spill_dir, threads)?;
    register_bands(&ctx, "pairs", runs).await?;
    let mut stream = ctx
        .sql("SELECT a, b FROM pairs GROUP BY a, b ORDER BY a, b")
        .await?
        .execute_stream()
        .await?;
    let done = progress.0.phase(
        format!("{}: verifying candidate pairs, documents read", progress.1),
        None,
    );
    let mut chunk = Chunk::default();
    while let Some(batch) = stream.next().await {
        let batch = batch.context("sorting the candidate pairs")?;
        let (a, b) = (
            batch.column(0).as_primitive::<UInt32Type>(),
            batch.column(1).as_primitive::<UInt32Type>(),
        );
        for (a, b) in a.values().iter().zip(b.values()) {
            verified.candidates += 1;
            // A representative's set is held for its whole chunk: a chunk ends only between
            // representatives, and holds at least one.
            let new_rep = chunk.pairs.last().is_none_or(|p| p.0 != *a);
            let rep_bytes = if new_rep {
                set_bytes(unit, facts.bytes[*a as usize])
            } else {
                0
            };
            if !chunk.pairs.is_empty()
                && (chunk.bytes + rep_bytes + PAIR_BYTES > chunk_bytes)
                && new_rep
            {
                verified.merged += chunk.verify(units, hasher, threshold, threads, &done, uf)?;
                chunk = Chunk::default();
            }
            chunk.bytes += rep_bytes + PAIR_BYTES;
            chunk.pairs.push((*a, *b));
        }
    }
    if !chunk.pairs.is_empty() {
        verified.merged += chunk.verify(units, hasher, threshold, threads, &done, uf)?;
    }
    Ok(verified)
}

/// Pairs of consecutive representatives, sorted, and the memory their check will take.
#[derive(Default)]
struct Chunk {
    pairs: Vec<(u32, u32)>,
    bytes: usize,
}

impl Chunk {
    /// Checks the chunk's pairs and merges those at or above `threshold` in `uf`; how many. Two
    /// passes over the input: the representatives' shingle sets, then each member against its
    /// representatives.
    fn verify(
        &self,
        units: &[Unit],
        hasher: &MinHasher,
        threshold: f64,
        threads: usize,
        done: &AtomicU64,
        uf: &mut UnionFind,
    ) -> Result<u64> {
        // Sorted vectors looked up by binary search: 8 bytes a pair, where maps of vectors would take
        // several times that.
        let mut reps: Vec<u32> = self.pairs.iter().map(|p| p.0).collect();
        reps.dedup(); // the pairs are sorted by representative
        let mut by_member: Vec<(u32, u32)> = self.pairs.iter().map(|&(a, b)| (b, a)).collect();
        by_member.sort_unstable();
        let found = tokio::task::block_in_place(|| -> Result<Vec<(u32, u32)>> {
            // Pass A: the representatives' sets.
            let sets: HashMap<u32, Vec<u64>> =
                each_text(units, threads, done, |doc, text, out| {
                    if reps.binary_search(&doc).is_ok() {
                        out.push((doc, shingle_set(hasher, text)));
                    }
                })?
                .into_iter()
                .collect();
            // Pass B: each member against its representatives.
            each_text(units, threads, done, |doc, text, out| {
                let first = by_member.partition_point(|p| p.0 < doc);
                let mut set: Option<Vec<u64>> = None;
                for &(_, r) in by_member[first..].iter().take_while(|p| p.0 == doc) {
                    let set = set.get_or_insert_with(|| shingle_set(hasher, text));
                    if sorted_set_jaccard(&sets[&r], set) >= threshold {
                        out.push((r.min(doc), r.max(doc)));
                    }
                }
            })
        })?;
        for &(a, b) in &found {
            uf.union(a, b);
        }
        Ok(found.len() as u64)
    }
}

/// Calls `visit(doc, text, out)` for every document of the units (a NULL text as empty), on `threads`
/// threads, and returns what the calls pushed to `out`.
fn each_text<T: Send>(
    units: &[Unit],
    threads: usize,
    done: &AtomicU64,
    visit: impl Fn(u32, &str, &mut Vec<T>) + Sync,
) -> Result<Vec<T>> {
    let per_unit = for_each_unit(units, threads, |_, unit| {
        let mut out = Vec::new();
        let mut doc = unit.first_doc as u32;
        for batch in read_unit(unit, Some(&["text"]))? {
            let batch = batch?;
            done.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            for text in string_iter(batch.column(0))? {
                visit(doc, text.unwrap_or(""), &mut out);
                doc += 1;
            }
        }
        Ok(out)
    })?;
    Ok(per_unit.into_iter().flatten().collect())
}

/// The sorted, deduplicated shingle hashes of a text.
fn shingle_set(hasher: &MinHasher, text: &str) -> Vec<u64> {
    openseek_udfs::minhash::shingle_set(hasher.shingles(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openseek_udfs::minhash::{MinhashConfig, ShingleUnit};

    /// Real documents (the bundled English sample) and, for each of the first 12, two copies with a
    /// paragraph or a sentence cut out: pairs above and below any threshold.
    fn docs_with_variants() -> Vec<String> {
        let texts: Vec<String> = openseek_testkit::docs::parquet_docs(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/en"),
        )
        .into_iter()
        .map(|(_, t)| t)
        .collect();
        let mut docs: Vec<String> = texts.iter().take(40).cloned().collect();
        for t in texts.iter().take(12) {
            let cut = t.len() / 3;
            let cut = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap();
            let resume = (cut + t.len() / 5..t.len())
                .find(|&i| t.is_char_boundary(i))
                .unwrap_or(t.len());
            docs.push(t[..cut].to_string() + &t[resume..]);
            let half = (t.len() / 2..t.len())
                .find(|&i| t.is_char_boundary(i))
                .unwrap();
            docs.push(t[half..].to_string());
        }
        docs
    }

    /// However small the memory, verification checks every distinct pair and keeps exactly those at or
    /// above the threshold: in one chunk or in many, it equals the true Jaccard of every pair.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verification_in_small_chunks_equals_every_pair_checked() {
        let dir = tempfile::tempdir().unwrap();
        let docs = docs_with_variants();
        let input = dir.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        // Four checkpoint parts: units in several files, documents numbered across them.
        for (k, part) in docs.chunks(docs.len().div_ceil(4)).enumerate() {
            let text: arrow::array::ArrayRef =
                Arc::new(arrow::array::StringArray::from_iter_values(part.iter()));
            let batch = RecordBatch::try_from_iter(vec![("text", text)]).unwrap();
            let path = input.join(format!("part-{k}.parquet"));
            let mut w = PartWriter::create_checkpoint(&path, &batch.schema()).unwrap();
            w.write(&batch).unwrap();
            w.finish().unwrap();
        }
        let units = crate::stages::units::plan_units(&input).unwrap();
        assert!(units.len() > 1, "several row groups");
        let hasher = MinHasher::new(MinhashConfig {
            unit: ShingleUnit::Word,
            ..MinhashConfig::default()
        })
        .unwrap();
        let facts = DocFacts {
            bytes: docs.iter().map(|d| d.len() as u32).collect(),
            priority: vec![],
            too_short: vec![false; docs.len()],
            order: vec![],
        };
        // Every pair as a candidate: one group of all documents, and the small groups of the variants.
        let mut spill = PairSpill::new(&dir.path().join("pairs"), 0).unwrap();
        let all: Vec<u32> = (0..docs.len() as u32).collect();
        for a in 0..docs.len() as u32 {
            spill.add_group(a, &all[a as usize..]).unwrap();
        }
        let runs = spill.finish().unwrap();
        let sets: Vec<Vec<u64>> = docs.iter().map(|d| shingle_set(&hasher, d)).collect();
        let threshold = 0.6;
        let mut expected = Vec::new();
        for a in 0..docs.len() {
            for b in a + 1..docs.len() {
                if sorted_set_jaccard(&sets[a], &sets[b]) >= threshold {
                    expected.push((a as u32, b as u32));
                }
            }
        }
        assert!(expected.len() >= 12, "{expected:?}");
        let progress = Progress::default();
        let total: usize = docs.iter().map(String::len).sum();
        // The partition the true pairs make: each document's lowest fellow.
        let partition = |uf: &mut UnionFind| -> Vec<u32> {
            let mut lowest: HashMap<u32, u32> = HashMap::new();
            (0..docs.len() as u32)
                .map(|d| *lowest.entry(uf.find(d)).or_insert(d))
                .collect()
        };
        let mut truth = UnionFind::new(docs.len());
        for &(a, b) in &expected {
            truth.union(a, b);
        }
        let truth = partition(&mut truth);
        // One chunk, and chunks of about a fifth of the sets' bytes (word sets: 4 bytes a text byte).
        for chunk_bytes in [1 << 30, 4 * total / 5] {
            let mut uf = UnionFind::new(docs.len());
            let v = verify_pairs(
                &runs,
                &dir.path().join("spill"),
                &units,
                &facts,
                &hasher,
                threshold,
                (32, chunk_bytes),
                2,
                (&progress, "test"),
                &mut uf,
            )
            .await
            .unwrap();
            let n = docs.len() as u64;
            assert_eq!(
                v.candidates,
                n * (n - 1) / 2,
                "chunks of {chunk_bytes} bytes"
            );
            assert_eq!(
                v.merged,
                expected.len() as u64,
                "chunks of {chunk_bytes} bytes"
            );
            assert_eq!(partition(&mut uf), truth, "chunks of {chunk_bytes} bytes");
        }
    }

    /// Pairs past the budget go to sorted runs on disk; what comes back is every distinct pair.
    #[test]
    fn pairs_spill_in_sorted_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = PairSpill::new(&dir.path().join("pairs"), 0).unwrap(); // 1024 pairs a run
        let members: Vec<u32> = (0..40).collect();
        spill.add_group(0, &members).unwrap(); // large: 39 pairs with 0
        for g in 0..200u32 {
            let small = [g * 3 + 100, g * 3 + 101, g * 3 + 102];
            spill.add_group(small[0], &small).unwrap(); // 3 pairs
            spill.add_group(small[0], &small).unwrap(); // the same again
        }
        let runs = spill.finish().unwrap();
        assert!(runs.len() >= 2, "{runs:?}");
        let mut all = Vec::new();
        for r in &runs {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(r).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            let mut run = Vec::new();
            for b in reader {
                let b = b.unwrap();
                let (a, c) = (
                    b.column(0).as_primitive::<UInt32Type>(),
                    b.column(1).as_primitive::<UInt32Type>(),
                );
                run.extend(a.values().iter().copied().zip(c.values().iter().copied()));
            }
            assert!(
                run.windows(2).all(|w| w[0] < w[1]),
                "a run is sorted and distinct"
            );
            all.extend(run);
        }
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 39 + 200 * 3);
    }
}
