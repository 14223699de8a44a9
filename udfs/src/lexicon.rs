//! Word lists (flagged words, stopwords) compiled once and matched in text with and without spaces.
//!
//! Entries written in a spaced script are lower-cased word sequences in an `fst` set, walked word by word
//! so that multi-word entries ("2 girls 1 cup") match without building n-gram strings. Entries that hold
//! CJK characters are matched inside running text with Aho-Corasick (leftmost-longest), since Chinese has
//! no spaces to split on. A match counts as one token, so ratios are matches over tokens, where tokens are
//! the words of `word_count` with each multi-word match folded into one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use ahash::AHashMap;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use arrow::datatypes::DataType;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use fst::raw::Fst;

use crate::args::{coerce_text_args, literal_str, map_to_f64, map_to_string};
use crate::words::{is_cjk, words};

pub struct Lexicon {
    words: fst::Set<Vec<u8>>,
    /// The first word of every spaced entry. Walking the fst decodes a node per byte, and most words of
    /// a text begin no entry, so one hash probe per word settles them and only the rest walk the fst.
    first_words: AHashMap<Box<[u8]>, FirstWord>,
    longest_first_word: usize,
    max_words: usize,
    cjk: Option<AhoCorasick>,
    entries: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct FirstWord {
    /// The word is an entry by itself.
    whole: bool,
    /// Some longer entry begins with it.
    continues: bool,
}

/// What a lexicon found in one text.
#[derive(Debug, Default, PartialEq)]
pub struct LexiconScan {
    /// Byte ranges of the matches, sorted, not overlapping.
    pub spans: Vec<(usize, usize)>,
    /// Words of the text, each match counted as one.
    pub tokens: usize,
}

impl LexiconScan {
    /// Matches per token; 0 for a text without words.
    pub fn ratio(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.spans.len() as f64 / self.tokens as f64
        }
    }
}

fn lower(w: &str) -> std::borrow::Cow<'_, str> {
    if w.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) {
        w.to_lowercase().into()
    } else {
        w.into()
    }
}

/// `w` lower-cased: the word itself when it has no upper-case ASCII letter and no other script (most
/// words of a text; no copy), else a lower-cased copy in `buf`.
fn lowered<'a>(w: &'a str, buf: &'a mut Vec<u8>) -> &'a [u8] {
    let b = w.as_bytes();
    if !b.iter().any(|&c| c.is_ascii_uppercase() || c >= 0x80) {
        return b;
    }
    buf.clear();
    if w.is_ascii() {
        buf.extend_from_slice(b);
        buf.make_ascii_lowercase();
    } else {
        buf.extend_from_slice(w.to_lowercase().as_bytes());
    }
    buf
}

impl std::fmt::Debug for Lexicon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lexicon")
            .field("entries", &self.entries)
            .field("max_words", &self.max_words)
            .finish()
    }
}

impl Lexicon {
    /// Parses a lexicon file's contents: one entry a line, blank lines and `#` comments skipped. Entries
    /// without any letter or digit (the punctuation in some stopword lists) cannot match a word and are
    /// left out.
    pub fn parse(contents: &str) -> Result<Self> {
        let mut spaced = BTreeSet::new();
        let mut cjk = BTreeSet::new();
        let mut max_words = 1;
        for line in contents.lines() {
            let entry = line.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let ws: Vec<&str> = words(entry).into_iter().map(|w| w.1).collect();
            if ws.is_empty() {
                continue;
            }
            if entry.chars().any(is_cjk) {
                cjk.insert(entry.to_lowercase());
            } else {
                max_words = max_words.max(ws.len());
                spaced.insert(ws.iter().map(|w| lower(w)).collect::<Vec<_>>().join(" "));
            }
        }
        let entries = spaced.len() + cjk.len();
        if entries == 0 {
            return plan_err!("lexicon has no entries");
        }
        let mut first_words: AHashMap<Box<[u8]>, FirstWord> = AHashMap::new();
        for entry in &spaced {
            let (first, rest) = entry.split_once(' ').unwrap_or((entry, ""));
            let fw = first_words.entry(first.as_bytes().into()).or_default();
            fw.whole |= rest.is_empty();
            fw.continues |= !rest.is_empty();
        }
        let longest_first_word = first_words.keys().map(|k| k.len()).max().unwrap_or(0);
        let words = fst::Set::from_iter(spaced.iter()).expect("BTreeSet iterates in order");
        let cjk = if cjk.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .ascii_case_insensitive(true)
                    .build(cjk.iter())
                    .expect("lexicon patterns compile"),
            )
        };
        Ok(Self {
            words,
            first_words,
            longest_first_word,
            max_words,
            cjk,
            entries,
        })
    }

    /// Number of entries kept.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Finds every entry in `text`.
    pub fn scan(&self, text: &str) -> LexiconScan {
        let ws: Vec<(usize, &str)> = words(text);
        // CJK entries first, over the raw text. An entry that starts or ends with a Latin letter or digit
        // must meet a word boundary there ("卖B" is not in "卖Bitcoin").
        let mut cjk_spans: Vec<(usize, usize)> = Vec::new();
        if let Some(ac) = &self.cjk {
            for m in ac.find_iter(text) {
                let (s, e) = (m.start(), m.end());
                let first = text[s..e].chars().next().expect("non-empty match");
                let last = text[s..e].chars().next_back().expect("non-empty match");
                let before = text[..s].chars().next_back();
                let after = text[e..].chars().next();
                let glued = |edge: char, neighbour: Option<char>| {
                    edge.is_alphanumeric()
                        && !is_cjk(edge)
                        && neighbour.is_some_and(|c| c.is_alphanumeric() && !is_cjk(c))
                };
                if !glued(first, before) && !glued(last, after) {
                    cjk_spans.push((s, e));
                }
            }
        }
        // Words covered by a CJK match are counted inside it; the others go through the spaced entries.
        // Both lists are sorted by offset, so each match finds its words by binary search.
        let mut free = vec![true; ws.len()];
        let mut spans: Vec<(usize, usize, usize)> = Vec::new(); // start, end, words covered
        for &(s, e) in &cjk_spans {
            let first = ws.partition_point(|&(off, w)| off + w.len() <= s);
            let mut covered = 0;
            for (k, &(off, _)) in ws[first..].iter().enumerate() {
                if off >= e {
                    break;
                }
                free[first + k] = false;
                covered += 1;
            }
            if covered > 0 {
                spans.push((s, e, covered));
            }
        }
        let mut buf = Vec::with_capacity(64);
        let mut i = 0;
        while i < ws.len() {
            let best = if free[i] {
                self.longest_match(&ws[i..], &free[i..], &mut buf)
            } else {
                0
            };
            if best > 0 {
                let (last_off, last) = ws[i + best - 1];
                spans.push((ws[i].0, last_off + last.len(), best));
                i += best;
            } else {
                i += 1;
            }
        }
        spans.sort_unstable();
        let folded: usize = spans.iter().map(|s| s.2 - 1).sum();
        LexiconScan {
            spans: spans.iter().map(|s| (s.0, s.1)).collect(),
            tokens: ws.len().saturating_sub(folded),
        }
    }

    /// How many words, from the first of `ws`, the longest spaced entry there covers (0: none).
    fn longest_match(&self, ws: &[(usize, &str)], free: &[bool], buf: &mut Vec<u8>) -> usize {
        let first = ws[0].1;
        if first.len() > self.longest_first_word * 3 {
            return 0; // lower-casing shrinks a character at most threefold (K, the Kelvin sign, is 3 bytes)
        }
        let Some(fw) = self.first_words.get(lowered(first, buf)) else {
            return 0;
        };
        let mut best = usize::from(fw.whole);
        if !fw.continues {
            return best;
        }
        // A longer entry may start here: walk the fst word by word, "w1 w2 ...".
        let fst: &Fst<Vec<u8>> = self.words.as_fst();
        let mut node = fst.root();
        for k in 0..self.max_words.min(ws.len()) {
            if !free[k] {
                break; // a multi-word entry never runs into a CJK match
            }
            let sep = if k == 0 { None } else { Some(b' ') };
            for &b in sep.iter().chain(lowered(ws[k].1, buf)) {
                match node.find_input(b) {
                    Some(t) => node = fst.node(node.transition(t).addr),
                    None => return best,
                }
            }
            if node.is_final() {
                best = k + 1;
            }
        }
        best
    }

    /// The text with every match replaced by as many `*` as it has characters.
    pub fn mask(&self, text: &str) -> String {
        let scan = self.scan(text);
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (s, e) in scan.spans {
            out.push_str(&text[last..s]);
            out.extend(std::iter::repeat_n('*', text[s..e].chars().count()));
            last = e;
        }
        out.push_str(&text[last..]);
        out
    }
}

/// Named lexicons of one kind (flagged words or stopwords). The bundled ones are compiled in; the engine
/// adds the lexicon files that pipelines name, since this crate does no I/O.
pub struct LexiconRegistry {
    kind: &'static str,
    bundled: &'static [(&'static str, &'static str)],
    loaded: RwLock<BTreeMap<String, Arc<Lexicon>>>,
}

impl LexiconRegistry {
    pub fn new(kind: &'static str, bundled: &'static [(&'static str, &'static str)]) -> Self {
        Self {
            kind,
            bundled,
            loaded: RwLock::new(BTreeMap::new()),
        }
    }

    /// Adds (or replaces) a lexicon under `name`.
    pub fn insert(&self, name: &str, lexicon: Lexicon) {
        self.loaded
            .write()
            .expect("lexicon lock")
            .insert(name.to_string(), Arc::new(lexicon));
    }

    /// The lexicon called `name`, compiling a bundled one on first use.
    pub fn get(&self, name: &str) -> Result<Arc<Lexicon>> {
        if let Some(l) = self.loaded.read().expect("lexicon lock").get(name) {
            return Ok(Arc::clone(l));
        }
        let Some((_, contents)) = self.bundled.iter().find(|(n, _)| *n == name) else {
            return plan_err!(
                "unknown {} lexicon '{name}': bundled ones are {}; a pipeline may name a file instead",
                self.kind,
                self.bundled
                    .iter()
                    .map(|b| b.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let lexicon = Arc::new(Lexicon::parse(contents)?);
        self.loaded
            .write()
            .expect("lexicon lock")
            .insert(name.to_string(), Arc::clone(&lexicon));
        Ok(lexicon)
    }

    pub fn bundled_names(&self) -> Vec<&'static str> {
        self.bundled.iter().map(|b| b.0).collect()
    }
}

/// What a lexicon function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LexiconOutput {
    /// Matches per token (Float64).
    Ratio,
    /// The text with matches masked (Utf8).
    Mask,
}

/// The UDF shape shared by `flagged_words`, `flagged_words_mask` and `stopwords`: `(text, lexicon)`, the
/// lexicon named by a constant string and looked up in the function's registry.
pub struct LexiconFunc {
    name: &'static str,
    output: LexiconOutput,
    registry: Arc<LexiconRegistry>,
    doc: Documentation,
    signature: Signature,
}

impl LexiconFunc {
    pub fn new(
        name: &'static str,
        output: LexiconOutput,
        registry: Arc<LexiconRegistry>,
        doc: Documentation,
    ) -> Self {
        Self {
            name,
            output,
            registry,
            doc,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl std::fmt::Debug for LexiconFunc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LexiconFunc")
            .field("name", &self.name)
            .finish()
    }
}
impl PartialEq for LexiconFunc {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.registry, &other.registry)
    }
}
impl Eq for LexiconFunc {}
impl std::hash::Hash for LexiconFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl ScalarUDFImpl for LexiconFunc {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        if args.len() != 2 {
            return plan_err!("{} takes (text, lexicon)", self.name);
        }
        coerce_text_args(self.name, args, &[DataType::Utf8])
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.output {
            LexiconOutput::Ratio => DataType::Float64,
            LexiconOutput::Mask => DataType::Utf8,
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let lexicon = self
            .registry
            .get(literal_str(self.name, "lexicon", &args.args[1])?)?;
        match self.output {
            LexiconOutput::Ratio => map_to_f64(&args.args[0], |t| lexicon.scan(t).ratio()),
            LexiconOutput::Mask => map_to_string(&args.args[0], |t| lexicon.mask(t)),
        }
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&self.doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaced_entries_single_and_multi_word() {
        let lex = Lexicon::parse("# comment\nfoo\n2 girls 1 cup\nbar baz\n\n!!!\n").unwrap();
        assert_eq!(lex.len(), 3);
        let text = "A FOO and 2 girls 1 cup, then bar baz bar.";
        let scan = lex.scan(text);
        let found: Vec<&str> = scan.spans.iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(found, vec!["FOO", "2 girls 1 cup", "bar baz"]);
        // 11 words, the 4-word and 2-word matches fold into one each: 11 - 3 - 1 = 7 tokens.
        assert_eq!(scan.tokens, 7);
        assert_eq!(lex.mask(text), "A *** and *************, then ******* bar.");
        assert!(lex.scan("food barbaz").spans.is_empty());
    }

    #[test]
    fn cjk_entries_inside_running_text() {
        let lex = Lexicon::parse("坏蛋\n坏\nsm女王\n").unwrap();
        let text = "他是坏蛋，SM女王来了";
        let scan = lex.scan(text);
        let found: Vec<&str> = scan.spans.iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(found, vec!["坏蛋", "SM女王"]);
        // words: 他 是 坏 蛋 SM 女 王 来 了 = 9; 坏蛋 folds 1, SM女王 folds 2.
        assert_eq!(scan.tokens, 6);
        assert_eq!(lex.mask(text), "他是**，****来了");
    }

    #[test]
    fn latin_edges_of_cjk_entries_need_word_boundaries_and_spans_never_overlap() {
        let lex = Lexicon::parse("卖B\nsm女王\na b\nb女\nbdsm\n").unwrap();
        assert!(lex.scan("我要卖Bitcoin").spans.is_empty());
        assert_eq!(lex.scan("我要卖B了").spans.len(), 1);
        for text in ["bdsm女王", "a b女", "xsm女王 a b"] {
            let scan = lex.scan(text);
            assert!(
                scan.spans.windows(2).all(|w| w[0].1 <= w[1].0),
                "{text}: {scan:?}"
            );
            let _ = lex.mask(text);
            assert!(scan.ratio() <= 1.0);
        }
    }

    /// The hash prefilter and the fst walk give what a plain lookup of every word sequence gives.
    #[test]
    fn same_matches_as_a_plain_lookup_of_every_word_sequence() {
        let lex = Lexicon::parse(crate::flagged_words::BUNDLED[0].1).unwrap();
        let text = "Blow job? A BLOW JOB, two girls... 2 girls 1 cup and Ass-hat. The \u{212A}KK Kelvin \
                    sucks; anal-retentive men, strap on; strap-on. BDSM and b.d.s.m, Straße STRASSE.";
        let ws = words(text);
        let mut expected = Vec::new();
        let mut i = 0;
        while i < ws.len() {
            let best = (1..=lex.max_words.min(ws.len() - i))
                .filter(|&k| {
                    let key: Vec<String> =
                        ws[i..i + k].iter().map(|w| w.1.to_lowercase()).collect();
                    lex.words.contains(key.join(" "))
                })
                .max()
                .unwrap_or(0);
            if best > 0 {
                let (off, w) = ws[i + best - 1];
                expected.push((ws[i].0, off + w.len()));
                i += best;
            } else {
                i += 1;
            }
        }
        assert!(expected.len() >= 5, "{expected:?}");
        assert_eq!(lex.scan(text).spans, expected);
    }

    #[test]
    fn empty_and_bundled() {
        let reg = LexiconRegistry::new("test", &[("a", "x\ny\n")]);
        let lex = reg.get("a").unwrap();
        assert_eq!(lex.scan("").tokens, 0);
        assert_eq!(lex.scan("").ratio(), 0.0);
        assert_eq!(lex.scan("  \n ").ratio(), 0.0);
        assert_eq!(lex.scan("x y z w").ratio(), 0.5);
        assert!(
            reg.get("nope")
                .unwrap_err()
                .to_string()
                .contains("bundled ones are a")
        );
        assert!(Lexicon::parse("# only a comment\n").is_err());
    }
}
