//! Where a removed span may begin and end. ExactSubstr removes byte ranges as found, cutting UTF-8
//! characters and words in half; here a span only shrinks, to the nearest boundary inside it, so what
//! is removed is still repeated text and what stays is still whole characters (or words, or lines).

use openseek_udfs::words::is_cjk;

use super::options::Snap;

/// The part of bytes `[a, b)` of `text` that starts and ends on `snap` boundaries, if any is left.
pub fn snap_span(text: &str, a: usize, b: usize, snap: Snap) -> Option<(usize, usize)> {
    let b = b.min(text.len());
    let mut a = a.min(b);
    while !text.is_char_boundary(a) {
        a += 1;
    }
    let mut b = b;
    while b > a && !text.is_char_boundary(b) {
        b -= 1;
    }
    if a >= b {
        return None;
    }
    match snap {
        Snap::Char => {}
        Snap::Word => {
            while a < b && !is_word_boundary(text, a) {
                a += next_char_len(text, a);
            }
            while b > a && !is_word_boundary(text, b) {
                b -= prev_char_len(text, b);
            }
        }
        Snap::Line => {
            if a > 0 && text.as_bytes()[a - 1] != b'\n' {
                a = match memchr_newline(&text.as_bytes()[a..b]) {
                    Some(i) => a + i + 1,
                    None => b,
                };
            }
            if b < text.len() && b > a && text.as_bytes()[b - 1] != b'\n' {
                b = match text.as_bytes()[a..b].iter().rposition(|&c| c == b'\n') {
                    Some(i) => a + i + 1,
                    None => a,
                };
            }
        }
    }
    (a < b).then_some((a, b))
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&c| c == b'\n')
}

/// A character that words are made of: letters and digits, except CJK characters, which are words of
/// their own.
fn is_word_char(c: char) -> bool {
    (c.is_alphanumeric() || c == '_') && !is_cjk(c)
}

/// Whether char boundary `i` is not inside a word.
fn is_word_boundary(text: &str, i: usize) -> bool {
    let before = text[..i].chars().next_back();
    let after = text[i..].chars().next();
    match (before, after) {
        (Some(x), Some(y)) => !(is_word_char(x) && is_word_char(y)),
        _ => true,
    }
}

fn next_char_len(text: &str, i: usize) -> usize {
    text[i..].chars().next().map_or(1, char::len_utf8)
}

fn prev_char_len(text: &str, i: usize) -> usize {
    text[..i].chars().next_back().map_or(1, char::len_utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(text: &str, a: usize, b: usize, snap: Snap) -> Option<&str> {
        snap_span(text, a, b, snap).map(|(a, b)| &text[a..b])
    }

    #[test]
    fn chars_are_never_cut() {
        let t = "数据引擎"; // three bytes a character
        assert_eq!(cut(t, 1, 11, Snap::Char), Some("据引"));
        assert_eq!(cut(t, 0, 12, Snap::Char), Some(t));
        assert_eq!(cut(t, 1, 3, Snap::Char), None);
        // Inside one character, in every mode.
        for snap in [Snap::Char, Snap::Word, Snap::Line] {
            assert_eq!(cut(t, 4, 5, snap), None);
        }
    }

    #[test]
    fn words_are_never_cut() {
        let t = "the quick brown fox";
        assert_eq!(cut(t, 5, 16, Snap::Word), Some(" brown "));
        assert_eq!(cut(t, 4, 19, Snap::Word), Some("quick brown fox"));
        assert_eq!(cut(t, 1, 3, Snap::Word), None);
        // Every CJK character is a word.
        assert_eq!(cut("开源数据abc引擎", 3, 14, Snap::Word), Some("源数据"));
        assert_eq!(cut("开源数据abc引擎", 4, 16, Snap::Word), Some("数据abc"));
    }

    #[test]
    fn lines_go_whole() {
        let t = "one\ntwo\nthree\nfour";
        assert_eq!(cut(t, 2, 15, Snap::Line), Some("two\nthree\n"));
        assert_eq!(cut(t, 4, 18, Snap::Line), Some("two\nthree\nfour"));
        assert_eq!(cut(t, 0, 3, Snap::Line), None);
        assert_eq!(cut(t, 0, 4, Snap::Line), Some("one\n"));
        assert_eq!(cut(t, 5, 12, Snap::Line), None);
    }
}
