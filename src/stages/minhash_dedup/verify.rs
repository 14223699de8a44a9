//! `verify: true`: a candidate pair is merged only when the true Jaccard similarity of the two
//! documents' shingle sets reaches the threshold, which removes LSH's false positives (pairs that share
//! a band by chance). A group of up to [`ALL_PAIRS_UP_TO`] documents gives all its pairs, a larger one
//! the pairs of its lowest document with each other member. The first documents' shingle sets are held
//! in memory, in chunks that fit `memory_mb`, and the second documents are compared as a second pass
//! streams by, so memory never holds more than one chunk of sets.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use anyhow::Result;
use openseek_udfs::minhash::{MinHasher, sorted_set_jaccard};
use openseek_udfs::string_iter;

use super::signatures::DocFacts;
use crate::progress::Progress;
use crate::stages::units::{Unit, doc_count, for_each_unit, read_unit};

/// Groups up to this size are verified pair by pair (at most 120 pairs).
pub const ALL_PAIRS_UP_TO: usize = 16;

/// The sorted, deduplicated shingle hashes of a text.
fn shingle_set(hasher: &MinHasher, text: &str) -> Vec<u64> {
    openseek_udfs::minhash::shingle_set(hasher.shingles(text))
}

/// Keeps the pairs whose true Jaccard similarity is at least `threshold`. `pairs` are (representative,
/// member), sorted and without repeats.
#[allow(clippy::too_many_arguments)]
pub fn verify_pairs(
    pairs: &[(u32, u32)],
    units: &[Unit],
    facts: &DocFacts,
    hasher: &MinHasher,
    text_column: &str,
    threshold: f64,
    memory_mb: u64,
    threads: usize,
    progress: (&Progress, &str),
) -> Result<Vec<(u32, u32)>> {
    let mut reps: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    reps.dedup(); // pairs are sorted by representative
    // A shingle set takes about 8 bytes per shingle, and a text has at most one shingle per unit: about
    // two set bytes per text byte covers English words and Chinese characters (3 bytes each).
    let budget = (memory_mb as usize) << 20;
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < reps.len() {
        let mut end = start;
        let mut bytes = 0usize;
        while end < reps.len()
            && (end == start || bytes + 2 * facts.bytes[reps[end] as usize] as usize <= budget)
        {
            bytes += 2 * facts.bytes[reps[end] as usize] as usize;
            end += 1;
        }
        chunks.push((start, end));
        start = end;
    }
    // Each chunk reads the input twice.
    let done = progress.0.phase(
        format!(
            "{}: verifying {} candidate pairs, documents read",
            progress.1,
            pairs.len()
        ),
        Some(2 * chunks.len() as u64 * doc_count(units)),
    );
    let mut verified = Vec::new();
    for (start, end) in chunks {
        let chunk: HashSet<u32> = reps[start..end].iter().copied().collect();
        let (lo, hi) = (reps[start], reps[end - 1]);
        let chunk_pairs: Vec<(u32, u32)> = pairs
            .iter()
            .copied()
            .filter(|(a, _)| *a >= lo && *a <= hi && chunk.contains(a))
            .collect();
        // Pass A: the representatives' sets.
        let sets: Mutex<HashMap<u32, Vec<u64>>> = Mutex::new(HashMap::with_capacity(chunk.len()));
        let columns = [text_column];
        for_each_unit(units, threads, |_, unit| {
            let mut doc = unit.first_doc as u32;
            for batch in read_unit(unit, Some(&columns))? {
                let batch = batch?;
                done.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                for text in string_iter(batch.column(0))? {
                    if chunk.contains(&doc) {
                        let set = shingle_set(hasher, text.unwrap_or(""));
                        sets.lock().expect("sets lock").insert(doc, set);
                    }
                    doc += 1;
                }
            }
            Ok(())
        })?;
        let sets = sets.into_inner().expect("sets lock");
        // Pass B: each member against its representatives.
        let mut by_member: HashMap<u32, Vec<u32>> = HashMap::new();
        for &(a, b) in &chunk_pairs {
            by_member.entry(b).or_default().push(a);
        }
        let found = for_each_unit(units, threads, |_, unit| {
            let mut out = Vec::new();
            let mut doc = unit.first_doc as u32;
            for batch in read_unit(unit, Some(&columns))? {
                let batch = batch?;
                done.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                for text in string_iter(batch.column(0))? {
                    if let Some(reps) = by_member.get(&doc) {
                        let set = shingle_set(hasher, text.unwrap_or(""));
                        for &r in reps {
                            if sorted_set_jaccard(&sets[&r], &set) >= threshold {
                                out.push((r, doc));
                            }
                        }
                    }
                    doc += 1;
                }
            }
            Ok(out)
        })?;
        verified.extend(found.into_iter().flatten());
    }
    verified.sort_unstable();
    Ok(verified)
}
