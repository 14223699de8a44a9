//! Pass 2: candidate groups and clusters. Band keys are grouped by a DataFusion aggregation
//! (`GROUP BY band, key HAVING count(*) > 1`) under a memory limit past which it spills to disk; the
//! groups' members are joined by union-find, and each cluster keeps one document.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::array::AsArray;
use arrow::datatypes::UInt32Type;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use super::options::Keep;
use super::signatures::DocFacts;
use crate::report::SizeBucket;
use crate::stages::union_find::UnionFind;

/// A session for a corpus stage's heavy operators: its memory pool is `memory_mb`, and its operators
/// spill to `spill_dir` past it.
pub fn spilling_session(
    memory_mb: u64,
    spill_dir: &Path,
    partitions: usize,
) -> Result<SessionContext> {
    std::fs::create_dir_all(spill_dir)
        .with_context(|| format!("creating {}", spill_dir.display()))?;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit((memory_mb as usize) << 20, 1.0)
        .with_temp_file_path(spill_dir)
        .build_arc()?;
    // Each sorting partition holds back this much for merging its spills: DataFusion's 10 MB, or an
    // eighth of a partition's share of a small pool, so that a small `memory_mb` still sorts.
    let per_partition = ((memory_mb as usize) << 20) / partitions.max(1);
    let config = SessionConfig::new()
        .with_target_partitions(partitions.max(1))
        .with_sort_spill_reservation_bytes((per_partition / 8).min(10 << 20));
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// Registers band-key files as a table.
pub async fn register_bands(ctx: &SessionContext, name: &str, files: &[PathBuf]) -> Result<()> {
    let paths: Vec<String> = files
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let df = ctx
        .read_parquet(paths, ParquetReadOptions::default())
        .await?;
    ctx.register_table(name, df.into_view())?;
    Ok(())
}

/// Calls `group(rep, members)` for every band key shared by two documents or more; `rep` is the group's
/// lowest document number, `members` includes it. Returns the number of groups; an error of `group`
/// stops it.
pub async fn candidate_groups(
    ctx: &SessionContext,
    mut group: impl FnMut(u32, &[u32]) -> Result<()>,
) -> Result<u64> {
    let df = ctx
        .sql(
            "SELECT min(doc) AS rep, array_agg(doc) AS docs FROM bands \
             GROUP BY band, key HAVING count(*) > 1",
        )
        .await?;
    let mut stream = df.execute_stream().await?;
    let mut groups = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.context("grouping band keys")?;
        let reps = batch.column(0).as_primitive::<UInt32Type>();
        let lists = batch.column(1).as_list::<i32>();
        for i in 0..batch.num_rows() {
            let members = lists.value(i);
            let members = members.as_primitive::<UInt32Type>();
            group(reps.value(i), members.values())?;
            groups += 1;
        }
    }
    Ok(groups)
}

/// The clusters, and which document each keeps.
pub struct Clusters {
    /// Each document's cluster root.
    pub root: Vec<u32>,
    /// Cluster sizes, indexed by root.
    pub size: Vec<u32>,
    /// The kept document of each cluster, indexed by root.
    pub kept: Vec<u32>,
}

impl Clusters {
    /// Resolves the union-find and picks the kept document of each cluster: the highest priority, ties
    /// (and `keep: first`) to the first in the input.
    pub fn decide(uf: UnionFind, facts: &DocFacts, keep: &Keep) -> Self {
        let (root, size) = uf.into_roots();
        let mut kept = vec![u32::MAX; root.len()];
        for (d, &r) in root.iter().enumerate() {
            let (d, best) = (d as u32, kept[r as usize]);
            let better = best == u32::MAX
                || match keep {
                    Keep::First => facts.before(d, best),
                    _ => {
                        let (p, q) = (facts.priority[d as usize], facts.priority[best as usize]);
                        p > q || (p == q && facts.before(d, best))
                    }
                };
            if better {
                kept[r as usize] = d;
            }
        }
        Self { root, size, kept }
    }

    pub fn len(&self) -> usize {
        self.root.len()
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    pub fn is_kept(&self, d: u32) -> bool {
        self.kept[self.root[d as usize] as usize] == d
    }

    pub fn cluster_size(&self, d: u32) -> u32 {
        self.size[self.root[d as usize] as usize]
    }

    /// The kept document of `d`'s cluster.
    pub fn kept_of(&self, d: u32) -> u32 {
        self.kept[self.root[d as usize] as usize]
    }
}

/// Sizes of the clusters of two documents or more, in power-of-two buckets.
pub fn size_histogram(clusters: &Clusters) -> Vec<SizeBucket> {
    let mut by_bucket: std::collections::BTreeMap<u32, u64> = Default::default();
    for (d, &r) in clusters.root.iter().enumerate() {
        let s = clusters.size[r as usize];
        if r as usize == d && s > 1 {
            *by_bucket.entry(s.next_power_of_two()).or_default() += 1;
        }
    }
    by_bucket
        .into_iter()
        .map(|(hi, n)| {
            let lo = hi / 2 + 1;
            SizeBucket {
                sizes: if lo == hi {
                    format!("{hi}")
                } else {
                    format!("{lo}-{hi}")
                },
                clusters: n,
            }
        })
        .collect()
}
