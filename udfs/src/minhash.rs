//! MinHash signatures and LSH band keys: the per-document half of near-duplicate removal. The
//! `minhash_dedup` stage groups documents by band key over the whole corpus; the functions here turn one
//! text into its shingles, its signature and its band keys.
//!
//! The permutations are the ones datatrove uses, `(a·x + b) mod (2^61 − 1)`, but computed exactly in
//! 128 bits: datatrove multiplies in numpy `uint64`, which wraps modulo 2^64 before the modulus and so
//! leaves the universal family the Jaccard estimate is proved for. Shingles are hashed with XXH3, whose
//! output is fixed by its specification, so that band keys written by `index: {build}` match those of a
//! later run, on any machine.

use xxhash_rust::xxh3::xxh3_64;

use crate::args::is_cjk;
use crate::text_normalize::Normalization;
use crate::word_count::words;

/// The Mersenne prime 2^61 − 1, the modulus of the permutations.
pub const MERSENNE_61: u64 = (1 << 61) - 1;

/// What a shingle is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShingleUnit {
    /// Words (Unicode word segmentation; a CJK character is a word).
    Word,
    /// Characters, spaces included: the unit for Chinese, which has no spaces.
    Char,
    /// Characters when most letters of the text are CJK, else words.
    Auto,
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
            unit: ShingleUnit::Auto,
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

/// A configured MinHash: the permutation coefficients drawn once from the seed.
#[derive(Debug)]
pub struct MinHasher {
    config: MinhashConfig,
    a: Vec<u64>,
    b: Vec<u64>,
}

/// SplitMix64: the seeded stream of permutation coefficients, and a strong 64-bit finaliser.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mix64(*state)
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `x mod (2^61 − 1)` for any `x < 2^122`.
#[inline(always)]
fn mod_mersenne(x: u128) -> u64 {
    let s = ((x as u64) & MERSENNE_61) + (x >> 61) as u64; // < 2^62
    let s = (s & MERSENNE_61) + (s >> 61);
    if s >= MERSENNE_61 { s - MERSENNE_61 } else { s }
}

/// `(a·x + b) mod (2^61 − 1)` for `a, x, b < 2^61 − 1`: the 128-bit product's halves are folded with
/// 2^61 ≡ 1, so the sum needs one more fold and one conditional subtraction (half the instructions of
/// reducing a `u128` twice; this is the inner loop, run `bands × rows` times per shingle).
#[inline(always)]
fn permute(a: u64, x: u64, b: u64) -> u64 {
    let prod = u128::from(a) * u128::from(x); // < 2^122
    let (lo, hi) = (prod as u64, (prod >> 64) as u64);
    let s = (lo & MERSENNE_61) + ((hi << 3) | (lo >> 61)) + b; // three terms < 2^61
    let s = (s & MERSENNE_61) + (s >> 61); // ≤ 2^61 + 1
    if s >= MERSENNE_61 { s - MERSENNE_61 } else { s }
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
        let mut state = config.seed;
        let k = config.hashes();
        let (mut a, mut b) = (Vec::with_capacity(k), Vec::with_capacity(k));
        for _ in 0..k {
            a.push(1 + splitmix64(&mut state) % (MERSENNE_61 - 1)); // a ≠ 0
            b.push(splitmix64(&mut state) % MERSENNE_61);
        }
        Ok(Self { config, a, b })
    }

    pub fn config(&self) -> &MinhashConfig {
        &self.config
    }

    /// The unit this text is shingled by (`Auto` resolved).
    pub fn unit_for(&self, text: &str) -> ShingleUnit {
        match self.config.unit {
            ShingleUnit::Auto => {
                let (mut cjk, mut letters) = (0usize, 0usize);
                for c in text.chars().filter(|c| c.is_alphabetic()) {
                    letters += 1;
                    cjk += usize::from(is_cjk(c));
                }
                if cjk * 2 > letters {
                    ShingleUnit::Char
                } else {
                    ShingleUnit::Word
                }
            }
            unit => unit,
        }
    }

    /// The 64-bit hashes of the text's shingles, in text order, repeats included; empty when the
    /// normalised text has fewer units than one shingle needs.
    pub fn shingles(&self, text: &str) -> Vec<u64> {
        let normal = self.config.normalization.apply(text);
        let units: Vec<u64> = match self.unit_for(&normal) {
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

    /// The signature (`bands × rows` values below 2^61), or `None` for a text without a shingle.
    pub fn signature(&self, text: &str) -> Option<Vec<u64>> {
        let shingles = self.shingles(text);
        if shingles.is_empty() {
            return None;
        }
        let mut sig = vec![u64::MAX; self.a.len()];
        for s in shingles {
            let x = mod_mersenne(u128::from(s));
            for ((m, &a), &b) in sig.iter_mut().zip(&self.a).zip(&self.b) {
                // `black_box` keeps this loop scalar: on the x86-64 baseline (SSE2), LLVM vectorises it
                // by emulating the 64 × 64 → 128-bit multiply, at three times the instructions.
                *m = (*m).min(std::hint::black_box(permute(a, x, b)));
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
    let set = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (a, b) = (set(a), set(b));
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
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
    both as f64 / (a.len() + b.len() - both) as f64
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
    fn mersenne_reduction_is_exact() {
        let p = u128::from(MERSENNE_61);
        let mut state = 7;
        for _ in 0..10_000 {
            let x = (u128::from(splitmix64(&mut state)) << 58) ^ u128::from(splitmix64(&mut state));
            assert_eq!(u128::from(mod_mersenne(x)), x % p);
        }
        assert_eq!(mod_mersenne(p), 0);
        assert_eq!(mod_mersenne(p - 1), MERSENNE_61 - 1);
        assert_eq!(mod_mersenne(2 * p), 0);
        for _ in 0..10_000 {
            let a = splitmix64(&mut state) % MERSENNE_61;
            let x = splitmix64(&mut state) % MERSENNE_61;
            let b = splitmix64(&mut state) % MERSENNE_61;
            let exact = (u128::from(a) * u128::from(x) + u128::from(b)) % p;
            assert_eq!(u128::from(permute(a, x, b)), exact);
        }
        let top = MERSENNE_61 - 1;
        assert_eq!(
            u128::from(permute(top, top, top)),
            (u128::from(top) * u128::from(top) + u128::from(top)) % p
        );
    }

    #[test]
    fn identical_texts_identical_signatures_and_short_texts_none() {
        let h = hasher(ShingleUnit::Word);
        let text = "The quick brown fox jumps over the lazy dog near the river bank today.";
        let a = h.signature(text).unwrap();
        assert_eq!(a.len(), 112);
        assert!(a.iter().all(|&v| v < MERSENNE_61));
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
    fn auto_unit_picks_characters_for_chinese() {
        let h = hasher(ShingleUnit::Auto);
        assert_eq!(h.unit_for("床前明月光，疑是地上霜。"), ShingleUnit::Char);
        assert_eq!(h.unit_for("Hello world, 你好"), ShingleUnit::Word);
        // Eleven characters give seven character 5-grams.
        assert_eq!(h.shingles("床前明月光疑是地上霜啊").len(), 7);
    }

    #[test]
    fn s_curve() {
        assert!((candidate_probability(0.8, 14, 8) - 0.92).abs() < 0.01);
        assert!((candidate_probability(0.7, 14, 8) - 0.57).abs() < 0.01);
        assert!(candidate_probability(0.5, 14, 8) < 0.06);
    }
}
