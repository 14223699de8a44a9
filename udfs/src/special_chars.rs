//! `special_chars(text)`: the share of characters that are punctuation, digits, whitespace, symbols or
//! emoji (data-juicer's `special_characters_filter`, max 0.25). The character set is data-juicer's (after
//! BigScience), quirks included (it lists 一, 上 and 士), so that its thresholds carry over.

use std::collections::HashSet;
use std::sync::LazyLock;

use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::{DOC_SECTION, coerce_text_args, map_to_f64};

/// data-juicer's `OTHER_SPECIAL_CHARACTERS`; Python's `string.punctuation`, `digits` and `whitespace`
/// are covered by `is_special` directly.
const OTHER: &str = "　￼’“”–ー一▬…✦�£•€«»°·═×士＾˘⇓↓↑←→（）§″′´¿−±∈¢ø‚„½¼¾¹²³―⁃，ˌ¸‹›ʺˈʻ¦‐⠀‰‑≤≥‖\
◆●■►▼▲▴∆▻¡★☆✱ːº。¯˜¥ɪ≈†上ン：∼⁄・♡✓⊕․．⋅÷１‟；،、¨ाাी्े◦˚゜ʼ≖ʼ¤ッツシ℃√！【】‿∞➤～πه۩☛₨➩☻๑٪♥ıॽ《‘©﴿٬？▷Г♫∟™ª₪®「—❖」﴾》";

static OTHER_SET: LazyLock<HashSet<char>> = LazyLock::new(|| OTHER.chars().collect());

/// Emoji, approximated by the Unicode blocks that hold `emoji.EMOJI_DATA`'s single code points
/// (data-juicer tests membership per character, so multi-code-point emoji count per code point).
fn is_emoji(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2300..=0x23FF | 0x2B00..=0x2BFF | 0x2190..=0x21FF
        | 0x25A0..=0x25FF | 0x3030 | 0x303D | 0x3297 | 0x3299 | 0x203C | 0x2049 | 0x2122 | 0x2139 | 0xFE0F | 0x200D)
}

pub fn is_special(c: char) -> bool {
    c.is_ascii_punctuation()
        || c.is_ascii_digit()
        || c.is_whitespace()
        || OTHER_SET.contains(&c)
        || is_emoji(c)
}

/// Special characters over all characters; 0 for the empty text.
pub fn special_chars(text: &str) -> f64 {
    let (mut special, mut total) = (0usize, 0usize);
    for c in text.chars() {
        total += 1;
        // ASCII letters are the common case and never special.
        if !c.is_ascii_alphabetic() && is_special(c) {
            special += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        special as f64 / total as f64
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SpecialCharsFunc {
    signature: Signature,
}

impl Default for SpecialCharsFunc {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Share of punctuation, digits, whitespace, symbols and emoji among the characters (data-juicer's set).",
        "special_chars(text)",
    )
    .with_argument("text", "The document text.")
    .with_sql_example("SELECT special_chars('a1!')  -- 0.666…")
    .build()
});

impl ScalarUDFImpl for SpecialCharsFunc {
    fn name(&self) -> &str {
        "special_chars"
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
        map_to_f64(&args.args[0], special_chars)
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::test_util::{f64s, invoke};

    #[test]
    fn ratios() {
        assert_eq!(special_chars(""), 0.0);
        assert_eq!(special_chars("   "), 1.0);
        assert_eq!(special_chars("abcd"), 0.0);
        assert!((special_chars("a1!") - 2.0 / 3.0).abs() < 1e-12);
        // Chinese punctuation counts, ideographs do not (except data-juicer's 一, 上, 士).
        assert_eq!(special_chars("你好，世界。"), 2.0 / 6.0);
        assert_eq!(special_chars("😀😀ab"), 0.5);
        assert_eq!(special_chars(&"=".repeat(1_000_000)), 1.0);
    }

    #[test]
    fn udf_on_column() {
        let out = invoke(&SpecialCharsFunc::default(), &[Some("ab  "), None], vec![]);
        assert_eq!(f64s(&out), vec![Some(0.5), None]);
    }
}
