//! Stages: what each pipeline item means, checked against the options each stage takes.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// A row stage that keeps rows whose value lies within `[min, max]` (or annotates the value).
#[derive(Debug, Clone)]
pub struct Filter {
    /// The UDF that computes the value; also the stage's name.
    pub function: &'static str,
    /// Constant arguments after the text (a lexicon name, an n-gram size).
    pub args: Vec<datafusion::common::ScalarValue>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Keep every row and add the value as a column instead of dropping.
    pub annotate: bool,
    /// The annotation column's name (default: the stage name).
    pub column: String,
}

/// A row stage that rewrites the text.
#[derive(Debug, Clone)]
pub struct Map {
    pub function: &'static str,
    pub args: Vec<datafusion::common::ScalarValue>,
    /// An annotation computed before the rewrite (flagged_words with `action: mask, annotate: true`).
    pub annotate: Option<(String, &'static str)>,
}

#[derive(Debug, Clone)]
pub enum StageKind {
    Filter(Filter),
    Map(Map),
    /// A query over the previous stage's rows, which it sees as the table `input`.
    Sql(String),
    /// Near-duplicate removal over all of the previous stage's rows.
    MinhashDedup(Box<crate::stages::minhash_dedup::options::MinhashDedupOptions>),
    /// Exact-substring removal over all of the previous stage's rows.
    SubstringDedup(Box<crate::stages::substring_dedup::options::SubstringDedupOptions>),
    /// Token shards of all of the previous stage's rows, in order.
    Tokenize(Box<crate::stages::tokenize::options::TokenizeOptions>),
    /// Rows of all of the previous stage's rows, made or annotated by an LLM.
    Synth(Box<crate::stages::synth::options::SynthOptions>),
    /// The knowledge tags of all of the previous stage's rows, merged into a taxonomy file.
    TagTaxonomy(Box<crate::stages::tag_taxonomy::TagTaxonomyOptions>),
}

impl StageKind {
    /// Corpus stages need all of the previous stage's rows: they start a segment.
    pub fn is_corpus(&self) -> bool {
        matches!(
            self,
            StageKind::Sql(_)
                | StageKind::MinhashDedup(_)
                | StageKind::SubstringDedup(_)
                | StageKind::Tokenize(_)
                | StageKind::Synth(_)
                | StageKind::TagTaxonomy(_)
        )
    }
}

#[derive(Debug, Clone)]
pub struct Stage {
    /// Unique within the pipeline: the stage name, with `#2`, `#3` … for repeats.
    pub label: String,
    pub kind: StageKind,
    /// A SQL predicate: only rows matching it go through the stage; the others pass untouched.
    pub where_: Option<String>,
    /// A lexicon file to load before running, as (registry, name/path).
    pub lexicon_file: Option<(LexiconKind, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LexiconKind {
    Flagged,
    Stopwords,
}

/// Options every rule stage may take; each stage accepts only the keys that apply to it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    min_chars: Option<f64>,
    max_chars: Option<f64>,
    min_words: Option<f64>,
    max_words: Option<f64>,
    min_ratio: Option<f64>,
    max_ratio: Option<f64>,
    lexicon: Option<String>,
    n: Option<i64>,
    mode: Option<String>,
    action: Option<String>,
    #[serde(default)]
    annotate: bool,
    column: Option<String>,
    #[serde(rename = "where")]
    where_: Option<String>,
}

const COMMON: &[&str] = &["annotate", "column", "where"];

/// Every stage this version knows, with the options it takes.
pub const STAGES: &[(&str, &[&str])] = &[
    ("text_length", &["min_chars", "max_chars"]),
    ("avg_line_length", &["min_chars", "max_chars"]),
    ("avg_sentence_length", &["min_chars", "max_chars"]),
    ("word_count", &["min_words", "max_words"]),
    ("flagged_words", &["lexicon", "max_ratio", "action"]),
    ("stopwords", &["lexicon", "min_ratio", "max_ratio"]),
    ("char_repetition", &["n", "min_ratio", "max_ratio"]),
    ("special_chars", &["min_ratio", "max_ratio"]),
    ("chinese_convert", &["mode", "where"]),
    ("sql", &[]),
    (
        "minhash_dedup",
        &[
            "unit",
            "ngram",
            "bands",
            "rows",
            "seed",
            "normalize",
            "keep",
            "verify",
            "threshold",
            "memory_mb",
            "index",
            "annotate",
        ],
    ),
    // Checks its options itself (src/stages/substring_dedup/options.rs).
    ("substring_dedup", &[]),
    (
        "tokenize",
        &[
            "tokenizer",
            "template",
            "output",
            "by",
            "dtype",
            "max_shard_mb",
            "batch_docs",
            "batch_mb",
        ],
    ),
    // The synthesis stages check their options themselves (src/stages/synth/options.rs).
    ("quality_annotate", &[]),
    ("knowledge_tags", &[]),
    ("qa_simple", &[]),
    ("cot_backward", &[]),
    ("cot_forward", &[]),
    ("cot_rag", &[]),
    ("tag_taxonomy", &[]),
];

/// Parses the `stages:` list of a pipeline. `base` is the pipeline's directory, against which lexicon
/// file paths are resolved.
pub fn parse_stages(items: &[serde_norway::Value], base: &Path) -> Result<Vec<Stage>> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (name, opts) = one_key(item).with_context(|| format!("stage {}", i + 1))?;
        let n = seen.entry(name.clone()).or_insert(0);
        *n += 1;
        let label = if *n == 1 {
            name.clone()
        } else {
            format!("{name}#{n}")
        };
        let stage = parse_stage(&name, label, opts, base)
            .with_context(|| format!("stage {} ({name})", i + 1))?;
        out.push(stage);
    }
    Ok(out)
}

fn one_key(item: &serde_norway::Value) -> Result<(String, serde_norway::Value)> {
    match item {
        serde_norway::Value::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().expect("len 1");
            let k = k.as_str().context("a stage name must be a string")?;
            Ok((k.to_string(), v.clone()))
        }
        serde_norway::Value::String(s) => Ok((s.clone(), serde_norway::Value::Null)),
        _ => bail!("each stage is a one-key map, e.g. `- text_length: {{min_chars: 100}}`"),
    }
}

fn parse_stage(name: &str, label: String, opts: serde_norway::Value, base: &Path) -> Result<Stage> {
    let Some((_, allowed)) = STAGES.iter().find(|(n, _)| *n == name) else {
        bail!(
            "unknown stage '{name}'; stages are {}",
            STAGES.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        );
    };
    if name == "sql" {
        let query = opts
            .as_str()
            .context("`sql:` takes the query as a string")?;
        return Ok(Stage {
            label,
            kind: StageKind::Sql(query.to_string()),
            where_: None,
            lexicon_file: None,
        });
    }
    if name == "minhash_dedup" {
        let options = crate::stages::minhash_dedup::options::MinhashDedupOptions::parse(opts)?;
        return Ok(Stage {
            label,
            kind: StageKind::MinhashDedup(Box::new(options)),
            where_: None,
            lexicon_file: None,
        });
    }
    if name == "substring_dedup" {
        let options = crate::stages::substring_dedup::options::SubstringDedupOptions::parse(opts)?;
        return Ok(Stage {
            label,
            kind: StageKind::SubstringDedup(Box::new(options)),
            where_: None,
            lexicon_file: None,
        });
    }
    if name == "tokenize" {
        let options = crate::stages::tokenize::options::TokenizeOptions::parse(opts)?;
        return Ok(Stage {
            label,
            kind: StageKind::Tokenize(Box::new(options)),
            where_: None,
            lexicon_file: None,
        });
    }
    if name == "tag_taxonomy" {
        let options = crate::stages::tag_taxonomy::TagTaxonomyOptions::parse(opts)?;
        return Ok(Stage {
            label,
            kind: StageKind::TagTaxonomy(Box::new(options)),
            where_: None,
            lexicon_file: None,
        });
    }
    if let Some(method) = crate::stages::synth::options::Method::from_name(name) {
        let options = crate::stages::synth::options::SynthOptions::parse(method, opts)?;
        return Ok(Stage {
            label,
            kind: StageKind::Synth(Box::new(options)),
            where_: None,
            lexicon_file: None,
        });
    }
    if let serde_norway::Value::Mapping(m) = &opts {
        for k in m.keys() {
            let k = k.as_str().unwrap_or_default();
            if !allowed.contains(&k) && !COMMON.contains(&k) {
                bail!(
                    "'{name}' does not take '{k}'; it takes {}",
                    allowed
                        .iter()
                        .chain(COMMON)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    let o: Options = if opts.is_null() {
        Options::default()
    } else {
        serde_norway::from_value(opts)?
    };
    let column = o.column.clone().unwrap_or_else(|| name.to_string());
    let ratio =
        |d_min: Option<f64>, d_max: Option<f64>| (o.min_ratio.or(d_min), o.max_ratio.or(d_max));
    let mut lexicon_file = None;
    let mut lexicon_arg = |kind: LexiconKind| -> datafusion::common::ScalarValue {
        let lex = o.lexicon.clone().unwrap_or_else(|| "en".into());
        if lex.contains('/') || lex.ends_with(".txt") {
            let path = base.join(&lex).to_string_lossy().into_owned();
            lexicon_file = Some((kind, path.clone()));
            datafusion::common::ScalarValue::from(path)
        } else {
            datafusion::common::ScalarValue::from(lex)
        }
    };
    let filter = |function: &'static str,
                  args,
                  (min, max): (Option<f64>, Option<f64>)|
     -> Result<StageKind> {
        if min.is_none() && max.is_none() && !o.annotate {
            bail!("'{function}' needs a minimum and/or a maximum, or `annotate: true`");
        }
        if let (Some(a), Some(b)) = (min, max)
            && a > b
        {
            bail!("'{function}': minimum {a} is above maximum {b}");
        }
        Ok(StageKind::Filter(Filter {
            function,
            args,
            min,
            max,
            annotate: o.annotate,
            column: column.clone(),
        }))
    };
    let kind = match name {
        "text_length" => filter("text_length", vec![], (o.min_chars, o.max_chars))?,
        "avg_line_length" => filter("avg_line_length", vec![], (o.min_chars, o.max_chars))?,
        "avg_sentence_length" => filter("avg_sentence_length", vec![], (o.min_chars, o.max_chars))?,
        "word_count" => filter("word_count", vec![], (o.min_words, o.max_words))?,
        // data-juicer's defaults where a stage is named without thresholds.
        "stopwords" => filter(
            "stopwords",
            vec![lexicon_arg(LexiconKind::Stopwords)],
            ratio(Some(0.3), None),
        )?,
        "char_repetition" => filter(
            "char_repetition",
            vec![datafusion::common::ScalarValue::Int64(Some(
                o.n.unwrap_or(10),
            ))],
            ratio(None, Some(0.5)),
        )?,
        "special_chars" => filter("special_chars", vec![], ratio(None, Some(0.25)))?,
        "flagged_words" => {
            let arg = lexicon_arg(LexiconKind::Flagged);
            match o.action.as_deref().unwrap_or("drop") {
                "drop" => filter(
                    "flagged_words",
                    vec![arg],
                    (None, o.max_ratio.or(Some(0.045))),
                )?,
                "mask" => StageKind::Map(Map {
                    function: "flagged_words_mask",
                    args: vec![arg],
                    annotate: o.annotate.then(|| (column.clone(), "flagged_words")),
                }),
                other => bail!("flagged_words: action must be drop or mask, not '{other}'"),
            }
        }
        "chinese_convert" => {
            let mode = o
                .mode
                .clone()
                .context("chinese_convert needs `mode` (t2s, tw2s, hk2s, tw2sp, s2t, …)")?;
            if !openseek_udfs::chinese_convert::MODES.contains(&mode.as_str()) {
                bail!(
                    "chinese_convert: unknown mode '{mode}'; modes are {}",
                    openseek_udfs::chinese_convert::MODES.join(", ")
                );
            }
            StageKind::Map(Map {
                function: "chinese_convert",
                args: vec![datafusion::common::ScalarValue::from(mode)],
                annotate: None,
            })
        }
        _ => unreachable!("listed in STAGES"),
    };
    Ok(Stage {
        label,
        kind,
        where_: o.where_,
        lexicon_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<Stage>> {
        let items: Vec<serde_norway::Value> = serde_norway::from_str(yaml).unwrap();
        parse_stages(&items, Path::new("."))
    }

    #[test]
    fn parses_and_labels_repeats() {
        let s = parse("- text_length: {min_chars: 100, max_chars: 20000}\n- stopwords: {lexicon: en, where: \"language = 'en'\"}\n- stopwords: {lexicon: zh}\n- sql: SELECT * FROM input\n").unwrap();
        let labels: Vec<&str> = s.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            vec!["text_length", "stopwords", "stopwords#2", "sql"]
        );
        match &s[1].kind {
            StageKind::Filter(f) => assert_eq!((f.min, f.max), (Some(0.3), None)),
            _ => panic!(),
        }
        assert_eq!(s[1].where_.as_deref(), Some("language = 'en'"));
    }

    #[test]
    fn rejects_bad_options() {
        let e = format!("{:#}", parse("- text_length: {max_ratio: 1}").unwrap_err());
        assert!(e.contains("does not take 'max_ratio'"), "{e}");
        let e = format!("{:#}", parse("- text_length: {}").unwrap_err());
        assert!(e.contains("needs a minimum"), "{e}");
        let e = format!("{:#}", parse("- chinese_convert: {mode: t2x}").unwrap_err());
        assert!(e.contains("unknown mode"), "{e}");
        let e = format!("{:#}", parse("- dedupe_everything: {}").unwrap_err());
        assert!(e.contains("unknown stage"), "{e}");
        let e = format!(
            "{:#}",
            parse("- word_count: {min_words: 10, max_words: 5}").unwrap_err()
        );
        assert!(e.contains("above maximum"), "{e}");
    }

    #[test]
    fn lexicon_files_resolve_against_the_pipeline() {
        let items: Vec<serde_norway::Value> =
            serde_norway::from_str("- flagged_words: {lexicon: lists/bad.txt, max_ratio: 0}")
                .unwrap();
        let s = parse_stages(&items, Path::new("/p")).unwrap();
        assert_eq!(
            s[0].lexicon_file,
            Some((LexiconKind::Flagged, "/p/lists/bad.txt".to_string()))
        );
    }
}
