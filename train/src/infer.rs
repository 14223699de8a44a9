//! Using a checkpoint: the loss on shards (`openseek-train eval`) and greedy continuation of a prompt
//! (`openseek-train generate`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor};

use crate::data::{GptSamples, Sample};
use crate::model::deepseek::{Batch, DeepSeek, Pass};

/// How `eval` reads the shards.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub seq_len: usize,
    pub micro_batch: usize,
    /// Tokens predicted per prefix at most (windows taken in a seeded shuffled order, so a cap still
    /// samples the whole shard).
    pub max_tokens: usize,
    pub document_mask: bool,
    pub seed: u64,
}

/// The mean next-token loss on one prefix.
#[derive(Debug, Clone)]
pub struct EvalResult {
    pub prefix: PathBuf,
    pub loss: f64,
    pub tokens: usize,
}

/// The mean next-token cross entropy of `model` on each prefix: non-overlapping windows of
/// `seq_len + 1` tokens across document boundaries (as training reads them), each token predicted
/// once.
pub fn evaluate(
    model: &DeepSeek,
    prefixes: &[PathBuf],
    o: &EvalOptions,
    device: &Device,
) -> Result<Vec<EvalResult>> {
    let depth = model.config.num_nextn_predict_layers;
    let len = o.seq_len + 1 + depth;
    let mut out = Vec::new();
    for prefix in prefixes {
        crate::data::check_vocabulary(prefix, model.config.vocab_size)?;
        let shard = crate::data::open(prefix)?;
        let total: usize = (0..shard.len()).map(|i| shard.sequence_len(i)).sum();
        if total < len {
            bail!(
                "{}: {total} tokens, fewer than one window of {len}",
                prefix.display()
            );
        }
        // One epoch of windows, at most `max_tokens` of them predicted.
        let windows = ((total - len) / o.seq_len + 1).min(o.max_tokens.div_ceil(o.seq_len).max(1));
        let samples = GptSamples::new(
            shard.clone(),
            0..shard.len(),
            windows,
            len,
            o.seq_len,
            o.seed,
        )?;
        let bar = indicatif::ProgressBar::new(windows as u64);
        let (mut sum, mut count) = (0.0, 0usize);
        for first in (0..windows).step_by(o.micro_batch) {
            let batch: Vec<Sample> = (first..(first + o.micro_batch).min(windows))
                .map(|i| samples.get(i))
                .collect();
            let b = Batch::from_samples(&batch, device, o.document_mask)?;
            let l = model.losses(&b, Pass::Eval)?;
            let n = batch.len() * o.seq_len;
            sum += l.lm.to_dtype(DType::F64)?.to_scalar::<f64>()? * n as f64;
            count += n;
            bar.inc(batch.len() as u64);
        }
        bar.finish_and_clear();
        out.push(EvalResult {
            prefix: prefix.clone(),
            loss: sum / count as f64,
            tokens: count,
        });
    }
    Ok(out)
}

/// `max_new` tokens continuing `prompt` greedily (the most likely token each time), stopping early
/// at `stop` if given. The whole sequence is run again for each new token: the model has no key-value
/// cache yet, which costs time on long outputs, not correctness.
pub fn generate(
    model: &DeepSeek,
    prompt: &[u32],
    max_new: usize,
    stop: Option<u32>,
    device: &Device,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        bail!("the prompt has no tokens");
    }
    let limit = model.config.max_position_embeddings;
    let mut ids = prompt.to_vec();
    let mut new = Vec::with_capacity(max_new);
    for _ in 0..max_new {
        if ids.len() >= limit {
            tracing::warn!("stopped at max_position_embeddings ({limit})");
            break;
        }
        let input = Tensor::new(ids.as_slice(), device)?.unsqueeze(0)?;
        let logits = model.logits(&input, None)?;
        let last = logits.get(0)?.get(ids.len() - 1)?;
        let next = last.argmax(D::Minus1)?.to_scalar::<u32>()?;
        ids.push(next);
        new.push(next);
        if Some(next) == stop {
            break;
        }
    }
    Ok(new)
}

/// Reads a Hugging Face `tokenizer.json` (or a directory holding one).
pub fn tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    tokenizers::Tokenizer::from_file(&file)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading tokenizer {}", file.display()))
}
