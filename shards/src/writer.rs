//! Writing prefixes atomically: `.bin`, `.idx` and `.json` go to temporary names and are renamed into
//! place only when all three are complete. A prefix being replaced loses its sidecar first and gets the
//! new one last, so a prefix with a sidecar is always whole; a writer dropped before `finish` removes its
//! temporaries.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::dtype::DType;
use crate::error::{Result, ShardError};
use crate::sidecar::{FORMAT, Sidecar, TokenizerInfo};
use crate::{bin_path, idx_path, index, json_path};

/// What a sidecar says of where its tokens came from.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    pub tokenizer: Option<TokenizerInfo>,
    pub template: Option<String>,
    pub group: Option<String>,
}

/// One prefix, written as Megatron's `IndexedDatasetBuilder` writes it: sequences appended to `.bin`,
/// their lengths and the document boundaries kept in memory (12 bytes per sequence) for the `.idx`.
pub struct ShardWriter {
    prefix: PathBuf,
    dtype: DType,
    max_token: u64,
    /// Taken by `finish`.
    bin: Option<BufWriter<File>>,
    lengths: Vec<i32>,
    doc_indices: Vec<i64>,
    tokens: u64,
    buf: Vec<u8>,
}

fn tmp(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

impl ShardWriter {
    /// Starts `PREFIX.bin.tmp`; nothing is at `PREFIX.*` until [`finish`](Self::finish).
    pub fn create(prefix: impl AsRef<Path>, dtype: DType) -> Result<Self> {
        let prefix = prefix.as_ref().to_path_buf();
        let max_token = dtype.max_token().ok_or_else(|| ShardError::Invalid {
            prefix: prefix.clone(),
            why: format!("{dtype} cannot hold token ids"),
        })?;
        if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(ShardError::io(dir))?;
        }
        let path = tmp(&bin_path(&prefix));
        let file = File::create(&path).map_err(ShardError::io(&path))?;
        Ok(Self {
            prefix,
            dtype,
            max_token,
            bin: Some(BufWriter::with_capacity(1 << 20, file)),
            lengths: Vec::new(),
            doc_indices: vec![0],
            tokens: 0,
            buf: Vec::new(),
        })
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// Appends one sequence (Megatron's `add_item`).
    pub fn add_item(&mut self, tokens: &[u32]) -> Result<()> {
        let len = i32::try_from(tokens.len()).map_err(|_| ShardError::Invalid {
            prefix: self.prefix.clone(),
            why: format!("a sequence of {} tokens (at most 2^31−1)", tokens.len()),
        })?;
        self.buf.clear();
        for &t in tokens {
            if u64::from(t) > self.max_token {
                return Err(ShardError::Invalid {
                    prefix: self.prefix.clone(),
                    why: format!("token id {t} does not fit {}", self.dtype),
                });
            }
            self.dtype.put(t, &mut self.buf);
        }
        let path = bin_path(&self.prefix);
        self.bin
            .as_mut()
            .expect("open until finish")
            .write_all(&self.buf)
            .map_err(ShardError::io(tmp(&path)))?;
        self.lengths.push(len);
        self.tokens += tokens.len() as u64;
        Ok(())
    }

    /// Closes the current document (Megatron's `end_document`).
    pub fn end_document(&mut self) {
        self.doc_indices.push(self.lengths.len() as i64);
    }

    /// One document of one sequence.
    pub fn add_document(&mut self, tokens: &[u32]) -> Result<()> {
        self.add_item(tokens)?;
        self.end_document();
        Ok(())
    }

    /// Bytes of `.bin` so far.
    pub fn bin_bytes(&self) -> u64 {
        self.tokens * self.dtype.size() as u64
    }

    pub fn documents(&self) -> u64 {
        (self.doc_indices.len() - 1) as u64
    }

    /// Writes the `.idx` and the sidecar, syncs the three files and renames them into place.
    pub fn finish(mut self, provenance: &Provenance) -> Result<Sidecar> {
        let (bin, idx, json) = (
            bin_path(&self.prefix),
            idx_path(&self.prefix),
            json_path(&self.prefix),
        );
        let file = self
            .bin
            .take()
            .expect("open until finish")
            .into_inner()
            .map_err(|e| ShardError::io(tmp(&bin))(e.into_error()))?;
        file.sync_all().map_err(ShardError::io(tmp(&bin)))?;
        let sidecar = Sidecar {
            format: FORMAT.to_string(),
            dtype: self.dtype,
            tokenizer: provenance.tokenizer.clone(),
            template: provenance.template.clone(),
            documents: (self.doc_indices.len() - 1) as u64,
            sequences: self.lengths.len() as u64,
            tokens: self.tokens,
            group: provenance.group.clone(),
            created_by: format!("openseek-shards {}", env!("CARGO_PKG_VERSION")),
        };
        write_synced(
            &tmp(&idx),
            &index::encode(self.dtype, &self.lengths, &self.doc_indices),
        )?;
        let mut text = serde_json::to_vec_pretty(&sidecar).expect("a sidecar serialises");
        text.push(b'\n');
        write_synced(&tmp(&json), &text)?;
        if json.exists() {
            std::fs::remove_file(&json).map_err(ShardError::io(&json))?;
        }
        for path in [&bin, &idx, &json] {
            std::fs::rename(tmp(path), path).map_err(ShardError::io(path))?;
        }
        // The renames themselves reach the disk with the directory.
        if let Some(dir) = self.prefix.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(sidecar)
    }
}

impl Drop for ShardWriter {
    /// A writer that did not finish (an error, a stopped run) leaves no temporaries behind; after
    /// `finish` they were renamed and nothing is removed.
    fn drop(&mut self) {
        for path in [
            bin_path(&self.prefix),
            idx_path(&self.prefix),
            json_path(&self.prefix),
        ] {
            let _ = std::fs::remove_file(tmp(&path));
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(ShardError::io(path))?;
    f.write_all(bytes).map_err(ShardError::io(path))?;
    f.sync_all().map_err(ShardError::io(path))
}

/// Prefixes `DIR/NAME-00000`, `DIR/NAME-00001`, …, a new one started when the current `.bin` reaches
/// `max_bytes` (documents are never split across prefixes).
pub struct ShardSetWriter {
    dir: PathBuf,
    name: String,
    dtype: DType,
    max_bytes: Option<u64>,
    provenance: Provenance,
    current: Option<ShardWriter>,
    written: Vec<(PathBuf, Sidecar)>,
}

impl ShardSetWriter {
    pub fn new(
        dir: impl AsRef<Path>,
        name: &str,
        dtype: DType,
        max_bytes: Option<u64>,
        provenance: Provenance,
    ) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
            name: name.to_string(),
            dtype,
            max_bytes,
            provenance,
            current: None,
            written: Vec::new(),
        }
    }

    pub fn add_document(&mut self, tokens: &[u32]) -> Result<()> {
        let full = match (&self.current, self.max_bytes) {
            (Some(w), Some(max)) => w.documents() > 0 && w.bin_bytes() >= max,
            _ => false,
        };
        if full {
            self.close_current()?;
        }
        if self.current.is_none() {
            let prefix = self
                .dir
                .join(format!("{}-{:05}", self.name, self.written.len()));
            self.current = Some(ShardWriter::create(prefix, self.dtype)?);
        }
        self.current.as_mut().expect("opened").add_document(tokens)
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let prefix = w.prefix().to_path_buf();
            let sidecar = w.finish(&self.provenance)?;
            self.written.push((prefix, sidecar));
        }
        Ok(())
    }

    /// Completes the last prefix; returns every prefix written, with its sidecar.
    pub fn finish(mut self) -> Result<Vec<(PathBuf, Sidecar)>> {
        self.close_current()?;
        Ok(self.written)
    }
}
