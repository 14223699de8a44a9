//! Documents as the tests and benchmarks read and write them: Parquet directories, string columns, the
//! shared corpus's English (Parquet) and Chinese (JSONL.gz) documents, and `(id, text)` Parquet files.
//! Read with the arrow, parquet and flate2 crates directly, never through the engine under test.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

/// The files of `dir` whose names end in `suffix`, sorted by name (none when `dir` is absent).
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Every row of one Parquet file.
pub fn read_parquet_file(f: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// Every row of every Parquet file under `dir` (sorted by name).
pub fn read_parquet_dir(dir: &Path) -> Vec<RecordBatch> {
    files_ending(dir, ".parquet")
        .iter()
        .flat_map(|f| read_parquet_file(f))
        .collect()
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

/// The `(id, text)` of every row of the Parquet files of `dir`, in file order.
pub fn parquet_docs(dir: &Path) -> Vec<(String, String)> {
    let batches = read_parquet_dir(dir);
    strings(&batches, "id")
        .into_iter()
        .zip(strings(&batches, "text"))
        .map(|(i, t)| (i.unwrap(), t.unwrap()))
        .collect()
}

/// The `(id, text, script)` of every line of the JSONL.gz files of `dir` (CCI3-HQ's layout), in file
/// order.
pub fn jsonl_gz_docs(dir: &Path) -> Vec<(String, String, String)> {
    let mut docs = Vec::new();
    for f in files_ending(dir, ".jsonl.gz") {
        let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            std::fs::File::open(&f).unwrap(),
        ));
        for line in r.lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            docs.push((field("id"), field("text"), field("script")));
        }
    }
    docs
}

/// The shared corpus's English documents, `(id, text)`.
pub fn corpus_en(corpus: &Path) -> Vec<(String, String)> {
    parquet_docs(&corpus.join("en"))
}

/// The shared corpus's Chinese documents, `(id, text, script)`.
pub fn corpus_zh(corpus: &Path) -> Vec<(String, String, String)> {
    jsonl_gz_docs(&corpus.join("zh"))
}

/// Writes `(id, text)` documents as one Parquet file.
pub fn write_docs(path: &Path, docs: &[(String, String)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from_iter_values(docs.iter().map(|d| &d.0))),
            Arc::new(StringArray::from_iter_values(docs.iter().map(|d| &d.1))),
        ],
    )
    .unwrap();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}
