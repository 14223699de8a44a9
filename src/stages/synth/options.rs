//! The options of the synthesis stages: the client's (`LlmConfig`, shared by all) and each method's.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::llm::client::LlmConfig;

/// What a synthesis stage asks the model for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The FineWeb-Edu additive 0–5 educational score, as a column.
    QualityAnnotate,
    /// Domain, topics, key points and difficulty, as columns.
    KnowledgeTags,
    /// Question–answer pairs answerable from the document.
    QaSimple,
    /// Segments, summaries, chain of thought and core question, worked backwards from the document.
    CotBackward,
    /// A refined chain of thought and an answer for a backward CoT's query.
    CotForward,
    /// The Search-o1 loop over a local full-text index: reasoning with searches, and an answer.
    CotRag,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::QualityAnnotate => "quality_annotate",
            Method::KnowledgeTags => "knowledge_tags",
            Method::QaSimple => "qa_simple",
            Method::CotBackward => "cot_backward",
            Method::CotForward => "cot_forward",
            Method::CotRag => "cot_rag",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        ALL.iter().copied().find(|m| m.name() == name)
    }

    /// The prompt templates the method renders.
    pub fn templates(self) -> &'static [&'static str] {
        match self {
            Method::QualityAnnotate => &["quality_annotate"],
            Method::KnowledgeTags => &["knowledge_tags"],
            Method::QaSimple => &["qa_simple"],
            Method::CotBackward => &["cot_segment", "cot_backward"],
            Method::CotForward => &["cot_forward"],
            Method::CotRag => &["cot_rag", "rag_condense"],
        }
    }

    /// Methods that add columns to each document rather than make new rows from it.
    pub fn annotates(self) -> bool {
        matches!(self, Method::QualityAnnotate | Method::KnowledgeTags)
    }

    /// Options of this method beside the client's.
    fn own_options(self) -> &'static [&'static str] {
        match self {
            Method::QualityAnnotate => &["column"],
            Method::KnowledgeTags => &[],
            Method::QaSimple => &["pairs"],
            Method::CotBackward => &["max_segments"],
            Method::CotForward => &["query_column", "cot_column"],
            Method::CotRag => &[
                "index",
                "instruction_column",
                "max_searches",
                "max_turns",
                "top_k",
                "doc_chars",
            ],
        }
    }
}

pub const ALL: &[Method] = &[
    Method::QualityAnnotate,
    Method::KnowledgeTags,
    Method::QaSimple,
    Method::CotBackward,
    Method::CotForward,
    Method::CotRag,
];

/// Options every synthesis stage takes beside the client's.
const COMMON: &[&str] = &[
    "where",
    "lang",
    "lang_column",
    "prompts",
    "cache",
    "parse_retries",
    "max_input_chars",
];

const CLIENT: &[&str] = &[
    "endpoint",
    "model",
    "api_key_env",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "max_concurrency",
    "rpm",
    "tpm",
    "timeout_s",
    "max_retries",
    "backoff_s",
    "backoff_max_s",
    "response_format",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthOptions {
    pub method: Method,
    pub llm: LlmConfig,
    /// A SQL predicate: only matching rows go to the model; the others pass on untouched (routing:
    /// `qa_simple` for some rows, `cot_backward` for the rest).
    pub where_: Option<String>,
    /// `en`, `zh`, or `auto` (default): from `lang_column` when the row has it, else from the text.
    pub lang: String,
    pub lang_column: String,
    /// A directory whose templates replace the bundled ones of the same name.
    pub prompts: Option<String>,
    /// A directory for the response cache, shared between runs (default: the run's `llm_cache/`).
    pub cache: Option<String>,
    /// Requests again (as a new request) a response that fails validation, this many times.
    pub parse_retries: u32,
    /// Characters of a document put into a prompt at most (cut at a line end where possible).
    pub max_input_chars: usize,
    /// `quality_annotate`: the score column.
    pub column: String,
    /// `qa_simple`: the pairs asked for.
    pub pairs: u32,
    /// `cot_backward`: the most segments asked for.
    pub max_segments: u32,
    /// `cot_forward`: the input's query and draft CoT columns.
    pub query_column: String,
    pub cot_column: String,
    /// `cot_rag`: what to retrieve from, the instructions' column, and the loop's limits.
    pub index: Option<IndexSource>,
    pub instruction_column: String,
    pub max_searches: u32,
    pub max_turns: u32,
    pub top_k: usize,
    pub doc_chars: usize,
}

/// The documents `cot_rag` indexes: a dataset of the catalog, or files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSource {
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    /// The id column: `id` unless told otherwise; `null` generates ids.
    #[serde(default = "crate::io::default_id_column")]
    pub id: Option<String>,
}

impl SynthOptions {
    pub fn parse(method: Method, opts: serde_norway::Value) -> Result<Self> {
        let serde_norway::Value::Mapping(map) = opts else {
            bail!("{} needs at least `endpoint` and `model`", method.name());
        };
        let mut client = serde_norway::Mapping::new();
        let mut own = serde_norway::Mapping::new();
        for (k, v) in map {
            let key = k.as_str().context("option names are strings")?.to_string();
            if CLIENT.contains(&key.as_str()) {
                client.insert(k, v);
            } else if COMMON.contains(&key.as_str()) || method.own_options().contains(&key.as_str())
            {
                own.insert(k, v);
            } else {
                bail!(
                    "'{}' does not take '{key}'; it takes {}",
                    method.name(),
                    CLIENT
                        .iter()
                        .chain(COMMON)
                        .chain(method.own_options())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        let llm: LlmConfig = serde_norway::from_value(serde_norway::Value::Mapping(client))
            .with_context(|| format!("{}: the endpoint's options", method.name()))?;
        let own: Own = serde_norway::from_value(serde_norway::Value::Mapping(own))?;
        if !["en", "zh", "auto"].contains(&own.lang.as_str()) {
            bail!("lang must be en, zh or auto, not '{}'", own.lang);
        }
        if own.max_input_chars == 0 || own.pairs == 0 || own.max_segments < 2 {
            bail!("max_input_chars and pairs must be positive, max_segments at least 2");
        }
        if method == Method::CotRag {
            match &own.index {
                Some(i) if i.dataset.is_some() != i.path.is_some() => {}
                _ => bail!("cot_rag needs `index: {{dataset: NAME}}` or `index: {{path: FILES}}`"),
            }
            if own.top_k == 0 || own.max_turns == 0 || own.doc_chars == 0 {
                bail!("top_k, max_turns and doc_chars must be positive");
            }
        }
        Ok(Self {
            method,
            llm,
            where_: own.where_,
            lang: own.lang,
            lang_column: own.lang_column,
            prompts: own.prompts,
            cache: own.cache,
            parse_retries: own.parse_retries,
            max_input_chars: own.max_input_chars,
            column: own.column,
            pairs: own.pairs,
            max_segments: own.max_segments,
            query_column: own.query_column,
            cot_column: own.cot_column,
            index: own.index,
            instruction_column: own.instruction_column,
            max_searches: own.max_searches,
            max_turns: own.max_turns,
            top_k: own.top_k,
            doc_chars: own.doc_chars,
        })
    }
}

/// A stage's own options, with their defaults.
#[derive(Deserialize)]
#[serde(default)]
struct Own {
    #[serde(rename = "where")]
    where_: Option<String>,
    index: Option<IndexSource>,
    instruction_column: String,
    max_searches: u32,
    max_turns: u32,
    top_k: usize,
    doc_chars: usize,
    lang: String,
    lang_column: String,
    prompts: Option<String>,
    cache: Option<String>,
    parse_retries: u32,
    max_input_chars: usize,
    column: String,
    pairs: u32,
    max_segments: u32,
    query_column: String,
    cot_column: String,
}

impl Default for Own {
    fn default() -> Self {
        Self {
            where_: None,
            index: None,
            instruction_column: "text".into(),
            max_searches: 5,
            max_turns: 8,
            top_k: 3,
            doc_chars: 1500,
            lang: "auto".into(),
            lang_column: "language".into(),
            prompts: None,
            cache: None,
            parse_retries: 2,
            max_input_chars: 12_000,
            column: "quality_score".into(),
            pairs: 3,
            max_segments: 8,
            query_column: "query".into(),
            cot_column: "cot".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, yaml: &str) -> Result<SynthOptions> {
        SynthOptions::parse(method, serde_norway::from_str(yaml).unwrap())
    }

    #[test]
    fn takes_the_client_and_its_own_options_and_names_the_rest() {
        let o = parse(
            Method::QaSimple,
            "{endpoint: 'http://127.0.0.1:8088/v1', model: m, rpm: 60, pairs: 5, lang: zh}",
        )
        .unwrap();
        assert_eq!((o.llm.rpm, o.pairs, o.lang.as_str()), (60, 5, "zh"));
        assert_eq!(o.llm.max_concurrency, 16);
        let e = format!(
            "{:#}",
            parse(Method::QaSimple, "{endpoint: e, model: m, column: x}").unwrap_err()
        );
        assert!(e.contains("does not take 'column'"), "{e}");
        let e = format!(
            "{:#}",
            parse(Method::QaSimple, "{endpoint: e}").unwrap_err()
        );
        assert!(e.contains("model"), "{e}");
    }
}
