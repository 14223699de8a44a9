//! Text row functions of the OpenSeek engine and their DataFusion UDFs.
//!
//! Every rule filter of a pipeline is one of these functions, under the same name in YAML and SQL:
//! `text_length: {min_chars: 100}` in a pipeline keeps the rows where `text_length(text) >= 100` in SQL.
//! The crate does no I/O: lexicon files named by pipelines are read by the engine and handed to the
//! registries here.

mod args;
pub mod avg_line_length;
pub mod avg_sentence_length;
pub mod char_repetition;
pub mod chinese_convert;
pub mod flagged_words;
pub mod lexicon;
pub mod minhash;
pub mod minhash_jaccard;
pub mod minhash_signature;
pub mod special_chars;
pub mod stopwords;
pub mod text_length;
pub mod text_normalize;
pub mod word_count;
pub mod words;

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;

pub use args::string_iter;
pub use lexicon::{Lexicon, LexiconRegistry};
pub use words::is_cjk;

/// The lexicon registries the lexicon functions look names up in; the engine keeps them to add files.
#[derive(Clone)]
pub struct Lexicons {
    pub flagged: Arc<LexiconRegistry>,
    pub stopwords: Arc<LexiconRegistry>,
}

impl Default for Lexicons {
    fn default() -> Self {
        Self {
            flagged: flagged_words::registry(),
            stopwords: stopwords::registry(),
        }
    }
}

/// Every OpenSeek UDF, ready to register in a `SessionContext`.
pub fn all_udfs(lexicons: &Lexicons) -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(text_length::TextLengthFunc::default()),
        ScalarUDF::new_from_impl(avg_line_length::AvgLineLengthFunc::default()),
        ScalarUDF::new_from_impl(avg_sentence_length::AvgSentenceLengthFunc::default()),
        ScalarUDF::new_from_impl(word_count::WordCountFunc::default()),
        ScalarUDF::new_from_impl(chinese_convert::ChineseConvertFunc::default()),
        flagged_words::flagged_words_udf(Arc::clone(&lexicons.flagged)),
        flagged_words::flagged_words_mask_udf(Arc::clone(&lexicons.flagged)),
        stopwords::stopwords_udf(Arc::clone(&lexicons.stopwords)),
        ScalarUDF::new_from_impl(char_repetition::CharRepetitionFunc::default()),
        ScalarUDF::new_from_impl(special_chars::SpecialCharsFunc::default()),
        ScalarUDF::new_from_impl(minhash_signature::MinhashSignatureFunc::default()),
        ScalarUDF::new_from_impl(minhash_jaccard::MinhashJaccardFunc::default()),
    ]
}
