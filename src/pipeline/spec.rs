//! The pipeline file: input, output and an ordered list of stages. YAML, or JSON (which is YAML).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::io::writer::OutFormat;
use crate::io::{Format, OnError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub input: InputSpec,
    #[serde(default)]
    pub output: Option<OutputSpec>,
    /// Each item is a one-key map: the stage name and its options (`sql` takes the query as a string).
    pub stages: Vec<serde_norway::Value>,
    /// Keep the text of rejected rows in `rejects/` (off by default: rejects stay small).
    #[serde(default)]
    pub keep_rejected_text: bool,
    /// `reject` (default): malformed input rows go to the rejects; `fail`: the run stops at the first.
    #[serde(default)]
    pub on_error: OnError,
}

/// `{dataset: NAME}`, `{datasets: [NAME, …]}` or `{path: FILE|DIR|GLOB, format, text, id, name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    #[serde(default)]
    pub dataset: Option<String>,
    /// Several datasets read as one input; columns are the union of theirs.
    #[serde(default)]
    pub datasets: Vec<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub format: Option<Format>,
    /// Text column of a `path` input (default `text`).
    #[serde(default)]
    pub text: Option<String>,
    /// Id column of a `path` input.
    #[serde(default)]
    pub id: Option<String>,
    /// The `dataset` value of a `path` input's rows (default: the pipeline name).
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub path: String,
    #[serde(default)]
    pub format: OutFormat,
}

impl PipelineSpec {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading pipeline {}", path.display()))?;
        let spec: PipelineSpec = serde_norway::from_str(&text)
            .with_context(|| format!("parsing pipeline {}", path.display()))?;
        let kinds = [
            spec.input.dataset.is_some(),
            !spec.input.datasets.is_empty(),
            spec.input.path.is_some(),
        ];
        if kinds.iter().filter(|&&k| k).count() != 1 {
            bail!(
                "{}: input needs exactly one of `dataset`, `datasets` or `path`",
                path.display()
            );
        }
        if spec.input.path.is_none()
            && (spec.input.format.is_some() || spec.input.text.is_some() || spec.input.id.is_some())
        {
            bail!(
                "{}: a `dataset` input takes its format and columns from datasets.yaml",
                path.display()
            );
        }
        Ok(spec)
    }
}
