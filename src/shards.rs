//! `openseek shards`: inspect, verify and blend the token shards that `tokenize` writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use openseek_shards::{IndexedDataset, Sidecar, json_path, prefixes_in};

/// The prefixes named by `paths`: a directory gives every complete prefix in it; a file of a prefix
/// (`P.bin`, `P.idx`, `P.json`) or the prefix itself gives that prefix.
pub fn expand_prefixes(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let found = prefixes_in(p)?;
            if found.is_empty() {
                bail!(
                    "{}: no shard prefixes (PREFIX.bin/.idx/.json) in it",
                    p.display()
                );
            }
            out.extend(found);
        } else {
            let s = p.to_string_lossy();
            let prefix = [".bin", ".idx", ".json"]
                .iter()
                .find_map(|ext| s.strip_suffix(ext))
                .unwrap_or(&s);
            out.push(PathBuf::from(prefix));
        }
    }
    // A prefix named twice (a directory and one of its files) would count twice in a blend.
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(std::path::absolute(p).unwrap_or_else(|_| p.clone())));
    Ok(out)
}

fn sidecar_of(prefix: &Path) -> Result<Option<Sidecar>> {
    let path = json_path(prefix);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(Sidecar::read(&path)?))
}

/// Counts, length statistics and the first `samples` documents decoded back to text.
pub fn inspect(prefix: &Path, tokenizer: Option<&str>, samples: usize) -> Result<String> {
    let ds = IndexedDataset::open(prefix)?;
    let sidecar = sidecar_of(prefix)?;
    let mut out = format!(
        "{}\n  {} documents, {} sequences, {} tokens ({}, {} bytes of .bin)\n",
        prefix.display(),
        ds.documents(),
        ds.len(),
        ds.total_tokens(),
        ds.dtype(),
        ds.total_tokens() * ds.dtype().size() as u64
    );
    if !ds.is_empty() {
        let mut lens: Vec<usize> = (0..ds.len()).map(|i| ds.sequence_len(i)).collect();
        lens.sort_unstable();
        let pct = |p: f64| lens[((lens.len() - 1) as f64 * p).round() as usize];
        out.push_str(&format!(
            "  tokens per sequence: min {}, median {}, p99 {}, max {}, mean {:.1}\n",
            lens[0],
            pct(0.5),
            pct(0.99),
            lens[lens.len() - 1],
            ds.total_tokens() as f64 / ds.len() as f64
        ));
    }
    if let Some(s) = &sidecar
        && let Some(t) = &s.tokenizer
    {
        out.push_str(&format!(
            "  tokenizer {} ({} ids, sha256 {}…), template {:?}, group {:?}\n",
            t.name,
            t.vocab_size,
            t.sha256.chars().take(12).collect::<String>(),
            s.template.as_deref().unwrap_or(""),
            s.group.as_deref().unwrap_or("")
        ));
    }
    let name = tokenizer
        .map(str::to_string)
        .or_else(|| sidecar.as_ref()?.tokenizer.as_ref().map(|t| t.name.clone()));
    if samples > 0 && !ds.is_empty() {
        let Some(name) = name else {
            out.push_str("  (no tokenizer named: pass --tokenizer to decode samples)\n");
            return Ok(out);
        };
        let tok = crate::stages::tokenize::tokenizer::load(&name, Path::new("."))?;
        for i in 0..samples.min(ds.len()) {
            let ids: Vec<u32> = ds
                .sequence(i)
                .into_iter()
                .map(|t| u32::try_from(t).unwrap_or(u32::MAX))
                .collect();
            let text = tok
                .tokenizer
                .decode(&ids, false)
                .map_err(|e| anyhow::anyhow!("decoding sequence {i}: {e}"))?;
            let preview: String = text.chars().take(300).collect();
            out.push_str(&format!(
                "  [{i}] {} tokens: {:?}{}\n",
                ids.len(),
                preview,
                if text.chars().count() > 300 {
                    "…"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(out)
}

/// Checks each prefix: the index against the files (done by opening it), the sidecar's counts against
/// the index, and every token against the sidecar's vocabulary. Returns the report and whether all
/// passed.
pub fn verify(prefixes: &[PathBuf]) -> Result<(String, bool)> {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["prefix", "documents", "tokens", "dtype", "result"]);
    let mut all_ok = true;
    for prefix in prefixes {
        let (docs, tokens, dtype, result) = match verify_one(prefix) {
            Ok((ds, problems)) => {
                let result = if problems.is_empty() {
                    "ok".to_string()
                } else {
                    all_ok = false;
                    problems.join("; ")
                };
                (
                    ds.documents().to_string(),
                    ds.total_tokens().to_string(),
                    ds.dtype().to_string(),
                    result,
                )
            }
            Err(e) => {
                all_ok = false;
                ("-".into(), "-".into(), "-".into(), format!("{e:#}"))
            }
        };
        t.add_row(vec![
            prefix.display().to_string(),
            docs,
            tokens,
            dtype,
            result,
        ]);
    }
    Ok((t.to_string(), all_ok))
}

fn verify_one(prefix: &Path) -> Result<(IndexedDataset, Vec<String>)> {
    let ds = IndexedDataset::open(prefix)?;
    let mut problems = Vec::new();
    match sidecar_of(prefix)? {
        None => problems.push("no sidecar (PREFIX.json)".to_string()),
        Some(s) => {
            if s.documents != ds.documents() as u64
                || s.sequences != ds.len() as u64
                || s.tokens != ds.total_tokens()
                || s.dtype != ds.dtype()
            {
                problems.push(format!(
                    "the sidecar says {} documents, {} sequences, {} tokens, {}; the index has {}, {}, {}, {}",
                    s.documents,
                    s.sequences,
                    s.tokens,
                    s.dtype,
                    ds.documents(),
                    ds.len(),
                    ds.total_tokens(),
                    ds.dtype()
                ));
            }
            if let Some(t) = &s.tokenizer {
                let vocab = t.vocab_size as i64;
                let mut tokens = Vec::new();
                for i in 0..ds.len() {
                    tokens.clear();
                    ds.read(i, 0, ds.sequence_len(i), &mut tokens);
                    if let Some(bad) = tokens.iter().find(|&&x| x < 0 || x >= vocab) {
                        problems.push(format!(
                            "sequence {i} holds token {bad}, outside the vocabulary of {vocab}"
                        ));
                        break;
                    }
                }
            }
        }
    }
    Ok((ds, problems))
}

/// One prefix of a blend.
#[derive(Debug, Clone, PartialEq)]
pub struct BlendEntry {
    pub group: String,
    pub prefix: PathBuf,
    pub tokens: u64,
    /// Normalised: the weights of a blend sum to 1.
    pub weight: f64,
}

/// The prefixes with their weights: a group's weight (`weights`, else its tokens: the natural mix)
/// spread over its prefixes in proportion to their tokens, then normalised.
pub fn blend(prefixes: &[PathBuf], weights: &BTreeMap<String, f64>) -> Result<Vec<BlendEntry>> {
    let mut by_group: BTreeMap<String, Vec<(PathBuf, u64)>> = BTreeMap::new();
    for p in prefixes {
        let s = sidecar_of(p)?
            .with_context(|| format!("{}: no sidecar, so no group and token count", p.display()))?;
        let group = s.group.clone().unwrap_or_else(|| p.display().to_string());
        by_group
            .entry(group)
            .or_default()
            .push((p.clone(), s.tokens));
    }
    if !weights.is_empty() {
        for g in by_group.keys() {
            if !weights.contains_key(g) {
                bail!(
                    "no weight for group '{g}' (weights were given for {})",
                    weights.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        for (g, w) in weights {
            if !by_group.contains_key(g) {
                bail!("a weight was given for '{g}', which no prefix holds");
            }
            if !(w.is_finite() && *w >= 0.0) {
                bail!("the weight of '{g}' is {w}; weights are finite and not negative");
            }
        }
    }
    let mut entries = Vec::new();
    for (group, ps) in &by_group {
        let group_tokens: u64 = ps.iter().map(|p| p.1).sum();
        let w = weights.get(group).copied().unwrap_or(group_tokens as f64);
        if group_tokens == 0 && w > 0.0 {
            bail!("group '{group}' has weight {w} but no tokens");
        }
        for (prefix, tokens) in ps {
            let share = if group_tokens == 0 {
                0.0
            } else {
                *tokens as f64 / group_tokens as f64
            };
            entries.push(BlendEntry {
                group: group.clone(),
                prefix: prefix.clone(),
                tokens: *tokens,
                weight: w * share,
            });
        }
    }
    let total: f64 = entries.iter().map(|e| e.weight).sum();
    if total <= 0.0 {
        bail!("the weights sum to 0: nothing to blend");
    }
    for e in &mut entries {
        e.weight /= total;
    }
    Ok(entries)
}

/// The blend as a table, with what each weight implies for a run of `train_tokens`.
pub fn blend_table(entries: &[BlendEntry], train_tokens: Option<u64>) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec!["group", "prefix", "tokens", "weight"];
    if train_tokens.is_some() {
        header.extend(["tokens drawn", "epochs"]);
    }
    t.set_header(header);
    for e in entries {
        let mut row = vec![
            Cell::new(&e.group),
            Cell::new(e.prefix.display()),
            Cell::new(e.tokens).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.6}", e.weight)).set_alignment(CellAlignment::Right),
        ];
        if let Some(n) = train_tokens {
            let drawn = e.weight * n as f64;
            row.push(Cell::new(format!("{drawn:.0}")).set_alignment(CellAlignment::Right));
            row.push(
                Cell::new(if e.tokens == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", drawn / e.tokens as f64)
                })
                .set_alignment(CellAlignment::Right),
            );
        }
        t.add_row(row);
    }
    t.to_string()
}

/// FlagScale's `data.data_path` (Megatron's `--data-path`): `[weight, prefix, weight, prefix, …]`, as
/// YAML ready to paste into a FlagScale training config.
pub fn blend_yaml(entries: &[BlendEntry]) -> String {
    let mut out = String::from(
        "# Written by `openseek shards blend`: FlagScale's data.data_path (Megatron's --data-path),\n\
         # [weight, prefix, weight, prefix, ...]; weights are normalised to sum to 1.\n\
         data:\n  data_path:\n",
    );
    for e in entries {
        let prefix = std::path::absolute(&e.prefix).unwrap_or_else(|_| e.prefix.clone());
        out.push_str(&format!(
            "    - {:.8}\n    - {}\n",
            e.weight,
            serde_json::to_string(&prefix.to_string_lossy()).expect("a string serialises")
        ));
    }
    out
}

/// A word for a POSIX shell: as it is when it needs no quoting, else in single quotes.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The same list as Megatron's command-line arguments.
pub fn megatron_args(entries: &[BlendEntry]) -> String {
    let mut out = String::from("--data-path");
    for e in entries {
        let prefix = std::path::absolute(&e.prefix).unwrap_or_else(|_| e.prefix.clone());
        out.push_str(&format!(
            " {:.8} {}",
            e.weight,
            shell_quote(&prefix.to_string_lossy())
        ));
    }
    out
}
