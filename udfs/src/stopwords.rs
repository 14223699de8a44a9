//! `stopwords(text, lexicon)`: the ratio of stopwords to words (data-juicer's `stopwords_filter`, min 0.3
//! by default). A text with few function words is usually a list, a table or keyword spam rather than
//! prose. Chinese stopwords are matched inside running text (longest match), as words have no spaces.
//! Bundled lexicons: `en` and `zh` from stopwords-iso (MIT, see `udfs/lexicons/`).

use std::sync::Arc;

use datafusion::logical_expr::{Documentation, ScalarUDF};

use crate::args::DOC_SECTION;
use crate::lexicon::{LexiconFunc, LexiconOutput, LexiconRegistry};

pub const BUNDLED: &[(&str, &str)] = &[
    ("en", include_str!("../lexicons/stopwords_en.txt")),
    ("zh", include_str!("../lexicons/stopwords_zh.txt")),
];

pub fn registry() -> Arc<LexiconRegistry> {
    Arc::new(LexiconRegistry::new("stopwords", BUNDLED))
}

pub fn stopwords_udf(registry: Arc<LexiconRegistry>) -> ScalarUDF {
    let doc = Documentation::builder(
        DOC_SECTION,
        "Ratio of stopwords to words; the lexicon is a bundled name ('en', 'zh') or a file a pipeline loaded.",
        "stopwords(text, lexicon)",
    )
    .with_argument("text", "The document text.")
    .with_argument("lexicon", "Lexicon name, e.g. 'en'.")
    .with_sql_example("SELECT avg(stopwords(text, 'en')) FROM sample_en")
    .build();
    ScalarUDF::new_from_impl(LexiconFunc::new(
        "stopwords",
        LexiconOutput::Ratio,
        registry,
        doc,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::test_util::{f64s, invoke};
    use datafusion::common::ScalarValue;

    #[test]
    fn english_prose_versus_keyword_list() {
        let en = registry().get("en").unwrap();
        let prose =
            "It was the best of times, it was the worst of times, it was the age of wisdom.";
        assert!(en.scan(prose).ratio() > 0.5, "{}", en.scan(prose).ratio());
        let list = "Cheap viagra pills discount pharmacy online casino bonus";
        assert!(en.scan(list).ratio() < 0.3, "{}", en.scan(list).ratio());
        assert_eq!(en.scan("").ratio(), 0.0);
        assert_eq!(en.scan(" \n\t").ratio(), 0.0);
    }

    #[test]
    fn chinese_prose_has_function_words() {
        let zh = registry().get("zh").unwrap();
        let prose = "我们的目标是让每一个人都能够理解这个问题，并且找到自己的答案。";
        let r = zh.scan(prose).ratio();
        assert!(r > 0.2, "{r}");
        let list = "苹果香蕉橘子葡萄西瓜草莓";
        assert!(zh.scan(list).ratio() < r);
    }

    #[test]
    fn udf_on_column() {
        let out = invoke(
            stopwords_udf(registry()).inner().as_ref(),
            &[Some("the cat"), None],
            vec![ScalarValue::from("en")],
        );
        assert_eq!(f64s(&out), vec![Some(0.5), None]);
    }
}
