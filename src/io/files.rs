//! What to read: a file, a directory or a glob, in one format, with the text and id columns named.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::OnError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON Lines, plain or compressed (`.gz`, `.zst`/`.zstd`, chosen by file extension).
    Jsonl,
    Parquet,
}

impl Format {
    /// The format a file name implies, if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let stem = name
            .trim_end_matches(".gz")
            .trim_end_matches(".zst")
            .trim_end_matches(".zstd");
        if stem.ends_with(".parquet") {
            Some(Format::Parquet)
        } else if stem.ends_with(".jsonl") || stem.ends_with(".json") || stem.ends_with(".ndjson") {
            Some(Format::Jsonl)
        } else {
            None
        }
    }
}

/// A corpus to read: its dataset name (written into every row's `dataset` column), its files, and how
/// to map its columns onto the document contract (`id`, `text`, `dataset`, the rest passed through).
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub dataset: String,
    pub files: Vec<PathBuf>,
    pub format: Format,
    /// The source column that holds the text (`text`, or `content` for CCI3-HQ).
    pub text_column: String,
    /// The source column that holds a document id (`id` unless the user said otherwise); a row without
    /// it, or with it null, and every row when this is `None`, gets `{dataset}/{file}:{line}`.
    pub id_column: Option<String>,
    pub on_error: OnError,
    /// Keep the text of malformed rows in the rejects (when there is one).
    pub keep_rejected_text: bool,
    /// The directory that generated ids name files relative to (`{dataset}/{path}:{line}`), so that
    /// `a/part-0.jsonl` and `b/part-0.jsonl` give different ids; `None`: the file name alone.
    pub root: Option<PathBuf>,
}

impl SourceSpec {
    /// How generated ids name `file`.
    pub fn file_label(&self, file: &Path) -> String {
        let rel = self
            .root
            .as_ref()
            .and_then(|r| file.strip_prefix(r).ok())
            .filter(|r| !r.as_os_str().is_empty());
        match rel {
            Some(r) => r.to_string_lossy().into_owned(),
            None => file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// Total size of the files on disk.
    pub fn bytes_on_disk(&self) -> u64 {
        self.files
            .iter()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Expands a file, a directory (every file below it in a known format, recursively) or a glob into a
/// sorted list of files. An explicit path that does not exist is an error; a glob may match nothing.
pub fn expand(pattern: &str, format: Option<Format>) -> Result<Vec<PathBuf>> {
    let path = Path::new(pattern);
    let mut files = Vec::new();
    if path.is_file() {
        files.push(path.to_path_buf());
    } else if path.is_dir() {
        walk(path, format, &mut files).with_context(|| format!("listing {}", path.display()))?;
    } else if pattern.contains(['*', '?', '[']) {
        for entry in glob::glob(pattern).with_context(|| format!("bad glob {pattern:?}"))? {
            let p = entry?;
            if p.is_file() {
                files.push(p);
            } else if p.is_dir() {
                walk(&p, format, &mut files)?;
            }
        }
    } else {
        bail!("input {} does not exist", path.display());
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(dir: &Path, format: Option<Format>, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, format, out)?;
        } else if let Some(f) = Format::from_path(&p)
            && format.is_none_or(|want| want == f)
        {
            out.push(p);
        }
    }
    Ok(())
}

/// The deepest directory that holds every file.
pub fn common_root(files: &[PathBuf]) -> Option<PathBuf> {
    let mut root = files.first()?.parent()?.to_path_buf();
    for f in files {
        while !f.starts_with(&root) {
            root = root.parent()?.to_path_buf();
        }
    }
    Some(root)
}

/// The one format of a list of files, or an error naming the odd ones out.
pub fn infer_format(files: &[PathBuf]) -> Result<Format> {
    let mut found = None;
    for f in files {
        let Some(fmt) = Format::from_path(f) else {
            bail!(
                "{}: unknown file format; name it with `format: jsonl|parquet`",
                f.display()
            );
        };
        if found.is_some_and(|g| g != fmt) {
            bail!(
                "{}: mixes formats with the other files; name one with `format:`",
                f.display()
            );
        }
        found = Some(fmt);
    }
    found.context("no input files")
}
