//! `flagged_words(text, lexicon)`: the ratio of flagged words to words (data-juicer's
//! `flagged_words_filter`: max 0.045 by default, 0.0015 in its CC recipe; OpenSeek removes sensitive
//! words outright, i.e. max 0), and `flagged_words_mask(text, lexicon)`, the text with them masked.
//! Bundled lexicons: `en` and `zh`, LDNOOBW's lists (CC BY 4.0, see `udfs/lexicons/`).

use std::sync::Arc;

use datafusion::logical_expr::{Documentation, ScalarUDF};

use crate::args::DOC_SECTION;
use crate::lexicon::{LexiconFunc, LexiconOutput, LexiconRegistry};

/// The lexicons compiled into the binary.
pub const BUNDLED: &[(&str, &str)] = &[
    ("en", include_str!("../lexicons/flagged_en.txt")),
    ("zh", include_str!("../lexicons/flagged_zh.txt")),
];

pub fn registry() -> Arc<LexiconRegistry> {
    Arc::new(LexiconRegistry::new("flagged-words", BUNDLED))
}

pub fn flagged_words_udf(registry: Arc<LexiconRegistry>) -> ScalarUDF {
    let doc = Documentation::builder(
        DOC_SECTION,
        "Ratio of flagged words to words; the lexicon is a bundled name ('en', 'zh') or a file a pipeline \
         loaded. Chinese entries match inside running text.",
        "flagged_words(text, lexicon)",
    )
    .with_argument("text", "The document text.")
    .with_argument("lexicon", "Lexicon name, e.g. 'en'.")
    .with_sql_example("SELECT id FROM sample_en WHERE flagged_words(text, 'en') > 0.001")
    .build();
    ScalarUDF::new_from_impl(LexiconFunc::new(
        "flagged_words",
        LexiconOutput::Ratio,
        registry,
        doc,
    ))
}

pub fn flagged_words_mask_udf(registry: Arc<LexiconRegistry>) -> ScalarUDF {
    let doc = Documentation::builder(
        DOC_SECTION,
        "The text with every flagged word replaced by as many '*' as it has characters.",
        "flagged_words_mask(text, lexicon)",
    )
    .with_argument("text", "The document text.")
    .with_argument("lexicon", "Lexicon name, e.g. 'zh'.")
    .build();
    ScalarUDF::new_from_impl(LexiconFunc::new(
        "flagged_words_mask",
        LexiconOutput::Mask,
        registry,
        doc,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::test_util::{f64s, invoke, strs};
    use datafusion::common::ScalarValue;

    #[test]
    fn bundled_lexicons_load() {
        let reg = registry();
        assert!(reg.get("en").unwrap().len() > 350);
        assert!(reg.get("zh").unwrap().len() > 250);
    }

    #[test]
    fn english_ratio_and_mask() {
        let reg = registry();
        let en = reg.get("en").unwrap();
        assert_eq!(en.scan("The weather is lovely today.").ratio(), 0.0);
        let text = "What a fucking mess, said the bastard.";
        let scan = en.scan(text);
        assert_eq!(scan.spans.len(), 2);
        assert_eq!(scan.tokens, 7);
        assert_eq!(en.mask(text), "What a ******* mess, said the *******.");
    }

    #[test]
    fn chinese_inside_running_text() {
        let reg = registry();
        let zh = reg.get("zh").unwrap();
        assert_eq!(zh.scan("床前明月光，疑是地上霜。").ratio(), 0.0);
        let text = "这部电影里有很多色情内容。";
        let scan = zh.scan(text);
        assert!(!scan.spans.is_empty(), "{scan:?}");
        assert!(zh.mask(text).contains('*'));
        assert_eq!(zh.mask(text).chars().count(), text.chars().count());
    }

    #[test]
    fn udfs_on_column() {
        let reg = registry();
        let ratio = invoke(
            flagged_words_udf(reg.clone()).inner().as_ref(),
            &[Some("shit happens"), None, Some("")],
            vec![ScalarValue::from("en")],
        );
        assert_eq!(f64s(&ratio), vec![Some(0.5), None, Some(0.0)]);
        let masked = invoke(
            flagged_words_mask_udf(reg).inner().as_ref(),
            &[Some("shit happens")],
            vec![ScalarValue::from("en")],
        );
        assert_eq!(strs(&masked), vec![Some("**** happens".to_string())]);
    }
}
