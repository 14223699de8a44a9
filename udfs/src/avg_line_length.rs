//! `avg_line_length(text)`: mean characters per line, as data-juicer's `average_line_length_filter`
//! computes it (characters of the whole text over the number of lines); OpenSeek keeps ≥ 10.

use std::sync::LazyLock;

use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::{DOC_SECTION, coerce_text_args, map_to_f64};

/// Lines are counted as Python's `str.splitlines` counts them (data-juicer's definition): `\r\n` is one
/// break, a trailing break does not open an empty line, and the other Unicode line separators count.
/// Bytes that may start a line break: the ASCII ones, and the lead bytes of U+0085 (C2 85) and of
/// U+2028/U+2029 (E2 80 A8/A9).
static BREAK_START: [bool; 256] = {
    let mut t = [false; 256];
    let starts = [b'\r', b'\n', 0x0b, 0x0c, 0x1c, 0x1d, 0x1e, 0xC2, 0xE2];
    let mut k = 0;
    while k < starts.len() {
        t[starts[k] as usize] = true;
        k += 1;
    }
    t
};

pub fn line_count(text: &str) -> usize {
    // Over bytes, jumping from one possible break to the next: every break but U+0085, U+2028 and
    // U+2029 is one ASCII byte, and those three are recognised by their encodings, so no character is
    // decoded.
    let b = text.as_bytes();
    let mut lines = 0;
    let mut i = 0; // just past the last break: what follows is an open line if not empty
    while let Some(p) = b[i..].iter().position(|&c| BREAK_START[c as usize]) {
        let j = i + p;
        let width = match (b[j], b.get(j + 1), b.get(j + 2)) {
            (b'\r', Some(b'\n'), _) => 2,
            (b'\r' | b'\n' | 0x0b | 0x0c | 0x1c..=0x1e, _, _) => 1,
            (0xC2, Some(0x85), _) => 2,
            (0xE2, Some(0x80), Some(0xA8 | 0xA9)) => 3,
            _ => {
                i = j + 1; // the lead byte of another character
                continue;
            }
        };
        lines += 1;
        i = j + width;
    }
    lines + usize::from(i < b.len())
}

/// Characters per line; 0 for the empty text.
pub fn avg_line_length(text: &str) -> f64 {
    let lines = line_count(text);
    if lines == 0 {
        0.0
    } else {
        text.chars().count() as f64 / lines as f64
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AvgLineLengthFunc {
    signature: Signature,
}

impl Default for AvgLineLengthFunc {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Mean number of characters per line (characters of the text / lines, as data-juicer).",
        "avg_line_length(text)",
    )
    .with_argument("text", "The document text.")
    .with_sql_example("SELECT avg_line_length('ab\\ncd')  -- 2.5")
    .build()
});

impl ScalarUDFImpl for AvgLineLengthFunc {
    fn name(&self) -> &str {
        "avg_line_length"
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
        map_to_f64(&args.args[0], avg_line_length)
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
    fn lines_as_python_splitlines() {
        assert_eq!(line_count(""), 0);
        assert_eq!(line_count("a"), 1);
        assert_eq!(line_count("a\n"), 1);
        assert_eq!(line_count("a\r\nb"), 2);
        assert_eq!(line_count("a\n\nb\n"), 3);
        assert_eq!(line_count("\n"), 1);
        assert_eq!(line_count("a\rb\u{2028}c"), 3);
        assert_eq!(line_count("a\u{85}b\u{2029}c\x1c…\u{2027}é"), 4);
    }

    #[test]
    fn mean_characters_per_line() {
        assert_eq!(avg_line_length(""), 0.0);
        assert_eq!(avg_line_length("   "), 3.0);
        assert_eq!(avg_line_length("ab\ncd"), 2.5);
        // Chinese poetry: short lines of 5 characters plus the line break.
        assert_eq!(avg_line_length("床前明月光\n疑是地上霜\n"), 6.0);
        let long = "x".repeat(3_000_000);
        assert_eq!(avg_line_length(&long), 3_000_000.0);
    }

    #[test]
    fn udf_on_column() {
        let out = invoke(
            &AvgLineLengthFunc::default(),
            &[Some("ab\ncd"), None, Some("\n\n")],
            vec![],
        );
        assert_eq!(f64s(&out), vec![Some(2.5), None, Some(1.0)]);
    }
}
