//! How well `minhash_dedup` finds near-duplicates, by its settings: precision, recall and F1 against the
//! exact Jaccard similarity of every pair, and the share of unique documents it wrongly removes.
//!
//!     cargo bench --bench minhash_quality [-- N]      (N originals per language, default 1500)
//!
//! The held-out set: N real documents of each language of the shared corpus (`OPENSEEK_CORPUS`), 1 to
//! 8 KB, taken at other positions than the tests take theirs, each followed (after all originals) by
//! one variant at a random target Jaccard in [0.05, 1] (the tests' generator,
//! `openseek_testkit::near_dup`: substitutions, insertions, deletions, reordered paragraphs, added
//! header and footer). Nothing is filtered: the corpus's own near-duplicates are in it too. The truth
//! is the exact Jaccard of the shingle sets (the stage's unit, 5-grams, its normalisation) of every
//! pair: a document should go when an earlier one is at least τ similar (`keep: first`); a document
//! with no pair at τ is unique. Each setting runs the real stage through `run_pipeline`; its wall
//! time is printed beside its scores.

use std::path::Path;
use std::time::Instant;

use openseek::context::Engine;
use openseek::pipeline::{RunOptions, run_pipeline};
use openseek_testkit::docs::{corpus_en, corpus_zh, read_parquet_dir, strings, write_docs};
use openseek_testkit::near_dup::{EDITS, Rng, split_units, variant};
use openseek_udfs::minhash::{
    MinHasher, MinhashConfig, ShingleUnit, shingle_set, sorted_set_jaccard,
};
use rayon::prelude::*;

/// The settings compared: the stage's options as YAML.
const SETTINGS: &[&str] = &[
    "verify: false",
    "verify: true, threshold: 0.7",
    "verify: true, threshold: 0.8",
];
/// Similarity at which two documents count as near-duplicates in the truth.
const TRUTH: &[f64] = &[0.7, 0.8];

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| a.parse().expect("N: a number"))
        .unwrap_or(1500);
    let corpus = openseek_testkit::corpus_dir();
    assert!(
        corpus.join("en").is_dir(),
        "no corpus at {} (set OPENSEEK_CORPUS)",
        corpus.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| language | setting | truth τ | should go | removed | precision | recall | F1 | unique wrongly removed | seconds |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (lang, cjk) in [("en", false), ("zh", true)] {
        let docs = held_out(&corpus, lang, cjk, n);
        let unit = if cjk {
            ShingleUnit::Char
        } else {
            ShingleUnit::Word
        };
        let similar = similar_pairs(&docs, unit, TRUTH[0]);
        let dir = tempfile::tempdir().unwrap();
        write_docs(&dir.path().join("in/docs.parquet"), &docs);
        for setting in SETTINGS {
            let out = dir.path().join("out");
            let _ = std::fs::remove_dir_all(&out);
            let unit_name = if cjk { "char" } else { "word" };
            let yaml = format!(
                "name: quality\ninput: {{path: {}}}\nstages:\n  - minhash_dedup: {{unit: {unit_name}, {setting}}}\n",
                dir.path().join("in").display()
            );
            let pipeline = dir.path().join("pipeline.yaml");
            std::fs::write(&pipeline, yaml).unwrap();
            let started = Instant::now();
            runtime
                .block_on(run_pipeline(
                    &Engine::new(None),
                    &pipeline,
                    &RunOptions {
                        output: Some(out.clone()),
                        print_summary: false,
                        ..Default::default()
                    },
                ))
                .unwrap();
            let seconds = started.elapsed().as_secs_f64();
            let removed = removed_ids(&out.join("rejects"));
            for &tau in TRUTH {
                let s = score(&docs, &similar, tau, &removed);
                println!(
                    "| {lang} | {setting} | {tau} | {} | {} | {:.4} | {:.4} | {:.4} | {} of {} ({:.2}%) | {seconds:.1} |",
                    s.should,
                    s.removed,
                    s.precision,
                    s.recall,
                    s.f1,
                    s.unique_removed,
                    s.unique,
                    100.0 * s.unique_removed as f64 / s.unique.max(1) as f64
                );
            }
        }
    }
}

/// `n` originals of 1 to 8 KB (cut at 8 KB) from every third document from the 2nd on (the tests take
/// theirs from the 1st), then one variant of each.
fn held_out(corpus: &Path, lang: &str, cjk: bool, n: usize) -> Vec<(String, String)> {
    let all: Vec<(String, String)> = match lang {
        "en" => corpus_en(corpus),
        _ => corpus_zh(corpus)
            .into_iter()
            .map(|(i, t, _)| (i, t))
            .collect(),
    };
    let mut originals: Vec<(String, String)> = Vec::new();
    for (id, text) in all.iter().skip(1).step_by(3) {
        if originals.len() == n {
            break;
        }
        let mut cut = text.len().min(8000);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let t = &text[..cut];
        if t.len() < 1000 || split_units(t, cjk).len() < 100 {
            continue;
        }
        originals.push((id.clone(), t.to_string()));
    }
    assert_eq!(
        originals.len(),
        n,
        "{lang}: not enough documents of 1 to 8 KB"
    );
    let mut rng = Rng(0x00C0_FFEE ^ n as u64);
    let mut variants = Vec::with_capacity(n);
    for (i, (id, text)) in originals.iter().enumerate() {
        let donor = &originals[(i + 7) % n].1;
        let edit = EDITS[i % EDITS.len()];
        let target = 0.05 + 0.95 * rng.unit();
        variants.push((
            format!("variant-of-{id}"),
            variant(text, donor, cjk, edit, target, &mut rng),
        ));
    }
    originals.extend(variants);
    originals
}

/// Every pair (a < b) whose exact Jaccard is at least `floor`, with it: all pairs compared, on all
/// cores, skipping those whose set sizes alone rule it out (J ≤ min/max).
fn similar_pairs(
    docs: &[(String, String)],
    unit: ShingleUnit,
    floor: f64,
) -> Vec<(usize, usize, f64)> {
    let hasher = MinHasher::new(MinhashConfig {
        unit,
        ..MinhashConfig::default()
    })
    .unwrap();
    let sets: Vec<Vec<u64>> = docs
        .par_iter()
        .map(|(_, t)| shingle_set(hasher.shingles(t)))
        .collect();
    (0..docs.len())
        .into_par_iter()
        .flat_map_iter(|a| {
            let sets = &sets;
            (a + 1..docs.len()).filter_map(move |b| {
                let (x, y) = (sets[a].len(), sets[b].len());
                if x == 0 || y == 0 || (x.min(y) as f64) < floor * x.max(y) as f64 {
                    return None;
                }
                let j = sorted_set_jaccard(&sets[a], &sets[b]);
                (j >= floor).then_some((a, b, j))
            })
        })
        .collect()
}

/// The ids the run removed as near-duplicates.
fn removed_ids(rejects: &Path) -> std::collections::HashSet<String> {
    let batches = read_parquet_dir(rejects);
    strings(&batches, "id")
        .into_iter()
        .zip(strings(&batches, "reason"))
        .filter(|(_, reason)| reason.as_deref() == Some("near_duplicate"))
        .map(|(id, _)| id.unwrap())
        .collect()
}

struct Score {
    should: usize,
    removed: usize,
    precision: f64,
    recall: f64,
    f1: f64,
    unique: usize,
    unique_removed: usize,
}

/// Scores a run's removals against the truth at `tau`: a document should go when an earlier one is at
/// least `tau` similar; one without any pair at `tau` is unique.
fn score(
    docs: &[(String, String)],
    similar: &[(usize, usize, f64)],
    tau: f64,
    removed: &std::collections::HashSet<String>,
) -> Score {
    let mut should = vec![false; docs.len()];
    let mut paired = vec![false; docs.len()];
    for &(a, b, j) in similar {
        if j >= tau {
            should[b] = true; // b comes after a
            paired[a] = true;
            paired[b] = true;
        }
    }
    let gone: Vec<bool> = docs.iter().map(|(id, _)| removed.contains(id)).collect();
    let tp = (0..docs.len()).filter(|&i| gone[i] && should[i]).count();
    let n_removed = gone.iter().filter(|&&g| g).count();
    let n_should = should.iter().filter(|&&s| s).count();
    let precision = tp as f64 / n_removed.max(1) as f64;
    let recall = tp as f64 / n_should.max(1) as f64;
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    let unique = paired.iter().filter(|&&p| !p).count();
    let unique_removed = (0..docs.len()).filter(|&i| gone[i] && !paired[i]).count();
    Score {
        should: n_should,
        removed: n_removed,
        precision,
        recall,
        f1,
        unique,
        unique_removed,
    }
}
