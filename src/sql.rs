//! `openseek sql`: a query over every dataset of the catalog, printed or written in a chosen format.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use clap::ValueEnum;
use futures::StreamExt;

use crate::context::Engine;
use crate::io::writer::{OutFormat, PartWriter};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SqlFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

/// Runs `query` and writes the result to `out` (stdout when `None`).
pub async fn run_sql(
    engine: &Engine,
    query: &str,
    format: SqlFormat,
    out: Option<&Path>,
) -> Result<u64> {
    let df = engine
        .ctx
        .sql(query)
        .await
        .with_context(|| format!("planning: {query}"))?;
    let schema = df.schema().as_arrow().clone();
    let mut stream = df.execute_stream().await?;
    let mut rows = 0u64;
    match format {
        SqlFormat::Parquet => {
            let out = out.context("--format parquet needs --out FILE")?;
            let mut w = PartWriter::create(out, OutFormat::Parquet, &std::sync::Arc::new(schema))?;
            while let Some(b) = stream.next().await {
                let b = b?;
                rows += b.num_rows() as u64;
                w.write(&b)?;
            }
            w.finish()?;
        }
        SqlFormat::Table => {
            // A table needs every row to size its columns.
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(b) = stream.next().await {
                let b = b?;
                rows += b.num_rows() as u64;
                batches.push(b);
            }
            let text = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
            write_text(out, text.as_bytes())?;
        }
        SqlFormat::Csv | SqlFormat::Json => {
            let mut buf: Box<dyn Write> = match out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            if format == SqlFormat::Csv {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                while let Some(b) = stream.next().await {
                    let b = b?;
                    rows += b.num_rows() as u64;
                    w.write(&b)?;
                }
            } else {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
                while let Some(b) = stream.next().await {
                    let b = b?;
                    rows += b.num_rows() as u64;
                    w.write(&b)?;
                }
                w.finish()?;
            }
            buf.flush()?;
        }
    }
    Ok(rows)
}

fn write_text(out: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match out {
        Some(p) => std::fs::write(p, bytes).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(bytes)?;
            o.write_all(b"\n")?;
            Ok(())
        }
    }
}

/// One line per OpenSeek function: name, syntax and what it computes.
pub fn functions(engine: &Engine) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for udf in openseek_udfs::all_udfs(&engine.lexicons) {
        let doc = udf.documentation();
        let syntax = doc.map(|d| d.syntax_example.clone()).unwrap_or_default();
        let desc = doc.map(|d| d.description.clone()).unwrap_or_default();
        out.push((udf.name().to_string(), syntax, desc));
    }
    out
}

/// Fails early with a clear message for a query over a dataset that has no files here.
pub fn check_absent(query: &str, absent: &[String]) -> Result<()> {
    let q = query.to_ascii_lowercase();
    for name in absent {
        let table = crate::catalog::Catalog::table_name(name);
        if q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| w == table)
        {
            bail!(
                "dataset '{name}' (table {table}) has no files on this machine; `openseek datasets list` shows where it is expected"
            );
        }
    }
    Ok(())
}
