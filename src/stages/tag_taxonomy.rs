//! `tag_taxonomy`: the knowledge tags of the whole corpus (`knowledge_tags`' columns) merged into a
//! taxonomy file: domains with their document counts, difficulty mix and topics, each under a
//! normalised name with the spellings the model used. Rows pass on unchanged.
//!
//! DataFusion counts the raw tags (a `GROUP BY`, and an `unnest` of the topic lists); the counts are
//! merged here under normalised names, since there are far fewer distinct tags than documents.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::{DataFrame, SessionContext};
use serde::{Deserialize, Serialize};

use crate::report::StageReport;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagTaxonomyOptions {
    /// The taxonomy file, relative to the run's output directory.
    #[serde(default = "default_output")]
    pub output: String,
    #[serde(default = "domain")]
    pub domain_column: String,
    #[serde(default = "topics")]
    pub topics_column: String,
    #[serde(default = "difficulty")]
    pub difficulty_column: String,
}

fn default_output() -> String {
    "taxonomy.json".into()
}
fn domain() -> String {
    "kp_domain".into()
}
fn topics() -> String {
    "kp_topics".into()
}
fn difficulty() -> String {
    "kp_difficulty".into()
}

impl TagTaxonomyOptions {
    pub fn parse(opts: serde_norway::Value) -> Result<Self> {
        if opts.is_null() {
            return Ok(serde_norway::from_str("{}")?);
        }
        Ok(serde_norway::from_value(opts)?)
    }
}

/// The taxonomy file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Taxonomy {
    pub documents: u64,
    /// Documents with a domain.
    pub tagged: u64,
    pub domains: Vec<Domain>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    /// The spelling used most often among those with this normalised name.
    pub name: String,
    pub key: String,
    pub documents: u64,
    /// Every spelling seen, with its count.
    pub aliases: BTreeMap<String, u64>,
    pub difficulty: BTreeMap<String, u64>,
    pub topics: Vec<Topic>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    pub key: String,
    /// Documents naming the topic, summed over its spellings: a document that names it in two
    /// spellings counts twice.
    pub documents: u64,
    pub aliases: BTreeMap<String, u64>,
}

/// A tag's normalised name: Simplified Chinese, lower case, separators and surrounding punctuation
/// as single spaces, so that "Computer-Science", "computer science " and "計算機科學" vs "计算机科学"
/// merge.
pub fn normalize(tag: &str) -> String {
    let simplified = openseek_udfs::chinese_convert::chinese_convert(tag, "t2s")
        .unwrap_or_else(|_| tag.to_string());
    let mut out = String::with_capacity(simplified.len());
    for c in simplified.to_lowercase().chars() {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with(' ') && !out.is_empty() {
            out.push(' ');
        }
    }
    out.trim_end().to_string()
}

/// Counts the tags of `input`, writes the taxonomy to `run_dir/output`, and reports the stage (every
/// row passes).
pub async fn write_taxonomy(
    ctx: &SessionContext,
    opts: &TagTaxonomyOptions,
    label: &str,
    input: DataFrame,
    run_dir: &Path,
) -> Result<StageReport> {
    let schema = input.schema().clone();
    for c in [
        &opts.domain_column,
        &opts.topics_column,
        &opts.difficulty_column,
    ] {
        anyhow::ensure!(
            schema.field_with_unqualified_name(c).is_ok(),
            "{label}: the input has no column `{c}` (run knowledge_tags first)"
        );
    }
    let table = "__os_taxonomy";
    let _ = ctx.deregister_table(table);
    ctx.register_table(table, input.clone().into_view())?;
    let q = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let (d, t, f) = (
        q(&opts.domain_column),
        q(&opts.topics_column),
        q(&opts.difficulty_column),
    );
    let totals = ctx
        .sql(&format!(
            "SELECT count(*) AS n, count({d}) AS tagged, sum(octet_length(text)) AS bytes FROM {table}"
        ))
        .await?
        .collect()
        .await?;
    let by_domain = ctx
        .sql(&format!(
            "SELECT {d} AS domain, {f} AS difficulty, count(*) AS n FROM {table} \
             WHERE {d} IS NOT NULL GROUP BY 1, 2"
        ))
        .await?
        .collect()
        .await?;
    let by_topic = ctx
        .sql(&format!(
            "SELECT domain, topic, count(DISTINCT id) AS n FROM \
             (SELECT id, {d} AS domain, unnest({t}) AS topic FROM {table} WHERE {d} IS NOT NULL) \
             WHERE topic IS NOT NULL GROUP BY 1, 2"
        ))
        .await?
        .collect()
        .await?;
    let _ = ctx.deregister_table(table);

    let int = |b: &arrow::array::RecordBatch, i: usize, row: usize| -> Result<u64> {
        let c = arrow::compute::cast(b.column(i), &DataType::Int64)?;
        let c = c.as_primitive::<Int64Type>();
        Ok(if c.is_null(row) {
            0
        } else {
            c.value(row) as u64
        })
    };
    let text = |b: &arrow::array::RecordBatch, i: usize, row: usize| -> Result<Option<String>> {
        let c = arrow::compute::cast(b.column(i), &DataType::Utf8)?;
        let c = c.as_string::<i32>();
        Ok((!c.is_null(row)).then(|| c.value(row).to_string()))
    };
    let mut taxonomy = Taxonomy::default();
    let mut bytes = 0;
    if let Some(b) = totals.first() {
        taxonomy.documents = int(b, 0, 0)?;
        taxonomy.tagged = int(b, 1, 0)?;
        bytes = int(b, 2, 0)?;
    }
    let mut domains: HashMap<String, Domain> = HashMap::new();
    for b in &by_domain {
        for row in 0..b.num_rows() {
            let raw = text(b, 0, row)?.unwrap_or_default();
            let n = int(b, 2, row)?;
            let key = normalize(&raw);
            let entry = domains.entry(key.clone()).or_insert_with(|| Domain {
                key,
                ..Default::default()
            });
            entry.documents += n;
            *entry.aliases.entry(raw).or_default() += n;
            let level = text(b, 1, row)?.unwrap_or_else(|| "unknown".into());
            *entry.difficulty.entry(level).or_default() += n;
        }
    }
    let mut topics: HashMap<(String, String), Topic> = HashMap::new();
    for b in &by_topic {
        for row in 0..b.num_rows() {
            let domain = normalize(&text(b, 0, row)?.unwrap_or_default());
            let raw = text(b, 1, row)?.unwrap_or_default();
            let key = normalize(&raw);
            if key.is_empty() {
                continue;
            }
            let n = int(b, 2, row)?;
            let entry = topics
                .entry((domain, key.clone()))
                .or_insert_with(|| Topic {
                    key,
                    ..Default::default()
                });
            entry.documents += n;
            *entry.aliases.entry(raw).or_default() += n;
        }
    }
    let most_used = |aliases: &BTreeMap<String, u64>| {
        aliases
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(s, _)| s.clone())
            .unwrap_or_default()
    };
    for ((domain, _), mut topic) in topics {
        topic.name = most_used(&topic.aliases);
        if let Some(d) = domains.get_mut(&domain) {
            d.topics.push(topic);
        }
    }
    let mut domains: Vec<Domain> = domains.into_values().collect();
    for d in &mut domains {
        d.name = most_used(&d.aliases);
        d.topics
            .sort_by(|a, b| b.documents.cmp(&a.documents).then(a.key.cmp(&b.key)));
    }
    domains.sort_by(|a, b| b.documents.cmp(&a.documents).then(a.key.cmp(&b.key)));
    taxonomy.domains = domains;

    let path = run_dir.join(&opts.output);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = crate::io::writer::temp_name(&path);
    std::fs::write(&tmp, serde_json::to_vec_pretty(&taxonomy)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {}", path.display()))?;
    tracing::info!(
        "{label}: {} domains over {} tagged documents in {}",
        taxonomy.domains.len(),
        taxonomy.tagged,
        path.display()
    );
    let mut report = StageReport::new(label);
    report.rows_in = taxonomy.documents;
    report.rows_out = taxonomy.documents;
    report.bytes_in = bytes;
    report.bytes_out = bytes;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_merge_under_one_name() {
        assert_eq!(normalize(" Computer-Science "), "computer science");
        assert_eq!(normalize("computer_science"), "computer science");
        assert_eq!(normalize("計算機科學"), normalize("计算机科学"));
        assert_eq!(normalize("「历史」"), "历史");
    }
}
