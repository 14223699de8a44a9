//! `report.json` and the closing table: per stage rows and bytes in, out and rejected, time, and rejects
//! by reason, so that every input row is accounted for.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub name: String,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_rejected: u64,
    /// Rows a stage made beyond one per row it kept (a document that gave three QA pairs adds two):
    /// the next stage takes `rows_out + rows_added`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_added: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Time spent in the stage's own work (its function, or reading), summed over threads.
    pub seconds: f64,
    pub rejects_by_reason: BTreeMap<String, u64>,
    /// What a deduplication stage found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupSummary>,
    /// What a `substring_dedup` stage found and removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substring: Option<crate::stages::substring_dedup::SubstringSummary>,
    /// What a `tokenize` stage wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenize: Option<crate::stages::tokenize::TokenizeSummary>,
    /// What a synthesis stage asked and what it cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthesis: Option<crate::stages::synth::SynthesisSummary>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Clusters and candidates of a deduplication stage, beside its row counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DedupSummary {
    /// The shingle unit used (`word` or `char`; `auto` decided over the whole input).
    #[serde(default)]
    pub unit: String,
    /// Documents too short for one shingle: kept, never clustered.
    pub too_short: u64,
    /// Band keys shared by two documents or more.
    pub candidate_groups: u64,
    /// With `verify`: distinct candidate pairs checked, and those below the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_pairs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs_below_threshold: Option<u64>,
    /// Clusters of two documents or more, the documents in them and the largest.
    pub clusters: u64,
    pub documents_in_clusters: u64,
    pub largest_cluster: u64,
    pub cluster_sizes: Vec<SizeBucket>,
    /// Documents removed because they match the index (`index: {against}`).
    pub removed_by_index: u64,
    /// Wall seconds of each pass.
    pub seconds_signatures: f64,
    pub seconds_clustering: f64,
}

/// One bucket of a cluster-size histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeBucket {
    /// Sizes in the bucket: "2", "3-4", "5-8", …
    pub sizes: String,
    pub clusters: u64,
}

impl StageReport {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Default::default()
        }
    }

    pub fn merge(&mut self, other: &StageReport) {
        self.rows_in += other.rows_in;
        self.rows_out += other.rows_out;
        self.rows_rejected += other.rows_rejected;
        self.rows_added += other.rows_added;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.seconds += other.seconds;
        for (r, n) in &other.rejects_by_reason {
            *self.rejects_by_reason.entry(r.clone()).or_default() += n;
        }
        if self.dedup.is_none() {
            self.dedup = other.dedup.clone();
        }
        if self.tokenize.is_none() {
            self.tokenize = other.tokenize.clone();
        }
        if self.substring.is_none() {
            self.substring = other.substring.clone();
        }
        if self.synthesis.is_none() {
            self.synthesis = other.synthesis.clone();
        }
    }

    pub fn reject(&mut self, reason: &str, n: u64) {
        self.rows_rejected += n;
        *self
            .rejects_by_reason
            .entry(reason.to_string())
            .or_default() += n;
    }
}

/// A part the run wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartInfo {
    pub path: String,
    pub rows: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub pipeline: String,
    pub input: String,
    pub output: String,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_rejected: u64,
    /// Wall time of the run, from start to the last rename.
    pub seconds: f64,
    pub stages: Vec<StageReport>,
    /// The manifest: every output and rejects part with its row count.
    pub parts: Vec<PartInfo>,
    pub rejects: Vec<PartInfo>,
}

impl Report {
    /// Checks the accounting: every stage's rows in = out + rejected, each stage takes what the previous
    /// gave (its rows out plus the rows it added), and rows read plus rows added = written + rejected.
    pub fn check(&self) -> Result<(), String> {
        for s in &self.stages {
            if s.rows_in != s.rows_out + s.rows_rejected {
                return Err(format!(
                    "stage {}: {} in != {} out + {} rejected",
                    s.name, s.rows_in, s.rows_out, s.rows_rejected
                ));
            }
            let by_reason: u64 = s.rejects_by_reason.values().sum();
            if by_reason != s.rows_rejected {
                return Err(format!(
                    "stage {}: rejects by reason sum to {by_reason}, not {}",
                    s.name, s.rows_rejected
                ));
            }
        }
        for w in self.stages.windows(2) {
            if w[0].rows_out + w[0].rows_added != w[1].rows_in {
                return Err(format!(
                    "stage {} gave {} rows but {} took {}",
                    w[0].name,
                    w[0].rows_out + w[0].rows_added,
                    w[1].name,
                    w[1].rows_in
                ));
            }
        }
        let added: u64 = self.stages.iter().map(|s| s.rows_added).sum();
        if self.rows_read + added != self.rows_written + self.rows_rejected {
            return Err(format!(
                "{} read + {added} made != {} written + {} rejected",
                self.rows_read, self.rows_written, self.rows_rejected
            ));
        }
        Ok(())
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = crate::io::writer::temp_name(path);
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Self> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }

    /// The closing summary table.
    pub fn table(&self) -> String {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic);
        // A terminal that reports no width (a pty without a size) would squash every column to one
        // character.
        if t.width().is_none_or(|w| w < 60) {
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
        t.set_header(vec![
            "stage",
            "rows in",
            "rows out",
            "rejected",
            "MB in",
            "MB out",
            "seconds",
            "top reject reasons",
        ]);
        for s in &self.stages {
            let mut reasons: Vec<(&String, &u64)> = s.rejects_by_reason.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1));
            let top = reasons
                .iter()
                .take(3)
                .map(|(r, n)| format!("{r}: {n}"))
                .collect::<Vec<_>>()
                .join("; ");
            t.add_row(vec![
                Cell::new(&s.name),
                num(s.rows_in),
                num(s.rows_out + s.rows_added),
                num(s.rows_rejected),
                Cell::new(format!("{:.1}", s.bytes_in as f64 / 1e6))
                    .set_alignment(CellAlignment::Right),
                Cell::new(format!("{:.1}", s.bytes_out as f64 / 1e6))
                    .set_alignment(CellAlignment::Right),
                Cell::new(format!("{:.2}", s.seconds)).set_alignment(CellAlignment::Right),
                Cell::new(top),
            ]);
        }
        let mut out = format!(
            "{t}\n{} rows read, {} written, {} rejected in {:.1} s",
            self.rows_read, self.rows_written, self.rows_rejected, self.seconds
        );
        for s in &self.stages {
            if let Some(d) = &s.dedup {
                let sizes: Vec<String> = d
                    .cluster_sizes
                    .iter()
                    .map(|b| format!("{}: {}", b.sizes, b.clusters))
                    .collect();
                out.push_str(&format!(
                    "\n{}: {} clusters of {} documents (largest {}; sizes {}), {} too short to hash, \
                     {} removed by the index; signatures {:.1} s, clustering {:.1} s",
                    s.name,
                    d.clusters,
                    d.documents_in_clusters,
                    d.largest_cluster,
                    if sizes.is_empty() { "-".to_string() } else { sizes.join(", ") },
                    d.too_short,
                    d.removed_by_index,
                    d.seconds_signatures,
                    d.seconds_clustering,
                ));
            }
            if let Some(x) = &s.substring {
                out.push_str(&format!(
                    "\n{}: {} spans of {} {} or more removed ({} bytes, {}, snapped to {}) from {} documents, \
                     {} left too short; {} symbols in {} part(s): join {:.1} s, suffix arrays {:.1} s, \
                     merge {:.1} s, marking {:.1} s",
                    s.name,
                    x.duplicate_spans,
                    x.min_length,
                    x.unit,
                    x.bytes_removed,
                    x.policy,
                    x.snap,
                    x.documents_changed,
                    x.documents_too_short,
                    x.symbols,
                    x.parts,
                    x.seconds_join,
                    x.seconds_suffix_arrays,
                    x.seconds_merge,
                    x.seconds_mark,
                ));
            }
            if let Some(y) = &s.synthesis {
                out.push_str(&format!(
                    "\n{}: {} rows made; {} requests ({} retries, {:.2}/s), {} answered from the cache; \
                     {} prompt + {} completion tokens ({} + {} from the cache); {} responses failed validation",
                    s.name,
                    y.rows_made,
                    y.requests,
                    y.retries,
                    y.requests_per_second,
                    y.cached,
                    y.prompt_tokens,
                    y.completion_tokens,
                    y.cached_prompt_tokens,
                    y.cached_completion_tokens,
                    y.invalid_responses,
                ));
            }
            if let Some(t) = &s.tokenize {
                out.push_str(&format!(
                    "\n{}: {} tokens of {} documents in {} prefix(es) under {} ({}, {}); {:.0} tokens/s",
                    s.name,
                    t.tokens,
                    t.documents,
                    t.prefixes.len(),
                    t.output,
                    t.tokenizer,
                    t.dtype,
                    t.tokens as f64 / t.seconds.max(1e-9),
                ));
            }
        }
        out
    }
}

fn num(n: u64) -> Cell {
    Cell::new(n).set_alignment(CellAlignment::Right)
}
