//! `word_count(text)`: words by Unicode word segmentation (UAX #29); each CJK character counts as one
//! word, since Chinese and Japanese are written without spaces.

use std::sync::LazyLock;

use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::{DOC_SECTION, coerce_text_args, map_to_i64};
use crate::words::words;

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
