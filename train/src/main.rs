//! `openseek-train`: train a DeepSeek-V3-style MoE model on Megatron shards.
//!
//!   openseek-train train --config CFG --data [W,]PREFIX[,[W,]PREFIX…] --out DIR [--steps N]
//!   openseek-train eval --checkpoint CKPT --data PREFIX[,PREFIX…]
//!   openseek-train generate --checkpoint CKPT --tokenizer tokenizer.json --prompt TEXT --max-new-tokens N [--ids]

use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "openseek-train",
    version,
    about = "Train DeepSeek-V3-style MoE models on Megatron shards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train (or resume from the latest checkpoint under --out).
    Train {
        /// A YAML config with `model:` (Hugging Face's DeepSeek-V3 keys) and `train:`.
        #[arg(long)]
        config: PathBuf,
        /// Shard prefixes, comma-separated, each optionally preceded by its weight as FlagScale's
        /// data_path lists them: `0.7,shards/en,0.3,shards/zh` or `shards/en,shards/zh`.
        #[arg(long)]
        data: String,
        #[arg(long)]
        out: PathBuf,
        /// Overrides the config's number of steps.
        #[arg(long)]
        steps: Option<u64>,
    },
    /// Print the mean next-token loss of a checkpoint on shards (one number on stdout; per prefix on
    /// stderr).
    Eval {
        /// A checkpoint directory (config.json and safetensors): ours or any DeepSeek-V3 one.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Shard prefixes, comma-separated (weights, if given, are ignored: each prefix counts by its
        /// tokens).
        #[arg(long)]
        data: String,
        /// Tokens a window predicts; default: the training run's (training.json), else 2048.
        #[arg(long)]
        seq_len: Option<usize>,
        #[arg(long, default_value_t = 4)]
        micro_batch: usize,
        /// Tokens predicted per prefix at most (windows sampled across the whole shard).
        #[arg(long, default_value_t = 1 << 20)]
        max_tokens: usize,
        /// Attend across document boundaries (default: as the run trained, else within documents).
        #[arg(long)]
        no_document_mask: bool,
    },
    /// Continue a prompt greedily and print the text (or, with --ids, the new token ids).
    Generate {
        #[arg(long)]
        checkpoint: PathBuf,
        /// A Hugging Face tokenizer.json, or a directory holding one.
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long)]
        prompt: String,
        #[arg(long)]
        max_new_tokens: usize,
        /// Print the new token ids, space-separated, on one line, instead of the text.
        #[arg(long)]
        ids: bool,
        /// Stop early at this token id (e.g. the tokenizer's end of text).
        #[arg(long)]
        stop_at: Option<u32>,
    },
}

/// `W,P,W,P…` or `P,P…` into (weight, prefix) pairs.
fn parse_data(s: &str) -> Result<Vec<(f64, PathBuf)>> {
    let items: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .collect();
    if items.is_empty() {
        bail!("--data names no shard prefix");
    }
    if items[0].parse::<f64>().is_ok() {
        if !items.len().is_multiple_of(2) {
            bail!("--data: weights and prefixes must alternate");
        }
        items
            .chunks(2)
            .map(|p| {
                let w: f64 = p[0]
                    .parse()
                    .with_context(|| format!("--data: weight {}", p[0]))?;
                Ok((w, PathBuf::from(p[1])))
            })
            .collect()
    } else {
        Ok(items.iter().map(|p| (1.0, PathBuf::from(p))).collect())
    }
}

// mimalloc returns freed memory to the kernel `purge_delay` ms after it is freed (1 s by default). A
// training step frees and allocates again hundreds of MB of logits and gradients, and faulting them
// back in, zeroed by the kernel, was a third of the step. So never purge, unless the environment says
// otherwise: the process keeps the memory of its largest step.
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (v3, the one the mimalloc crate builds).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

fn main() -> std::process::ExitCode {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a global option before any thread starts.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "openseek_train=info,warn".into()),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The GPU when built with `--features cuda` (`OPENSEEK_DEVICE=cpu` keeps the CPU), else the CPU.
fn device() -> Result<candle_core::Device> {
    if cfg!(feature = "cuda") && std::env::var("OPENSEEK_DEVICE").as_deref() != Ok("cpu") {
        return candle_core::Device::new_cuda(0).context("opening CUDA device 0");
    }
    Ok(candle_core::Device::Cpu)
}

fn run(cli: Cli) -> Result<()> {
    let device = device()?;
    match cli.command {
        Command::Train {
            config,
            data,
            out,
            steps,
        } => {
            let cfg = openseek_train::train::Config::load(&config)?;
            let last =
                openseek_train::train::train(&cfg, &parse_data(&data)?, &out, steps, &device)?;
            println!("{last}");
            Ok(())
        }
        Command::Eval {
            checkpoint,
            data,
            seq_len,
            micro_batch,
            max_tokens,
            no_document_mask,
        } => {
            let (model, _vars) = openseek_train::checkpoint::load_model(&checkpoint, &device)?;
            let trained = std::fs::read_to_string(checkpoint.join("training.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<openseek_train::train::Config>(&t).ok());
            let options = openseek_train::infer::EvalOptions {
                seq_len: seq_len
                    .or(trained.as_ref().map(|c| c.train.seq_len))
                    .unwrap_or(2048)
                    .min(model.config.max_position_embeddings),
                micro_batch: micro_batch.max(1),
                max_tokens,
                document_mask: !no_document_mask
                    && trained.as_ref().is_none_or(|c| c.train.document_mask),
                seed: 0,
            };
            let prefixes: Vec<PathBuf> = parse_data(&data)?.into_iter().map(|(_, p)| p).collect();
            let results = openseek_train::infer::evaluate(&model, &prefixes, &options, &device)?;
            let (mut sum, mut tokens) = (0.0, 0usize);
            for r in &results {
                eprintln!(
                    "{}: loss {:.4} (perplexity {:.2}) over {} tokens, windows of {}",
                    r.prefix.display(),
                    r.loss,
                    r.loss.exp(),
                    r.tokens,
                    options.seq_len
                );
                sum += r.loss * r.tokens as f64;
                tokens += r.tokens;
            }
            println!("{:.6}", sum / tokens as f64);
            Ok(())
        }
        Command::Generate {
            checkpoint,
            tokenizer,
            prompt,
            max_new_tokens,
            ids,
            stop_at,
        } => {
            let tok = openseek_train::infer::tokenizer(&tokenizer)?;
            let (model, _vars) = openseek_train::checkpoint::load_model(&checkpoint, &device)?;
            let encoded = tok
                .encode(prompt.as_str(), true)
                .map_err(|e| anyhow::anyhow!("encoding the prompt: {e}"))?;
            let vocab = model.config.vocab_size as u32;
            if let Some(&bad) = encoded.get_ids().iter().find(|&&t| t >= vocab) {
                bail!("the tokenizer gives id {bad}, outside the model's vocabulary of {vocab}");
            }
            let new = openseek_train::infer::generate(
                &model,
                encoded.get_ids(),
                max_new_tokens,
                stop_at,
                &device,
            )?;
            if ids {
                let line: Vec<String> = new.iter().map(u32::to_string).collect();
                println!("{}", line.join(" "));
            } else {
                let text = tok
                    .decode(&new, false)
                    .map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
                println!("{prompt}{text}");
            }
            Ok(())
        }
    }
}
