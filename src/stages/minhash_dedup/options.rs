//! The options of `minhash_dedup`, as a pipeline writes them.

use anyhow::{Result, bail};
use openseek_udfs::minhash::{MinhashConfig, ShingleUnit};
use openseek_udfs::text_normalize::Normalization;
use serde::{Deserialize, Serialize};

/// Which document of a cluster stays.
#[derive(Debug, Clone, PartialEq)]
pub enum Keep {
    /// The first in the pipeline's input (sources, files by name, rows), by the position every row
    /// carries from its reader; the stage's read order when a `sql` stage dropped it.
    First,
    /// The one with the most text bytes; ties go to the first.
    Longest,
    /// The one with the highest value of a column (a quality score); NULLs lose, ties go to the first.
    Max(String),
}

impl std::str::FromStr for Keep {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "first" => Keep::First,
            "longest" => Keep::Longest,
            _ => match s.strip_prefix("max:") {
                Some(c) if !c.trim().is_empty() => Keep::Max(c.trim().to_string()),
                _ => bail!("keep: '{s}' is not first, longest or max:<column>"),
            },
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IndexOptions {
    /// Write the band keys and ids of the documents this stage keeps to this directory.
    #[serde(default)]
    pub build: Option<String>,
    /// Also remove the documents that match the index in this directory.
    #[serde(default)]
    pub against: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MinhashDedupOptions {
    /// `word`, `char` or `auto` (characters for CJK-dominant documents).
    #[serde(default = "default_unit")]
    pub unit: String,
    #[serde(default = "default_ngram")]
    pub ngram: usize,
    #[serde(default = "default_bands")]
    pub bands: usize,
    #[serde(default = "default_rows")]
    pub rows: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// `default` (datatrove's), `none`, or a list of steps: lowercase, digits, punctuation, whitespace,
    /// accents.
    #[serde(default = "default_normalize")]
    pub normalize: String,
    /// `first`, `longest` or `max:<column>`.
    #[serde(default = "default_keep")]
    pub keep: String,
    /// Merge a candidate pair only when the true Jaccard similarity of its shingle sets is at least
    /// `threshold`. On by default: on a held-out near-duplicate set (`cargo bench --bench
    /// minhash_quality`, BENCHMARKS.md) LSH alone removed 5-6% of the documents that have no pair at
    /// 0.7, and verification none, for about a third more time in the stage.
    #[serde(default = "default_verify")]
    pub verify: bool,
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Memory for grouping band keys, in MiB; past it DataFusion spills to disk.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    #[serde(default)]
    pub index: IndexOptions,
    /// Keep every document and only add `minhash_cluster` and `minhash_cluster_size`.
    #[serde(default)]
    pub annotate: bool,
}

fn default_unit() -> String {
    "auto".into()
}
fn default_ngram() -> usize {
    5
}
fn default_bands() -> usize {
    14
}
fn default_rows() -> usize {
    8
}
fn default_seed() -> u64 {
    1
}
fn default_normalize() -> String {
    "default".into()
}
fn default_keep() -> String {
    "first".into()
}
fn default_verify() -> bool {
    true
}
/// Where the default bands × rows (14 × 8, datatrove's) find pairs reliably: a candidate at Jaccard 0.8
/// with probability 0.92, at 0.7 only 0.57. With 0.8, the held-out set's F1 was 0.990 (en) and 0.997
/// (zh); with 0.7, 0.960 and 0.953, its recall bound by LSH (BENCHMARKS.md). A lower threshold wants
/// looser bands too.
fn default_threshold() -> f64 {
    0.8
}
fn default_memory_mb() -> u64 {
    2048
}

impl MinhashDedupOptions {
    /// Parses and checks the stage's YAML options (`null` = every default).
    pub fn parse(value: serde_norway::Value) -> Result<Self> {
        let opts: Self = if value.is_null() {
            serde_norway::from_str("{}")?
        } else {
            serde_norway::from_value(value)?
        };
        opts.config()?;
        opts.keep()?;
        if !(0.0..=1.0).contains(&opts.threshold) {
            bail!("threshold {} is not within [0, 1]", opts.threshold);
        }
        if opts.memory_mb < 64 {
            bail!("memory_mb {} is below 64", opts.memory_mb);
        }
        if opts.index.build.is_some() && opts.index.build == opts.index.against {
            bail!("index: build and against name the same directory");
        }
        Ok(opts)
    }

    pub fn config(&self) -> Result<MinhashConfig> {
        let config = MinhashConfig {
            unit: self
                .unit
                .parse::<ShingleUnit>()
                .map_err(anyhow::Error::msg)?,
            ngram: self.ngram,
            bands: self.bands,
            rows: self.rows,
            seed: self.seed,
            normalization: Normalization::parse(&self.normalize).map_err(anyhow::Error::msg)?,
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }

    pub fn keep(&self) -> Result<Keep> {
        self.keep.parse()
    }
}
