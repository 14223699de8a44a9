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
    /// Id column of a `path` input: `id` unless told otherwise (datatrove's readers' default); rows
    /// without one get `{dataset}/{file}:{line}`. `id: null` generates ids for every row.
    #[serde(default = "crate::io::default_id_column")]
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
            && (spec.input.format.is_some()
                || spec.input.text.is_some()
                || spec.input.id != crate::io::default_id_column())
        {
            bail!(
                "{}: a `dataset` input takes its format and columns from datasets.yaml",
                path.display()
            );
        }
        Ok(spec)
    }
}

/// The pipeline that `openseek tokenize` runs, written as `OUTPUT/tokenize.yaml` (so a run can be
/// repeated or edited): the input, and one `tokenize` stage. Paths are made absolute, since a
/// pipeline's relative paths are its directory's.
#[allow(clippy::too_many_arguments)]
pub fn tokenize_pipeline(
    input: Option<&str>,
    datasets: &[String],
    tokenizer: &str,
    template: &str,
    output: &Path,
    by: &str,
    dtype: Option<&str>,
    max_shard_mb: Option<u64>,
) -> Result<std::path::PathBuf> {
    let absolute = |p: &str| -> Result<String> {
        Ok(std::path::absolute(p)
            .with_context(|| format!("resolving {p}"))?
            .to_string_lossy()
            .into_owned())
    };
    let input = match (input, datasets) {
        (Some(path), []) => {
            let name = Path::new(path.trim_end_matches('/'))
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "input".into());
            serde_json::json!({"path": absolute(path)?, "name": name})
        }
        (None, [one]) => serde_json::json!({"dataset": one}),
        (None, many) if !many.is_empty() => serde_json::json!({"datasets": many}),
        _ => bail!("tokenize: give --input PATH or --dataset NAME (repeatable)"),
    };
    let tokenizer = if crate::stages::tokenize::tokenizer::is_bundled(tokenizer) {
        tokenizer.to_string()
    } else {
        absolute(tokenizer)?
    };
    let mut stage = serde_json::json!({
        "tokenizer": tokenizer,
        "template": template,
        "output": absolute(&output.to_string_lossy())?,
        "by": by,
    });
    if let Some(d) = dtype {
        stage["dtype"] = d.into();
    }
    if let Some(mb) = max_shard_mb {
        stage["max_shard_mb"] = mb.into();
    }
    let spec = serde_json::json!({
        "name": "tokenize",
        "input": input,
        "stages": [{"tokenize": stage}],
    });
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    let path = output.join("tokenize.yaml");
    std::fs::write(&path, serde_norway::to_string(&spec)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
