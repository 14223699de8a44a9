//! Pipelines end to end: the quickstart on the bundled sample, the rule filters on the shared corpus
//! (Parquet and JSONL.gz) checked row by row against the functions themselves, `sql` stages, and
//! restarts after a kill.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;

use common::*;
use openseek::context::Engine;
use openseek::pipeline::{RunOptions, run_pipeline};
use openseek_udfs::{
    avg_line_length::avg_line_length, avg_sentence_length::avg_sentence_length, chinese_convert,
    text_length::text_length,
};

#[test]
fn quickstart_runs_on_the_bundled_sample_and_reruns_as_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qs");
    let (ok, stdout, stderr) = openseek(&[
        "run",
        "pipelines/quickstart.yaml",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("rows read"), "{stdout}");
    let r = report(&out);
    let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "read",
            "chinese_convert",
            "text_length",
            "avg_line_length",
            "avg_sentence_length",
            "flagged_words",
            "flagged_words#2",
            "stopwords",
            "stopwords#2",
            "tokenize"
        ]
    );
    assert_eq!(r.rows_read, 199 + 550);
    // The shards of what was kept, one prefix per dataset, inside the run's directory.
    let shards = r.stages.last().unwrap().tokenize.clone().unwrap();
    assert_eq!(shards.documents, r.rows_written);
    let prefixes = openseek_shards::prefixes_in(&out.join("shards")).unwrap();
    assert_eq!(prefixes.len(), 2);
    assert!(r.rows_written > 300, "{}", r.table());
    // What was kept satisfies every rule; Chinese rows are the t2s conversion of their input.
    let originals: BTreeMap<String, String> = {
        let f = std::fs::File::open(root().join("data/sample/zh/sample-zh-000.jsonl.gz")).unwrap();
        std::io::BufReader::new(flate2::read::MultiGzDecoder::new(f))
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
                (
                    v["id"].as_str().unwrap().to_string(),
                    v["text"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let data = read_parquet_dir(&out.join("data"));
    let texts = strings(&data, "text");
    let langs = strings(&data, "language");
    let out_ids = strings(&data, "id");
    let scripts = strings(&data, "script");
    let mut converted = 0;
    for (((t, l), id), script) in texts.iter().zip(&langs).zip(&out_ids).zip(&scripts) {
        let t = t.as_deref().unwrap();
        let n = text_length(t);
        assert!((100..=20000).contains(&n), "length {n}");
        assert!(avg_line_length(t) >= 10.0);
        let s = avg_sentence_length(t);
        assert!((10.0..=1000.0).contains(&s), "{s}");
        if l.as_deref() == Some("zh") {
            let original = &originals[id.as_deref().unwrap()];
            assert_eq!(
                chinese_convert::chinese_convert(original, "t2s").unwrap(),
                t
            );
            if script.as_deref() == Some("Hant") {
                assert_ne!(original, t, "a Traditional document is converted");
                converted += 1;
            }
        }
    }
    assert!(converted > 0);
    // Every input id is in the output or the rejects, once.
    let mut ids = strings(&data, "id");
    ids.extend(strings(&read_parquet_dir(&out.join("rejects")), "id"));
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (749, 749));
    // A rerun of a finished run does nothing.
    let before = std::fs::metadata(out.join("report.json"))
        .unwrap()
        .modified()
        .unwrap();
    let (ok, stdout, _) = openseek(&[
        "run",
        "pipelines/quickstart.yaml",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(ok && stdout.contains("already complete"), "{stdout}");
    assert_eq!(
        std::fs::metadata(out.join("report.json"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
}

/// The first rule a text fails, as the pipeline names it.
fn first_failure(text: &str) -> Option<&'static str> {
    let n = text_length(text);
    if n < 100 {
        return Some("text_length < 100");
    }
    if n > 20000 {
        return Some("text_length > 20000");
    }
    if avg_line_length(text) < 10.0 {
        return Some("avg_line_length < 10");
    }
    let s = avg_sentence_length(text);
    if s > 2000.0 {
        return Some("avg_sentence_length > 2000");
    }
    None
}

const RULES: &str = "  - text_length: {min_chars: 100, max_chars: 20000}\n  - avg_line_length: {min_chars: 10}\n  - avg_sentence_length: {max_chars: 2000}\n";

async fn run_lib(dir: &Path, yaml: &str, task_bytes: u64) -> openseek::report::Report {
    let engine = Engine::new(Some(2));
    let p = pipeline(dir, yaml);
    let opts = RunOptions {
        output: Some(dir.join("out")),
        print_summary: false,
        task_bytes,
        ..Default::default()
    };
    run_pipeline(&engine, &p, &opts).await.unwrap()
}

fn outcome(dir: &Path) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let kept: BTreeSet<String> = strings(&read_parquet_dir(&dir.join("out/data")), "id")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let rej = read_parquet_dir(&dir.join("out/rejects"));
    let reasons: BTreeMap<String, String> = strings(&rej, "id")
        .into_iter()
        .zip(strings(&rej, "reason"))
        .map(|(i, r)| (i.unwrap(), r.unwrap()))
        .collect();
    (kept, reasons)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_filters_on_the_english_parquet_corpus_decide_as_the_functions_do() {
    let Some(corpus) =
        corpus("rule_filters_on_the_english_parquet_corpus_decide_as_the_functions_do")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: en\ninput: {{path: {}/en, id: id}}\nstages:\n{RULES}",
        corpus.display()
    );
    let report = run_lib(dir.path(), &yaml, 256 << 20).await;
    let docs = corpus_en(&corpus);
    assert_eq!(report.rows_read as usize, docs.len());
    let (kept, reasons) = outcome(dir.path());
    let mut expected_kept = BTreeSet::new();
    for (id, text) in &docs {
        match first_failure(text) {
            None => {
                expected_kept.insert(id.clone());
            }
            Some(r) => assert_eq!(reasons.get(id).map(String::as_str), Some(r), "{id}"),
        }
    }
    assert_eq!(kept, expected_kept);
    assert_eq!(kept.len() + reasons.len(), docs.len());
    let tl = stage(&report, "text_length");
    assert_eq!(tl.rows_in as usize, docs.len());
    assert!(tl.rows_rejected > 0 && stage(&report, "avg_line_length").rows_rejected > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversion_and_rules_on_the_chinese_jsonl_gz_corpus_decide_as_the_functions_do() {
    let Some(corpus) =
        corpus("conversion_and_rules_on_the_chinese_jsonl_gz_corpus_decide_as_the_functions_do")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: zh\ninput: {{path: {}/zh, id: id}}\nstages:\n  - chinese_convert: {{mode: t2s, where: \"script = 'Hant'\"}}\n{RULES}",
        corpus.display()
    );
    let report = run_lib(dir.path(), &yaml, 256 << 20).await;
    let docs = corpus_zh(&corpus);
    assert_eq!(report.rows_read as usize, docs.len());
    let (kept, reasons) = outcome(dir.path());
    let out = read_parquet_dir(&dir.path().join("out/data"));
    let out_text: BTreeMap<String, String> = strings(&out, "id")
        .into_iter()
        .zip(strings(&out, "text"))
        .map(|(i, t)| (i.unwrap(), t.unwrap()))
        .collect();
    let mut expected_kept = BTreeSet::new();
    for (id, text, script) in &docs {
        let text = if script == "Hant" {
            chinese_convert::chinese_convert(text, "t2s").unwrap()
        } else {
            text.clone()
        };
        match first_failure(&text) {
            None => {
                assert_eq!(out_text.get(id), Some(&text), "{id}");
                expected_kept.insert(id.clone());
            }
            Some(r) => assert_eq!(reasons.get(id).map(String::as_str), Some(r), "{id}"),
        }
    }
    assert_eq!(kept, expected_kept);
    let conv = stage(&report, "chinese_convert");
    assert_eq!(conv.rows_in, conv.rows_out);
    assert_ne!(
        conv.bytes_in, conv.bytes_out,
        "t2s changes the bytes of Traditional text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_stages_see_the_previous_stage_as_input_and_their_drops_are_rejects() {
    let Some(corpus) =
        corpus("sql_stages_see_the_previous_stage_as_input_and_their_drops_are_rejects")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: sql\ninput: {{path: {}/zh, id: id}}\nstages:\n  - text_length: {{min_chars: 20}}\n  - sql: \"SELECT * FROM input WHERE source <> 'fortunes-zh'\"\n  - text_length: {{max_chars: 20000}}\n",
        corpus.display()
    );
    let report = run_lib(dir.path(), &yaml, 8 << 20).await;
    let docs = corpus_zh(&corpus);
    let sql = stage(&report, "sql");
    let fortunes_after_first = {
        let (_, reasons) = outcome(dir.path());
        reasons
            .values()
            .filter(|r| r.as_str() == "sql: not selected")
            .count() as u64
    };
    assert_eq!(sql.rows_rejected, fortunes_after_first);
    assert!(sql.rows_rejected > 100);
    assert_eq!(report.rows_read as usize, docs.len());
    let data = read_parquet_dir(&dir.path().join("out/data"));
    assert!(
        strings(&data, "source")
            .iter()
            .all(|s| s.as_deref() != Some("fortunes-zh"))
    );
    assert!(
        !dir.path().join("out/_stages").exists(),
        "checkpoints are removed after success"
    );
}

#[test]
fn a_run_killed_midway_finishes_on_rerun_without_duplicates() {
    let Some(corpus) = corpus("a_run_killed_midway_finishes_on_rerun_without_duplicates") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        &format!(
            "name: kill\ninput: {{path: {}/zh, id: id}}\nstages:\n{RULES}",
            corpus.display()
        ),
    );
    let out = dir.path().join("out");
    let bin = env!("CARGO_BIN_EXE_openseek");
    let args = [
        "run",
        p.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--task-mb",
        "1",
    ];
    let mut child = std::process::Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    // Kill it once the first task has finished and before the last.
    let tasks = out.join("_tasks");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_dir(&tasks).map(|d| d.count()).unwrap_or(0) < 1
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = std::fs::read_dir(&tasks).unwrap().count();
    assert!(done_before >= 1, "the first task finished before the kill");
    assert!(
        !out.join("report.json").exists(),
        "killed before the end ({done_before} tasks done)"
    );
    let (ok, _, stderr) = openseek(&args);
    assert!(ok, "{stderr}");
    let r = report(&out);
    let docs = corpus_zh(&corpus);
    assert_eq!(r.rows_read as usize, docs.len());
    let mut ids = strings(&read_parquet_dir(&out.join("data")), "id");
    ids.extend(strings(&read_parquet_dir(&out.join("rejects")), "id"));
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((n, ids.len()), (docs.len(), docs.len()), "every row once");
    // No temporaries are left behind.
    for d in ["data", "rejects", "_tasks"] {
        assert!(
            std::fs::read_dir(out.join(d)).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp"))
        );
    }
}

/// Every file under `dir`, recursively (hidden temporaries included).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A `sql` stage whose query duplicates rows, invents ids or keeps some rows of a duplicated id fails
/// before anything streams on: the error names the stage and an offending id, and no part (finished
/// or temporary) is left in the output's `data/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_stage_that_duplicates_or_invents_ids_fails_naming_one() {
    // A source whose own ids repeat one (the readers keep a source's ids as they are).
    let twice = tempfile::tempdir().unwrap();
    let twice_file = twice.path().join("twice.jsonl");
    std::fs::write(
        &twice_file,
        "{\"id\": \"x\", \"text\": \"first copy\"}\n{\"id\": \"x\", \"text\": \"second copy\"}\n{\"id\": \"y\", \"text\": \"another\"}\n",
    )
    .unwrap();
    let sample = "{dataset: sample-en}".to_string();
    let cases = [
        (
            sample.clone(),
            "SELECT * FROM input UNION ALL SELECT * FROM input WHERE id = 'sotu/1960_dwight_d_eisenhower_r'",
            "returned id 'sotu/1960_dwight_d_eisenhower_r' 2 times",
        ),
        (
            sample.clone(),
            "SELECT 'new-' || id AS id, text, dataset FROM input",
            "which is not in its input",
        ),
        (
            format!("{{path: {}}}", twice_file.display()),
            "SELECT * FROM input WHERE text <> 'first copy'",
            "id 'x' is 2 rows of the input and the query kept 1",
        ),
    ];
    for (input, query, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "name: sqlcheck\ninput: {input}\nstages:\n  - text_length: {{min_chars: 1}}\n  - sql: \"{query}\"\n  - text_length: {{max_chars: 100000000}}\n"
        );
        let engine = Engine::new(Some(2));
        let p = pipeline(dir.path(), &yaml);
        let opts = RunOptions {
            output: Some(dir.path().join("out")),
            catalog: Some(root().join("datasets.yaml")),
            print_summary: false,
            ..Default::default()
        };
        let e = format!("{:#}", run_pipeline(&engine, &p, &opts).await.unwrap_err());
        assert!(e.contains("sql") && e.contains(expected), "{query}: {e}");
        let left = files_under(&dir.path().join("out/data"));
        assert!(left.is_empty(), "{query}: {left:?}");
    }
}
