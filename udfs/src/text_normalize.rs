//! Text normalisation before shingling, as datatrove's `simplify_text` does it by default, so that
//! near-duplicates that differ only in case, numbers, punctuation, spacing or accents shingle alike.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Which steps run, in datatrove's order: lower-case; every number (digits of any script, with an
/// optional decimal part) to `0`; punctuation to spaces; whitespace runs to one space; accents
/// stripped (NFD, then non-spacing marks dropped).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Normalization {
    pub lowercase: bool,
    pub digits: bool,
    pub punctuation: bool,
    pub whitespace: bool,
    pub accents: bool,
}

impl Default for Normalization {
    fn default() -> Self {
        Self {
            lowercase: true,
            digits: true,
            punctuation: true,
            whitespace: true,
            accents: true,
        }
    }
}

impl Normalization {
    pub const NONE: Self = Self {
        lowercase: false,
        digits: false,
        punctuation: false,
        whitespace: false,
        accents: false,
    };

    /// Parses `default`, `none`, or a comma-separated list of steps (`lowercase,digits,punctuation,
    /// whitespace,accents`).
    pub fn parse(spec: &str) -> Result<Self, String> {
        match spec.trim() {
            "default" | "" => return Ok(Self::default()),
            "none" => return Ok(Self::NONE),
            _ => {}
        }
        let mut n = Self::NONE;
        for step in spec.split(',').map(str::trim) {
            match step {
                "lowercase" => n.lowercase = true,
                "digits" | "numbers" => n.digits = true,
                "punctuation" => n.punctuation = true,
                "whitespace" => n.whitespace = true,
                "accents" => n.accents = true,
                other => {
                    return Err(format!(
                        "unknown normalisation step '{other}': lowercase, digits, punctuation, whitespace, accents"
                    ));
                }
            }
        }
        Ok(n)
    }

    pub fn apply(&self, text: &str) -> String {
        if text.is_ascii() {
            self.apply_ascii(text)
        } else if text.contains('\u{3A3}') {
            // Capital sigma lower-cases by its position in a word (σ or final ς): only the whole-string
            // `to_lowercase` knows, so Greek with Σ takes the step-by-step path.
            self.apply_steps(text)
        } else {
            self.apply_unicode(text)
        }
    }

    /// All steps in one pass over any text without capital sigma, char by char in datatrove's order
    /// (lower-case, number, punctuation, whitespace, then canonical decomposition without non-spacing
    /// marks); a test checks it against [`Self::apply_steps`].
    fn apply_unicode(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut pending_space = false;
        let mut emit = |c: char, out: &mut String, pending_space: &mut bool| {
            if self.whitespace && c.is_whitespace() {
                *pending_space = true;
                return;
            }
            if *pending_space && !out.is_empty() {
                out.push(' ');
            }
            *pending_space = false;
            if self.accents && !c.is_ascii() {
                unicode_normalization::char::decompose_canonical(c, |d| {
                    if d.general_category() != GeneralCategory::NonspacingMark {
                        out.push(d);
                    }
                });
            } else {
                out.push(c);
            }
        };
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            if self.digits && is_decimal_digit(c) {
                rest = rest.trim_start_matches(is_decimal_digit);
                let mut ahead = rest.chars();
                if let (Some(sep), Some(d)) = (ahead.next(), ahead.next())
                    && matches!(sep, '.' | ',' | '،' | '٫' | '⎖' | '⎗' | '⎘')
                    && is_decimal_digit(d)
                {
                    rest = rest[sep.len_utf8()..].trim_start_matches(is_decimal_digit);
                }
                emit('0', &mut out, &mut pending_space);
                continue;
            }
            if self.lowercase && !c.is_lowercase() {
                for l in c.to_lowercase() {
                    self.after_lowercase(l, &mut out, &mut pending_space, &mut emit);
                }
            } else {
                self.after_lowercase(c, &mut out, &mut pending_space, &mut emit);
            }
        }
        if out.trim().len() == out.len() {
            out
        } else {
            out.trim().to_string()
        }
    }

    /// The punctuation step of one character, then whatever `emit` does with it.
    fn after_lowercase(
        &self,
        c: char,
        out: &mut String,
        pending_space: &mut bool,
        emit: &mut impl FnMut(char, &mut String, &mut bool),
    ) {
        let c = if self.punctuation && is_punctuation(c) {
            ' '
        } else {
            c
        };
        emit(c, out, pending_space);
    }

    /// All steps in one pass over ASCII text (most of an English corpus), without the intermediate
    /// strings of [`Self::apply_steps`]; a test checks that both agree.
    fn apply_ascii(&self, text: &str) -> String {
        let b = text.as_bytes();
        let mut out: Vec<u8> = Vec::with_capacity(b.len());
        let mut pending_space = false;
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            let class = ASCII_CLASS[c as usize];
            let piece = if self.digits && class & DIGIT != 0 {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i + 1 < b.len() && matches!(b[i], b'.' | b',') && b[i + 1].is_ascii_digit() {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                b'0'
            } else {
                i += 1;
                if self.punctuation && class & PUNCT != 0 {
                    b' '
                } else if self.lowercase {
                    c.to_ascii_lowercase()
                } else {
                    c
                }
            };
            if self.whitespace && ASCII_CLASS[piece as usize] & SPACE != 0 {
                pending_space = true;
                continue;
            }
            if pending_space && !out.is_empty() {
                out.push(b' ');
            }
            pending_space = false;
            out.push(piece);
        }
        let s = String::from_utf8(out).expect("ASCII in, ASCII out");
        if s.trim().len() == s.len() {
            s
        } else {
            s.trim().to_string()
        }
    }

    /// The steps one after another, as datatrove runs them.
    fn apply_steps(&self, text: &str) -> String {
        let mut s = if self.lowercase {
            if text.is_ascii() {
                text.to_ascii_lowercase()
            } else {
                text.to_lowercase()
            }
        } else {
            text.to_string()
        };
        if self.digits {
            s = numbers_to_zero(&s);
        }
        if self.punctuation {
            s = s
                .chars()
                .map(|c| if is_punctuation(c) { ' ' } else { c })
                .collect();
        }
        if self.whitespace {
            s = collapse_whitespace(s.trim());
        }
        if self.accents && !s.is_ascii() {
            s = s
                .nfd()
                .filter(|c| c.general_category() != GeneralCategory::NonspacingMark)
                .collect();
        }
        s.trim().to_string()
    }
}

// Bit flags: a byte can be both (vertical tab, form feed and carriage return are controls, which
// datatrove's punctuation step blanks, and whitespace).
const DIGIT: u8 = 1;
const PUNCT: u8 = 2;
const SPACE: u8 = 4;

/// The class of each ASCII byte for the one-pass path: [`is_punctuation`] and `char::is_whitespace`,
/// looked up instead of recomputed per byte.
static ASCII_CLASS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut c = 0;
    while c < 128 {
        t[c] = match c as u8 {
            b'0'..=b'9' => DIGIT,
            b' ' | b'\t' | b'\n' => SPACE,
            0x0b | 0x0c | b'\r' => SPACE | PUNCT,
            0..=8 | 14..=31 | 127 => PUNCT,
            b'!'..=b'/' | b':'..=b'@' | b'['..=b'`' | b'{'..=b'~' => PUNCT,
            _ => 0,
        };
        c += 1;
    }
    t
};

fn is_decimal_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.general_category() == GeneralCategory::DecimalNumber)
}

/// datatrove's `\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?` → `0`.
fn numbers_to_zero(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if !is_decimal_digit(chars[i]) {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        while i < chars.len() && is_decimal_digit(chars[i]) {
            i += 1;
        }
        if i + 1 < chars.len()
            && matches!(chars[i], '.' | ',' | '،' | '٫' | '⎖' | '⎗' | '⎘')
            && is_decimal_digit(chars[i + 1])
        {
            i += 1;
            while i < chars.len() && is_decimal_digit(chars[i]) {
                i += 1;
            }
        }
        out.push('0');
    }
    out
}

/// datatrove's `PUNCTUATION`: ASCII punctuation, the common CJK and typographic marks, and the control
/// characters other than tab and line feed.
fn is_punctuation(c: char) -> bool {
    match c as u32 {
        0..=8 | 11..=31 | 127..=159 => true,
        _ if c.is_ascii() => c.is_ascii_punctuation(),
        _ => matches!(
            c,
            '\u{AB}'
                | '\u{B4}'
                | '\u{BB}'
                | '\u{2013}'
                | '\u{2014}'
                | '\u{2019}'
                | '\u{201C}'
                | '\u{201D}'
                | '\u{201E}'
                | '\u{2026}'
                | '\u{2236}'
                | '\u{2501}'
                | '\u{25BA}'
                | '\u{3001}'
                | '\u{3002}'
                | '\u{3008}'
                | '\u{3009}'
                | '\u{300A}'
                | '\u{300B}'
                | '\u{300C}'
                | '\u{300D}'
                | '\u{3010}'
                | '\u{3011}'
                | '\u{FF01}'
                | '\u{FF05}'
                | '\u{FF08}'
                | '\u{FF09}'
                | '\u{FF0C}'
                | '\u{FF0E}'
                | '\u{FF11}'
                | '\u{FF1A}'
                | '\u{FF1B}'
                | '\u{FF1F}'
                | '\u{FF5E}'
        ),
    }
}

fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_datatrove_simplify_text() {
        let n = Normalization::default();
        // The example checked against datatrove 0.10.1's simplify_text.
        assert_eq!(
            n.apply("Héllo, World! It's 3.14 and 2024 — café"),
            "hello world it s 0 and 0 cafe"
        );
        assert_eq!(n.apply("床前明月光，疑是地上霜。"), "床前明月光 疑是地上霜");
        assert_eq!(n.apply("第１２３页 ٣٫١٤"), "第0页 0");
        assert_eq!(n.apply("  a\t\n b  "), "a b");
        assert_eq!(n.apply(""), "");
        assert_eq!(n.apply(" \n "), "");
    }

    /// `count` texts of up to `max_pieces - 1` pieces each, from a seeded LCG.
    fn random_texts(pieces: &[&str], seed: u64, max_pieces: u64, count: usize) -> Vec<String> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                let mut text = String::new();
                for _ in 0..(state % max_pieces) {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    text.push_str(pieces[(state >> 33) as usize % pieces.len()]);
                }
                text
            })
            .collect()
    }

    #[test]
    fn one_pass_over_ascii_equals_the_steps() {
        // Pseudo-random ASCII built from the pieces that matter: digits, separators, punctuation,
        // controls, every kind of whitespace, letters of both cases.
        let pieces = [
            "3", "14", ".", ",", "2.5", "1,000", "a", "B", "word", " ", "  ", "\t", "\n", "\r",
            "\x0b", "\x0c", "\x01", "\x7f", "!", "'", "-", "(x)", "A.", "9.", ".9", "e.g.", "",
        ];
        let specs = [
            "default",
            "none",
            "lowercase",
            "digits",
            "punctuation",
            "whitespace",
            "digits,punctuation",
        ];
        for text in random_texts(&pieces, 1, 13, 20_000) {
            for spec in specs {
                let n = Normalization::parse(spec).unwrap();
                assert_eq!(
                    n.apply_ascii(&text),
                    n.apply_steps(&text),
                    "{spec}: {text:?}"
                );
            }
        }
    }

    #[test]
    fn one_pass_over_unicode_equals_the_steps() {
        let pieces = [
            "Héllo",
            "CAFÉ",
            "naïve",
            "ÅNGSTRÖM",
            "ß",
            "İstanbul",
            "Ǆ",
            "ﬁ",
            "3",
            "١٢٣",
            "٫",
            "٣٫١٤",
            "１２",
            "．",
            "，",
            "。",
            "、",
            "「",
            "」",
            "…",
            "—",
            "–",
            "“",
            "”",
            "’",
            "«",
            "»",
            " ",
            "\u{3000}",
            "\u{A0}",
            "\u{2000}",
            "\t",
            "\n",
            "\u{85}",
            "\u{1}",
            "床前",
            "明月光",
            "e\u{301}",
            "\u{301}",
            "a\u{308}\u{323}",
            "\u{37E}",
            "ǅ",
            "ά",
            "ω",
            "2.5",
            "1,0",
            ".",
            "!",
            "x",
            "Y",
            "",
        ];
        let specs = [
            "default",
            "none",
            "lowercase",
            "digits",
            "punctuation",
            "whitespace",
            "accents",
        ];
        for text in random_texts(&pieces, 7, 11, 20_000) {
            if text.is_ascii() {
                continue;
            }
            for spec in specs {
                let n = Normalization::parse(spec).unwrap();
                assert_eq!(
                    n.apply_unicode(&text),
                    n.apply_steps(&text),
                    "{spec}: {text:?}"
                );
            }
        }
    }

    #[test]
    fn steps_switch_off() {
        let none = Normalization::parse("none").unwrap();
        assert_eq!(none.apply(" Héllo, 42 "), "Héllo, 42");
        let some = Normalization::parse("lowercase, accents").unwrap();
        assert_eq!(some.apply("Héllo, 42"), "hello, 42");
        assert!(Normalization::parse("lowercase,stem").is_err());
        assert_eq!(
            Normalization::parse("default").unwrap(),
            Normalization::default()
        );
    }
}
