//! The `openseek` command line. It lives in the library so that the binary is only `main`: a cold build
//! then compiles the engine's async code once, not a second time for the binary.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
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
}

#[derive(Subcommand)]
enum DatasetsCommand {
    /// Every dataset of datasets.yaml, and whether its files are here.
    List,
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
