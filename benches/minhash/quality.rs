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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use openseek::context::Engine;
use openseek::pipeline::{RunOptions, run_pipeline};
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
        write_input(&dir.path().join("in/docs.parquet"), &docs);
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
    let all = read_corpus(corpus, lang);
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

fn read_corpus(corpus: &Path, lang: &str) -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus.join(lang))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        if lang == "en" {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(&f).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for b in reader {
                let b = b.unwrap();
                let col = |c: &str| {
                    openseek_udfs::string_iter(b.column_by_name(c).unwrap())
                        .unwrap()
                        .map(|s| s.unwrap_or_default().to_string())
                        .collect::<Vec<_>>()
                };
                docs.extend(col("id").into_iter().zip(col("text")));
            }
        } else {
            let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
                std::fs::File::open(&f).unwrap(),
            ));
            for line in std::io::BufRead::lines(r) {
                let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                docs.push((
                    v["id"].as_str().unwrap().to_string(),
                    v["text"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    docs
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

fn write_input(path: &Path, docs: &[(String, String)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                docs.iter().map(|d| d.0.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                docs.iter().map(|d| d.1.as_str()),
            )),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// The ids the run removed as near-duplicates.
fn removed_ids(rejects: &Path) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    let Ok(entries) = std::fs::read_dir(rejects) else {
        return out;
    };
    for e in entries {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "parquet") {
            continue;
        }
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for b in reader {
            let b = b.unwrap();
            let ids = openseek_udfs::string_iter(b.column_by_name("id").unwrap()).unwrap();
            let reasons = openseek_udfs::string_iter(b.column_by_name("reason").unwrap()).unwrap();
            for (id, reason) in ids.zip(reasons) {
                if reason == Some("near_duplicate") {
                    out.insert(id.unwrap().to_string());
                }
            }
        }
    }
    out
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
