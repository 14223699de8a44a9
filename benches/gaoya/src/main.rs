//! gaoya 0.2.2's MinHash against ours, on the same shingles of the same documents.
//!
//! The issue asks to use gaoya where it serves and to measure it. Both sides get the shingles our
//! `minhash_signature` makes (datatrove's normalisation, word 5-grams, 64-bit hashes), so the figures
//! compare the sketch alone: gaoya's `MinHasher64V1` and `MinHasher32` (112 `(a·x + b) mod p` hash
//! functions, each applied to every shingle) against our one-permutation hashing with optimal
//! densification (one hash per shingle). Then both estimate the Jaccard similarity of real documents
//! and their variants, and both signatures go through the same 14 × 8 LSH bands, so their accuracy
//! and their detection rates over Jaccard can be set beside the theoretical S-curve.
//!
//! Usage: gaoya-compare TEXTS.jsonl [REPEATS]   (one `{"text": …}` object per line; run.sh makes it)

use std::io::BufRead;
use std::time::Instant;

use gaoya::minhash::{MinHasher as _, MinHasher32, MinHasher64V1};

// Our MinHash, compiled from the engine's own source files.
#[allow(dead_code)]
#[path = "../../../udfs/src/minhash.rs"]
mod minhash;
#[allow(dead_code)]
#[path = "../../../udfs/src/text_normalize.rs"]
mod text_normalize;
#[allow(dead_code)]
#[path = "../../../udfs/src/words.rs"]
mod words;

use minhash::{MinHasher, MinhashConfig, ShingleUnit};

const BANDS: usize = 14;
const ROWS: usize = 8;
const HASHES: usize = BANDS * ROWS;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: gaoya-compare TEXTS.jsonl [REPEATS]");
    let repeats: usize = args
        .get(2)
        .map_or(3, |r| r.parse().expect("REPEATS: a number"));
    let texts = read_texts(path);
    let bytes: usize = texts.iter().map(String::len).sum();

    let ours = MinHasher::new(MinhashConfig {
        unit: ShingleUnit::Word,
        ..MinhashConfig::default()
    })
    .expect("default config is valid");
    let gaoya64 = MinHasher64V1::new(HASHES);
    let gaoya32 = MinHasher32::new(HASHES);

    let start = Instant::now();
    let shingles: Vec<Vec<u64>> = texts.iter().map(|t| ours.shingles(t)).collect();
    let shingle_s = start.elapsed().as_secs_f64();
    let n_shingles: usize = shingles.iter().map(Vec::len).sum();
    println!(
        "{} documents, {:.1} MB of text, {} shingles; normalisation + shingling {:.2} s ({:.1} MB/s), one core\n",
        texts.len(),
        bytes as f64 / 1e6,
        n_shingles,
        shingle_s,
        bytes as f64 / 1e6 / shingle_s
    );

    println!(
        "| sketch of 112 values | seconds (median of {repeats}) | ns per shingle | MB/s of text, sketch only | MB/s of text, with shingling |"
    );
    println!("|---|---|---|---|---|");
    let timed = |name: &str, sketch: &dyn Fn(&[u64]) -> u64| {
        let mut runs: Vec<f64> = (0..repeats)
            .map(|_| {
                let start = Instant::now();
                let checksum = shingles
                    .iter()
                    .filter(|s| !s.is_empty())
                    .fold(0u64, |acc, s| acc ^ sketch(s));
                std::hint::black_box(checksum);
                start.elapsed().as_secs_f64()
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        let s = runs[runs.len() / 2];
        println!(
            "| {name} | {s:.3} | {:.1} | {:.1} | {:.1} |",
            s * 1e9 / n_shingles as f64,
            bytes as f64 / 1e6 / s,
            bytes as f64 / 1e6 / (s + shingle_s)
        );
    };
    timed("openseek (one permutation + densification)", &|s| {
        ours.signature_of_shingles(s).expect("non-empty")[0]
    });
    timed("gaoya MinHasher64V1", &|s| {
        gaoya64.create_signature(s.iter())[0]
    });
    timed("gaoya MinHasher32", &|s| {
        u64::from(gaoya32.create_signature(s.iter())[0])
    });

    accuracy(&texts, &ours, &gaoya64, &gaoya32);
}

/// Variants of real documents at known Jaccard levels: each sketch's estimate against the true
/// similarity, and the share of pairs that share an LSH band against 1 − (1 − J^8)^14.
fn accuracy(
    texts: &[String],
    ours: &MinHasher,
    gaoya64: &MinHasher64V1<fnv::FnvBuildHasher>,
    gaoya32: &MinHasher32<fnv::FnvBuildHasher>,
) {
    const BUCKETS: [(f64, f64); 7] = [
        (0.3, 0.5),
        (0.5, 0.6),
        (0.6, 0.7),
        (0.7, 0.8),
        (0.8, 0.9),
        (0.9, 0.95),
        (0.95, 1.0),
    ];
    // Per bucket and sketch (ours, gaoya64, gaoya32): pairs, Σ true J, Σ squared error, detections.
    let mut stats = [[(0usize, 0f64, 0f64, 0usize); 3]; BUCKETS.len()];
    // Per bucket: Σ of each pair's theoretical detection probability (the S-curve is not linear, so
    // the bucket's expected rate is the mean of the pairs' probabilities, not the curve at the mean).
    let mut expected = [0f64; BUCKETS.len()];
    let mut rng = 0x5EED_u64;
    let originals = texts
        .iter()
        .filter(|t| ours.shingles(t).len() >= 200)
        .take(2000);
    for (doc, text) in originals.enumerate() {
        let a = ours.shingles(text);
        let rate = [0.01, 0.02, 0.04, 0.07, 0.1, 0.15][doc % 6];
        let b = ours.shingles(&substitute_words(text, rate, &mut rng));
        let j = minhash::shingle_jaccard(&a, &b);
        let Some(bucket) = BUCKETS.iter().position(|&(lo, hi)| j >= lo && j < hi) else {
            continue;
        };
        let pairs: [(Vec<u64>, Vec<u64>); 3] = [
            (
                ours.signature_of_shingles(&a).unwrap(),
                ours.signature_of_shingles(&b).unwrap(),
            ),
            (sig64(gaoya64, &a), sig64(gaoya64, &b)),
            (sig32(gaoya32, &a), sig32(gaoya32, &b)),
        ];
        expected[bucket] += minhash::candidate_probability(j, BANDS, ROWS);
        for (k, (sa, sb)) in pairs.iter().enumerate() {
            let estimate = minhash::signature_similarity(sa, sb).unwrap();
            let detected = minhash::band_keys(sa, ROWS)
                .iter()
                .zip(minhash::band_keys(sb, ROWS))
                .any(|(x, y)| *x == y);
            let s = &mut stats[bucket][k];
            s.0 += 1;
            s.1 += j;
            s.2 += (estimate - j).powi(2);
            s.3 += usize::from(detected);
        }
    }
    println!(
        "\n| true Jaccard | pairs | RMSE of the estimate: openseek / gaoya64 / gaoya32 | detected (14 × 8 bands): openseek / gaoya64 / gaoya32 | theory, 1 − (1 − J⁸)¹⁴ |"
    );
    println!("|---|---|---|---|---|");
    for (bucket, &(lo, hi)) in BUCKETS.iter().enumerate() {
        let [o, g64, g32] = stats[bucket];
        if o.0 == 0 {
            continue;
        }
        let mean_j = o.1 / o.0 as f64;
        let rmse = |s: (usize, f64, f64, usize)| (s.2 / s.0 as f64).sqrt();
        let rate = |s: (usize, f64, f64, usize)| s.3 as f64 / s.0 as f64;
        println!(
            "| {lo:.2}–{hi:.2} (mean {mean_j:.3}) | {} | {:.4} / {:.4} / {:.4} | {:.3} / {:.3} / {:.3} | {:.3} |",
            o.0,
            rmse(o),
            rmse(g64),
            rmse(g32),
            rate(o),
            rate(g64),
            rate(g32),
            expected[bucket] / o.0 as f64
        );
    }
}

fn sig64(h: &MinHasher64V1<fnv::FnvBuildHasher>, shingles: &[u64]) -> Vec<u64> {
    h.create_signature(shingles.iter())
}

fn sig32(h: &MinHasher32<fnv::FnvBuildHasher>, shingles: &[u64]) -> Vec<u64> {
    h.create_signature(shingles.iter())
        .into_iter()
        .map(u64::from)
        .collect()
}

/// The text with each whitespace-separated word replaced, with probability `rate`, by a fresh token.
fn substitute_words(text: &str, rate: f64, rng: &mut u64) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for word in text.split_whitespace() {
        let r = next(rng);
        if (r >> 11) as f64 / (1u64 << 53) as f64 <= rate {
            out.push_str(&format!("zq{:x}", r & 0xFFFF_FFFF));
        } else {
            out.push_str(word);
        }
        out.push(' ');
    }
    out
}

/// SplitMix64, for reproducible variants.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn read_texts(path: &str) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let line = line.unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1));
            let value: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1));
            value["text"]
                .as_str()
                .unwrap_or_else(|| panic!("{path}:{}: no string field `text`", i + 1))
                .to_owned()
        })
        .collect()
}
