//! `char_repetition(text[, n])`: the share of character n-grams taken by the most repeated ones
//! (data-juicer's `character_repetition_filter`, after BigScience: n = 10, max 0.5). With F the n-gram
//! frequencies sorted in decreasing order and k = min(⌊√|F|⌋, number of n-grams seen more than once), the
//! ratio is ΣF[..k] / ΣF.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::LazyLock;

use arrow::datatypes::DataType;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::{DOC_SECTION, coerce_text_args, literal_i64, map_to_f64};

/// data-juicer's default n-gram length.
pub const DEFAULT_N: usize = 10;

pub fn char_repetition(text: &str, n: usize) -> f64 {
    // Character boundaries once, then each n-gram is a byte slice between two of them; n-grams are keyed
    // by a 64-bit hash of their bytes (a collision only merges two counts, negligible at 2^-64).
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let chars = bounds.len() - 1;
    if n == 0 || chars < n {
        return 0.0;
    }
    let hasher = ahash::RandomState::with_seeds(0x5eed, 1, 2, 3);
    let mut freq: HashMap<u64, u32, BuildHasherDefault<NoHash>> =
        HashMap::with_capacity_and_hasher(chars - n + 1, Default::default());
    for i in 0..=(chars - n) {
        let h = hasher.hash_one(&text.as_bytes()[bounds[i]..bounds[i + n]]);
        *freq.entry(h).or_insert(0) += 1;
    }
    let mut counts: Vec<u32> = freq.into_values().collect();
    let total: u64 = counts.iter().map(|&c| c as u64).sum();
    let repeated = counts.iter().filter(|&&c| c > 1).count();
    let k = ((counts.len() as f64).sqrt() as usize).min(repeated);
    if k == 0 {
        return 0.0;
    }
    counts.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    let top: u64 = counts[..k].iter().map(|&c| c as u64).sum();
    top as f64 / total as f64
}

/// The keys are already hashes: pass them through.
#[derive(Default)]
struct NoHash(u64);
impl std::hash::Hasher for NoHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CharRepetitionFunc {
    signature: Signature,
}

impl Default for CharRepetitionFunc {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Share of character n-grams taken by the √(distinct) most frequent repeated ones (data-juicer's \
         character repetition ratio; n defaults to 10).",
        "char_repetition(text[, n])",
    )
    .with_argument("text", "The document text.")
    .with_argument("n", "n-gram length in characters (default 10).")
    .with_sql_example("SELECT char_repetition('abcabcabcabc', 3)")
    .build()
});

impl ScalarUDFImpl for CharRepetitionFunc {
    fn name(&self) -> &str {
        "char_repetition"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce_text_args(self.name(), args, &[DataType::Int64])
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = match args.args.get(1) {
            Some(a) => literal_i64(self.name(), "n", a)?,
            None => DEFAULT_N as i64,
        };
        if !(1..=1000).contains(&n) {
            return plan_err!("char_repetition: n must be between 1 and 1000, got {n}");
        }
        map_to_f64(&args.args[0], |t| char_repetition(t, n as usize))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::test_util::{f64s, invoke};
    use datafusion::common::ScalarValue;

    #[test]
    fn matches_the_reference_definition() {
        // "aaaaa" with n=2: one 2-gram "aa" seen 4 times: |F| = 1, k = 1, ratio 1.
        assert_eq!(char_repetition("aaaaa", 2), 1.0);
        // No repeats: 0.
        assert_eq!(char_repetition("abcdefghij", 2), 0.0);
        // "abab" n=2: ab×2, ba×1: |F| = 2, k = min(1, 1) = 1: 2/3.
        assert!((char_repetition("abab", 2) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(char_repetition("", 10), 0.0);
        assert_eq!(char_repetition("short", 10), 0.0);
    }

    #[test]
    fn repeated_boilerplate_scores_high() {
        // A 7-character period has 7 distinct 10-grams, each seen ~200 times: the top ⌊√7⌋ = 2 of them
        // take 2/7 of all n-grams.
        let spam = "点击这里购买！".repeat(200);
        assert!((char_repetition(&spam, 10) - 2.0 / 7.0).abs() < 0.01);
        let prose = "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age \
                     of foolishness, it was the epoch of belief, it was the epoch of incredulity.";
        assert!(char_repetition(prose, 10) < 0.5);
        let long = "x".repeat(2_000_000);
        assert_eq!(char_repetition(&long, 10), 1.0);
    }

    #[test]
    fn udf_default_and_explicit_n() {
        let f = CharRepetitionFunc::default();
        assert_eq!(
            f64s(&invoke(
                &f,
                &[Some("aaaaa"), None],
                vec![ScalarValue::Int64(Some(2))]
            )),
            vec![Some(1.0), None]
        );
        assert_eq!(
            f64s(&invoke(&f, &[Some("abcdefghijk")], vec![])),
            vec![Some(0.0)]
        );
    }
}
