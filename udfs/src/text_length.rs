//! `text_length(text)`: the length of a document in Unicode characters (OpenSeek keeps 100–20,000).

use std::sync::LazyLock;

use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::{DOC_SECTION, coerce_text_args, map_to_i64};

/// Characters, not bytes: a Chinese character is 3 bytes of UTF-8 but one character, and the
/// thresholds of the field (OpenSeek, data-juicer) are in characters.
pub fn text_length(text: &str) -> i64 {
    text.chars().count() as i64
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TextLengthFunc {
    signature: Signature,
}

impl Default for TextLengthFunc {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Number of Unicode characters of the text.",
        "text_length(text)",
    )
    .with_argument("text", "The document text.")
    .with_sql_example("SELECT text_length('你好, world')  -- 9")
    .build()
});

impl ScalarUDFImpl for TextLengthFunc {
    fn name(&self) -> &str {
        "text_length"
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
        map_to_i64(&args.args[0], text_length)
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
    fn counts_characters_not_bytes() {
        assert_eq!(text_length(""), 0);
        assert_eq!(text_length("   \n\t"), 5);
        assert_eq!(text_length("Call me Ishmael."), 16);
        assert_eq!(text_length("床前明月光，疑是地上霜。"), 12);
        assert_eq!(text_length(&"a".repeat(1_000_000)), 1_000_000);
    }

    #[test]
    fn udf_keeps_nulls() {
        let out = invoke(
            &TextLengthFunc::default(),
            &[Some("héllo"), None, Some("")],
            vec![],
        );
        assert_eq!(i64s(&out), vec![Some(5), None, Some(0)]);
    }
}
