//! `avg_sentence_length(text)`: mean characters per sentence. No peer tool has it; the splitter knows the
//! Chinese terminators 。！？；… as well as . ! ?, and does not end a sentence at abbreviations ("Dr."),
//! initials ("J. Smith"), decimals ("3.14") or an ellipsis that the sentence runs on after.

use std::sync::LazyLock;

use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::{DOC_SECTION, coerce_text_args, map_to_f64};
use crate::words::is_cjk;

/// Lower-cased abbreviations after which a period never ends the sentence: titles and references that
/// a name or a number follows ("Dr. Watson", "Fig. 3", "e.g. this").
const TITLES: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "e.g", "i.e", "cf", "viz",
    "fig", "figs", "vol", "vols", "pp", "capt", "lt", "sgt", "rev", "hon", "gen", "col", "gov",
    "messrs",
];

/// Abbreviations that also end sentences: the period ends one only when a capitalised word follows
/// ("etc. Then"), not before a number or a lower-case word ("No. 5", "approx. five").
const ABBREVIATIONS: &[&str] = &[
    "etc", "al", "inc", "ltd", "co", "corp", "ed", "eds", "no", "nos", "p", "approx", "dept",
    "est", "u.s", "u.k", "a.m", "p.m", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "resp", "ch", "sec", "art", "op", "cit",
];

/// Characters that may close a sentence after its terminator: quotes and brackets.
fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '」' | '』' | '）' | '》' | '】' | '〉'
    )
}

/// Terminators that always end a sentence.
fn is_hard_terminator(c: char) -> bool {
    matches!(
        c,
        '!' | '?' | '。' | '！' | '？' | '；' | '｡' | '‼' | '⁇' | '⁈' | '⁉'
    )
}

/// Bytes where the splitter has something to decide: ASCII `. ! ? \n`, and the lead bytes of the
/// non-ASCII terminators (… ‼ ⁇ ⁈ ⁉ start with 0xE2, 。 with 0xE3, ！ ？ ； ｡ with 0xEF). Every other
/// byte is skipped without decoding a character: the splitter runs over every document.
static INTERESTING: [bool; 256] = {
    let mut t = [false; 256];
    t[b'.' as usize] = true;
    t[b'!' as usize] = true;
    t[b'?' as usize] = true;
    t[b'\n' as usize] = true;
    t[0xE2] = true;
    t[0xE3] = true;
    t[0xEF] = true;
    t
};

fn char_at(text: &str, i: usize) -> Option<char> {
    text.get(i..).and_then(|t| t.chars().next())
}

/// Byte offset just past the character at `i`.
fn after(text: &str, i: usize) -> usize {
    i + char_at(text, i).map_or(1, char::len_utf8)
}

/// Byte ranges of the sentences of `text`, trimmed of surrounding whitespace; a sentence holds at least
/// one alphanumeric character. A blank line (paragraph break) also ends a sentence, so headings and list
/// items without punctuation do not merge into one long sentence.
pub fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let n = b.len();
    let mut spans = Vec::new();
    let mut start = 0usize; // byte offset of the current sentence
    let push = |s: usize, e: usize, spans: &mut Vec<(usize, usize)>| {
        let piece = &text[s..e];
        let trimmed = piece.trim();
        if trimmed.chars().any(char::is_alphanumeric) {
            let off = s + (piece.len() - piece.trim_start().len());
            spans.push((off, off + trimmed.len()));
        }
    };
    let mut i = 0usize; // byte offset of the character looked at; always on a character boundary
    while i < n {
        if !INTERESTING[b[i] as usize] {
            i += 1; // an ASCII byte, or a byte of a character that cannot end a sentence
            continue;
        }
        let c = char_at(text, i).expect("interesting bytes start characters");
        let mut end_here = false;
        if is_hard_terminator(c) {
            end_here = true;
        } else if c == '…' || (c == '.' && text[i + 1..].starts_with("..")) {
            // An ellipsis ends the sentence only when what follows starts a new one.
            while matches!(char_at(text, after(text, i)), Some('.' | '…')) {
                i = after(text, i);
            }
            end_here = starts_new_sentence(text, after(text, i));
        } else if c == '.' {
            end_here = period_ends_sentence(text, i);
        } else if c == '\n' {
            // Paragraph break: a newline followed by optional spaces and another newline.
            let mut k = i + 1;
            while let Some(w) = char_at(text, k).filter(|&w| w != '\n' && w.is_whitespace()) {
                k += w.len_utf8();
            }
            if k < n && b[k] == b'\n' {
                push(start, i, &mut spans);
                start = k;
                i = k;
                continue;
            }
        }
        if end_here {
            while char_at(text, after(text, i))
                .is_some_and(|d| is_hard_terminator(d) || is_closer(d) || d == '.')
            {
                i = after(text, i);
            }
            push(start, after(text, i), &mut spans);
            start = after(text, i);
        }
        i = after(text, i);
    }
    push(start, n, &mut spans);
    spans
}

/// Does byte offset `k` start a new sentence: end of text, or whitespace then upper case, CJK, a digit
/// or an opening quote?
fn starts_new_sentence(text: &str, k: usize) -> bool {
    let mut rest = text[k..].chars().skip_while(|&c| is_closer(c)).peekable();
    match rest.peek() {
        None => return true,
        Some(c) if !c.is_whitespace() => return false, // "……然后": a pause inside the sentence
        _ => {}
    }
    match rest.find(|c| !c.is_whitespace()) {
        None => true,
        Some(c) => {
            c.is_uppercase()
                || is_cjk(c)
                || c.is_numeric()
                || matches!(c, '"' | '“' | '「' | '(' | '[')
        }
    }
}

/// Whether the period at byte offset `i` ends a sentence: not inside a number or a dotted name, not
/// after an abbreviation or an initial, and not when the text runs on in lower case.
fn period_ends_sentence(text: &str, i: usize) -> bool {
    if let Some(nc) = char_at(text, i + 1)
        && !(nc.is_whitespace() || is_closer(nc))
    {
        // "3.14", "example.com", "e.g.": no space after the period.
        return is_cjk(nc);
    }
    // The word before the period.
    let k = text[..i]
        .char_indices()
        .rev()
        .find(|&(_, c)| c.is_whitespace() || is_closer(c) || matches!(c, '(' | '"' | '“'))
        .map_or(0, |(p, c)| p + c.len_utf8());
    let word = &text[k..i];
    let mut letters = word.chars();
    if let (Some(first), None) = (letters.next(), letters.next())
        && first.is_alphabetic()
        && first.is_uppercase()
    {
        return false; // an initial, as in "J. Smith"
    }
    let lower = word.to_lowercase();
    if TITLES.contains(&lower.as_str()) {
        return false;
    }
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return following_is_capitalised(text, i + 1);
    }
    starts_new_sentence(text, i + 1) || !following_is_lowercase(text, i + 1)
}

/// The first character from byte offset `k` on that is neither whitespace nor a closer.
fn next_word_char(text: &str, k: usize) -> Option<char> {
    text[k..]
        .chars()
        .find(|&c| !(c.is_whitespace() || is_closer(c)))
}

fn following_is_capitalised(text: &str, k: usize) -> bool {
    next_word_char(text, k).is_none_or(|c| c.is_uppercase() || is_cjk(c))
}

fn following_is_lowercase(text: &str, k: usize) -> bool {
    next_word_char(text, k).is_some_and(char::is_lowercase)
}

/// Mean characters per sentence (trimmed); 0 when the text has no sentence.
pub fn avg_sentence_length(text: &str) -> f64 {
    let spans = sentence_spans(text);
    if spans.is_empty() {
        return 0.0;
    }
    let chars: usize = spans.iter().map(|&(s, e)| text[s..e].chars().count()).sum();
    chars as f64 / spans.len() as f64
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AvgSentenceLengthFunc {
    signature: Signature,
}

impl Default for AvgSentenceLengthFunc {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Mean number of characters per sentence; sentences end at . ! ? 。！？；… and paragraph breaks, \
         not at abbreviations, initials, decimals or run-on ellipses.",
        "avg_sentence_length(text)",
    )
    .with_argument("text", "The document text.")
    .with_sql_example("SELECT avg_sentence_length('Dr. Who came. He left.')  -- 10.5")
    .build()
});

impl ScalarUDFImpl for AvgSentenceLengthFunc {
    fn name(&self) -> &str {
        "avg_sentence_length"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce_text_args(self.name(), args, &[])
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        map_to_f64(&args.args[0], avg_sentence_length)
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::test_util::{f64s, invoke};

    fn split(text: &str) -> Vec<&str> {
        sentence_spans(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect()
    }

    #[test]
    fn english_terminators_and_abbreviations() {
        assert_eq!(
            split("Dr. Who came. He left."),
            vec!["Dr. Who came.", "He left."]
        );
        assert_eq!(
            split("It cost 3.14 dollars. Cheap!"),
            vec!["It cost 3.14 dollars.", "Cheap!"]
        );
        assert_eq!(
            split("J. R. R. Tolkien wrote it. Yes?"),
            vec!["J. R. R. Tolkien wrote it.", "Yes?"]
        );
        assert_eq!(
            split("See e.g. the U.S. report. Then stop."),
            vec!["See e.g. the U.S. report.", "Then stop."]
        );
        assert_eq!(
            split("He said \"Stop!\" Then he left."),
            vec!["He said \"Stop!\"", "Then he left."]
        );
        assert_eq!(
            split("Visit example.com today. Now."),
            vec!["Visit example.com today.", "Now."]
        );
        assert_eq!(
            split("I said no. Then I left."),
            vec!["I said no.", "Then I left."]
        );
        assert_eq!(
            split("See No. 5 and apples etc. Then go."),
            vec!["See No. 5 and apples etc.", "Then go."]
        );
    }

    #[test]
    fn ellipses() {
        assert_eq!(
            split("Wait... what happened? Nothing... Then it rained."),
            vec!["Wait... what happened?", "Nothing...", "Then it rained."]
        );
        assert_eq!(split("他想了想……然后走了。"), vec!["他想了想……然后走了。"]);
        assert_eq!(split("他想了想……\n"), vec!["他想了想……"]);
    }

    #[test]
    fn chinese_terminators() {
        assert_eq!(
            split("床前明月光，疑是地上霜。举头望明月，低头思故乡。"),
            vec!["床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"]
        );
        assert_eq!(
            split("你好！你是谁？我是学生；他是老师。"),
            vec!["你好！", "你是谁？", "我是学生；", "他是老师。"]
        );
        assert_eq!(
            split("他说：“走吧。”我们走了。"),
            vec!["他说：“走吧。”", "我们走了。"]
        );
    }

    #[test]
    fn paragraph_breaks_and_empty() {
        assert_eq!(
            split("Title\n\nBody text here."),
            vec!["Title", "Body text here."]
        );
        assert!(split("").is_empty());
        assert!(split("   \n\t ").is_empty());
        assert!(split("... !!! 。").is_empty());
        assert_eq!(avg_sentence_length(""), 0.0);
        assert_eq!(avg_sentence_length("Dr. Who came. He left."), 10.5);
    }

    #[test]
    fn very_long_line() {
        let text = "word ".repeat(200_000);
        assert_eq!(sentence_spans(&text).len(), 1);
        let many = "Short one. ".repeat(100_000);
        assert_eq!(sentence_spans(&many).len(), 100_000);
        assert_eq!(avg_sentence_length(&many), 10.0);
    }

    /// The splitter as first written, over a vector of characters: slow (a 16-byte entry per character)
    /// but plain, kept as the reference for the byte-skipping one.
    mod reference {
        use super::super::{ABBREVIATIONS, TITLES, is_closer, is_hard_terminator};
        use crate::words::is_cjk;

        /// Byte ranges of the sentences of `text`, trimmed of surrounding whitespace; a sentence holds at least
        /// one alphanumeric character. A blank line (paragraph break) also ends a sentence, so headings and list
        /// items without punctuation do not merge into one long sentence.
        pub(super) fn reference_spans(text: &str) -> Vec<(usize, usize)> {
            let chars: Vec<(usize, char)> = text.char_indices().collect();
            let mut spans = Vec::new();
            let mut start = 0usize; // byte offset of the current sentence
            let mut i = 0usize;
            let n = chars.len();
            let byte_at = |k: usize| if k < n { chars[k].0 } else { text.len() };
            let push = |s: usize, e: usize, spans: &mut Vec<(usize, usize)>| {
                let piece = &text[s..e];
                let trimmed = piece.trim();
                if trimmed.chars().any(char::is_alphanumeric) {
                    let off = s + (piece.len() - piece.trim_start().len());
                    spans.push((off, off + trimmed.len()));
                }
            };
            while i < n {
                let c = chars[i].1;
                let mut end_here = false;
                if is_hard_terminator(c) {
                    end_here = true;
                } else if c == '…'
                    || (c == '.' && i + 2 < n && chars[i + 1].1 == '.' && chars[i + 2].1 == '.')
                {
                    // An ellipsis ends the sentence only when what follows starts a new one.
                    while i + 1 < n && matches!(chars[i + 1].1, '.' | '…') {
                        i += 1;
                    }
                    end_here = starts_new_sentence(&chars, i + 1);
                } else if c == '.' {
                    end_here = period_ends_sentence(text, &chars, i);
                } else if c == '\n' {
                    // Paragraph break: a newline followed by optional spaces and another newline.
                    let mut k = i + 1;
                    while k < n && chars[k].1 != '\n' && chars[k].1.is_whitespace() {
                        k += 1;
                    }
                    if k < n && chars[k].1 == '\n' {
                        push(start, byte_at(i), &mut spans);
                        start = byte_at(k);
                        i = k;
                        continue;
                    }
                }
                if end_here {
                    while i + 1 < n
                        && (is_hard_terminator(chars[i + 1].1)
                            || is_closer(chars[i + 1].1)
                            || chars[i + 1].1 == '.')
                    {
                        i += 1;
                    }
                    push(start, byte_at(i + 1), &mut spans);
                    start = byte_at(i + 1);
                }
                i += 1;
            }
            push(start, text.len(), &mut spans);
            spans
        }

        /// Does position `k` start a new sentence: end of text, or whitespace then upper case, CJK, a digit or
        /// an opening quote?
        fn starts_new_sentence(chars: &[(usize, char)], mut k: usize) -> bool {
            while k < chars.len() && is_closer(chars[k].1) {
                k += 1;
            }
            if k >= chars.len() {
                return true;
            }
            if !chars[k].1.is_whitespace() {
                return false; // "……然后": a pause inside the sentence
            }
            while k < chars.len() && chars[k].1.is_whitespace() {
                k += 1;
            }
            match chars.get(k) {
                None => true,
                Some(&(_, c)) => {
                    c.is_uppercase()
                        || is_cjk(c)
                        || c.is_numeric()
                        || matches!(c, '"' | '“' | '「' | '(' | '[')
                }
            }
        }

        /// Whether the period at `i` ends a sentence: not inside a number or a dotted name, not after an
        /// abbreviation or an initial, and not when the text runs on in lower case.
        fn period_ends_sentence(text: &str, chars: &[(usize, char)], i: usize) -> bool {
            let next = chars.get(i + 1).map(|x| x.1);
            if let Some(nc) = next
                && !(nc.is_whitespace() || is_closer(nc))
            {
                // "3.14", "example.com", "e.g.": no space after the period.
                return is_cjk(nc);
            }
            // The word before the period.
            let mut k = i;
            while k > 0
                && !chars[k - 1].1.is_whitespace()
                && !is_closer(chars[k - 1].1)
                && !matches!(chars[k - 1].1, '(' | '"' | '“')
            {
                k -= 1;
            }
            let word = &text[chars[k].0..chars[i].0];
            let mut letters = word.chars();
            if let (Some(first), None) = (letters.next(), letters.next())
                && first.is_alphabetic()
                && first.is_uppercase()
            {
                return false; // an initial, as in "J. Smith"
            }
            let lower = word.to_lowercase();
            if TITLES.contains(&lower.as_str()) {
                return false;
            }
            if ABBREVIATIONS.contains(&lower.as_str()) {
                return following_is_capitalised(chars, i + 1);
            }
            starts_new_sentence(chars, i + 1) || !following_is_lowercase(chars, i + 1)
        }

        fn following_is_capitalised(chars: &[(usize, char)], mut k: usize) -> bool {
            while k < chars.len() && (chars[k].1.is_whitespace() || is_closer(chars[k].1)) {
                k += 1;
            }
            chars
                .get(k)
                .is_none_or(|x| x.1.is_uppercase() || is_cjk(x.1))
        }

        fn following_is_lowercase(chars: &[(usize, char)], mut k: usize) -> bool {
            while k < chars.len() && (chars[k].1.is_whitespace() || is_closer(chars[k].1)) {
                k += 1;
            }
            chars.get(k).is_some_and(|x| x.1.is_lowercase())
        }
    }

    /// The byte-skipping splitter gives the reference's sentences on text that mixes every case.
    #[test]
    fn agrees_with_the_reference_splitter() {
        let pieces = [
            "Dr.",
            "Mr",
            "etc.",
            "No.",
            "J.",
            "e.g.",
            "3.14",
            "example.com",
            ".",
            "..",
            "...",
            "…",
            "……",
            "!",
            "?",
            "。",
            "！",
            "？",
            "；",
            "‼",
            "⁉",
            "\"",
            "”",
            "」",
            "(",
            "“",
            "\n",
            "\n\n",
            "\n \n",
            " ",
            "  ",
            "word",
            "Word",
            "the",
            "He",
            "中文",
            "我们",
            "x",
            "5",
            "’",
            "—",
            "é",
            "É",
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for round in 0..200 {
            let mut text = String::new();
            for _ in 0..200 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(pieces[(state >> 33) as usize % pieces.len()]);
                if (state >> 20).is_multiple_of(2) {
                    text.push(' ');
                }
            }
            assert_eq!(
                sentence_spans(&text),
                reference::reference_spans(&text),
                "round {round}: {text:?}"
            );
        }
    }

    #[test]
    fn udf_on_column() {
        let out = invoke(
            &AvgSentenceLengthFunc::default(),
            &[Some("A b. C d."), None],
            vec![],
        );
        assert_eq!(f64s(&out), vec![Some(4.0), None]);
    }
}
