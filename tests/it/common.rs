//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::RecordBatch;
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

pub use openseek_testkit::docs::{
    corpus_en, corpus_zh, read_parquet_dir, read_parquet_file, strings,
};
pub use openseek_testkit::near_dup::Rng;
