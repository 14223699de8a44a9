//! `datasets.yaml`: the corpora a user can name in pipelines and query in SQL.
//!
//! Each entry says where the files are (a glob under a data root), their format, which columns hold the
//! text and the id, and what the corpus is (language, license, home page). The data root is
//! `OPENSEEK_DATA_DIR` when set, else the file's `data_root`, relative to the catalog; an entry with its
//! own `root` (the bundled samples use `.`) is resolved against the catalog's directory instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::io::files::expand;
use crate::io::{Format, OnError, SourceSpec};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    pub description: String,
    #[serde(default)]
    pub homepage: Option<String>,
    #[serde(default)]
    pub license: Option<String>,
    pub language: String,
    pub format: Format,
    /// Glob of the files, relative to the data root (or to `root`).
    pub path: String,
    /// The source column holding the text.
    #[serde(default = "default_text")]
    pub text: String,
    /// The source column holding the document id: `id` unless told otherwise; rows without one get
    /// `{dataset}/{file}:{line}`. `id: null` generates ids for every row.
    #[serde(default = "crate::io::default_id_column")]
    pub id: Option<String>,
    /// The source's columns, for reference (the reader takes them from the files).
    #[serde(default)]
    pub columns: Vec<String>,
    /// A directory to resolve `path` against instead of the data root (relative to the catalog file).
    #[serde(default)]
    pub root: Option<String>,
    /// Mixture weight for tokenized shards.
    #[serde(default)]
    pub weight: Option<f64>,
    #[serde(default)]
    pub notes: Option<String>,
}

fn default_text() -> String {
    "text".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    data_root: Option<String>,
    datasets: BTreeMap<String, DatasetEntry>,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub path: PathBuf,
    dir: PathBuf,
    pub data_root: PathBuf,
    pub datasets: BTreeMap<String, DatasetEntry>,
}

/// Where a dataset stands on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct Presence {
    pub name: String,
    pub table: String,
    pub language: String,
    pub format: Format,
    pub glob: String,
    pub files: usize,
    pub bytes: u64,
}

impl Catalog {
    /// The catalog named by `OPENSEEK_CATALOG`, else `datasets.yaml` in the working directory.
    pub fn default_path() -> PathBuf {
        std::env::var_os("OPENSEEK_CATALOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("datasets.yaml"))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading catalog {}", path.display()))?;
        let file: CatalogFile = serde_norway::from_str(&text)
            .with_context(|| format!("parsing catalog {}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let data_root = match std::env::var_os("OPENSEEK_DATA_DIR") {
            Some(d) => PathBuf::from(d),
            None => dir.join(file.data_root.as_deref().unwrap_or("data/external")),
        };
        for (name, entry) in &file.datasets {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                bail!(
                    "{}: dataset name {name:?} must be letters, digits, '-', '_' or '.'",
                    path.display()
                );
            }
            if entry.text.is_empty() {
                bail!("{}: dataset {name}: empty text column", path.display());
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            dir,
            data_root,
            datasets: file.datasets,
        })
    }

    pub fn get(&self, name: &str) -> Result<&DatasetEntry> {
        self.datasets.get(name).with_context(|| {
            format!(
                "no dataset '{name}' in {}; known: {}",
                self.path.display(),
                self.datasets.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The SQL table name of a dataset: `-` and `.` become `_`.
    pub fn table_name(name: &str) -> String {
        name.replace(['-', '.'], "_")
    }

    /// The full glob of a dataset's files on this machine.
    pub fn glob(&self, name: &str) -> Result<String> {
        let e = self.get(name)?;
        let root = match &e.root {
            Some(r) => self.dir.join(r),
            None => self.data_root.clone(),
        };
        Ok(root.join(&e.path).to_string_lossy().into_owned())
    }

    /// The files of a dataset present on this machine (possibly none).
    pub fn files(&self, name: &str) -> Result<Vec<PathBuf>> {
        let e = self.get(name)?;
        let glob = self.glob(name)?;
        if !glob.contains(['*', '?', '[']) && !Path::new(&glob).exists() {
            return Ok(Vec::new());
        }
        expand(&glob, Some(e.format))
    }

    /// A reader spec for a dataset; an error when none of its files are here.
    pub fn source(
        &self,
        name: &str,
        on_error: OnError,
        keep_rejected_text: bool,
    ) -> Result<SourceSpec> {
        let e = self.get(name)?;
        let files = self.files(name)?;
        if files.is_empty() {
            bail!(
                "dataset '{name}' has no files at {} (set OPENSEEK_DATA_DIR, or download it: {})",
                self.glob(name)?,
                e.homepage.as_deref().unwrap_or("see datasets.yaml")
            );
        }
        Ok(SourceSpec {
            dataset: name.to_string(),
            root: crate::io::files::common_root(&files),
            files,
            format: e.format,
            text_column: e.text.clone(),
            id_column: e.id.clone(),
            on_error,
            keep_rejected_text,
        })
    }

    pub fn presence(&self) -> Result<Vec<Presence>> {
        self.datasets
            .iter()
            .map(|(name, e)| {
                let files = self.files(name)?;
                let bytes = files
                    .iter()
                    .filter_map(|f| f.metadata().ok())
                    .map(|m| m.len())
                    .sum();
                Ok(Presence {
                    name: name.clone(),
                    table: Self::table_name(name),
                    language: e.language.clone(),
                    format: e.format,
                    glob: self.glob(name)?,
                    files: files.len(),
                    bytes,
                })
            })
            .collect()
    }
}
