//! The `Split` pre-tokenizer of GPT-4-style tokenizers (Qwen, DeepSeek, Llama 3) on `regex-automata`
//! instead of Oniguruma, with the same splits.
//!
//! Why by hand: Hugging Face `tokenizers` runs these regexes on Oniguruma, one search per pre-token,
//! and every search ends by copying Oniguruma's whole match stack (~5 KB) into a fresh allocation;
//! `Split` also reserves 24 bytes per input byte for its matches. On `corpus/en` with Qwen3 that was
//! a quarter of the CPU time of `tokenize` (perf). `regex-automata` (a dependency already, through
//! DataFusion's `regex`) has no such cost, but no look-around, and these patterns have one
//! alternative that needs it, `\s+(?!\S)`: a run of whitespace, less its last character when a
//! non-space follows. It is emulated exactly by two patterns in its place, `\s+\z` (the run ends the
//! text) and `\s+\s` (the run, then its last character given back), searched as one leftmost-first
//! alternation as Oniguruma does.
//!
//! A pattern with another look-around, or one that may match the empty string, stays on Oniguruma. And because the two
//! engines could still differ in a character class (Unicode versions, case folding, POSIX brackets),
//! [`FastSplit::new`] compares both on a probe of every code point in several contexts and keeps
//! Oniguruma on any difference.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use regex_automata::meta::Regex;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::tokenizer::pattern::Pattern;
use tokenizers::{
    Offsets, PreTokenizedString, PreTokenizer, Result as TkResult, SplitDelimiterBehavior,
};

/// The lazy DFA's cache per thread and direction while encoding: `regex`'s default. The cache only
/// grows, to this size, and every thread that encodes keeps its own.
const ENCODE_CACHE_BYTES: usize = 2 << 20;

/// The same while probing (a separate regex, dropped after): text in every script builds many
/// states, and with 2 MB the cache is cleared and rebuilt over and over (2.3 s against 0.8 s).
const PROBE_CACHE_BYTES: usize = 32 << 20;

/// A pre-tokenizer with every `Split` regex that allows it on `regex-automata`.
#[derive(Debug)]
pub enum FastPreTokenizer {
    Split(FastSplit),
    Sequence(Vec<FastPreTokenizer>),
    /// Hugging Face's own, for everything else.
    Other(PreTokenizerWrapper),
}

impl FastPreTokenizer {
    /// `pt` with its eligible `Split`s replaced; the second value counts them.
    pub fn new(pt: &PreTokenizerWrapper) -> (Self, usize) {
        match pt {
            PreTokenizerWrapper::Sequence(seq) => {
                let mut fast = 0;
                let inner = seq
                    .as_ref()
                    .iter()
                    .map(|p| {
                        let (p, n) = Self::new(p);
                        fast += n;
                        p
                    })
                    .collect();
                (Self::Sequence(inner), fast)
            }
            PreTokenizerWrapper::Split(split) => match FastSplit::new(split) {
                Some(f) => (Self::Split(f), 1),
                None => (Self::Other(pt.clone()), 0),
            },
            other => (Self::Other(other.clone()), 0),
        }
    }
}

impl PreTokenizer for FastPreTokenizer {
    fn pre_tokenize(&self, pretokenized: &mut PreTokenizedString) -> TkResult<()> {
        match self {
            Self::Split(split) => {
                pretokenized.split(|_, normalized| normalized.split(split, split.behavior))
            }
            Self::Sequence(inner) => inner.iter().try_for_each(|p| p.pre_tokenize(pretokenized)),
            Self::Other(pt) => pt.pre_tokenize(pretokenized),
        }
    }
}

/// One `Split` on `regex-automata`.
#[derive(Debug)]
pub struct FastSplit {
    regex: Regex,
    /// Per pattern of `regex`: whether a match gives back its last character (`\s+\s`).
    give_back: Vec<bool>,
    behavior: SplitDelimiterBehavior,
    invert: bool,
}

impl FastSplit {
    /// The fast equivalent of `split`, or `None` when its regex must stay on Oniguruma.
    pub fn new(split: &Split) -> Option<Self> {
        let SplitPattern::Regex(pattern) = &split.pattern else {
            // A literal string: Hugging Face's own search is no regex.
            return None;
        };
        let (patterns, give_back) = emulated(pattern)?;
        let parser = syntax::Config::new().unicode(true).utf8(true);
        for p in &patterns {
            let hir = syntax::parse_with(p, &parser).ok()?;
            if hir.properties().minimum_len().is_none_or(|n| n == 0) {
                return None;
            }
        }
        let fast = |cache_bytes: usize| {
            let regex = Regex::builder()
                .syntax(parser)
                .configure(
                    Regex::config()
                        .match_kind(MatchKind::LeftmostFirst)
                        .hybrid_cache_capacity(cache_bytes),
                )
                .build_many(&patterns)
                .ok()?;
            Some(Self {
                regex,
                give_back: give_back.clone(),
                behavior: split.behavior,
                invert: split.invert,
            })
        };
        let agrees = *AGREES
            .lock()
            .expect("probe cache")
            .entry(pattern.clone())
            .or_insert_with(|| {
                let started = std::time::Instant::now();
                let agrees = fast(PROBE_CACHE_BYTES).is_some_and(|p| agrees_on_probe(&p, split));
                tracing::debug!(
                    "probe of {pattern}: {:.2} s",
                    started.elapsed().as_secs_f64()
                );
                agrees
            });
        if !agrees {
            tracing::debug!("pre-tokenizer regex {pattern} stays on Oniguruma: the engines differ");
        }
        agrees.then(|| fast(ENCODE_CACHE_BYTES)).flatten()
    }

    /// Every match of the split regex in `text`, as Oniguruma's `find_iter` gives them.
    fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        let mut at = 0;
        while at < text.len() {
            let Some(m) = self.regex.search(&Input::new(text).range(at..)) else {
                break;
            };
            let mut end = m.end();
            if self.give_back[m.pattern().as_usize()] {
                end -= text[..end].chars().next_back().map_or(0, char::len_utf8);
            }
            out.push((m.start(), end));
            // Every pattern matches at least one character (checked in `new`), and a given-back
            // match keeps at least one (`\s+\s` minus one).
            at = end;
        }
        out
    }
}

/// Hugging Face's own `Pattern` contract: the input cut into matches (`true`) and the gaps between.
impl Pattern for &FastSplit {
    fn find_matches(&self, inside: &str) -> TkResult<Vec<(Offsets, bool)>> {
        if inside.is_empty() {
            return Ok(vec![((0, 0), false)]);
        }
        let mut splits = Vec::new();
        let mut prev = 0;
        for (start, end) in self.matches(inside) {
            if prev != start {
                splits.push(((prev, start), self.invert));
            }
            splits.push(((start, end), !self.invert));
            prev = end;
        }
        if prev != inside.len() {
            splits.push(((prev, inside.len()), self.invert));
        }
        Ok(splits)
    }
}

/// The alternatives of `pattern` with each `\s+(?!\S)` replaced by `\s+\z` and `\s+\s` (which gives
/// back its last character), grouped into patterns that keep their order; `None` when another
/// look-around is present.
fn emulated(pattern: &str) -> Option<(Vec<String>, Vec<bool>)> {
    const LOOKAHEAD_RUN: &str = r"\s+(?!\S)";
    let mut patterns = Vec::new();
    let mut give_back = Vec::new();
    let mut group: Vec<&str> = Vec::new();
    for alt in top_level_alternatives(pattern)? {
        if alt == LOOKAHEAD_RUN {
            if !group.is_empty() {
                patterns.push(group.join("|"));
                give_back.push(false);
                group.clear();
            }
            patterns.extend([r"\s+\z".to_string(), r"\s+\s".to_string()]);
            give_back.extend([false, true]);
        } else if ["(?=", "(?!", "(?<=", "(?<!", "(?>"]
            .iter()
            .any(|l| alt.contains(l))
        {
            return None;
        } else {
            group.push(alt);
        }
    }
    if !group.is_empty() {
        patterns.push(group.join("|"));
        give_back.push(false);
    }
    Some((patterns, give_back))
}

/// `pattern` cut at its top-level `|`s (outside groups and bracket classes); `None` if unbalanced.
fn top_level_alternatives(pattern: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut depth, mut class, mut start) = (0usize, 0usize, 0);
    let mut chars = pattern.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '[' => {
                class += 1;
                // A `]` right after `[` or `[^` is a literal.
                if chars.peek().is_some_and(|&(_, n)| n == '^') {
                    chars.next();
                }
                if chars.peek().is_some_and(|&(_, n)| n == ']') {
                    chars.next();
                }
            }
            ']' if class > 0 => class -= 1,
            _ if class > 0 => {}
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            '|' if depth == 0 => {
                out.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0 && class == 0).then(|| {
        out.push(&pattern[start..]);
        out
    })
}

/// The probe's verdict per pattern, so that loading a tokenizer again costs nothing.
static AGREES: Mutex<BTreeMap<String, bool>> = Mutex::new(BTreeMap::new());

/// Texts on which both engines must agree: every code point (planes 0-3 and the tags and variation
/// selectors of plane 14; the others are unassigned or private use) among letters, digits, spaces,
/// newlines and apostrophes, so that each character class sees every character; and those whose case
/// mapping reaches an ASCII letter also inside the two-letter contractions (`'re`, `'ve`, `'ll`).
fn probe() -> &'static [String] {
    static PROBE: OnceLock<Vec<String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        use std::fmt::Write;
        let chars = (0..0x40000u32)
            .chain(0xE0000..0xE0200)
            .filter_map(char::from_u32);
        let mut texts = Vec::new();
        let mut text = String::new();
        for (n, c) in chars.enumerate() {
            let _ = writeln!(text, "{c}a{c} {c}'{c}  {c}1{c}");
            if c.to_lowercase()
                .chain(c.to_uppercase())
                .any(|x| x.is_ascii_alphabetic())
            {
                let _ = write!(text, "'{c}e '{c}l 'r{c} 'v{c} 'l{c} ");
            }
            if n % 8192 == 8191 {
                texts.push(std::mem::take(&mut text));
            }
        }
        texts.push(text);
        texts
    })
}

/// Whether `fast` finds the same matches as Oniguruma in every probe text, on all cores.
fn agrees_on_probe(fast: &FastSplit, split: &Split) -> bool {
    let texts = probe();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = texts.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = texts
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter().all(|text| {
                        let onig: Vec<(usize, usize)> = split.regex.find_iter(text).collect();
                        fast.matches(text) == onig
                    })
                })
            })
            .collect();
        workers.into_iter().all(|w| w.join().unwrap_or(false))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    use tokenizers::{OffsetReferential, OffsetType, Tokenizer};

    use crate::stages::tokenize::tokenizer;

    fn splits(pt: &impl PreTokenizer, text: &str) -> Vec<(String, Offsets)> {
        let mut pretokenized = PreTokenizedString::from(text);
        pt.pre_tokenize(&mut pretokenized).unwrap();
        pretokenized
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(s, o, _)| (s.to_string(), o))
            .collect()
    }

    /// Random text from pieces that decide splits: letters that case-fold to ASCII (`ſ`, the Kelvin
    /// sign), contractions in both cases, Unicode spaces and digits, CJK, combining marks, emoji.
    fn random_text(state: &mut u64) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Zq",
            "é",
            "ſ",
            "\u{212a}",
            "'s",
            "'S",
            "'re",
            "'LL",
            "'ve",
            "'d",
            "'M",
            "'t",
            "'",
            " ",
            "  ",
            "   ",
            "\t",
            "\n",
            "\r\n",
            "\n\n ",
            "\u{3000}",
            "\u{a0}",
            "\u{2009}",
            "\u{85}",
            "1",
            "2024",
            "\u{663}",
            "\u{bd}",
            "\u{216b}",
            "中",
            "文字",
            "の",
            "한",
            ".",
            ",",
            "!?",
            "\u{2014}",
            "\u{201c}",
            "\u{1f642}",
            "\u{301}",
            "\u{200d}",
            "$",
            "-",
            "_",
            "x1",
            "\u{3a9}",
            "<|endoftext|>",
        ];
        let n = 1 + (*state % 40) as usize;
        (0..n)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                PIECES[(*state % PIECES.len() as u64) as usize]
            })
            .collect()
    }

    /// The documents of the bundled sample, English and Chinese.
    fn sample_texts() -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
        let en = openseek_testkit::docs::parquet_docs(&dir.join("en"));
        let zh = openseek_testkit::docs::jsonl_gz_docs(&dir.join("zh"));
        en.into_iter()
            .map(|(_, t)| t)
            .chain(zh.into_iter().map(|(_, t, _)| t))
            .collect()
    }

    /// `tokenizer`'s regexes run on `regex-automata`, and pre-tokenize and encode exactly as
    /// Hugging Face's own on random text and on real documents.
    fn same_as_hugging_face(tokenizer: &Tokenizer, regexes: usize) {
        let hf = tokenizer.get_pre_tokenizer().unwrap();
        let (fast, n) = FastPreTokenizer::new(hf);
        assert_eq!(n, regexes, "regexes on regex-automata");
        let encoder = super::super::encoder::encoder(tokenizer).unwrap();
        // The reference as the encoder treats document text: special tokens' strings are text.
        let mut tokenizer = tokenizer.clone();
        tokenizer.set_encode_special_tokens(true);
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let texts = (0..20_000)
            .map(|_| random_text(&mut state))
            .chain(sample_texts());
        let mut checked = 0;
        for text in texts {
            assert_eq!(splits(&fast, &text), splits(hf, &text), "{text:?}");
            let ids = |e: tokenizers::Encoding| e.get_ids().to_vec();
            assert_eq!(
                ids(encoder.encode_fast(text.as_str(), false).unwrap()),
                ids(tokenizer.encode_fast(text.as_str(), false).unwrap()),
                "{text:?}"
            );
            checked += 1;
        }
        assert!(checked > 20_000);
    }

    #[test]
    fn qwen3_splits_and_ids_equal_hugging_face() {
        let loaded = tokenizer::load("qwen3", Path::new(".")).unwrap();
        same_as_hugging_face(&loaded.tokenizer, 1);
    }

    #[test]
    fn deepseek_v3_splits_and_ids_equal_hugging_face() {
        let Some(corpus) =
            openseek_testkit::corpus("deepseek_v3_splits_and_ids_equal_hugging_face")
        else {
            return;
        };
        let path = corpus.join("tokenizers/deepseek-v3");
        let loaded = tokenizer::load(&path.to_string_lossy(), Path::new(".")).unwrap();
        // Digits in threes, CJK runs, then the GPT-4-style pattern.
        same_as_hugging_face(&loaded.tokenizer, 3);
    }

    #[test]
    fn alternatives_are_cut_at_the_top_level_only() {
        assert_eq!(
            top_level_alternatives(r"(?i:'s|'t)|[^\r\n|]?\p{L}+|[\]|]+|\s+(?!\S)|\s+").unwrap(),
            vec![
                r"(?i:'s|'t)",
                r"[^\r\n|]?\p{L}+",
                r"[\]|]+",
                r"\s+(?!\S)",
                r"\s+"
            ]
        );
        assert!(top_level_alternatives("(a|b").is_none());
    }

    #[test]
    fn the_lookahead_run_becomes_two_patterns_in_its_place() {
        let (patterns, give_back) = emulated(r"a|\s+(?!\S)|\s+").unwrap();
        assert_eq!(patterns, vec!["a", r"\s+\z", r"\s+\s", r"\s+"]);
        assert_eq!(give_back, vec![false, false, true, false]);
        assert!(emulated(r"a(?=b)|\s+(?!\S)").is_none());
        assert_eq!(emulated(r"\p{N}{1,3}").unwrap().0, vec![r"\p{N}{1,3}"]);
    }
}
