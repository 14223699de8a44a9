//! Words and CJK characters: the segmentation that `word_count`, the lexicon functions and MinHash's
//! word shingles share, so that their counts and ratios agree. Pure functions (no Arrow, no DataFusion),
//! so a benchmark outside the workspace can compile this file on its own.

use unicode_segmentation::UnicodeSegmentation;

/// True for Han ideographs (all CJK Unified blocks and compatibility ideographs) and Hiragana: scripts
/// written without spaces, where each character counts as one word.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x309F | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF
        | 0x20000..=0x2A6DF | 0x2A700..=0x2EBEF | 0x2F800..=0x2FA1F | 0x30000..=0x323AF)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_characters_are_words_of_their_own() {
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
            if (state >> 20).is_multiple_of(3) {
                text.push(' ');
            }
        }
        let mut expected = Vec::new();
        unicode_words(&text, 0, &mut expected);
        assert_eq!(words(&text), expected);
    }
}
