//! The training loop: samples from blended shards, forward and backward over micro-batches, clipping,
//! AdamW, the auxiliary-loss-free bias update after each step, validation on held-out sequences,
//! metrics as JSON lines, and checkpoints from which a run resumes exactly where it stopped.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::ModelConfig;
use crate::data::{Blend, GptSamples, Sample, split};
use crate::model::block::Ffn;
use crate::model::deepseek::{Batch, DeepSeek, Pass};
use crate::optim::{AdamW, clip_scale, is_untrained, learning_rate};

/// The `train:` section of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    pub seq_len: usize,
    pub micro_batch: usize,
    #[serde(default = "one")]
    pub grad_accum: usize,
    pub steps: u64,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    #[serde(default = "weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "beta1")]
    pub beta1: f64,
    #[serde(default = "beta2")]
    pub beta2: f64,
    #[serde(default = "clip")]
    pub clip: f64,
    #[serde(default)]
    pub seed: u64,
    /// γ of the auxiliary-loss-free balancing (DeepSeek-V3: 0.001).
    #[serde(default = "gamma")]
    pub bias_update_speed: f64,
    /// α of the sequence-wise balance loss (DeepSeek-V3: 1e-4).
    #[serde(default = "alpha")]
    pub balance_alpha: f64,
    /// λ of the MTP loss (DeepSeek-V3: 0.3, then 0.1).
    #[serde(default = "lambda")]
    pub mtp_weight: f64,
    /// Attention within documents only, positions restarting at each (OpenSeek trains with it).
    #[serde(default = "yes")]
    pub document_mask: bool,
    /// Share of each shard's sequences (the last ones) held out for validation.
    #[serde(default = "valid_fraction")]
    pub valid_fraction: f64,
    /// Validation every this many steps and at the last; 0: never.
    #[serde(default = "eval_every")]
    pub eval_every: u64,
    /// Micro-batches of held-out samples a validation averages (at least 1).
    #[serde(default = "eval_batches")]
    pub eval_batches: usize,
    /// A checkpoint every this many steps and at the last; 0: only at the last (the trained weights
    /// are always kept).
    #[serde(default = "checkpoint_every")]
    pub checkpoint_every: u64,
    /// A step whose gradient norm is not finite (an inf or a NaN in some gradient) is skipped, as
    /// Megatron skips them: no update of the weights, the moments or the routing biases. After this
    /// many such steps in a row the run stops with an error (at least 1).
    #[serde(default = "max_consecutive_skipped_steps")]
    pub max_consecutive_skipped_steps: u64,
    /// Weights and activations: `f32` (the CPU's), or `bf16` (for CUDA) with f32 main weights and
    /// moments in the optimizer, the router in f32, and the softmax of the loss in f32.
    #[serde(default)]
    pub precision: Precision,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }
}

fn one() -> usize {
    1
}
fn weight_decay() -> f64 {
    0.1
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.95
}
fn clip() -> f64 {
    1.0
}
fn gamma() -> f64 {
    0.001
}
fn alpha() -> f64 {
    1e-4
}
fn lambda() -> f64 {
    0.3
}
fn yes() -> bool {
    true
}
fn valid_fraction() -> f64 {
    0.01
}
fn eval_every() -> u64 {
    50
}
fn eval_batches() -> usize {
    4
}
fn checkpoint_every() -> u64 {
    100
}
/// One bad batch (or a rare overflow) is skipped and the run goes on; a skipped step changes nothing
/// but the batch, so several in a row on fresh batches point to a lasting cause (diverged weights or
/// moments, too high a learning rate, bad data) that more steps will not cure: stop before burning
/// the rest of the budget. Megatron's fp16 loss scaler likewise skips the steps whose gradients
/// overflow (lowering the scale each time), and its `--check-for-nan-in-loss-and-grad` stops at the
/// first NaN.
fn max_consecutive_skipped_steps() -> u64 {
    5
}

/// A config file: the model (Hugging Face's names) and how to train it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub model: ModelConfig,
    pub train: TrainOptions,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let c: Self =
            serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        c.validate().with_context(|| path.display().to_string())?;
        Ok(c)
    }

    /// Refuses values the trainer cannot run with, naming the key.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        self.model.validate()?;
        if t.micro_batch == 0 || t.grad_accum == 0 || t.seq_len == 0 {
            bail!("seq_len, micro_batch and grad_accum must be at least 1");
        }
        if t.seq_len + self.model.num_nextn_predict_layers > self.model.max_position_embeddings {
            bail!("seq_len is above max_position_embeddings");
        }
        if t.eval_batches == 0 {
            bail!(
                "train.eval_batches must be at least 1 (the validation loss is a mean over that \
                 many micro-batches); to never validate, set eval_every: 0"
            );
        }
        if t.max_consecutive_skipped_steps == 0 {
            bail!("train.max_consecutive_skipped_steps must be at least 1");
        }
        Ok(())
    }
}

/// Weights drawn from `seed` (Candle's CPU generator cannot be seeded): normal with the config's
/// standard deviation, norms one, routing biases zero, in name order.
pub fn init_weights(vars: &VarMap, std: f64, seed: u64) -> Result<()> {
    let data = vars.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let n = var.elem_count();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if is_untrained(name) {
            vec![0.0; n]
        } else {
            (0..n)
                .map(|_| {
                    // Box–Muller.
                    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
                    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * std) as f32
                })
                .collect()
        };
        let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// What `trainer_state.json` of a checkpoint holds besides the weights and the moments.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    /// Steps skipped for a non-finite gradient norm, in all and the last ones in a row (absent from
    /// older checkpoints: none).
    #[serde(default)]
    skipped_steps: u64,
    #[serde(default)]
    consecutive_skipped_steps: u64,
}

/// The latest complete checkpoint under `out` (`step-NNNNNN`), if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<(u64, PathBuf)>> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(None);
    };
    let mut best: Option<(u64, PathBuf)> = None;
    for e in entries {
        let p = e?.path();
        let step = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(step) = step
            && p.join("trainer_state.json").exists()
            && best.as_ref().is_none_or(|b| step > b.0)
        {
            best = Some((step, p));
        }
    }
    Ok(best)
}

/// The shards of `data` (weight, prefix), split, as training and validation blends.
/// The training blend of `samples` samples, and the validation blend (none when `eval_every` is 0:
/// then no held-out sequences are needed).
fn blends(cfg: &Config, data: &[(f64, PathBuf)], samples: usize) -> Result<(Blend, Option<Blend>)> {
    let t = &cfg.train;
    let len = t.seq_len + 1 + cfg.model.num_nextn_predict_layers;
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    let (mut weights, mut valid_weights) = (Vec::new(), Vec::new());
    for (i, (w, prefix)) in data.iter().enumerate() {
        crate::data::check_vocabulary(prefix, cfg.model.vocab_size)?;
        let shard = crate::data::open(prefix)?;
        let (tr, va) = split(shard.len(), t.valid_fraction);
        let seed = t.seed.wrapping_add(1000 * i as u64);
        train.push(GptSamples::new(
            shard.clone(),
            tr,
            samples,
            len,
            t.seq_len,
            seed,
        )?);
        if !va.is_empty() {
            valid.push(GptSamples::new(
                shard,
                va,
                t.eval_batches * t.micro_batch,
                len,
                t.seq_len,
                seed ^ 1,
            )?);
            valid_weights.push(*w);
        }
        weights.push(*w);
    }
    let train = Blend::new(train, &weights, samples)?;
    if t.eval_every == 0 {
        return Ok((train, None));
    }
    if valid.is_empty() {
        bail!(
            "no sequences held out for validation: raise valid_fraction, give larger shards, or set \
             eval_every: 0"
        );
    }
    // Validation mixes the held-out sequences by the training weights, as Megatron's blend does.
    let eval = t.eval_batches * t.micro_batch;
    Ok((train, Some(Blend::new(valid, &valid_weights, eval)?)))
}

/// Mean validation loss (next token) over the held-out samples.
fn validate(model: &DeepSeek, valid: &Blend, cfg: &Config, device: &Device) -> Result<f64> {
    let mb = cfg.train.micro_batch;
    let mut sum = 0.0;
    for k in 0..cfg.train.eval_batches {
        let samples: Vec<Sample> = (0..mb).map(|j| valid.get(k * mb + j)).collect();
        let l = model.losses(
            &Batch::from_samples(&samples, device, cfg.train.document_mask)?,
            Pass::Eval,
        )?;
        sum += l.lm.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(sum / cfg.train.eval_batches as f64)
}

/// Steps skipped for a non-finite gradient norm.
#[derive(Debug, Clone, Copy, Default)]
struct Skips {
    total: u64,
    consecutive: u64,
}

/// The change of each expert's routing bias after a step, from the tokens routed to each (`load`):
/// DeepSeek-V3's `γ · sign(mean load − load)`, with sign(0) = 0, so that an expert at exactly the mean
/// load keeps its bias. Compared in integers (load · experts against the total): exact.
fn bias_update(load: &[usize], gamma: f64) -> Vec<f32> {
    let total: usize = load.iter().sum();
    load.iter()
        .map(|&l| match total.cmp(&(l * load.len())) {
            std::cmp::Ordering::Greater => gamma as f32,
            std::cmp::Ordering::Less => -gamma as f32,
            std::cmp::Ordering::Equal => 0.0,
        })
        .collect()
}

/// Trains `cfg` on `data` into `out`, resuming from its latest checkpoint; `steps` overrides the
/// config's. Returns the last step's metrics.
///
/// `steps` sets the horizon of the cosine schedule (as Megatron's `--train-iters` does) and how many
/// samples are built, not their order: a run resumed with another `steps` reads the same batches as an
/// uninterrupted one (its learning rates follow the new horizon from there on).
///
/// A step whose gradient norm is not finite is skipped as Megatron skips it: the iteration still
/// advances (its batches are consumed, the step is logged with `"skipped": true`, and the schedule moves
/// on: the next step's learning rate is the one of its number), but the weights, AdamW's moments and
/// update count, and the routing biases are left as they were. `max_consecutive_skipped_steps` in a row
/// stop the run with an error.
pub fn train(
    cfg: &Config,
    data: &[(f64, PathBuf)],
    out: &Path,
    steps: Option<u64>,
    device: &Device,
) -> Result<serde_json::Value> {
    cfg.validate()?;
    let t = &cfg.train;
    let steps = steps.unwrap_or(t.steps);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let vars = VarMap::new();
    let dtype = t.precision.dtype();
    let model = DeepSeek::new(
        &cfg.model,
        dtype,
        device,
        VarBuilder::from_varmap(&vars, dtype, device),
    )?;
    let resume = latest_checkpoint(out)?;
    match &resume {
        Some((_, dir)) => {
            checkpoint::load_weights(dir, &vars, device)?;
        }
        None => init_weights(&vars, cfg.model.initializer_range, t.seed)?,
    }
    // After the weights: the optimizer keeps f32 copies of half-precision ones.
    let mut opt = AdamW::new(&vars, t.beta1, t.beta2, 1e-8, t.weight_decay)?;
    let (start, mut skips) = match resume {
        Some((step, dir)) => {
            let path = dir.join("trainer_state.json");
            let trainer: TrainerState = serde_json::from_str(
                &std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("parsing {}", path.display()))?;
            let state = candle_core::safetensors::load(dir.join("optimizer.safetensors"), device)?;
            // AdamW counts its updates (its bias correction), and skipped steps made none.
            opt.restore(&state, step.saturating_sub(trainer.skipped_steps))?;
            tracing::info!("resuming at step {step} from {}", dir.display());
            let skips = Skips {
                total: trainer.skipped_steps,
                consecutive: trainer.consecutive_skipped_steps,
            };
            (step, skips)
        }
        None => (0, Skips::default()),
    };
    let per_step = t.micro_batch * t.grad_accum;
    // Enough samples for `steps`; their order does not depend on how many (see `data`).
    let (train_set, valid_set) = blends(cfg, data, steps as usize * per_step)?;
    let metrics_path = out.join("metrics.jsonl");
    // A resumed run drops what the killed one logged past its checkpoint.
    truncate_metrics(&metrics_path, start)?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)?;
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_position(start);
    let mut last = serde_json::Value::Null;
    for step in start..steps {
        let started = Instant::now();
        let lr = learning_rate(step, t.warmup_steps, steps, t.lr, t.min_lr);
        let mut grads: Option<GradStore> = None;
        let (mut lm, mut mtp, mut balance, mut total) = (0.0, 0.0, 0.0, 0.0);
        let mut loads: Vec<Vec<usize>> = Vec::new();
        for micro in 0..t.grad_accum {
            let first = (step as usize * t.grad_accum + micro) * t.micro_batch;
            let samples: Vec<Sample> = (0..t.micro_batch)
                .map(|j| train_set.get(first + j))
                .collect();
            let l = model.losses(
                &Batch::from_samples(&samples, device, t.document_mask)?,
                Pass::Train,
            )?;
            let mut loss = l.lm.clone();
            for m in &l.mtp {
                loss = (loss + (m * (t.mtp_weight / l.mtp.len() as f64))?)?;
            }
            loss = (loss + (&l.balance * t.balance_alpha)?)?;
            let scaled = (&loss / t.grad_accum as f64)?;
            let g = scaled.backward()?;
            grads = Some(match grads {
                None => g,
                Some(mut acc) => {
                    for (_, var) in vars.data().lock().expect("varmap lock").iter() {
                        if let Some(new) = g.get(var.as_tensor()) {
                            let sum = match acc.get(var.as_tensor()) {
                                Some(old) => (old + new)?,
                                None => new.clone(),
                            };
                            acc.insert(var.as_tensor(), sum);
                        }
                    }
                    acc
                }
            });
            let scalar =
                |x: &Tensor| -> Result<f64> { Ok(x.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
            let k = t.grad_accum as f64;
            lm += scalar(&l.lm)? / k;
            mtp += l.mtp.iter().map(scalar).sum::<Result<f64>>()? / k;
            balance += scalar(&l.balance)? / k;
            total += scalar(&loss)? / k;
            if loads.is_empty() {
                loads = l.loads.clone();
            } else {
                for (a, b) in loads.iter_mut().zip(&l.loads) {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                }
            }
        }
        let grads = grads.expect("at least one micro-batch");
        let norm = opt.grad_norm(&grads)?;
        // An inf or a NaN in any gradient: skip the step (see above), else update.
        let skipped = !norm.is_finite();
        if skipped {
            skips.total += 1;
            skips.consecutive += 1;
            tracing::warn!(
                "step {}: gradient norm {norm}, step skipped ({} in a row)",
                step + 1,
                skips.consecutive
            );
        } else {
            skips.consecutive = 0;
            opt.update(&grads, lr, clip_scale(norm, t.clip))?;
        }
        drop(grads);
        // Auxiliary-loss-free balancing: each expert's bias moves by γ towards the mean load (not on
        // a skipped step).
        let moes = model
            .layers
            .iter()
            .filter_map(|b| match &b.ffn {
                Ffn::Moe(m) => Some(m),
                Ffn::Dense(_) => None,
            })
            .chain(model.mtp_moes());
        let mut imbalance = Vec::new();
        for (moe, load) in moes.zip(&loads) {
            let mean = load.iter().sum::<usize>() as f64 / load.len() as f64;
            let max = *load.iter().max().unwrap_or(&0) as f64;
            imbalance.push(if mean > 0.0 { max / mean } else { 0.0 });
            if skipped {
                continue;
            }
            let delta = bias_update(load, t.bias_update_speed);
            let delta = Tensor::from_vec(delta, load.len(), device)?.to_dtype(moe.bias.dtype())?;
            moe.bias.set(&(moe.bias.as_tensor() + delta)?)?;
        }
        let done = step + 1;
        let tokens = (per_step * t.seq_len) as f64;
        let mut record = serde_json::json!({
            "step": done, "loss": total, "lm_loss": lm, "mtp_loss": mtp, "balance_loss": balance,
            "expert_load_max_over_mean": imbalance, "grad_norm": norm, "lr": lr,
            "tokens_per_s": tokens / started.elapsed().as_secs_f64(),
            "skipped": skipped, "skipped_steps": skips.total,
        });
        let stop = skips.consecutive >= t.max_consecutive_skipped_steps;
        // Every `every` steps and at the last; 0: never.
        let due = |every: u64| every > 0 && (done.is_multiple_of(every) || done == steps);
        if !stop && due(t.eval_every) {
            let valid = valid_set
                .as_ref()
                .expect("eval_every > 0 builds a validation blend");
            record["valid_loss"] = serde_json::json!(validate(&model, valid, cfg, device)?);
        }
        writeln!(metrics, "{record}")?;
        metrics.flush()?;
        if stop {
            bar.abandon();
            bail!(
                "{} steps in a row (to step {done}) had a non-finite gradient norm and were \
                 skipped (train.max_consecutive_skipped_steps: {}): the run has diverged or its \
                 data is bad; the last checkpoint holds the weights from before",
                skips.consecutive,
                t.max_consecutive_skipped_steps
            );
        }
        if due(t.checkpoint_every) || done == steps {
            save_checkpoint(out, done, cfg, &vars, &opt, skips)?;
        }
        bar.set_position(done);
        bar.set_message(format!("loss {total:.4}"));
        last = record;
    }
    bar.finish();
    Ok(last)
}

fn save_checkpoint(
    out: &Path,
    step: u64,
    cfg: &Config,
    vars: &VarMap,
    opt: &AdamW,
    skips: Skips,
) -> Result<()> {
    let dir = out.join(format!("step-{step:06}"));
    let tmp = out.join(format!(".step-{step:06}.partial"));
    checkpoint::save(&tmp, &cfg.model, vars)?;
    let state: HashMap<String, Tensor> = opt.state();
    candle_core::safetensors::save(&state, tmp.join("optimizer.safetensors"))?;
    // What `eval` defaults to (sequence length, document masks), and a record of the run.
    std::fs::write(
        tmp.join("training.json"),
        serde_json::to_string_pretty(cfg)?,
    )?;
    std::fs::write(
        tmp.join("trainer_state.json"),
        serde_json::to_string(&TrainerState {
            step,
            skipped_steps: skips.total,
            consecutive_skipped_steps: skips.consecutive,
        })?,
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    Ok(())
}

/// Keeps the lines of `metrics.jsonl` up to step `step`.
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openseek_shards::{DType as ShardType, ShardWriter};

    fn config(vocab: usize) -> Config {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml"),
        )
        .unwrap();
        let mut c: Config = serde_norway::from_str(&text).unwrap();
        c.model.vocab_size = vocab;
        c.train.seq_len = 16;
        c.train.micro_batch = 2;
        c.train.grad_accum = 2;
        c.train.warmup_steps = 2;
        c.train.eval_every = 3;
        c.train.eval_batches = 2;
        c.train.checkpoint_every = 3;
        c.train.valid_fraction = 0.1;
        c
    }

    /// A shard of 60 documents of a small made-up language: each document counts up from its start by a
    /// stride, modulo the vocabulary, so the next token is learnable.
    fn shard(dir: &Path, vocab: u32) -> PathBuf {
        shard_of(dir, vocab, 60)
    }

    /// The same with `docs` documents (document d holds 20 + d % 17 tokens).
    fn shard_of(dir: &Path, vocab: u32, docs: u32) -> PathBuf {
        let prefix = dir.join("toy");
        let mut w = ShardWriter::create(&prefix, ShardType::I32).unwrap();
        for d in 0..docs {
            let stride = 1 + d % 3;
            let doc: Vec<u32> = (0..20 + d % 17)
                .map(|i| (d * 7 + i * stride) % vocab)
                .collect();
            w.add_document(&doc).unwrap();
        }
        w.finish(&Default::default()).unwrap();
        prefix
    }

    /// Six steps at once, and three then three more after a restart: the same metrics, step by step,
    /// and the loss falls.
    #[test]
    fn a_resumed_run_continues_the_same_curve() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir()?;
        let cfg = config(64);
        let data = vec![(1.0, shard(dir.path(), 64))];
        let whole = dir.path().join("whole");
        train(&cfg, &data, &whole, Some(6), &dev)?;
        let split = dir.path().join("split");
        train(&cfg, &data, &split, Some(3), &dev)?;
        assert!(split.join("step-000003/model.safetensors").exists());
        train(&cfg, &data, &split, Some(6), &dev)?;
        let read = |d: &Path| -> Vec<serde_json::Value> {
            std::fs::read_to_string(d.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let (a, b) = (read(&whole), read(&split));
        assert_eq!(a.len(), 6);
        assert_eq!(b.len(), 6);
        for (x, y) in a.iter().zip(&b) {
            for key in [
                "step",
                "loss",
                "lm_loss",
                "mtp_loss",
                "grad_norm",
                "lr",
                "expert_load_max_over_mean",
            ] {
                assert_eq!(x[key], y[key], "{key} at step {}", x["step"]);
            }
        }
        // Resuming a finished run does nothing more.
        train(&cfg, &data, &split, Some(6), &dev)?;
        assert_eq!(read(&split).len(), 6);
        let first = a[0]["lm_loss"].as_f64().unwrap();
        let last = a[5]["lm_loss"].as_f64().unwrap();
        assert!(last < first, "{first} -> {last}");
        Ok(())
    }

    /// bf16 (f32 main weights in the optimizer): the loss follows the f32 run's closely, and a resumed
    /// run still repeats the uninterrupted one exactly.
    #[test]
    fn bf16_follows_f32_and_resumes_exactly() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir()?;
        let mut cfg = config(64);
        let data = vec![(1.0, shard(dir.path(), 64))];
        let f32_run = dir.path().join("f32");
        train(&cfg, &data, &f32_run, Some(6), &dev)?;
        cfg.train.precision = Precision::Bf16;
        let whole = dir.path().join("bf16");
        train(&cfg, &data, &whole, Some(6), &dev)?;
        let split = dir.path().join("bf16-split");
        train(&cfg, &data, &split, Some(3), &dev)?;
        train(&cfg, &data, &split, Some(6), &dev)?;
        let losses = |d: &Path| -> Vec<f64> {
            std::fs::read_to_string(d.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["lm_loss"]
                        .as_f64()
                        .unwrap()
                })
                .collect()
        };
        let (a, b, c) = (losses(&f32_run), losses(&whole), losses(&split));
        assert_eq!(b, c);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 0.02 * x, "f32 {x} against bf16 {y}");
        }
        assert!(b[5] < b[0], "{b:?}");
        Ok(())
    }

    /// The lines of `metrics.jsonl` under `d`.
    fn metrics_of(d: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every tensor of a safetensors file, as the bits of its f32 values (NaNs compare equal).
    fn bits(path: &Path) -> Result<HashMap<String, Vec<u32>>> {
        candle_core::safetensors::load(path, &Device::Cpu)?
            .into_iter()
            .map(|(name, t)| -> Result<(String, Vec<u32>)> {
                let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                Ok((name, v.into_iter().map(f32::to_bits).collect()))
            })
            .collect()
    }

    /// `eval_every: 0` never validates (it divided by zero); checkpoints go on.
    #[test]
    fn eval_every_zero_means_never() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir()?;
        let mut cfg = config(64);
        cfg.train.eval_every = 0;
        // Nothing held out: without validation none is needed.
        cfg.train.valid_fraction = 0.0;
        let data = vec![(1.0, shard(dir.path(), 64))];
        let out = dir.path().join("run");
        train(&cfg, &data, &out, Some(4), &dev)?;
        let m = metrics_of(&out);
        assert_eq!(m.len(), 4);
        assert!(m.iter().all(|x| x.get("valid_loss").is_none()), "{m:?}");
        assert!(out.join("step-000003/model.safetensors").exists());
        assert!(out.join("step-000004/model.safetensors").exists());
        Ok(())
    }

    /// `checkpoint_every: 0` writes no periodic checkpoint (it divided by zero), only the last, which
    /// holds the trained weights; validation goes on.
    #[test]
    fn checkpoint_every_zero_means_never() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir()?;
        let mut cfg = config(64);
        cfg.train.checkpoint_every = 0;
        let data = vec![(1.0, shard(dir.path(), 64))];
        let out = dir.path().join("run");
        train(&cfg, &data, &out, Some(4), &dev)?;
        assert_eq!(latest_checkpoint(&out)?.map(|(s, _)| s), Some(4));
        let mut steps: Vec<String> = Vec::new();
        for e in std::fs::read_dir(&out)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if name.contains("step-") {
                steps.push(name);
            }
        }
        assert_eq!(steps, vec!["step-000004"], "only the last");
        let m = metrics_of(&out);
        assert_eq!(m.len(), 4);
        let validated: Vec<u64> = m
            .iter()
            .filter(|x| x["valid_loss"].as_f64().is_some_and(f64::is_finite))
            .map(|x| x["step"].as_u64().unwrap())
            .collect();
        assert_eq!(validated, vec![3, 4]);
        Ok(())
    }

    /// `eval_batches: 0` is refused by name (the validation loss was 0/0, a NaN), in code and from a
    /// file; so is `max_consecutive_skipped_steps: 0`.
    #[test]
    fn eval_batches_zero_is_refused() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir()?;
        let mut cfg = config(64);
        cfg.train.eval_batches = 0;
        let data = vec![(1.0, shard(dir.path(), 64))];
        let out = dir.path().join("run");
        let e = train(&cfg, &data, &out, Some(1), &dev).unwrap_err();
        assert!(e.to_string().contains("eval_batches"), "{e}");
        assert!(!out.join("metrics.jsonl").exists());
        let yaml = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml"),
        )?;
        assert!(yaml.contains("eval_batches: 8"));
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, yaml.replace("eval_batches: 8", "eval_batches: 0"))?;
        let e = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(e.contains("bad.yaml") && e.contains("eval_batches"), "{e}");
        let mut cfg = config(64);
        cfg.validate()?;
        cfg.train.max_consecutive_skipped_steps = 0;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("max_consecutive_skipped_steps"), "{e}");
        Ok(())
    }

    /// γ · sign(mean − load) with sign(0) = 0: an expert at exactly the mean load keeps its bias
    /// (`signum` gave it +γ).
    #[test]
    fn bias_update_at_the_mean_load_is_zero() {
        assert_eq!(bias_update(&[2, 2, 2, 2], 0.001), vec![0.0; 4]);
        assert_eq!(bias_update(&[1, 2, 3], 0.5), vec![0.5, 0.0, -0.5]);
        assert_eq!(bias_update(&[3, 0], 0.25), vec![-0.25, 0.25]);
        assert_eq!(bias_update(&[0, 0, 0], 0.1), vec![0.0; 3]);
        // A mean that is not a whole number: nobody is at it.
        assert_eq!(bias_update(&[1, 2], 0.5), vec![0.5, -0.5]);
    }

    /// Every token routed to every expert: all loads are the mean, and the biases stay zero through
    /// training (they all rose by γ a step).
    #[test]
    fn experts_at_the_mean_load_keep_their_bias() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir()?;
        let mut cfg = config(64);
        cfg.model.num_experts_per_tok = cfg.model.n_routed_experts;
        cfg.model.topk_group = cfg.model.n_group;
        let data = vec![(1.0, shard(dir.path(), 64))];
        let out = dir.path().join("run");
        let last = train(&cfg, &data, &out, Some(2), &dev)?;
        let imbalance = last["expert_load_max_over_mean"].as_array().unwrap();
        assert!(
            !imbalance.is_empty() && imbalance.iter().all(|x| x.as_f64() == Some(1.0)),
            "{last}"
        );
        let weights =
            candle_core::safetensors::load(out.join("step-000002/model.safetensors"), &dev)?;
        let mut biases = 0;
        for (name, t) in &weights {
            if name.ends_with("e_score_correction_bias") {
                assert_eq!(t.to_vec1::<f32>()?, vec![0.0; t.elem_count()], "{name}");
                biases += 1;
            }
        }
        // The MoE layer's and the MTP module's.
        assert_eq!(biases, 2);
        Ok(())
    }

    /// A NaN gradient norm (here from a NaN final norm weight put into the step-3 checkpoint) skips the
    /// step: nothing is updated, the step is logged as skipped and counted, the count survives a resume,
    /// and `max_consecutive_skipped_steps` in a row stop the run with an error naming the key. Before,
    /// the NaN went into the weights and the moments and the run went on.
    #[test]
    fn non_finite_grad_norm_skips_the_step() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir()?;
        let mut cfg = config(64);
        let data = vec![(1.0, shard(dir.path(), 64))];
        let out = dir.path().join("run");
        train(&cfg, &data, &out, Some(3), &dev)?;
        let ckpt = out.join("step-000003");
        let mut weights = candle_core::safetensors::load(ckpt.join("model.safetensors"), &dev)?;
        let good = weights["model.norm.weight"].clone();
        weights.insert("model.norm.weight".into(), (&good * f64::NAN)?);
        candle_core::safetensors::save(&weights, ckpt.join("model.safetensors"))?;

        cfg.train.checkpoint_every = 1;
        cfg.train.max_consecutive_skipped_steps = 3;
        let e = format!("{:#}", train(&cfg, &data, &out, Some(8), &dev).unwrap_err());
        assert!(
            e.contains("3 steps in a row") && e.contains("max_consecutive_skipped_steps"),
            "{e}"
        );
        let m = metrics_of(&out);
        assert_eq!(m.len(), 6);
        for x in &m[..3] {
            assert_eq!(x["skipped"], false);
            assert_eq!(x["skipped_steps"], 0);
        }
        for (k, x) in m[3..].iter().enumerate() {
            assert_eq!(x["skipped"], true, "{x}");
            assert_eq!(x["skipped_steps"], k as u64 + 1, "{x}");
            // A NaN is written as null.
            assert!(x["grad_norm"].is_null(), "{x}");
        }
        // Steps 4 and 5 were checkpointed, 6 stopped the run first: weights, routing biases and moments
        // are those of step 3.
        assert!(!out.join("step-000006").exists());
        let five = out.join("step-000005");
        for f in ["model.safetensors", "optimizer.safetensors"] {
            assert_eq!(bits(&ckpt.join(f))?, bits(&five.join(f))?, "{f}");
        }
        let state: TrainerState =
            serde_json::from_str(&std::fs::read_to_string(five.join("trainer_state.json"))?)?;
        assert_eq!(
            (
                state.step,
                state.skipped_steps,
                state.consecutive_skipped_steps
            ),
            (5, 2, 2)
        );

        // Mended, step 5 resumes: updates again, the two skipped steps still counted.
        weights.insert("model.norm.weight".into(), good);
        candle_core::safetensors::save(&weights, five.join("model.safetensors"))?;
        train(&cfg, &data, &out, Some(7), &dev)?;
        let m = metrics_of(&out);
        assert_eq!(m.len(), 7);
        for x in &m[5..] {
            assert_eq!(x["skipped"], false, "{x}");
            assert_eq!(x["skipped_steps"], 2, "{x}");
            assert!(x["grad_norm"].as_f64().is_some_and(f64::is_finite), "{x}");
        }
        assert_ne!(
            bits(&five.join("model.safetensors"))?,
            bits(&out.join("step-000006/model.safetensors"))?
        );
        Ok(())
    }

    /// The data order depends on the seed and the data only, not on `--steps`: the first batches of a
    /// set built for 3 steps are those of one built for 6 or 50, and a run of 3 steps resumed with
    /// `--steps 6` repeats an uninterrupted run of 6 step by step. The shard is small (11 training
    /// documents, 17 samples an epoch) so that 3 steps of 4 samples stay within the first epoch and 6
    /// do not: the shuffle of all the samples built then changed with their number.
    #[test]
    fn resuming_with_more_steps_keeps_the_data_order() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir()?;
        let mut cfg = config(64);
        // A flat schedule: `steps` is the cosine's horizon by design; the data order is at stake here.
        cfg.train.min_lr = cfg.train.lr;
        let data = vec![(1.0, shard_of(dir.path(), 64, 12))];
        let per_step = cfg.train.micro_batch * cfg.train.grad_accum;
        let (short, _) = blends(&cfg, &data, 3 * per_step)?;
        for steps in [6, 50] {
            let (long, _) = blends(&cfg, &data, steps * per_step)?;
            for i in 0..3 * per_step {
                assert_eq!(short.get(i), long.get(i), "sample {i}, {steps} steps");
            }
        }
        let whole = dir.path().join("whole");
        train(&cfg, &data, &whole, Some(6), &dev)?;
        let split = dir.path().join("split");
        train(&cfg, &data, &split, Some(3), &dev)?;
        train(&cfg, &data, &split, Some(6), &dev)?;
        let (a, b) = (metrics_of(&whole), metrics_of(&split));
        assert_eq!(a.len(), 6);
        assert_eq!(b.len(), 6);
        for (x, y) in a.iter().zip(&b) {
            for key in [
                "step",
                "loss",
                "lm_loss",
                "mtp_loss",
                "grad_norm",
                "lr",
                "expert_load_max_over_mean",
                "valid_loss",
            ] {
                assert_eq!(x.get(key), y.get(key), "{key} at step {}", x["step"]);
            }
        }
        Ok(())
    }
}
