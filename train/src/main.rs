//! `openseek-train`: train a DeepSeek-V3-style MoE model on Megatron shards.
//!
//!   openseek-train train --config CFG --data [W,]PREFIX[,[W,]PREFIX…] --out DIR [--steps N]

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

fn run(cli: Cli) -> Result<()> {
    let device = candle_core::Device::Cpu;
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
    }
}
