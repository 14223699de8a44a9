//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::DataType;
use openseek::report::Report;

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared corpus (`OPENSEEK_CORPUS`, default `../shared/corpus`), or `None` after one `SKIPPED`
/// line; in CI its absence fails the test (`openseek_testkit`).
pub fn corpus(test: &str) -> Option<PathBuf> {
    openseek_testkit::corpus(test)
}

/// Runs the `openseek` binary from the project root; returns (success, stdout, stderr).
pub fn openseek(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_openseek"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run openseek");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a pipeline file into `dir` and returns its path.
pub fn pipeline(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("pipeline.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

/// Every row of every Parquet file under `dir` (sorted by name).
pub fn read_parquet_dir(dir: &Path) -> Vec<RecordBatch> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let file = std::fs::File::open(&f).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        out.extend(reader.map(|b| b.unwrap()));
    }
    out
}

/// The values of a string column across batches.
pub fn strings(batches: &[RecordBatch], column: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let c = arrow::compute::cast(
            b.column_by_name(column)
                .unwrap_or_else(|| panic!("no column {column}")),
            &DataType::Utf8,
        )
        .unwrap();
        out.extend(c.as_string::<i32>().iter().map(|s| s.map(str::to_string)));
    }
    out
}

pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Loads `report.json` and checks that its counts add up.
pub fn report(out: &Path) -> Report {
    let r = Report::read(&out.join("report.json")).expect("report.json");
    r.check().expect("report counts add up");
    r
}

pub fn stage<'a>(r: &'a Report, name: &str) -> &'a openseek::report::StageReport {
    r.stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
}

/// The English corpus documents as (id, text), read with the parquet crate directly.
pub fn corpus_en(corpus: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus.join("en"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let b = read_parquet_dir_file(&f);
        let ids = strings(&b, "id");
        let texts = strings(&b, "text");
        docs.extend(
            ids.into_iter()
                .zip(texts)
                .map(|(i, t)| (i.unwrap(), t.unwrap())),
        );
    }
    docs
}

pub fn read_parquet_dir_file(f: &Path) -> Vec<arrow::array::RecordBatch> {
    let file = std::fs::File::open(f).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// The Chinese corpus documents as (id, text, script), read with flate2 and serde_json directly.
pub fn corpus_zh(corpus: &Path) -> Vec<(String, String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus.join("zh"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            std::fs::File::open(f).unwrap(),
        ));
        for line in r.lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            docs.push((
                v["id"].as_str().unwrap().to_string(),
                v["text"].as_str().unwrap().to_string(),
                v["script"].as_str().unwrap().to_string(),
            ));
        }
    }
    docs
}

pub use openseek_testkit::near_dup::Rng;
