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

/// Byte classes of the ASCII fast path of [`words`].
const OTHER: u8 = 0; // ASCII punctuation and controls
const WORD: u8 = 1; // ASCII letter, digit or '_'
const SPACE: u8 = 2; // ASCII whitespace: always a word boundary
const HIGH: u8 = 3; // a byte of a non-ASCII character

static CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c >= 0x80 {
            HIGH
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            WORD
        } else if c.is_ascii_whitespace() {
            SPACE
        } else {
            OTHER
        };
        b += 1;
    }
    t
};

/// The words of `text` with their byte offsets: UAX #29 words that hold a letter or digit, with every
/// CJK character split out as a word of its own. Shared by the lexicon functions so that their ratios use
/// the same denominator as `word_count`.
///
/// Written out rather than calling `unicode_word_indices` on the whole text because this is the hot loop
/// of every lexicon stage and that costs ~30 MB/s. ASCII whitespace always separates words, so the text
/// falls into whitespace-delimited chunks; an ASCII chunk (most of an English corpus) is segmented in one
/// pass by a byte loop that applies UAX #29's rules for ASCII (letters and digits joined by `_`; `' . :`
/// inside letters; `, ; . '` inside numbers); a chunk with another character is handed, from its start,
/// to `unicode-segmentation`, and what the byte loop had found in it is dropped. A test checks that the
/// two paths agree.
pub fn words(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::with_capacity(text.len() / 6 + 8);
    let b = text.as_bytes();
    let n = b.len();
    let (mut chunk_start, mut chunk_mark) = (0, 0);
    let mut i = 0;
    while i < n {
        match CLASS[b[i] as usize] {
            SPACE => {
                i += 1;
                chunk_start = i;
                chunk_mark = out.len();
            }
            OTHER => i += 1,
            HIGH if boundary_char_at(text, i) > 0 => i += boundary_char_at(text, i),
            HIGH => {
                out.truncate(chunk_mark);
                let end = b[i..]
                    .iter()
                    .position(|&c| CLASS[c as usize] == SPACE)
                    .map_or(n, |p| i + p);
                unicode_words(&text[chunk_start..end], chunk_start, &mut out);
                i = end;
            }
            _ => {
                let s = i;
                loop {
                    i += b[i..]
                        .iter()
                        .position(|&c| CLASS[c as usize] != WORD)
                        .unwrap_or(n - i);
                    // A mid character between letters or between digits joins them: ' . : and the
                    // typographic apostrophes ‘ ’ between letters; , ; . ' ‘ ’ between digits.
                    let (width, in_letters, in_digits) = match b.get(i..i + 3) {
                        Some([0xE2, 0x80, 0x98 | 0x99]) => (3, true, true),
                        _ => match b.get(i) {
                            Some(b'\'' | b'.') => (1, true, true),
                            Some(b':') => (1, true, false),
                            Some(b',' | b';') => (1, false, true),
                            _ => break,
                        },
                    };
                    let Some(&next) = b.get(i + width) else { break };
                    let prev = b[i - 1];
                    if (in_letters && prev.is_ascii_alphabetic() && next.is_ascii_alphabetic())
                        || (in_digits && prev.is_ascii_digit() && next.is_ascii_digit())
                    {
                        i += width;
                        continue;
                    }
                    break;
                }
                // "___" is a UAX #29 word without a letter or digit.
                if b[s] != b'_' || b[s..i].iter().any(u8::is_ascii_alphanumeric) {
                    out.push((s, &text[s..i]));
                }
            }
        }
    }
    out
}

/// The width of the character at byte `i` if it is one that UAX #29 gives the word-break property Other
/// (a boundary on both sides, whatever its neighbours): the typographic punctuation of web text, which
/// the fast path steps over rather than handing the chunk to `unicode-segmentation`. Else 0.
fn boundary_char_at(text: &str, i: usize) -> usize {
    match text[i..].chars().next() {
        Some(c @ ('\u{A0}' | '“' | '”' | '–' | '—' | '…' | '«' | '»' | '•' | '°' | '€' | '£')) => {
            c.len_utf8()
        }
        _ => 0,
    }
}

/// The words of a chunk with a non-ASCII character, by UAX #29, CJK runs split into characters.
fn unicode_words<'a>(chunk: &'a str, base: usize, out: &mut Vec<(usize, &'a str)>) {
    for (off, w) in chunk.unicode_word_indices() {
        let off = base + off;
        if w.is_ascii() || !w.chars().any(is_cjk) {
            out.push((off, w));
            continue;
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
    }
}

pub fn word_count(text: &str) -> i64 {
    words(text).len() as i64
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

    /// The ASCII fast path gives what `unicode-segmentation` gives, on text that mixes every case.
    #[test]
    fn fast_path_agrees_with_unicode_segmentation() {
        let pieces = [
            "word",
            "Don't",
            "U.S.A.",
            "3.14",
            "1,000",
            "a:b",
            "x_y",
            "___",
            "_a",
            "a_",
            "e-mail",
            "naïve",
            "l’été",
            "café.",
            "3'4",
            "a'",
            "'a",
            "...",
            "--",
            "(ok)",
            "\"q\"",
            "end.Then",
            "1;2",
            "a.1",
            "1.a",
            "—",
            "中文",
            "abc中",
            "x.中",
            "\t",
            "\n",
            " ",
            "🙂",
            "é",
            ".",
            "'",
            "“",
            "”",
            "–",
            "…",
            "\u{A0}",
            "«",
            "»",
            "•",
            "°",
            "€",
            "£",
            "’",
            "‘",
            "don’t",
            "1’000",
            "a’",
            "’a",
            "x:",
            ":y",
            "5,",
            ",6",
            "\u{301}",
            "\u{200D}",
            "©",
        ];
        // A deterministic pseudo-random walk over the pieces, glued with and without spaces.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut text = String::new();
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push_str(pieces[(state >> 33) as usize % pieces.len()]);
            if (state >> 20) % 3 == 0 {
                text.push(' ');
            }
        }
        let mut expected = Vec::new();
        unicode_words(&text, 0, &mut expected);
        assert_eq!(words(&text), expected);
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
