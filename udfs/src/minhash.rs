//! MinHash signatures and LSH band keys: the per-document half of near-duplicate removal. The
//! `minhash_dedup` stage groups documents by band key over the whole corpus; the functions here turn one
//! text into its shingles, its signature and its band keys.
//!
//! Signatures are one-permutation MinHash with optimal densification (Li, Owen & Zhang 2012;
//! Shrivastava 2017) instead of datatrove's `bands × rows` permutations: each shingle's seeded 64-bit
//! hash chooses one of the `bands × rows` bins by its high bits and competes for that bin's minimum, so a
//! shingle costs one hash instead of 112 (the permutations were 60% of the time at 11.7 MB/s per core).
//! A bin that no shingle reached copies the value of a filled bin chosen by a seeded probe sequence
//! that is the same for every document. For any two documents each value is equal with probability
//! exactly their Jaccard similarity, as with independent permutations, so the estimate and the LSH
//! S-curve 1 − (1 − J^rows)^bands are those of datatrove's scheme; the tests check the S-curve on real
//! documents. Shingles are hashed with XXH3 and SplitMix64's finaliser, both fixed by their
//! specifications, so that band keys written by `index: {build}` match those of a later run, on any
//! machine.
//!
//! Not gaoya: its MinHashers also apply `bands × rows` multiply-and-mod functions to every shingle;
//! on the same shingles of `corpus/en` our sketch is 56× faster than its `MinHasher64V1` with the same
//! estimation error (BENCHMARKS.md, `benches/gaoya/`).

use xxhash_rust::xxh3::xxh3_64;

use crate::text_normalize::Normalization;
use crate::words::{is_cjk, words};

/// What a shingle is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShingleUnit {
    /// Words (Unicode word segmentation; a CJK character is a word).
    Word,
    /// Characters, spaces included: the unit for Chinese, which has no spaces.
    Char,
    /// Characters when most letters of a whole corpus are CJK, else words: decided once per corpus
    /// ([`ScriptCount`]), never per document, so that two near-copies on either side of the line are
    /// still shingled alike. A [`MinHasher`] takes the decided unit.
    Auto,
}

/// Letters and CJK letters counted over a corpus, which decide what `auto` means for all of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScriptCount {
    pub cjk: u64,
    pub letters: u64,
}

impl ScriptCount {
    /// Adds a text's letters.
    pub fn add(&mut self, text: &str) {
        for c in text.chars().filter(|c| c.is_alphabetic()) {
            self.letters += 1;
            self.cjk += u64::from(is_cjk(c));
        }
    }

    pub fn merge(&mut self, other: ScriptCount) {
        self.cjk += other.cjk;
        self.letters += other.letters;
    }

    /// Characters when most letters are CJK, else words.
    pub fn unit(&self) -> ShingleUnit {
        if self.cjk * 2 > self.letters {
            ShingleUnit::Char
        } else {
            ShingleUnit::Word
        }
    }
}

impl ShingleUnit {
    /// The name options, reports and index manifests write (what `from_str` reads).
    pub fn name(self) -> &'static str {
        match self {
            Self::Word => "word",
            Self::Char => "char",
            Self::Auto => "auto",
        }
    }
}

impl std::str::FromStr for ShingleUnit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "word" | "words" => Ok(Self::Word),
            "char" | "chars" | "character" => Ok(Self::Char),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown shingle unit '{other}': word, char or auto"
            )),
        }
    }
}

/// Everything that decides a signature; two signatures compare only when their configs are equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MinhashConfig {
    pub unit: ShingleUnit,
    /// Units per shingle.
    pub ngram: usize,
    pub bands: usize,
    /// Hashes per band.
    pub rows: usize,
    pub seed: u64,
    pub normalization: Normalization,
}

impl Default for MinhashConfig {
    /// datatrove's defaults: word 5-grams, 14 bands of 8 hashes (112), its text normalisation.
    fn default() -> Self {
        Self {
            unit: ShingleUnit::Word,
            ngram: 5,
            bands: 14,
            rows: 8,
            seed: 1,
            normalization: Normalization::default(),
        }
    }
}

impl MinhashConfig {
    pub fn hashes(&self) -> usize {
        self.bands * self.rows
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.ngram == 0 || self.bands == 0 || self.rows == 0 {
            return Err("minhash: ngram, bands and rows must be at least 1".into());
        }
        if self.hashes() > 4096 {
            return Err(format!(
                "minhash: {} hashes ({} bands × {} rows) is more than 4096",
                self.hashes(),
                self.bands,
                self.rows
            ));
        }
        Ok(())
    }
}

/// A configured MinHash: the key drawn once from the seed.
#[derive(Debug)]
pub struct MinHasher {
    config: MinhashConfig,
    /// Mixed into every shingle hash and every densification probe.
    key: u64,
}

/// SplitMix64: the seeded key, and a strong 64-bit finaliser.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mix64(*state)
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Folds a sequence of 64-bit values into one, order-sensitively (shingles from unit hashes, band keys
/// from a band's hashes).
fn fold(init: u64, values: &[u64]) -> u64 {
    let mut h = init;
    for &v in values {
        h = (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
    mix64(h)
}

impl MinHasher {
    pub fn new(config: MinhashConfig) -> Result<Self, String> {
        config.validate()?;
        if config.unit == ShingleUnit::Auto {
            return Err(
                "minhash: unit 'auto' is decided once over a whole corpus (minhash_dedup \
                        does it and reports the unit it chose); give 'word' or 'char'"
                    .into(),
            );
        }
        let mut state = config.seed;
        let key = splitmix64(&mut state);
        Ok(Self { config, key })
    }

    pub fn config(&self) -> &MinhashConfig {
        &self.config
    }

    /// The 64-bit hashes of the text's shingles, in text order, repeats included; empty when the
    /// normalised text has fewer units than one shingle needs.
    pub fn shingles(&self, text: &str) -> Vec<u64> {
        let normal = self.config.normalization.apply(text);
        let units: Vec<u64> = match self.config.unit {
            ShingleUnit::Char => normal
                .chars()
                .map(|c| mix64(u64::from(c as u32) ^ 0xC4A5_1E5D))
                .collect(),
            _ => words(&normal)
                .into_iter()
                .map(|(_, w)| xxh3_64(w.as_bytes()))
                .collect(),
        };
        let n = self.config.ngram;
        if units.len() < n {
            return Vec::new();
        }
        units.windows(n).map(|w| fold(n as u64, w)).collect()
    }

    /// The signature (`bands × rows` values), or `None` for a text without a shingle.
    pub fn signature(&self, text: &str) -> Option<Vec<u64>> {
        self.signature_of_shingles(&self.shingles(text))
    }

    /// The signature of a shingle list, or `None` when it is empty: one-permutation hashing, then
    /// optimal densification.
    pub fn signature_of_shingles(&self, shingles: &[u64]) -> Option<Vec<u64>> {
        if shingles.is_empty() {
            return None;
        }
        let k = self.config.hashes();
        let bin_of = |h: u64| ((u128::from(h) * k as u128) >> 64) as usize;
        let mut sig = vec![u64::MAX; k];
        let mut filled = vec![false; k];
        for &s in shingles {
            let h = mix64(s ^ self.key);
            let bin = bin_of(h);
            filled[bin] = true;
            sig[bin] = sig[bin].min(h);
        }
        let mut empty = (0..k).filter(|&i| !filled[i]).peekable();
        if empty.peek().is_some() {
            let original = sig.clone();
            for i in empty {
                // The probe sequence depends on the bin and the seed only: two documents probe alike.
                let mut attempt = 0u64;
                loop {
                    let probe = mix64(self.key ^ mix64(((i as u64) << 32) | attempt));
                    let j = bin_of(probe);
                    if filled[j] {
                        sig[i] = original[j];
                        break;
                    }
                    attempt += 1;
                }
            }
        }
        Some(sig)
    }

    pub fn band_keys(&self, signature: &[u64]) -> Vec<u64> {
        band_keys(signature, self.config.rows)
    }
}

/// One key per band of `rows` hashes: the band's hashes folded with the band's index, so that equal
/// keys of different bands never meet.
pub fn band_keys(signature: &[u64], rows: usize) -> Vec<u64> {
    signature
        .chunks(rows.max(1))
        .enumerate()
        .map(|(band, hashes)| fold(mix64(band as u64 + 1), hashes))
        .collect()
}

/// The share of equal positions of two signatures: the MinHash estimate of their Jaccard similarity.
pub fn signature_similarity(a: &[u64], b: &[u64]) -> Option<f64> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    Some(same as f64 / a.len() as f64)
}

/// The exact Jaccard similarity of two shingle lists (as sets).
pub fn shingle_jaccard(a: &[u64], b: &[u64]) -> f64 {
    sorted_set_jaccard(&shingle_set(a.to_vec()), &shingle_set(b.to_vec()))
}

/// Shingles as a set: sorted, without repeats.
pub fn shingle_set(mut shingles: Vec<u64>) -> Vec<u64> {
    shingles.sort_unstable();
    shingles.dedup();
    // Sets are held by the thousand while pairs are verified: no capacity beyond what they hold.
    shingles.shrink_to_fit();
    shingles
}

/// The Jaccard similarity of two sorted sets without repeats (1 for two empty sets), by one merge.
pub fn sorted_set_jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - both;
    if union == 0 {
        1.0
    } else {
        both as f64 / union as f64
    }
}

/// The probability that LSH with `bands × rows` makes a pair of Jaccard similarity `j` a candidate:
/// 1 − (1 − j^rows)^bands, the S-curve.
pub fn candidate_probability(j: f64, bands: usize, rows: usize) -> f64 {
    1.0 - (1.0 - j.powi(rows as i32)).powi(bands as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(unit: ShingleUnit) -> MinHasher {
        MinHasher::new(MinhashConfig {
            unit,
            ..MinhashConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn every_bin_is_filled_and_one_shingle_fills_them_alike() {
        let h = hasher(ShingleUnit::Word);
        // One 5-gram: every bin holds its hash.
        let one = h.signature("just five words right here").unwrap();
        assert!(one.iter().all(|&v| v == one[0]));
        // A long text fills its bins itself; a short one borrows, never leaving the sentinel.
        let long: String = (0..2000)
            .map(|i| format!("w{} ", i * 7919 % 10007))
            .collect();
        assert!(h.signature(&long).unwrap().iter().all(|&v| v != u64::MAX));
        let short = h
            .signature("one two three four five six seven eight")
            .unwrap();
        assert!(short.iter().all(|&v| v != u64::MAX));
        // Another seed, other values.
        let other = MinHasher::new(MinhashConfig {
            unit: ShingleUnit::Word,
            seed: 2,
            ..MinhashConfig::default()
        })
        .unwrap();
        assert_ne!(other.signature(&long), h.signature(&long));
    }

    #[test]
    fn identical_texts_identical_signatures_and_short_texts_none() {
        let h = hasher(ShingleUnit::Word);
        let text = "The quick brown fox jumps over the lazy dog near the river bank today.";
        let a = h.signature(text).unwrap();
        assert_eq!(a.len(), 112);
        // Normalisation: case, punctuation and spacing do not matter.
        let b = h
            .signature("the QUICK brown fox, jumps over   the lazy dog near the river bank today")
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(h.band_keys(&a).len(), 14);
        assert_eq!(h.signature("only four words here"), None);
        assert_eq!(h.signature(""), None);
        assert_eq!(h.signature(" \n\t "), None);
    }

    #[test]
    fn estimate_tracks_true_jaccard() {
        let h = hasher(ShingleUnit::Word);
        // Words of letters only: normalisation turns every number into 0.
        let word = |n: usize| -> String {
            format!("{n:03}")
                .bytes()
                .map(|d| char::from(b'a' + d - b'0'))
                .collect()
        };
        let base: Vec<String> = (0..400).map(|i| word(i * 7919 % 1000)).collect();
        let mut changed = base.clone();
        for i in (0..changed.len()).step_by(12) {
            changed[i] = format!("changed{}", word(i));
        }
        let (ta, tb) = (base.join(" "), changed.join(" "));
        let j = shingle_jaccard(&h.shingles(&ta), &h.shingles(&tb));
        let est =
            signature_similarity(&h.signature(&ta).unwrap(), &h.signature(&tb).unwrap()).unwrap();
        // 112 hashes: the estimate's standard deviation is at most 0.05.
        assert!((est - j).abs() < 0.15, "estimate {est} vs true {j}");
        assert!(j > 0.3 && j < 0.7, "{j}");
    }

    #[test]
    fn auto_unit_is_decided_by_a_whole_corpus() {
        let mut zh = ScriptCount::default();
        zh.add("床前明月光，疑是地上霜。");
        assert_eq!(zh.unit(), ShingleUnit::Char);
        let mut mixed = ScriptCount::default();
        mixed.add("Hello world, 你好");
        assert_eq!(mixed.unit(), ShingleUnit::Word);
        mixed.merge(zh);
        assert_eq!(mixed.unit(), ShingleUnit::Char);
        // A hasher takes a decided unit.
        assert!(
            MinHasher::new(MinhashConfig {
                unit: ShingleUnit::Auto,
                ..MinhashConfig::default()
            })
            .is_err()
        );
        // Eleven characters give seven character 5-grams.
        assert_eq!(
            hasher(ShingleUnit::Char)
                .shingles("床前明月光疑是地上霜啊")
                .len(),
            7
        );
    }

    #[test]
    fn jaccard_of_sorted_sets() {
        assert_eq!(sorted_set_jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(sorted_set_jaccard(&[], &[]), 1.0);
        assert_eq!(sorted_set_jaccard(&[1], &[2]), 0.0);
    }

    #[test]
    fn s_curve() {
        assert!((candidate_probability(0.8, 14, 8) - 0.92).abs() < 0.01);
        assert!((candidate_probability(0.7, 14, 8) - 0.57).abs() < 0.01);
        assert!(candidate_probability(0.5, 14, 8) < 0.06);
    }
}
