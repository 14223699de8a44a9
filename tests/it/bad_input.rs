//! Every kind of bad input named by the engine's contract: each either becomes a reject with a reason,
//! its file and its line, or a clear error naming the file, and the report's counts add up.

use crate::common;

use std::io::Write;
use std::path::Path;

use common::*;
use openseek::context::Engine;
use openseek::pipeline::{RunOptions, run_pipeline};

async fn run(dir: &Path, yaml: &str) -> anyhow::Result<openseek::report::Report> {
    let engine = Engine::new(Some(2));
    let p = pipeline(dir, yaml);
    let opts = RunOptions {
        output: Some(dir.join("out")),
        print_summary: false,
        ..Default::default()
    };
    run_pipeline(&engine, &p, &opts).await
}

fn rejects(dir: &Path) -> Vec<(String, String, String, Option<i64>)> {
    let b = read_parquet_dir(&dir.join("out/rejects"));
    let ids = strings(&b, "id");
    let reasons = strings(&b, "reason");
    let files = strings(&b, "file");
    let lines: Vec<Option<i64>> = b
        .iter()
        .flat_map(|b| {
            arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
                b.column_by_name("line").unwrap(),
            )
            .iter()
            .collect::<Vec<_>>()
        })
        .collect();
    let mut out: Vec<_> = (0..ids.len())
        .map(|i| {
            (
                ids[i].clone().unwrap(),
                reasons[i].clone().unwrap(),
                files[i].clone().unwrap_or_default(),
                lines[i],
            )
        })
        .collect();
    out.sort_by_key(|r| r.3);
    out
}

const BAD_LINES: &[&[u8]] = &[
    br#"{"id":"a","text":"a good document"}"#,
    br#"{"id":"b","text": "broken"#,
    b"{\"id\":\"c\",\"text\":\"bad \xff\xfe bytes\"}",
    br#"{"id":"d","body":"no text key"}"#,
    br#"{"id":"e","text":null}"#,
    br#"{"id":"f","text":42}"#,
    br#"[1, 2, 3]"#,
    b"   ",
    br#"{"id":"g","text":"another good one","lang":"en"}"#,
];

fn write_lines(path: &Path, lines: &[&[u8]]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_jsonl_rows_become_rejects_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write_lines(&dir.path().join("bad.jsonl"), BAD_LINES);
    let yaml = format!(
        "name: bad\ninput: {{path: {}, id: id}}\nstages:\n  - text_length: {{min_chars: 1}}\n",
        dir.path().join("bad.jsonl").display()
    );
    let report = run(dir.path(), &yaml).await.unwrap();
    let read = stage(&report, "read");
    assert_eq!(
        (read.rows_in, read.rows_out, read.rows_rejected),
        (8, 2, 6),
        "{read:?}"
    );
    let kept = strings(&read_parquet_dir(&dir.path().join("out/data")), "id");
    assert_eq!(kept, vec![Some("a".to_string()), Some("g".to_string())]);
    let rej = rejects(dir.path());
    let got: Vec<(&str, &str, Option<i64>)> = rej
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.3))
        .collect();
    assert_eq!(
        got,
        vec![
            ("bad/bad.jsonl:2", "malformed:bad_json", Some(2)),
            ("bad/bad.jsonl:3", "malformed:invalid_utf8", Some(3)),
            ("d", "malformed:missing_text", Some(4)),
            ("e", "malformed:null_text", Some(5)),
            ("f", "malformed:non_string_text", Some(6)),
            ("bad/bad.jsonl:7", "malformed:not_object", Some(7)),
        ]
    );
    assert!(rej.iter().all(|r| r.2.ends_with("bad.jsonl")));
    assert_eq!(report.rows_read, 8);
    assert_eq!(report.rows_written + report.rows_rejected, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_fail_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write_lines(&dir.path().join("bad.jsonl"), BAD_LINES);
    let yaml = format!(
        "name: bad\non_error: fail\ninput: {{path: {}}}\nstages:\n  - text_length: {{min_chars: 1}}\n",
        dir.path().join("bad.jsonl").display()
    );
    let err = format!("{:#}", run(dir.path(), &yaml).await.unwrap_err());
    assert!(err.contains("bad.jsonl:2: malformed:bad_json"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_column_outside_the_sample_is_a_reject() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!(r#"{{"id":"r{i}","text":"document {i}","score":{i}}}"#).into_bytes())
        .collect();
    lines.push(br#"{"id":"odd","text":"document odd","score":"high"}"#.to_vec());
    let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_slice()).collect();
    write_lines(&dir.path().join("typed.jsonl"), &refs);
    let yaml = format!(
        "name: typed\ninput: {{path: {}, id: id}}\nstages:\n  - text_length: {{min_chars: 1}}\n",
        dir.path().join("typed.jsonl").display()
    );
    let report = run(dir.path(), &yaml).await.unwrap();
    assert_eq!(report.rows_written, 1000);
    let rej = rejects(dir.path());
    assert_eq!(rej.len(), 1);
    assert_eq!(
        (rej[0].0.as_str(), rej[0].1.as_str(), rej[0].3),
        ("odd", "malformed:mistyped:score", Some(1001))
    );
}

fn gz_lines(n: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..n {
        // Varied text so that the compressed stream is long enough to cut in the middle.
        writeln!(
            enc,
            r#"{{"id":"d{i}","text":"document number {i} with some words {}"}}"#,
            i * 7919 % 104729
        )
        .unwrap();
    }
    enc.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_gzip_keeps_what_was_read_and_rejects_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let full = gz_lines(20_000);
    std::fs::write(dir.path().join("cut.jsonl.gz"), &full[..full.len() / 2]).unwrap();
    let yaml = format!(
        "name: cut\ninput: {{path: {}, id: id}}\nstages:\n  - text_length: {{min_chars: 1}}\n",
        dir.path().join("cut.jsonl.gz").display()
    );
    let report = run(dir.path(), &yaml).await.unwrap();
    let read = stage(&report, "read");
    assert!(read.rows_out > 1000 && read.rows_out < 20_000, "{read:?}");
    let rej = rejects(dir.path());
    assert_eq!(rej.len(), 1, "{rej:?}");
    assert_eq!(rej[0].1, "malformed:truncated_archive");
    assert!(rej[0].2.ends_with("cut.jsonl.gz"));
    // The reject points at the first line that could not be read.
    assert_eq!(rej[0].3, Some(read.rows_out as i64 + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_zstd_keeps_what_was_read_and_rejects_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = Vec::new();
    for i in 0..20_000 {
        writeln!(
            raw,
            r#"{{"id":"d{i}","text":"document number {i} with some words {}"}}"#,
            i * 7919 % 104729
        )
        .unwrap();
    }
    let full = zstd::encode_all(raw.as_slice(), 3).unwrap();
    std::fs::write(dir.path().join("cut.jsonl.zst"), &full[..full.len() / 2]).unwrap();
    let yaml = format!(
        "name: cut\ninput: {{path: {}}}\nstages:\n  - text_length: {{min_chars: 1}}\n",
        dir.path().join("cut.jsonl.zst").display()
    );
    let report = run(dir.path(), &yaml).await.unwrap();
    let rej = rejects(dir.path());
    assert_eq!(rej.len(), 1, "{rej:?}");
    assert_eq!(rej[0].1, "malformed:truncated_archive");
    assert!(stage(&report, "read").rows_out > 1000);
}

fn write_parquet(path: &Path, ids: Vec<&str>, texts: arrow::array::ArrayRef) {
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    let ids: ArrayRef = std::sync::Arc::new(StringArray::from(ids));
    let batch = RecordBatch::try_from_iter(vec![("id", ids), ("text", texts)]).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_null_and_invalid_text_are_rejects() {
    use arrow::array::{BinaryArray, StringArray};
    let dir = tempfile::tempdir().unwrap();
    write_parquet(
        &dir.path().join("a.parquet"),
        vec!["x", "y", "z"],
        std::sync::Arc::new(StringArray::from(vec![
            Some("fine text"),
            None,
            Some("more text"),
        ])),
    );
    // A text column stored as binary, with one value that is not UTF-8.
    write_parquet(
        &dir.path().join("b.parquet"),
        vec!["p", "q"],
        std::sync::Arc::new(BinaryArray::from(vec![
            Some(b"ok bytes".as_ref()),
            Some(b"\xff\xfe\xfd".as_ref()),
        ])),
    );
    let yaml = format!(
        "name: pq\ninput: {{path: {}/a.parquet, id: id}}\nstages:\n  - text_length: {{min_chars: 1}}\n",
        dir.path().display()
    );
    let report = run(dir.path(), &yaml).await.unwrap();
    assert_eq!((report.rows_read, report.rows_written), (3, 2));
    let rej = rejects(dir.path());
    assert_eq!(
        (rej[0].0.as_str(), rej[0].1.as_str(), rej[0].3),
        ("y", "malformed:null_text", Some(2))
    );

    let dir2 = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("b.parquet"), dir2.path().join("b.parquet")).unwrap();
    let yaml = format!(
        "name: pq\ninput: {{path: {}/b.parquet, id: id}}\nstages:\n  - text_length: {{min_chars: 1}}\n",
        dir2.path().display()
    );
    let report = run(dir2.path(), &yaml).await.unwrap();
    assert_eq!((report.rows_read, report.rows_written), (2, 1));
    let rej = rejects(dir2.path());
    assert_eq!(
        (rej[0].0.as_str(), rej[0].1.as_str()),
        ("q", "malformed:invalid_utf8")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_mistyped_text_column_is_a_clear_error() {
    use arrow::array::Int64Array;
    let dir = tempfile::tempdir().unwrap();
    write_parquet(
        &dir.path().join("n.parquet"),
        vec!["x"],
        std::sync::Arc::new(Int64Array::from(vec![1])),
    );
    let yaml = format!(
        "name: pq\ninput: {{path: {}/n.parquet}}\nstages:\n  - text_length: {{min_chars: 1}}\n",
        dir.path().display()
    );
    let err = format!("{:#}", run(dir.path(), &yaml).await.unwrap_err());
    assert!(
        err.contains("n.parquet") && err.contains("text column 'text' is Int64"),
        "{err}"
    );
    let dir2 = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: pq\ninput: {{path: {}/n.parquet, text: body}}\nstages:\n  - text_length: {{min_chars: 1}}\n",
        dir.path().display()
    );
    let err = format!("{:#}", run(dir2.path(), &yaml).await.unwrap_err());
    assert!(
        err.contains("n.parquet") && err.contains("no text column 'body'"),
        "{err}"
    );
}

/// Runs the `openseek` binary and returns its peak RSS in KB, measured with wait4(2) (no tool needed);
/// fails the test when the run fails.
fn peak_rss_kb(args: &[&str]) -> u64 {
    let m = openseek_testkit::peak_rss(
        std::process::Command::new(env!("CARGO_BIN_EXE_openseek"))
            .args(args)
            .env("RUST_LOG", "warn"),
    )
    .expect("run openseek");
    assert!(m.status.success(), "{}", m.stderr);
    // The engine maps its binary and starts a runtime: a figure below that is a broken measurement.
    assert!(
        m.peak_rss_kb > 8 << 10,
        "implausible peak RSS {} KB",
        m.peak_rss_kb
    );
    m.peak_rss_kb
}

#[test]
fn a_50_mb_single_line_document_runs_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(dir.path().join("huge.jsonl")).unwrap());
    writeln!(
        f,
        r#"{{"id":"small","text":"{}"}}"#,
        "A short document with enough characters to pass. ".repeat(3)
    )
    .unwrap();
    let word = "lorem ipsum dolor sit amet ";
    write!(f, r#"{{"id":"huge","text":""#).unwrap();
    for _ in 0..(50 << 20) / word.len() {
        f.write_all(word.as_bytes()).unwrap();
    }
    writeln!(f, r#""}}"#).unwrap();
    drop(f);
    let p = pipeline(
        dir.path(),
        &format!(
            "name: huge\ninput: {{path: {}/huge.jsonl, id: id}}\nstages:\n  - text_length: {{min_chars: 100, max_chars: 20000}}\n  - avg_sentence_length: {{max_chars: 100000000}}\n",
            dir.path().display()
        ),
    );
    let out = dir.path().join("out");
    let args = [
        "run",
        p.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    let kb = peak_rss_kb(&args);
    eprintln!("50 MB document: peak RSS {} MB", kb / 1024);
    assert!(kb < 1024 * 1024, "peak RSS {kb} KB for a 50 MB document");
    let r = report(&out);
    assert_eq!(r.rows_written, 1);
    assert_eq!(
        stage(&r, "text_length")
            .rejects_by_reason
            .get("text_length > 20000"),
        Some(&1)
    );
}

#[test]
fn two_thousand_tiny_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("many");
    std::fs::create_dir(&input).unwrap();
    for i in 0..2000 {
        std::fs::write(
            input.join(format!("f{i:04}.jsonl")),
            format!("{{\"id\":\"doc{i}\",\"text\":\"tiny document number {i}\"}}\n"),
        )
        .unwrap();
    }
    let p = pipeline(
        dir.path(),
        &format!(
            "name: many\ninput: {{path: {}, id: id}}\nstages:\n  - word_count: {{min_words: 3}}\n",
            input.display()
        ),
    );
    let out = dir.path().join("out");
    let args = [
        "run",
        p.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    let kb = peak_rss_kb(&args);
    eprintln!("2,000 files: peak RSS {} MB", kb / 1024);
    assert!(kb < 512 * 1024, "peak RSS {kb} KB for 2,000 tiny files");
    let r = report(&out);
    assert_eq!((r.rows_read, r.rows_written), (2000, 2000));
    let mut ids = strings(&read_parquet_dir(&out.join("data")), "id");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2000);
}

/// Records with an `id` field keep it as the document id unless told otherwise, as datatrove's readers
/// do (`id_key="id"`); a record without one gets `{dataset}/{file}:{line}`; `id: null` generates every
/// id; `id: COLUMN` names another column. JSONL and Parquet alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_an_id_field_keep_it_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_lines(
        &src.join("a.jsonl"),
        &[
            br#"{"id": "doc-1", "key": "k1", "text": "first document"}"#,
            br#"{"key": "k2", "text": "second document, no id"}"#,
            br#"{"id": 7, "key": "k3", "text": "third document, a numeric id"}"#,
        ],
    );
    let ids_of = |out: &Path| -> Vec<String> {
        let mut ids: Vec<String> = strings(&read_parquet_dir(&out.join("data")), "id")
            .into_iter()
            .map(Option::unwrap)
            .collect();
        ids.sort();
        ids
    };
    let cases: [(&str, &[&str]); 3] = [
        ("", &["7", "doc-1", "src/a.jsonl:2"]),
        (
            ", id: null",
            &["src/a.jsonl:1", "src/a.jsonl:2", "src/a.jsonl:3"],
        ),
        (", id: key", &["k1", "k2", "k3"]),
    ];
    for (i, (option, expected)) in cases.iter().enumerate() {
        let run_dir = dir.path().join(format!("run{i}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let yaml = format!(
            "name: ids\ninput: {{path: {}, name: src{option}}}\nstages:\n  - text_length: {{min_chars: 1}}\n",
            src.join("a.jsonl").display()
        );
        run(&run_dir, &yaml).await.unwrap().check().unwrap();
        assert_eq!(ids_of(&run_dir.join("out")), *expected, "jsonl{option}");
    }
    // Parquet: the `id` column.
    let texts: arrow::array::ArrayRef =
        std::sync::Arc::new(arrow::array::StringArray::from(vec!["one", "two"]));
    write_parquet(&src.join("b.parquet"), vec!["p-1", "p-2"], texts);
    let run_dir = dir.path().join("pq");
    std::fs::create_dir_all(&run_dir).unwrap();
    let yaml = format!(
        "name: ids\ninput: {{path: {}, name: src}}\nstages:\n  - text_length: {{min_chars: 1}}\n",
        src.join("b.parquet").display()
    );
    run(&run_dir, &yaml).await.unwrap().check().unwrap();
    assert_eq!(ids_of(&run_dir.join("out")), vec!["p-1", "p-2"]);
}
