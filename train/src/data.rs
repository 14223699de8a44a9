//! Training samples from Megatron shards, built as Megatron's `GPTDataset` builds them: the sequences of
//! a shard in a shuffled order per epoch, concatenated; sample i is the `len` tokens from token
//! `i · stride` of that stream (so samples cross document boundaries and overlap by `len − stride`);
//! the samples in a shuffled order. Several shards mix by weight as Megatron's `BlendedDataset` mixes
//! them: sample i comes from the shard whose share so far lags its weight most.
//!
//! The order served depends only on the seed and the data, never on how many samples are asked for
//! (the number of training steps): a run resumed with a larger `--steps` sees exactly the batches an
//! uninterrupted run would. Each epoch's sequence shuffle is seeded by the seed and the epoch's number;
//! the samples are shuffled within consecutive blocks of one epoch's worth of samples (as many as fit
//! in one epoch's tokens), each block by the seed and its number, where Megatron shuffles all the
//! samples it builds at once (so that its order changes with their count); and the blend assigns sample
//! i from the counts of samples 0..i only. Asking for more samples only appends blocks and epochs.
//!
//! Each sample also numbers the document of each of its tokens, for per-document attention masks and
//! position resets.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use openseek_shards::IndexedDataset;
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// One sample: its tokens and, per token, the number of its document within the sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub tokens: Vec<u32>,
    pub doc_ids: Vec<u32>,
}

/// The samples of one shard's sequences `seqs`.
pub struct GptSamples {
    shard: Arc<IndexedDataset>,
    /// Sequences in stream order, epoch after epoch.
    order: Vec<u32>,
    /// Token offset of each entry of `order` in the stream, then the stream's length.
    offsets: Vec<u64>,
    /// Served sample i is sample `(i / block) · block + shuffled[i]`: each block of `block` samples in
    /// its own shuffled order.
    shuffled: Vec<u32>,
    /// Samples per shuffled block: those whose `len` tokens fit in one epoch's tokens (at least one).
    block: usize,
    len: usize,
    stride: usize,
}

impl GptSamples {
    /// At least `samples` samples of `len` tokens every `stride`, over as many epochs as that takes.
    /// The first `samples` served are the same whatever `samples` is (see the module's comment).
    pub fn new(
        shard: Arc<IndexedDataset>,
        seqs: Range<usize>,
        samples: usize,
        len: usize,
        stride: usize,
        seed: u64,
    ) -> Result<Self> {
        let epoch_tokens: u64 = seqs.clone().map(|i| shard.sequence_len(i) as u64).sum();
        if epoch_tokens == 0 {
            bail!(
                "{}: no tokens in sequences {seqs:?}",
                shard.prefix().display()
            );
        }
        if stride == 0 || len == 0 {
            bail!("samples need a length and a stride of at least one token");
        }
        // A function of the data only: one epoch's samples (its windows that fit within its tokens).
        let block = epoch_tokens.saturating_sub(len as u64) / stride as u64 + 1;
        if block > u32::MAX as u64 {
            bail!(
                "{}: {block} samples an epoch, more than this trainer numbers",
                shard.prefix().display()
            );
        }
        let block = block as usize;
        let blocks = samples.div_ceil(block).max(1);
        let built = blocks * block;
        // The stream must hold the last sample of the last block.
        let needed = (built as u64 - 1) * stride as u64 + len as u64;
        let epochs = needed.div_ceil(epoch_tokens).max(1);
        let mut order = Vec::new();
        for epoch in 0..epochs {
            let mut e: Vec<u32> = seqs.clone().map(|i| i as u32).collect();
            e.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
                seed.wrapping_add(epoch),
            ));
            order.extend(e);
        }
        let mut offsets = Vec::with_capacity(order.len() + 1);
        let mut at = 0u64;
        for &s in &order {
            offsets.push(at);
            at += shard.sequence_len(s as usize) as u64;
        }
        offsets.push(at);
        let mut shuffled: Vec<u32> = Vec::with_capacity(built);
        for b in 0..blocks {
            let mut within: Vec<u32> = (0..block as u32).collect();
            within.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
                (seed ^ 0x05ee_d5a3_e1e5_u64).wrapping_add(b as u64),
            ));
            shuffled.extend(within);
        }
        Ok(Self {
            shard,
            order,
            offsets,
            shuffled,
            block,
            len,
            stride,
        })
    }

    pub fn samples(&self) -> usize {
        self.shuffled.len()
    }

    /// The `i`-th sample served (wrapping around).
    pub fn get(&self, i: usize) -> Sample {
        let i = i % self.shuffled.len();
        let n = (i - i % self.block) as u64 + self.shuffled[i] as u64;
        let start = n * self.stride as u64;
        let mut k = self.offsets.partition_point(|&o| o <= start) - 1;
        let mut within = (start - self.offsets[k]) as usize;
        let mut raw: Vec<i64> = Vec::with_capacity(self.len);
        let mut doc_ids = Vec::with_capacity(self.len);
        let mut doc = 0u32;
        while raw.len() < self.len {
            let seq = self.order[k] as usize;
            let take = (self.shard.sequence_len(seq) - within).min(self.len - raw.len());
            self.shard.read(seq, within, take, &mut raw);
            doc_ids.extend(std::iter::repeat_n(doc, take));
            doc += 1;
            k += 1;
            within = 0;
        }
        Sample {
            tokens: raw.into_iter().map(|t| t as u32).collect(),
            doc_ids,
        }
    }
}

/// Sequences `[0, n)` split into training and validation: the last `valid_fraction` (at least one when
/// the fraction is positive and there are two or more) are held out.
pub fn split(n: usize, valid_fraction: f64) -> (Range<usize>, Range<usize>) {
    let mut valid = (n as f64 * valid_fraction).round() as usize;
    if valid_fraction > 0.0 && n > 1 {
        valid = valid.max(1);
    }
    let valid = valid.min(n.saturating_sub(1));
    (0..n - valid, n - valid..n)
}

/// Several shards' samples mixed by weight.
pub struct Blend {
    parts: Vec<GptSamples>,
    /// For each served sample: (part, the part's own sample number).
    index: Vec<(u16, u32)>,
}

impl Blend {
    /// `samples` samples from `parts` in proportion to `weights` (normalised by their sum).
    pub fn new(parts: Vec<GptSamples>, weights: &[f64], samples: usize) -> Result<Self> {
        if parts.is_empty() || parts.len() != weights.len() {
            bail!("a blend needs one weight per shard");
        }
        let total: f64 = weights.iter().sum();
        if total.is_nan() || total <= 0.0 || weights.iter().any(|w| *w < 0.0) {
            bail!("blend weights must be non-negative with a positive sum");
        }
        let mut counts = vec![0u64; parts.len()];
        let mut index = Vec::with_capacity(samples);
        for i in 0..samples {
            // Megatron's rule: the part furthest behind its share.
            let d = (0..parts.len())
                .max_by(|&a, &b| {
                    let lag = |d: usize| weights[d] / total * (i + 1) as f64 - counts[d] as f64;
                    lag(a).total_cmp(&lag(b)).then(b.cmp(&a))
                })
                .expect("parts");
            index.push((d as u16, counts[d] as u32));
            counts[d] += 1;
        }
        Ok(Self { parts, index })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn get(&self, i: usize) -> Sample {
        let (d, j) = self.index[i % self.index.len()];
        self.parts[d as usize].get(j as usize)
    }
}

/// Refuses a shard whose tokenizer (from its sidecar `P.json`, when it has one) has more ids than
/// the model's vocabulary: the embedding would otherwise fail mid-run on the first such id, without
/// naming the shard.
pub fn check_vocabulary(prefix: &Path, vocab_size: usize) -> Result<()> {
    let json = openseek_shards::json_path(prefix);
    if !json.exists() {
        return Ok(());
    }
    let sidecar = openseek_shards::Sidecar::read(&json)?;
    if let Some(t) = sidecar.tokenizer
        && t.vocab_size > vocab_size
    {
        bail!(
            "{}: tokenized with {} ({} ids), more than the model's vocab_size {vocab_size}",
            prefix.display(),
            t.name,
            t.vocab_size
        );
    }
    Ok(())
}

/// Opens a shard prefix (`P` for `P.bin` + `P.idx`).
pub fn open(prefix: &Path) -> Result<Arc<IndexedDataset>> {
    Ok(Arc::new(IndexedDataset::open(prefix).with_context(
        || format!("opening shard {}", prefix.display()),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openseek_shards::DType;
    use openseek_shards::ShardWriter;

    /// A shard of `docs` documents, document d holding d + 3 tokens, each token 1000·d + its index.
    fn shard(dir: &Path, docs: u32) -> Arc<IndexedDataset> {
        let prefix = dir.join("s");
        let mut w = ShardWriter::create(&prefix, DType::I32).unwrap();
        for d in 0..docs {
            let t: Vec<u32> = (0..d + 3).map(|i| 1000 * d + i).collect();
            w.add_document(&t).unwrap();
        }
        w.finish(&Default::default()).unwrap();
        open(&prefix).unwrap()
    }

    #[test]
    fn samples_are_windows_of_the_shuffled_stream() {
        let dir = tempfile::tempdir().unwrap();
        let s = shard(dir.path(), 20);
        let g = GptSamples::new(Arc::clone(&s), 0..20, 50, 9, 8, 7).unwrap();
        // Every sample is 9 consecutive tokens of the stream: within a document they count up by one,
        // and where the document number changes a new document starts at its token 0.
        let mut firsts = std::collections::BTreeSet::new();
        for i in 0..g.samples() {
            let x = g.get(i);
            assert_eq!(x.tokens.len(), 9);
            for j in 1..9 {
                if x.doc_ids[j] == x.doc_ids[j - 1] {
                    assert_eq!(x.tokens[j], x.tokens[j - 1] + 1);
                } else {
                    assert_eq!(x.tokens[j] % 1000, 0);
                }
            }
            firsts.insert(x.tokens[0]);
        }
        // Shuffled, yet the same with the same seed.
        let again = GptSamples::new(s, 0..20, 50, 9, 8, 7).unwrap();
        assert_eq!(g.get(3), again.get(3));
        assert!(g.samples() >= 50);
        assert!(firsts.len() > 40);
    }

    #[test]
    fn blends_follow_their_weights_and_splits_hold_out_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), dir);
        let parts = vec![
            GptSamples::new(shard(a.path(), 10), 0..10, 100, 5, 5, 1).unwrap(),
            GptSamples::new(shard(b.path(), 30), 0..30, 100, 5, 5, 2).unwrap(),
        ];
        let blend = Blend::new(parts, &[1.0, 3.0], 400).unwrap();
        let from_a = blend.index.iter().filter(|(d, _)| *d == 0).count();
        assert_eq!(from_a, 100);
        assert_eq!(split(100, 0.05), (0..95, 95..100));
        assert_eq!(split(3, 0.01), (0..2, 2..3));
        assert_eq!(split(10, 0.0), (0..10, 10..10));
    }

    /// The first samples served do not depend on how many are built: 10, 100 or 1000 samples of the
    /// same shard and seed start alike (Megatron's single shuffle of all the samples did not: the order
    /// changed with their count, which crossed an epoch here).
    #[test]
    fn sample_order_does_not_depend_on_the_number_of_samples() {
        let dir = tempfile::tempdir().unwrap();
        let s = shard(dir.path(), 20);
        let build = |n: usize| GptSamples::new(Arc::clone(&s), 0..18, n, 9, 8, 7).unwrap();
        let (few, more, many) = (build(10), build(100), build(1000));
        assert!(many.samples() >= 1000 && more.samples() >= 100);
        for i in 0..10 {
            assert_eq!(few.get(i), more.get(i), "sample {i}");
            assert_eq!(few.get(i), many.get(i), "sample {i}");
        }
        for i in 0..100 {
            assert_eq!(more.get(i), many.get(i), "sample {i}");
        }
        // Still shuffled: the first tokens are not in the order of the documents.
        let starts: Vec<u32> = (0..10).map(|i| few.get(i).tokens[0]).collect();
        let mut sorted = starts.clone();
        sorted.sort();
        assert_ne!(starts, sorted);
        // Blends too: the first samples of a short blend are those of a long one.
        let blend = |n: usize| {
            Blend::new(
                vec![
                    GptSamples::new(Arc::clone(&s), 0..10, n, 9, 8, 1).unwrap(),
                    GptSamples::new(Arc::clone(&s), 10..20, n, 9, 8, 2).unwrap(),
                ],
                &[1.0, 2.0],
                n,
            )
            .unwrap()
        };
        let (short, long) = (blend(30), blend(600));
        for i in 0..30 {
            assert_eq!(short.get(i), long.get(i), "blended sample {i}");
        }
    }

    /// A shard whose sidecar names a tokenizer larger than the model is refused, by name.
    #[test]
    fn a_tokenizer_larger_than_the_model_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("big");
        let mut w = ShardWriter::create(&prefix, DType::I32).unwrap();
        w.add_document(&[1, 2, 3]).unwrap();
        let provenance = openseek_shards::Provenance {
            tokenizer: Some(openseek_shards::TokenizerInfo {
                name: "qwen3".into(),
                sha256: String::new(),
                vocab_size: 151_669,
            }),
            ..Default::default()
        };
        w.finish(&provenance).unwrap();
        check_vocabulary(&prefix, 151_936).unwrap();
        let e = check_vocabulary(&prefix, 1000).unwrap_err().to_string();
        assert!(
            e.contains("big") && e.contains("151669") && e.contains("1000"),
            "{e}"
        );
        // No sidecar: nothing to check against.
        std::fs::remove_file(openseek_shards::json_path(&prefix)).unwrap();
        check_vocabulary(&prefix, 10).unwrap();
    }
}
