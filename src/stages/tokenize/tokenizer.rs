//! Finding and loading a tokenizer: a bundled name, a `tokenizer.json`, or a directory.
//!
//! The bundled tokenizers are built into the binary, so that a name means the same tokenizer from any
//! working directory and from an installed binary: a directory that happens to hold
//! `data/tokenizers/qwen3` never changes what `qwen3` is. The shard sidecar's sha256 (of the
//! `tokenizer.json`, or of GPT-2's two files) says which one wrote a shard.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use openseek_shards::TokenizerInfo;
use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// A tokenizer in the binary: its files as the repository holds them, gzipped (`data/tokenizers`).
struct Bundled {
    name: &'static str,
    files: BundledFiles,
}

enum BundledFiles {
    /// A gzipped `tokenizer.json`.
    Json(&'static [u8]),
    /// GPT-2's original gzipped `vocab.json` and `merges.txt`.
    Gpt2 {
        vocab: &'static [u8],
        merges: &'static [u8],
    },
}

/// The tokenizers that need no path (see `data/tokenizers/PROVENANCE.md`).
const BUNDLED: &[Bundled] = &[
    Bundled {
        name: "qwen3",
        files: BundledFiles::Json(include_bytes!(
            "../../../data/tokenizers/qwen3/tokenizer.json.gz"
        )),
    },
    Bundled {
        name: "gpt2",
        files: BundledFiles::Gpt2 {
            vocab: include_bytes!("../../../data/tokenizers/gpt2/vocab.json.gz"),
            merges: include_bytes!("../../../data/tokenizers/gpt2/merges.txt.gz"),
        },
    },
];

/// Whether `name` is a bundled tokenizer's.
pub fn is_bundled(name: &str) -> bool {
    BUNDLED.iter().any(|b| b.name == name)
}

/// The bundled names, for messages.
pub fn bundled_names() -> Vec<&'static str> {
    BUNDLED.iter().map(|b| b.name).collect()
}

pub struct LoadedTokenizer {
    pub tokenizer: Tokenizer,
    pub info: TokenizerInfo,
}

/// Where a tokenizer's files are.
enum Source {
    Bundled(&'static Bundled),
    /// A `tokenizer.json` or `tokenizer.json.gz`.
    Json(PathBuf),
    /// GPT-2's `vocab.json` and `merges.txt`.
    Gpt2 {
        vocab: PathBuf,
        merges: PathBuf,
    },
}

/// Loads `name`: a bundled name, or a path (relative to `base`) to a `tokenizer.json` (or
/// `tokenizer.json.gz`) or to a directory with one (or with GPT-2's `vocab.json` and `merges.txt`).
pub fn load(name: &str, base: &Path) -> Result<LoadedTokenizer> {
    let files = read_files(name, base)?;
    let tokenizer = match &files {
        Files::Json { origin, json } => Tokenizer::from_bytes(json)
            .map_err(|e| anyhow::anyhow!("{origin}: not a tokenizer.json: {e}"))?,
        Files::Gpt2 {
            origin,
            vocab,
            merges,
        } => gpt2_style(origin, vocab, merges)?,
    };
    Ok(LoadedTokenizer {
        info: info(name, &tokenizer, files.sha256()),
        tokenizer,
    })
}

/// The sha256 that a shard written with `name` records (of the `tokenizer.json`, or of GPT-2's two
/// files), without building the tokenizer: what a run's fingerprint covers, so that a changed
/// tokenizer is a changed run.
pub fn sha256(name: &str, base: &Path) -> Result<String> {
    Ok(read_files(name, base)?.sha256())
}

/// A tokenizer's files, decompressed, and where they came from (for messages).
enum Files {
    Json {
        origin: String,
        json: Vec<u8>,
    },
    Gpt2 {
        origin: String,
        vocab: Vec<u8>,
        merges: Vec<u8>,
    },
}

impl Files {
    fn sha256(&self) -> String {
        let mut hash = Sha256::new();
        match self {
            Files::Json { json, .. } => hash.update(json),
            Files::Gpt2 { vocab, merges, .. } => {
                hash.update(vocab);
                hash.update(merges);
            }
        }
        hex::encode(hash.finalize())
    }
}

fn read_files(name: &str, base: &Path) -> Result<Files> {
    Ok(match resolve(name, base)? {
        Source::Bundled(b) => {
            let origin = format!("bundled tokenizer '{}'", b.name);
            match b.files {
                BundledFiles::Json(gz) => Files::Json {
                    json: gunzip(gz, &origin)?,
                    origin,
                },
                BundledFiles::Gpt2 { vocab, merges } => Files::Gpt2 {
                    vocab: gunzip(vocab, &origin)?,
                    merges: gunzip(merges, &origin)?,
                    origin,
                },
            }
        }
        Source::Json(path) => Files::Json {
            json: read_maybe_gz(&path)?,
            origin: path.display().to_string(),
        },
        Source::Gpt2 { vocab, merges } => Files::Gpt2 {
            origin: vocab.display().to_string(),
            vocab: read_maybe_gz(&vocab)?,
            merges: read_maybe_gz(&merges)?,
        },
    })
}

fn resolve(name: &str, base: &Path) -> Result<Source> {
    if let Some(b) = BUNDLED.iter().find(|b| b.name == name) {
        return Ok(Source::Bundled(b));
    }
    let path = base.join(name);
    if path.is_file() {
        return Ok(Source::Json(path));
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
    bail!(
        "tokenizer '{name}': {} is neither a tokenizer.json nor a directory with one (or with \
         vocab.json and merges.txt); bundled names are {}",
        path.display(),
        bundled_names().join(", ")
    )
}

fn gunzip(gz: &[u8], origin: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .with_context(|| format!("decompressing {origin}"))?;
    Ok(out)
}

/// A file, gunzipped when its name ends in `.gz`: the hash is of what it holds.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        gunzip(&raw, &path.display().to_string())
    } else {
        Ok(raw)
    }
}

/// GPT-2's original files: byte-level BPE, with `<|endoftext|>` (in the vocabulary) as its special
/// token, as `GPT2TokenizerFast` builds it.
fn gpt2_style(origin: &str, vocab: &[u8], merges: &[u8]) -> Result<Tokenizer> {
    let vocab: std::collections::HashMap<String, u32> = serde_json::from_slice(vocab)
        .with_context(|| format!("{origin}: vocab.json is not an object of token ids"))?;
    let vocab: Vocab = vocab.into_iter().collect();
    let merges = std::str::from_utf8(merges)
        .with_context(|| format!("{origin}: merges.txt is not UTF-8"))?;
    let mut pairs: Merges = Vec::new();
    // As `tokenizers` reads merges.txt: every line but `#version` is exactly two tokens.
    for (n, line) in merges.lines().enumerate() {
        if line.starts_with("#version") {
            continue;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        let [a, b] = parts[..] else {
            bail!(
                "{origin}: merges.txt line {}: not two tokens: {line:?}",
                n + 1
            );
        };
        pairs.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .build()
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_decoder(Some(ByteLevel::default()))
        .with_post_processor(Some(ByteLevel::default().trim_offsets(true)));
    tokenizer
        .add_special_tokens([AddedToken::from("<|endoftext|>", true)])
        .map_err(|e| anyhow::anyhow!("{origin}: adding <|endoftext|>: {e}"))?;
    Ok(tokenizer)
}

fn info(name: &str, tokenizer: &Tokenizer, sha256: String) -> TokenizerInfo {
    // Ids may have gaps (added tokens placed high), so the bound on ids is the largest one + 1, not the
    // number of tokens: it decides the dtype and what `shards verify` accepts.
    let id_bound = tokenizer
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |&m| m as usize + 1)
        .max(tokenizer.get_vocab_size(true));
    TokenizerInfo {
        name: name.to_string(),
        sha256,
        vocab_size: id_bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run from a directory that holds its own `data/tokenizers/qwen3` (GPT-2's files, say), the name
    /// `qwen3` still means the bundled Qwen3 tokenizer: nothing is looked up on disk.
    #[test]
    fn bundled_names_do_not_depend_on_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let decoy = dir.path().join("data/tokenizers/qwen3");
        std::fs::create_dir_all(&decoy).unwrap();
        let gpt2 = load("gpt2", Path::new(".")).unwrap();
        let Files::Gpt2 { vocab, merges, .. } = read_files("gpt2", Path::new(".")).unwrap() else {
            panic!("gpt2 is GPT-2's two files")
        };
        std::fs::write(decoy.join("vocab.json"), vocab).unwrap();
        std::fs::write(decoy.join("merges.txt"), merges).unwrap();
        // With the decoy's directory as the pipeline's base (the CLI test runs from it as the working
        // directory).
        let q = load("qwen3", dir.path()).unwrap();
        assert_ne!(q.info.sha256, gpt2.info.sha256);
        assert_eq!(q.info.vocab_size, 151_669);
        assert_eq!(q.tokenizer.token_to_id("<|im_start|>"), Some(151_644));
        assert_eq!(sha256("qwen3", dir.path()).unwrap(), q.info.sha256);
        // The path form reads the decoy: a path is a path.
        let by_path = load("data/tokenizers/qwen3", dir.path()).unwrap();
        assert_eq!(by_path.info.sha256, gpt2.info.sha256);
    }

    /// The hash a shard records is that of the `tokenizer.json` itself, whichever copy it came from:
    /// the bundled one equals the repository's gzipped file decompressed.
    #[test]
    fn the_bundled_hash_is_the_json_files() {
        let gz = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tokenizers/qwen3/tokenizer.json.gz"),
        )
        .unwrap();
        let json = gunzip(&gz, "t").unwrap();
        let expected = hex::encode(Sha256::digest(&json));
        assert_eq!(sha256("qwen3", Path::new(".")).unwrap(), expected);
    }

    /// GPT-2's bundled files give GPT-2's ids ("Hello world!" is [15496, 995, 0]) and its 50,257 ids.
    #[test]
    fn gpt2_is_bundled() {
        let gpt2 = load("gpt2", Path::new(".")).unwrap();
        let ids = gpt2.tokenizer.encode("Hello world!", false).unwrap();
        assert_eq!(ids.get_ids(), &[15496, 995, 0]);
        assert_eq!(gpt2.info.vocab_size, 50_257);
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_the_bundled_ones() {
        let e = format!(
            "{:#}",
            load("no-such-tokenizer", Path::new(".")).err().unwrap()
        );
        assert!(
            e.contains("no-such-tokenizer") && e.contains("qwen3, gpt2"),
            "{e}"
        );
    }
}
