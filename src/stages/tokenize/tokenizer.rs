//! Finding and loading a tokenizer: a `tokenizer.json`, a directory, or a bundled name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use openseek_shards::TokenizerInfo;
use sha2::{Digest, Sha256};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// The names that need no path: the tokenizers of `corpus/tokenizers/`.
pub const BUNDLED: &[&str] = &["qwen3", "deepseek-v3", "gpt2"];

pub struct LoadedTokenizer {
    pub tokenizer: Tokenizer,
    pub info: TokenizerInfo,
}

/// Where bundled names are looked up, in order: `$OPENSEEK_TOKENIZERS`; `data/tokenizers` of the
/// working directory and of the source tree (the repository bundles `qwen3`, so the quickstart runs
/// on a fresh clone); `$OPENSEEK_CORPUS/tokenizers` (default `../shared/corpus/tokenizers`).
pub fn bundled_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(dir) = std::env::var("OPENSEEK_TOKENIZERS") {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(PathBuf::from("data/tokenizers"));
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tokenizers"));
    let corpus = std::env::var("OPENSEEK_CORPUS").unwrap_or_else(|_| "../shared/corpus".into());
    dirs.push(Path::new(&corpus).join("tokenizers"));
    dirs
}

/// Where a tokenizer's files are.
enum Source {
    /// A `tokenizer.json` or `tokenizer.json.gz`.
    Json(PathBuf),
    /// GPT-2's `vocab.json` and `merges.txt`.
    Gpt2 { vocab: PathBuf, merges: PathBuf },
}

/// Loads `name`: a bundled name, or a path (relative to `base`) to a `tokenizer.json` (or
/// `tokenizer.json.gz`) or to a directory with one (or with GPT-2's `vocab.json` and `merges.txt`).
pub fn load(name: &str, base: &Path) -> Result<LoadedTokenizer> {
    match resolve(name, base)? {
        Source::Json(path) => from_json_file(name, &path),
        Source::Gpt2 { vocab, merges } => gpt2_style(name, &vocab, &merges),
    }
}

/// The files `load` reads for `name`: what a run's fingerprint hashes, so that a changed tokenizer
/// is a changed run.
pub fn files(name: &str, base: &Path) -> Result<Vec<PathBuf>> {
    Ok(match resolve(name, base)? {
        Source::Json(path) => vec![path],
        Source::Gpt2 { vocab, merges } => vec![vocab, merges],
    })
}

fn resolve(name: &str, base: &Path) -> Result<Source> {
    let candidates: Vec<PathBuf> = if BUNDLED.contains(&name) {
        bundled_dirs().into_iter().map(|d| d.join(name)).collect()
    } else {
        vec![base.join(name)]
    };
    for path in &candidates {
        if path.is_file() {
            return Ok(Source::Json(path.clone()));
        }
        for file in ["tokenizer.json", "tokenizer.json.gz"] {
            if path.join(file).is_file() {
                return Ok(Source::Json(path.join(file)));
            }
        }
        let (vocab, merges) = (path.join("vocab.json"), path.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Ok(Source::Gpt2 { vocab, merges });
        }
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    if BUNDLED.contains(&name) {
        bail!(
            "tokenizer '{name}': not found in {} (set OPENSEEK_TOKENIZERS to a directory with {name}/)",
            looked.join(", ")
        );
    }
    bail!(
        "tokenizer '{name}': {} is neither a tokenizer.json nor a directory with one (or with \
         vocab.json and merges.txt); bundled names are {}",
        looked.join(", "),
        BUNDLED.join(", ")
    )
}

/// A `tokenizer.json`, gzipped or not; the hash is of the JSON itself.
fn from_json_file(name: &str, path: &Path) -> Result<LoadedTokenizer> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
            .with_context(|| format!("decompressing {}", path.display()))?;
        out
    } else {
        raw
    };
    let tokenizer = Tokenizer::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a tokenizer.json: {e}", path.display()))?;
    Ok(loaded(name, tokenizer, &[&bytes]))
}

/// GPT-2's original files: byte-level BPE, with `<|endoftext|>` (in the vocabulary) as its special
/// token, as `GPT2TokenizerFast` builds it.
fn gpt2_style(name: &str, vocab: &Path, merges: &Path) -> Result<LoadedTokenizer> {
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| anyhow::anyhow!("{}: {e}", vocab.display()))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_decoder(Some(ByteLevel::default()))
        .with_post_processor(Some(ByteLevel::default().trim_offsets(true)));
    tokenizer
        .add_special_tokens([AddedToken::from("<|endoftext|>", true)])
        .map_err(|e| anyhow::anyhow!("{}: adding <|endoftext|>: {e}", vocab.display()))?;
    let files = [
        std::fs::read(vocab).with_context(|| format!("reading {}", vocab.display()))?,
        std::fs::read(merges).with_context(|| format!("reading {}", merges.display()))?,
    ];
    Ok(loaded(name, tokenizer, &[&files[0], &files[1]]))
}

fn loaded(name: &str, tokenizer: Tokenizer, files: &[&[u8]]) -> LoadedTokenizer {
    let mut hash = Sha256::new();
    for f in files {
        hash.update(f);
    }
    // Ids may have gaps (added tokens placed high), so the bound on ids is the largest one + 1, not the
    // number of tokens: it decides the dtype and what `shards verify` accepts.
    let id_bound = tokenizer
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |&m| m as usize + 1)
        .max(tokenizer.get_vocab_size(true));
    let info = TokenizerInfo {
        name: name.to_string(),
        sha256: hex::encode(hash.finalize()),
        vocab_size: id_bound,
    };
    LoadedTokenizer { tokenizer, info }
}
