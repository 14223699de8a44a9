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

/// Calls `f` with every UAX #29 word segment of `text` that holds a letter or digit, and its offset.
///
/// Written out rather than calling `unicode_word_indices` on the whole text because that is the hot
/// loop of every lexicon stage and costs ~30 MB/s: ASCII whitespace always separates words, so the text is
/// cut there, ASCII chunks (most of an English corpus) go through a byte loop that applies UAX #29's rules
/// for ASCII (letters and digits joined by `_`; `' . :` inside letters; `, ; . '` inside numbers), and
/// only chunks with other characters go through `unicode-segmentation`. A test checks the two agree.
pub fn for_each_segment<'a>(text: &'a str, mut f: impl FnMut(usize, &'a str)) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        let mut ascii = true;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            ascii &= bytes[i] < 0x80;
            i += 1;
        }
        let chunk = &text[start..i];
        if ascii {
            ascii_segments(chunk, start, &mut f);
        } else {
            for (o, w) in chunk.unicode_word_indices() {
                f(start + o, w);
            }
        }
    }
}

fn ascii_segments<'a>(chunk: &'a str, base: usize, f: &mut impl FnMut(usize, &'a str)) {
    let b = chunk.as_bytes();
    let word_byte = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if !word_byte(b[i]) {
            i += 1;
            continue;
        }
        let s = i;
        loop {
            while i < b.len() && word_byte(b[i]) {
                i += 1;
            }
            if i + 1 < b.len() && word_byte(b[i + 1]) {
                let (prev, mid, next) = (b[i - 1], b[i], b[i + 1]);
                let letters = prev.is_ascii_alphabetic()
                    && next.is_ascii_alphabetic()
                    && matches!(mid, b'\'' | b'.' | b':');
                let digits = prev.is_ascii_digit()
                    && next.is_ascii_digit()
                    && matches!(mid, b',' | b';' | b'.' | b'\'');
                if letters || digits {
                    i += 1;
                    continue;
                }
            }
            break;
        }
        let w = &chunk[s..i];
        if w.bytes().any(|c| c.is_ascii_alphanumeric()) {
            f(base + s, w);
        }
    }
}

/// The words of `text` with their byte offsets: UAX #29 words that hold a letter or digit, with every
/// CJK character split out as a word of its own. Shared by the lexicon functions so that their ratios use
/// the same denominator as `word_count`.
pub fn words(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::with_capacity(text.len() / 6);
    for_each_segment(text, |off, w| {
        // ASCII words (the common case) cannot hold CJK.
        if w.is_ascii() || !w.chars().any(is_cjk) {
            out.push((off, w));
            return;
        }
        let mut run_start: Option<usize> = None;
        for (i, c) in w.char_indices() {
            if is_cjk(c) {
                if let Some(s) = run_start.take() {
                    out.push((off + s, &w[s..i]));
                }
                out.push((off + i, &w[i..i + c.len_utf8()]));
            } else if run_start.is_none() {
                run_start = Some(i);
            }
        }
        if let Some(s) = run_start {
            out.push((off + s, &w[s..]));
        }
    });
    out
}

/// How many words `words` gives for one segment.
fn segment_words(w: &str) -> usize {
    if w.is_ascii() {
        return 1;
    }
    let mut n = 0;
    let mut in_run = false;
    for c in w.chars() {
        if is_cjk(c) {
            n += 1;
            in_run = false;
        } else if !in_run {
            n += 1;
            in_run = true;
        }
    }
    n
}

pub fn word_count(text: &str) -> i64 {
    let mut n = 0;
    for_each_segment(text, |_, w| n += segment_words(w));
    n as i64
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
        let w: Vec<&str> = words("我用Python写").into_iter().map(|x| x.1).collect();
        assert_eq!(w, vec!["我", "用", "Python", "写"]);
        assert_eq!(
            words("abc 中文")
                .into_iter()
                .map(|x| x.0)
                .collect::<Vec<_>>(),
            vec![0, 4, 7]
        );
    }

    #[test]
    fn agrees_with_words_and_long_input() {
        let text = "The quick brown fox 跳过了 the lazy dog. ".repeat(10_000);
        assert_eq!(word_count(&text), words(&text).len() as i64);
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
