//! The `openseek` command line. It lives in the library so that the binary is only `main`: a cold build
//! then compiles the engine's async code once, not a second time for the binary.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::catalog::Catalog;
use crate::context::Engine;
use crate::io::malformed::RejectLog;
use crate::pipeline::{RunOptions, run_pipeline};
use crate::sql::{SqlFormat, check_absent, functions, run_sql};

#[derive(Parser)]
#[command(
    name = "openseek",
    version,
    about = "Open data engine for LLM pre-training, on Apache DataFusion"
)]
struct Cli {
    /// Threads (DataFusion partitions); default: all cores.
    #[arg(long, global = true)]
    partitions: Option<usize>,
    /// The dataset catalog (default: $OPENSEEK_CATALOG or ./datasets.yaml).
    #[arg(long, global = true)]
    catalog: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline (YAML or JSON).
    Run {
        pipeline: PathBuf,
        /// Output directory (overrides the pipeline's `output.path`).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Replace whatever the output directory holds instead of resuming.
        #[arg(long)]
        fresh: bool,
        /// Input MB (on disk) per task: the unit of restart and of output parts.
        #[arg(long, default_value_t = 256)]
        task_mb: u64,
    },
    /// Query the datasets of the catalog with SQL; every OpenSeek function is available.
    Sql {
        query: String,
        #[arg(long, value_enum, default_value = "table")]
        format: SqlFormat,
        /// Write the result to a file instead of stdout (required for parquet).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the OpenSeek SQL functions with a line of documentation each.
    Functions,
    /// The dataset catalog.
    Datasets {
        #[command(subcommand)]
        command: DatasetsCommand,
    },
    /// Tokenize a corpus into Megatron shards (a pipeline of one `tokenize` stage).
    Tokenize {
        /// Input files or directories (Parquet or JSONL), or use --dataset.
        #[arg(long, conflicts_with = "dataset")]
        input: Option<String>,
        /// Datasets of the catalog (repeatable): one set of prefixes each.
        #[arg(long)]
        dataset: Vec<String>,
        /// A tokenizer.json, a directory holding one, or a bundled name (qwen3, gpt2).
        #[arg(long)]
        tokenizer: String,
        /// How each document is framed, e.g. "{text}<|endoftext|>".
        #[arg(long, default_value = "{text}")]
        template: String,
        /// The directory that receives PREFIX.bin/.idx/.json.
        #[arg(long)]
        output: PathBuf,
        /// One set of prefixes per value of this column.
        #[arg(long, default_value = "dataset")]
        by: String,
        /// Token type (u16 or i32); default as Megatron chooses from the vocabulary size.
        #[arg(long)]
        dtype: Option<String>,
        /// Start a new prefix when a .bin reaches this many MB.
        #[arg(long)]
        max_shard_mb: Option<u64>,
    },
    /// Inspect, verify and blend token shards.
    Shards {
        #[command(subcommand)]
        command: ShardsCommand,
    },
}

#[derive(Subcommand)]
enum ShardsCommand {
    /// Counts, sequence lengths, and sample documents decoded back to text.
    Inspect {
        prefix: PathBuf,
        /// Decode with this tokenizer (default: the one named in the prefix's sidecar).
        #[arg(long)]
        tokenizer: Option<String>,
        /// Documents to decode.
        #[arg(long, default_value_t = 3)]
        samples: usize,
    },
    /// Check prefixes (or every prefix of directories): index against files, sidecar, token range.
    Verify {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// FlagScale's data_path [weight, prefix, ...] for prefixes (or directories of them).
    Blend {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Weights per group (dataset), e.g. cc-en=0.7,cc-zh=0.3; default: the catalog's `weight`
        /// of each dataset, else each group's tokens.
        #[arg(long)]
        weights: Option<String>,
        /// Show the tokens and epochs each weight implies for a run of this many tokens.
        #[arg(long)]
        train_tokens: Option<f64>,
        /// Write the data_path as YAML here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DatasetsCommand {
    /// Every dataset of datasets.yaml, and whether its files are here.
    List,
}

fn shards_command(command: ShardsCommand, catalog_path: &std::path::Path) -> Result<()> {
    match command {
        ShardsCommand::Inspect {
            prefix,
            tokenizer,
            samples,
        } => {
            let prefix = crate::shards::expand_prefixes(&[prefix])?;
            for p in prefix {
                print!(
                    "{}",
                    crate::shards::inspect(&p, tokenizer.as_deref(), samples)?
                );
            }
        }
        ShardsCommand::Verify { paths } => {
            let prefixes = crate::shards::expand_prefixes(&paths)?;
            let (table, ok) = crate::shards::verify(&prefixes)?;
            println!("{table}");
            if !ok {
                anyhow::bail!("some prefixes failed verification (see the table)");
            }
        }
        ShardsCommand::Blend {
            paths,
            weights,
            train_tokens,
            out,
        } => {
            let prefixes = crate::shards::expand_prefixes(&paths)?;
            let mut w = std::collections::BTreeMap::new();
            if let Some(spec) = weights {
                for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
                    let (k, v) = part
                        .split_once('=')
                        .with_context(|| format!("weight '{part}': write GROUP=WEIGHT"))?;
                    let v: f64 = v
                        .trim()
                        .parse()
                        .with_context(|| format!("weight '{part}': not a number"))?;
                    w.insert(k.trim().to_string(), v);
                }
            } else if catalog_path.exists() {
                let catalog = Catalog::load(catalog_path)?;
                let groups: std::collections::BTreeSet<String> = prefixes
                    .iter()
                    .filter_map(|p| {
                        openseek_shards::Sidecar::read(&openseek_shards::json_path(p))
                            .ok()?
                            .group
                    })
                    .collect();
                let weighted: std::collections::BTreeMap<String, f64> = groups
                    .iter()
                    .filter_map(|g| Some((g.clone(), catalog.datasets.get(g)?.weight?)))
                    .collect();
                // The catalog's weights apply only when every group has one.
                if weighted.len() == groups.len() && !groups.is_empty() {
                    w = weighted;
                }
            }
            let entries = crate::shards::blend(&prefixes, &w)?;
            println!(
                "{}",
                crate::shards::blend_table(&entries, train_tokens.map(|t| t as u64))
            );
            println!("{}", crate::shards::megatron_args(&entries));
            let yaml = crate::shards::blend_yaml(&entries);
            match out {
                Some(path) => {
                    std::fs::write(&path, yaml)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("written: {}", path.display());
                }
                None => print!("{yaml}"),
            }
        }
    }
    Ok(())
}

/// Runs the command line; the process's exit status.
pub fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "openseek=info,warn".into()),
        )
        .init();
    match runtime.block_on(real_main()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let catalog_path = cli.catalog.clone().unwrap_or_else(Catalog::default_path);
    match cli.command {
        Command::Run {
            pipeline,
            output,
            fresh,
            task_mb,
        } => {
            let engine = Engine::new(cli.partitions);
            let opts = RunOptions {
                output,
                fresh,
                catalog: Some(catalog_path),
                task_bytes: task_mb.max(1) << 20,
                ..Default::default()
            };
            run_pipeline(&engine, &pipeline, &opts).await?;
        }
        Command::Sql { query, format, out } => {
            let engine = Engine::new(cli.partitions);
            let log = Arc::new(RejectLog::default());
            let absent = if catalog_path.exists() {
                let catalog = Catalog::load(&catalog_path)?;
                engine.register_catalog(&catalog, log.clone())?
            } else {
                Vec::new()
            };
            check_absent(&query, &absent)?;
            let rows = run_sql(&engine, &query, format, out.as_deref()).await?;
            if log.count() > 0 {
                eprintln!(
                    "note: {} malformed input row(s) were skipped (see the warnings above)",
                    log.count()
                );
            }
            tracing::debug!("{rows} rows");
        }
        Command::Functions => {
            let engine = Engine::new(Some(1));
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(vec!["function", "syntax", "what it computes"]);
            for (name, syntax, desc) in functions(&engine) {
                t.add_row(vec![name, syntax, desc]);
            }
            println!("{t}");
        }
        Command::Tokenize {
            input,
            dataset,
            tokenizer,
            template,
            output,
            by,
            dtype,
            max_shard_mb,
        } => {
            let engine = Engine::new(cli.partitions);
            let pipeline = crate::pipeline::tokenize_pipeline(
                input.as_deref(),
                &dataset,
                &tokenizer,
                &template,
                &output,
                &by,
                dtype.as_deref(),
                max_shard_mb,
            )?;
            let opts = RunOptions {
                output: Some(output.join("_run")),
                catalog: Some(catalog_path),
                ..Default::default()
            };
            run_pipeline(&engine, &pipeline, &opts).await?;
        }
        Command::Shards { command } => shards_command(command, &catalog_path)?,
        Command::Datasets {
            command: DatasetsCommand::List,
        } => {
            let catalog = Catalog::load(&catalog_path)?;
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(vec![
                "dataset", "table", "lang", "format", "present", "files", "MB", "path",
            ]);
            for p in catalog.presence()? {
                t.add_row(vec![
                    p.name,
                    p.table,
                    p.language,
                    format!("{:?}", p.format).to_lowercase(),
                    if p.files > 0 {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                    p.files.to_string(),
                    format!("{:.1}", p.bytes as f64 / 1e6),
                    p.glob,
                ]);
            }
            println!("{t}");
            println!(
                "data root: {} (set OPENSEEK_DATA_DIR to change it)",
                catalog.data_root.display()
            );
        }
    }
    Ok(())
}
