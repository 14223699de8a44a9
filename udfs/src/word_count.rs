//! `word_count(text)`: words by Unicode word segmentation (UAX #29); each CJK character counts as one
//! word, since Chinese and Japanese are written without spaces.

use std::sync::LazyLock;

use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use unicode_segmentation::UnicodeSegmentation;

use crate::args::{DOC_SECTION, coerce_text_args, is_cjk, map_to_i64};

/// The words of `text` with their byte offsets: UAX #29 words that hold a letter or digit, with every
/// CJK character split out as a word of its own. Shared by the lexicon functions so that their ratios use
/// the same denominator as `word_count`.
pub fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.unicode_word_indices().flat_map(|(off, w)| {
        let split = w.chars().any(is_cjk);
        let pieces: Box<dyn Iterator<Item = (usize, &str)>> = if split {
            Box::new(split_cjk(w).map(move |(o, p)| (off + o, p)))
        } else {
            Box::new(std::iter::once((off, w)))
        };
        pieces
    })
}

/// Splits a segment that holds CJK characters into one piece per CJK character and runs of the rest.
fn split_cjk(w: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut pieces = Vec::new();
    let mut run_start: Option<usize> = None;
    for (i, c) in w.char_indices() {
        if is_cjk(c) {
            if let Some(s) = run_start.take() {
                pieces.push((s, &w[s..i]));
            }
            pieces.push((i, &w[i..i + c.len_utf8()]));
        } else if run_start.is_none() {
            run_start = Some(i);
        }
    }
    if let Some(s) = run_start {
        pieces.push((s, &w[s..]));
    }
    pieces.into_iter()
}

pub fn word_count(text: &str) -> i64 {
    // Fast path: UAX #29 already yields one word per ideograph, so counting needs no splitting; the
    // mixed case ("中文abc" as one segment) is rare and handled by `words`.
    text.unicode_words()
        .map(|w| {
            if w.chars().any(is_cjk) {
                split_cjk(w).count()
            } else {
                1
            }
        })
        .sum::<usize>() as i64
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WordCountFunc {
    signature: Signature,
}

impl Default for WordCountFunc {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Number of words (Unicode word segmentation; each CJK character is one word).",
        "word_count(text)",
    )
    .with_argument("text", "The document text.")
    .with_sql_example("SELECT word_count('Hello, world! 你好')  -- 4")
    .build()
});

impl ScalarUDFImpl for WordCountFunc {
    fn name(&self) -> &str {
        "word_count"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce_text_args(self.name(), args, &[])
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        map_to_i64(&args.args[0], word_count)
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::test_util::{i64s, invoke};

    #[test]
    fn english_words() {
        assert_eq!(word_count("Hello, world!"), 2);
        assert_eq!(word_count("Don't stop: it's 3.14 and U.S.A."), 6);
        assert_eq!(word_count(""), 0);
        assert_eq!(word_count(" \n\t "), 0);
        assert_eq!(word_count("... --- !!!"), 0);
    }

    #[test]
    fn cjk_characters_are_words() {
        assert_eq!(word_count("床前明月光"), 5);
        assert_eq!(word_count("我用Python写代码。"), 6);
        assert_eq!(word_count("Hello, world! 你好"), 4);
        let w: Vec<&str> = words("我用Python写").map(|x| x.1).collect();
        assert_eq!(w, vec!["我", "用", "Python", "写"]);
        assert_eq!(
            words("abc 中文").map(|x| x.0).collect::<Vec<_>>(),
            vec![0, 4, 7]
        );
    }

    #[test]
    fn agrees_with_words_and_long_input() {
        let text = "The quick brown fox 跳过了 the lazy dog. ".repeat(10_000);
        assert_eq!(word_count(&text), words(&text).count() as i64);
        assert_eq!(word_count(&text), 10 * 10_000);
    }

    #[test]
    fn udf_on_column() {
        let out = invoke(
            &WordCountFunc::default(),
            &[Some("a b c"), None, Some("")],
            vec![],
        );
        assert_eq!(i64s(&out), vec![Some(3), None, Some(0)]);
    }
}
