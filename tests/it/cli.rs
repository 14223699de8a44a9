//! The command line: `sql` over the catalog, `functions`, `datasets list`, pipelines written in JSON.

use crate::common;

use common::*;

#[test]
fn sql_queries_the_catalog_with_every_function() {
    let (ok, out, err) = openseek(&[
        "sql",
        "SELECT count(*) AS n, sum(CASE WHEN text_length(text) >= 100 THEN 1 ELSE 0 END) AS long_docs FROM sample_en",
        "--format",
        "csv",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().next(), Some("n,long_docs"));
    let row: Vec<u64> = out
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(row[0], 199);
    assert!(row[1] > 150 && row[1] <= 199);

    let (ok, out, err) = openseek(&[
        "sql",
        "SELECT chinese_convert(text, 't2s') AS t FROM sample_zh WHERE source = 'chinese-poetry-tang' LIMIT 1",
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let t = v["t"].as_str().unwrap();
    assert_eq!(
        openseek_udfs::chinese_convert::chinese_convert(t, "t2s").unwrap(),
        t
    );

    let (ok, out, err) = openseek(&[
        "sql",
        "SELECT id, round(avg_sentence_length(text), 1) AS s, word_count(text) AS w FROM sample_en ORDER BY id LIMIT 3",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("| id") && out.contains("moby-dick/"), "{out}");
}

#[test]
fn sql_writes_parquet_and_reports_errors_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("q.parquet");
    let (ok, _, err) = openseek(&[
        "sql",
        "SELECT id, stopwords(text, 'zh') AS sw FROM sample_zh",
        "--format",
        "parquet",
        "--out",
        f.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(rows(&read_parquet_dir(dir.path())), 550);

    // A catalog dataset whose files are not on this machine: a data root without them.
    let empty_root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openseek"))
        .args(["sql", "SELECT count(*) FROM fineweb_edu"])
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .env("OPENSEEK_DATA_DIR", empty_root.path())
        .env_remove("OPENSEEK_CATALOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("dataset 'fineweb-edu' (table fineweb_edu) has no files on this machine"),
        "{err}"
    );
    let (ok, _, err) = openseek(&[
        "sql",
        "SELECT flagged_words(text, 'klingon') FROM sample_en",
    ]);
    assert!(
        !ok && err.contains("unknown flagged-words lexicon 'klingon'"),
        "{err}"
    );
}

#[test]
fn functions_and_datasets_are_listed() {
    let (ok, out, _) = openseek(&["functions"]);
    assert!(ok);
    for f in [
        "text_length",
        "avg_line_length",
        "avg_sentence_length",
        "word_count",
        "chinese_convert",
        "flagged_words",
        "stopwords",
        "char_repetition",
        "special_chars",
    ] {
        assert!(out.contains(f), "{f} missing from {out}");
    }
    let (ok, out, err) = openseek(&["datasets", "list"]);
    assert!(ok, "{err}");
    for d in [
        "nemotron-cc",
        "fineweb-edu",
        "cci3-hq",
        "fineweb-edu-chinese-v2.1",
        "dolma",
        "opc-fineweb-math-corpus",
        "proof-pile-2",
        "finemath",
        "opc-fineweb-code-corpus",
        "smollm-corpus",
        "the-stack-v2",
        "sample-en",
        "sample-zh",
    ] {
        assert!(out.contains(d), "{d} missing");
    }
    let sample = out.lines().find(|l| l.contains("sample-en")).unwrap();
    assert!(sample.contains("yes"), "{sample}");
}

#[test]
fn a_pipeline_may_be_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.json");
    std::fs::write(
        &p,
        r#"{"name": "json", "input": {"dataset": "sample-zh"}, "output": {"path": "unused", "format": "jsonl"},
            "stages": [{"text_length": {"annotate": true}}, {"word_count": {"min_words": 50}}]}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let (ok, _, err) = openseek(&[
        "run",
        p.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let r = report(&out);
    assert_eq!(r.rows_read, 550);
    let part = std::fs::read_dir(out.join("data"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(part.extension().unwrap(), "jsonl");
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&part)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        first["text_length"].as_i64().unwrap() > 0,
        "annotate adds the value as a column"
    );
    assert_eq!(stage(&r, "text_length").rows_rejected, 0);
}
