//! The options of `substring_dedup`, as a pipeline writes them.

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::find::Policy;

/// Where a removed span's ends may fall. Spans only ever shrink to fit, so nothing that is not repeated
/// is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snap {
    /// UTF-8 character boundaries (always applied).
    Char,
    /// Word boundaries: between a space and a non-space, around punctuation, and around every CJK
    /// character (Chinese has no spaces; a character is a word, as `word_count` counts it).
    Word,
    /// Line starts and ends: only whole lines go.
    Line,
}

/// What a repeat is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    /// Token ids of a tokenizer (the paper's 50-token threshold).
    Tokens,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubstringDedupOptions {
    /// `bytes` (default) or `tokens`.
    #[serde(default = "default_unit")]
    unit: String,
    /// The shortest repeat removed, in bytes (ExactSubstr's default; OpenSeek's CCI4.0 used 800).
    #[serde(default = "default_min_bytes")]
    pub min_bytes: usize,
    /// The shortest repeat removed with `unit: tokens` (the paper's 50).
    #[serde(default = "default_min_tokens")]
    pub min_tokens: usize,
    /// With `unit: tokens`: a `tokenizer.json` (or directory) or a bundled name, as `tokenize` takes.
    pub tokenizer: Option<String>,
    /// `keep_first` (default) or `remove_all`.
    #[serde(default = "default_policy")]
    policy: String,
    /// `char` (default), `word` or `line`.
    #[serde(default = "default_snap")]
    snap: String,
    /// Documents that lost text and keep fewer words than this are rejected (OpenSeek: 35).
    #[serde(default = "default_min_words_after")]
    pub min_words_after: u64,
    /// Keep every document whole and only add `substring_removed_bytes` and `substring_spans`: what
    /// the stage would remove.
    #[serde(default)]
    pub annotate: bool,
    /// Memory for suffix arrays, in MiB: a corpus larger than fits is cut into parts that merge.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
}

fn default_unit() -> String {
    "bytes".into()
}
fn default_min_bytes() -> usize {
    100
}
fn default_min_tokens() -> usize {
    50
}
fn default_policy() -> String {
    "keep_first".into()
}
fn default_snap() -> String {
    "char".into()
}
fn default_min_words_after() -> u64 {
    35
}
fn default_memory_mb() -> u64 {
    4096
}

impl SubstringDedupOptions {
    /// Parses and checks the stage's YAML options (`null` = every default).
    pub fn parse(value: serde_norway::Value) -> Result<Self> {
        let o: Self = if value.is_null() {
            serde_norway::from_str("{}")?
        } else {
            serde_norway::from_value(value).context("substring_dedup options")?
        };
        o.policy()?;
        o.snap()?;
        if o.min_len() == 0 {
            bail!("substring_dedup: the minimum length must be at least 1");
        }
        if o.memory_mb < 16 {
            bail!("substring_dedup: memory_mb {} is below 16", o.memory_mb);
        }
        match (o.unit()?, &o.tokenizer) {
            (Unit::Tokens, None) => bail!("substring_dedup: unit: tokens needs a `tokenizer`"),
            (Unit::Bytes, Some(_)) => {
                bail!("substring_dedup: `tokenizer` is for unit: tokens (the unit is bytes)")
            }
            _ => {}
        }
        Ok(o)
    }

    pub fn unit(&self) -> Result<Unit> {
        Ok(match self.unit.as_str() {
            "bytes" => Unit::Bytes,
            "tokens" => Unit::Tokens,
            u => bail!("substring_dedup: unit must be bytes or tokens, not '{u}'"),
        })
    }

    /// The shortest repeat removed, in the unit's symbols.
    pub fn min_len(&self) -> usize {
        match self.unit() {
            Ok(Unit::Tokens) => self.min_tokens,
            _ => self.min_bytes,
        }
    }

    pub fn policy(&self) -> Result<Policy> {
        Ok(match self.policy.as_str() {
            "keep_first" => Policy::KeepFirst,
            "remove_all" => Policy::RemoveAll,
            p => bail!("substring_dedup: policy must be keep_first or remove_all, not '{p}'"),
        })
    }

    pub fn snap(&self) -> Result<Snap> {
        Ok(match self.snap.as_str() {
            "char" => Snap::Char,
            "word" => Snap::Word,
            "line" => Snap::Line,
            s => bail!("substring_dedup: snap must be char, word or line, not '{s}'"),
        })
    }

    /// The most symbols of one part: the suffix array (4 bytes a symbol) and the text (1 byte, or 4
    /// for tokens with libsais's copy 4 more), with room for libsais's work space and the bit sets.
    pub fn max_part_len(&self) -> usize {
        let per_symbol = match self.unit() {
            Ok(Unit::Tokens) => 14,
            _ => 6,
        };
        ((self.memory_mb << 20) / per_symbol).min(i32::MAX as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<SubstringDedupOptions> {
        SubstringDedupOptions::parse(serde_norway::from_str(yaml).unwrap())
    }

    #[test]
    fn defaults_and_checks() {
        let o = parse("null").unwrap();
        assert_eq!((o.min_len(), o.min_words_after), (100, 35));
        assert_eq!(o.policy().unwrap(), Policy::KeepFirst);
        assert_eq!(o.snap().unwrap(), Snap::Char);
        let o = parse("{unit: tokens, tokenizer: qwen3}").unwrap();
        assert_eq!(o.min_len(), 50);
        for (bad, says) in [
            ("{policy: first}", "policy must be"),
            ("{snap: sentence}", "snap must be"),
            ("{unit: tokens}", "needs a `tokenizer`"),
            ("{min_bytes: 0}", "at least 1"),
            ("{min_byte: 100}", "unknown field"),
        ] {
            let e = format!("{:#}", parse(bad).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
