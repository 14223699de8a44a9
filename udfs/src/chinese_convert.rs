//! `chinese_convert(text, mode)`: Traditional ↔ Simplified Chinese with OpenCC's own dictionaries
//! (`ferrous-opencc`, pure Rust, output identical to the OpenCC C++ CLI). OpenSeek converts its Chinese
//! corpora to Simplified (`t2s`); data-juicer's mapper defaults to `s2t`, so the mode is always explicit.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{LazyLock, OnceLock};

use arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use ferrous_opencc::OpenCC;
use ferrous_opencc::config::BuiltinConfig;

use crate::args::{DOC_SECTION, coerce_text_args, literal_str, map_to_string};

/// The conversion modes, named as OpenCC's configuration files.
pub const MODES: &[&str] = &[
    "t2s", "tw2s", "hk2s", "tw2sp", "s2t", "s2tw", "s2hk", "s2twp",
];

fn builtin(mode: &str) -> Option<BuiltinConfig> {
    Some(match mode {
        "t2s" => BuiltinConfig::T2s,
        "tw2s" => BuiltinConfig::Tw2s,
        "hk2s" => BuiltinConfig::Hk2s,
        "tw2sp" => BuiltinConfig::Tw2sp,
        "s2t" => BuiltinConfig::S2t,
        "s2tw" => BuiltinConfig::S2tw,
        "s2hk" => BuiltinConfig::S2hk,
        "s2twp" => BuiltinConfig::S2twp,
        _ => return None,
    })
}

/// A converter for each mode, loaded on first use (loading the dictionaries takes a few milliseconds) and
/// shared by every thread afterwards.
pub fn converter(mode: &str) -> Result<&'static OpenCC> {
    static CONVERTERS: [OnceLock<OpenCC>; 8] = [const { OnceLock::new() }; 8];
    let Some(idx) = MODES.iter().position(|m| *m == mode) else {
        return plan_err!(
            "chinese_convert: unknown mode '{mode}'; modes are {}",
            MODES.join(", ")
        );
    };
    if let Some(c) = CONVERTERS[idx].get() {
        return Ok(c);
    }
    let config = builtin(mode).expect("every listed mode has a config");
    match OpenCC::from_config(config) {
        Ok(c) => Ok(CONVERTERS[idx].get_or_init(|| c)),
        Err(e) => exec_err!("chinese_convert: cannot load OpenCC '{mode}': {e}"),
    }
}

/// Converts one text.
pub fn chinese_convert(text: &str, mode: &str) -> Result<String> {
    Ok(converter(mode)?.convert(text))
}

pub struct ChineseConvertFunc {
    signature: Signature,
}

impl Default for ChineseConvertFunc {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl fmt::Debug for ChineseConvertFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChineseConvertFunc")
    }
}
impl PartialEq for ChineseConvertFunc {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for ChineseConvertFunc {}
impl Hash for ChineseConvertFunc {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "chinese_convert".hash(state)
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Converts between Traditional and Simplified Chinese with OpenCC's dictionaries; modes t2s, tw2s, \
         hk2s, tw2sp, s2t, s2tw, s2hk, s2twp.",
        "chinese_convert(text, mode)",
    )
    .with_argument("text", "The document text.")
    .with_argument("mode", "OpenCC configuration name, e.g. 't2s'.")
    .with_sql_example("SELECT chinese_convert('漢字', 't2s')  -- 汉字")
    .build()
});

impl ScalarUDFImpl for ChineseConvertFunc {
    fn name(&self) -> &str {
        "chinese_convert"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        if args.len() != 2 {
            return plan_err!("chinese_convert takes (text, mode)");
        }
        coerce_text_args(self.name(), args, &[DataType::Utf8])
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let mode = literal_str(self.name(), "mode", &args.args[1])?;
        let conv = converter(mode)?;
        map_to_string(&args.args[0], |t| conv.convert(t))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::test_util::{invoke, strs};
    use datafusion::common::ScalarValue;

    #[test]
    fn traditional_to_simplified() {
        assert_eq!(
            chinese_convert("漢字與繁體中文", "t2s").unwrap(),
            "汉字与繁体中文"
        );
        assert_eq!(
            chinese_convert("床前明月光，疑是地上霜。", "t2s").unwrap(),
            "床前明月光，疑是地上霜。"
        );
        // Taiwan phrases: tw2sp also converts vocabulary.
        assert_eq!(
            chinese_convert("滑鼠和軟體", "tw2sp").unwrap(),
            "鼠标和软件"
        );
        assert_eq!(chinese_convert("汉字", "s2t").unwrap(), "漢字");
        assert_eq!(chinese_convert("", "t2s").unwrap(), "");
        assert_eq!(chinese_convert(" \n ", "t2s").unwrap(), " \n ");
        assert_eq!(
            chinese_convert("English stays as is.", "t2s").unwrap(),
            "English stays as is."
        );
    }

    #[test]
    fn unknown_mode_is_an_error() {
        let err = chinese_convert("x", "t2x").unwrap_err().to_string();
        assert!(err.contains("unknown mode 't2x'"), "{err}");
    }

    #[test]
    fn long_line() {
        let text = "從前有座山，山裡有座廟。".repeat(50_000);
        let out = chinese_convert(&text, "t2s").unwrap();
        assert_eq!(out, "从前有座山，山里有座庙。".repeat(50_000));
    }

    #[test]
    fn udf_on_column() {
        let out = invoke(
            &ChineseConvertFunc::default(),
            &[Some("龍"), None],
            vec![ScalarValue::from("t2s")],
        );
        assert_eq!(strs(&out), vec![Some("龙".to_string()), None]);
    }
}
