//! The synthesis stages against the scripted OpenAI-compatible server: parsing of good, fenced,
//! talkative, truncated and garbage answers for every method; retries on 429, 500, timeouts and broken
//! connections without lost or duplicated rows; rate limits held; a killed run resumed without paying
//! twice; the API key absent from every output and log; and throughput at 64 requests in flight.
//! The documents are the bundled samples' (real English and Chinese text), so these run everywhere.

use crate::common;
use crate::scripted_llm::{Hit, Reply, ScriptedServer, base_prompt, document_of, good_answer};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write};

use arrow::array::Array;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use openseek::context::Engine;
use openseek::pipeline::{RunOptions, run_pipeline};
use openseek::stages::synth::methods::sentences;

/// Documents of the bundled samples as (id, text, language): English Parquet, then Chinese JSONL.gz.
fn sample_docs() -> Vec<(String, String, &'static str)> {
    let root = root();
    let en = read_parquet_file(&root.join("data/sample/en/sample-en-000.parquet"));
    let mut docs: Vec<(String, String, &'static str)> = strings(&en, "id")
        .into_iter()
        .zip(strings(&en, "text"))
        .map(|(i, t)| (i.unwrap(), t.unwrap(), "en"))
        .collect();
    let zh = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
        std::fs::File::open(root.join("data/sample/zh/sample-zh-000.jsonl.gz")).unwrap(),
    ));
    for line in zh.lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        docs.push((
            v["id"].as_str().unwrap().to_string(),
            v["text"].as_str().unwrap().to_string(),
            "zh",
        ));
    }
    docs
}

/// `docs` as a JSONL input file in `dir`.
fn write_input(dir: &Path, docs: &[(String, String, &str)]) -> PathBuf {
    let p = dir.join("input.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    for (id, text, lang) in docs {
        let line = serde_json::json!({"id": id, "text": text, "language": lang});
        writeln!(f, "{line}").unwrap();
    }
    p
}

/// A pipeline over `input` with `stages` (YAML list items), its endpoint options filled in.
fn synth_yaml(input: &Path, url: &str, stages: &str) -> String {
    let stages = stages.replace("ENDPOINT", &format!("endpoint: '{url}', model: scripted"));
    format!(
        "name: synth\ninput: {{path: {}, id: id}}\nstages:\n{stages}",
        input.display()
    )
}

async fn run_lib(dir: &Path, yaml: &str) -> anyhow::Result<openseek::report::Report> {
    let engine = Engine::new(Some(2));
    let p = pipeline(dir, yaml);
    let opts = RunOptions {
        output: Some(dir.join("out")),
        print_summary: false,
        ..Default::default()
    };
    run_pipeline(&engine, &p, &opts).await
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// What decides a prompt's scripted behaviour: the start of its document, or of its first numbered
/// sentence; prompts with neither (the second step of cot_backward) are always answered well.
fn key_of(prompt: &str) -> Option<String> {
    let doc = document_of(prompt);
    if !doc.is_empty() {
        return Some(doc.chars().take(200).collect());
    }
    prompt
        .lines()
        .find_map(|l| l.strip_prefix("[1] "))
        .map(|s| s.chars().take(200).collect())
}

fn variant_of_key(key: &str) -> u64 {
    fnv(key) % 5
}

const GARBAGE: &str = "I am sorry, I cannot help with that request.";

/// good, fenced, talk around the JSON, truncated at the first request, garbage at every request.
fn parsing_script(hit: &Hit) -> Reply {
    let good = good_answer(&hit.prompt).to_string();
    let Some(key) = key_of(&hit.prompt) else {
        return Reply::Content {
            content: good,
            length: false,
        };
    };
    let content = match variant_of_key(&key) {
        0 => good,
        1 => format!("```json\n{good}\n```"),
        2 => format!("Sure! Here is the JSON you asked for:\n{good}\nI hope this helps."),
        3 if hit.nth == 0 => {
            return Reply::Content {
                content: good.chars().take(good.chars().count() / 2).collect(),
                length: true,
            };
        }
        3 => good,
        _ => format!("{GARBAGE} ({})", hit.nth),
    };
    Reply::Content {
        content,
        length: false,
    }
}

fn by_column(
    batches: &[arrow::array::RecordBatch],
    key: &str,
    value: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in strings(batches, key)
        .into_iter()
        .zip(strings(batches, value))
    {
        m.entry(k.unwrap()).or_default().push(v.unwrap_or_default());
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_parses_good_fenced_talkative_and_truncated_answers_and_rejects_garbage() {
    let server = ScriptedServer::start(Duration::ZERO, parsing_script);
    let mut seen = BTreeSet::new();
    let docs: Vec<_> = sample_docs()
        .into_iter()
        .filter(|(_, t, _)| seen.insert(t.clone()))
        .filter(|(_, t, _)| t.chars().count() >= 200 && sentences(t).len() > 3)
        .step_by(7)
        .take(60)
        .collect();
    let langs: BTreeSet<&str> = docs.iter().map(|d| d.2).collect();
    assert_eq!(langs.len(), 2, "both languages");
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &docs);
    let variant = |text: &str| variant_of_key(&text.chars().take(200).collect::<String>());
    let first_sentence =
        |text: &str| variant_of_key(&sentences(text)[0].chars().take(200).collect::<String>());

    // One pipeline per method family: annotations, QA, and backward then forward CoT.
    for (name, stages) in [
        (
            "annotate",
            "  - quality_annotate: {ENDPOINT}\n  - knowledge_tags: {ENDPOINT}\n",
        ),
        ("qa", "  - qa_simple: {ENDPOINT, pairs: 2}\n"),
        (
            "cot",
            "  - cot_backward: {ENDPOINT}\n  - cot_forward: {ENDPOINT}\n",
        ),
    ] {
        let run_dir = dir.path().join(name);
        std::fs::create_dir_all(&run_dir).unwrap();
        let hits_before = server.hits().len();
        let r = run_lib(&run_dir, &synth_yaml(&input, &server.url, stages))
            .await
            .unwrap();
        r.check().unwrap();
        let out = run_dir.join("out");
        let data = read_parquet_dir(&out.join("data"));
        let rejects = read_parquet_dir(&out.join("rejects"));
        let reasons = by_column(&rejects, "id", "reason");
        let details = by_column(&rejects, "id", "detail");
        let garbage: BTreeSet<&String> = docs
            .iter()
            .filter(|(_, t, _)| match name {
                "cot" => first_sentence(t) == 4,
                _ => variant(t) == 4,
            })
            .map(|(i, _, _)| i)
            .collect();
        assert!(
            !garbage.is_empty() && garbage.len() < docs.len() / 2,
            "{name}: {}",
            garbage.len()
        );
        // Every garbage document is rejected by the first stage, with the raw text kept.
        let first = match name {
            "annotate" => "quality_annotate",
            "qa" => "qa_simple",
            _ => "cot_backward",
        };
        let rejected: BTreeSet<&String> = reasons.keys().collect();
        assert_eq!(rejected, garbage, "{name}: the rejected documents");
        for id in &garbage {
            assert_eq!(reasons[*id], vec![format!("synthesis:{first}:unparseable")]);
            assert!(
                details[*id][0].contains(GARBAGE),
                "{name}: {:?}",
                details[*id]
            );
        }
        // Every other document is in the output, once per row it made, and carries its source.
        let kept: Vec<&(String, String, &str)> = docs
            .iter()
            .filter(|(i, _, _)| !garbage.contains(i))
            .collect();
        match name {
            "annotate" => {
                let ids = strings(&data, "id");
                assert_eq!(ids.len(), kept.len());
                let scores = strings(&data, "quality_score");
                let domains = strings(&data, "kp_domain");
                let difficulty = strings(&data, "kp_difficulty");
                let topics = strings(&data, "kp_topics");
                let text_of: HashMap<&String, &String> =
                    kept.iter().map(|(i, t, _)| (i, t)).collect();
                for (k, id) in ids.iter().enumerate() {
                    let text = text_of[id.as_ref().unwrap()];
                    // The scripted score is the prompt's document length mod 6 (documents over
                    // max_input_chars are cut).
                    let shown = openseek::stages::synth::methods::truncate(text, 12_000);
                    assert_eq!(scores[k], Some((shown.chars().count() % 6).to_string()));
                    let n = shown.chars().count();
                    assert_eq!(
                        domains[k].as_deref(),
                        Some(["History", "history", "Literature"][n % 3]),
                        "trimmed"
                    );
                    let level = if n.is_multiple_of(2) {
                        "basic"
                    } else {
                        "advanced"
                    };
                    assert_eq!(difficulty[k].as_deref(), Some(level), "lower-cased");
                    assert!(topics[k].as_deref().unwrap().contains("Whaling"));
                }
            }
            "qa" => {
                let by_source = by_column(&data, "source_id", "question");
                assert_eq!(by_source.len(), kept.len());
                assert!(by_source.values().all(|q| q.len() == 2), "two pairs each");
                let ids = strings(&data, "id");
                let unique: BTreeSet<_> = ids.iter().collect();
                assert_eq!(unique.len(), ids.len(), "row ids are unique");
                assert_eq!(stage(&r, "qa_simple").rows_added, kept.len() as u64);
            }
            _ => {
                let answers = by_column(&data, "source_id", "answer");
                assert_eq!(answers.len(), kept.len(), "one forward row per document");
                let queries = strings(&data, "query");
                assert!(queries.iter().all(|q| {
                    q.as_deref()
                        .unwrap()
                        .starts_with("the question of 2 segments")
                }));
                let drafts = strings(&data, "draft_cot");
                assert!(
                    drafts
                        .iter()
                        .all(|d| d.as_deref() == Some("1. premise\n2. conclusion"))
                );
            }
        }
        // The report counts exactly the invalid answers this pipeline got: one for each truncated
        // prompt (answered whole when asked again) and three for each garbage one (parse_retries:
        // 2). How often the server saw each prompt is checked over all pipelines below.
        let prompts: BTreeSet<String> = server.hits()[hits_before..]
            .iter()
            .map(|h| base_prompt(&h.prompt).to_string())
            .collect();
        let expected: u64 = prompts
            .iter()
            .map(|p| match key_of(p).map(|k| variant_of_key(&k)) {
                Some(3) => 1,
                Some(4) => 3,
                _ => 0,
            })
            .sum();
        let syn: Vec<&openseek::stages::synth::SynthesisSummary> = r
            .stages
            .iter()
            .filter_map(|s| s.synthesis.as_ref())
            .collect();
        let invalid: u64 = syn.iter().map(|y| y.invalid_responses).sum();
        assert!(expected >= 3 * garbage.len() as u64, "{name}: {expected}");
        assert_eq!(invalid, expected, "{name}: {syn:?}");
        assert!(syn.iter().all(|y| y.retries == 0), "{name}: {syn:?}");
    }
    // An invalid answer is asked for again with a note saying what was wrong.
    assert!(server.hits().iter().any(|h| {
        h.prompt
            .contains("(Your previous answer could not be read: no JSON value in the response")
    }));
    // Every prompt the server was sent more than once was a truncated or garbage one.
    let mut per_prompt: HashMap<String, usize> = HashMap::new();
    for h in server.hits() {
        *per_prompt
            .entry(base_prompt(&h.prompt).to_string())
            .or_default() += 1;
    }
    for (prompt, n) in per_prompt {
        let v = key_of(&prompt).map(|k| variant_of_key(&k));
        let expected = match v {
            Some(3) => 2,
            Some(4) => 3,
            _ => 1,
        };
        assert_eq!(
            n,
            expected,
            "variant {v:?}: {}",
            prompt.chars().take(80).collect::<String>()
        );
    }
}

/// Fails each document's first attempts in one of four ways, then answers.
fn fault_script(hit: &Hit) -> Reply {
    let good = Reply::Content {
        content: good_answer(&hit.prompt).to_string(),
        length: false,
    };
    let key = key_of(&hit.prompt).unwrap_or_default();
    match (fnv(&key) % 4, hit.nth) {
        (0, 0) => Reply::Status {
            code: 429,
            body: r#"{"error": {"message": "slow down", "code": 429}}"#.into(),
            retry_after: Some(0),
        },
        (1, 0 | 1) => Reply::Status {
            code: 500,
            body: "internal error".into(),
            retry_after: None,
        },
        (2, 0) => Reply::Hang(Duration::from_secs(5)),
        (3, 0) => Reply::Reset,
        _ => good,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_429_500_timeouts_and_resets_lose_and_duplicate_nothing() {
    let server = ScriptedServer::start(Duration::from_millis(10), fault_script);
    let docs: Vec<_> = sample_docs().into_iter().step_by(9).take(48).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &docs);
    let yaml = synth_yaml(
        &input,
        &server.url,
        "  - qa_simple: {ENDPOINT, timeout_s: 1, backoff_s: 0.05, max_concurrency: 8}\n",
    );
    let r = run_lib(dir.path(), &yaml).await.unwrap();
    let out = dir.path().join("out");
    let data = read_parquet_dir(&out.join("data"));
    assert!(
        read_parquet_dir(&out.join("rejects")).is_empty(),
        "nothing rejected"
    );
    let by_source = by_column(&data, "source_id", "id");
    assert_eq!(by_source.len(), docs.len(), "every document");
    assert!(
        by_source.values().all(|ids| ids.len() == 2),
        "two rows each, no duplicates"
    );
    // Failures the script made: one each for 429, timeouts and resets, two for 500s.
    let failures: u64 = docs
        .iter()
        .map(
            |(_, t, _)| match fnv(&t.chars().take(200).collect::<String>()) % 4 {
                1 => 2,
                _ => 1,
            },
        )
        .sum();
    let syn = stage(&r, "qa_simple").synthesis.as_ref().unwrap();
    assert_eq!(syn.retries, failures, "{syn:?}");
    assert_eq!(syn.requests, docs.len() as u64 + failures);
    assert_eq!(
        server.hits().len() as u64,
        syn.requests,
        "the server saw each request"
    );
    assert_eq!(
        (syn.prompt_tokens, syn.completion_tokens),
        server.tokens(),
        "tokens are counted once per answered request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_a_reject_and_a_refused_key_stops_the_run() {
    let server = ScriptedServer::start(Duration::ZERO, |hit: &Hit| {
        let key = key_of(&hit.prompt).unwrap_or_default();
        if hit.authorization.as_deref() != Some("Bearer right") {
            return Reply::Status {
                code: 401,
                body: format!(
                    "invalid key {}",
                    hit.authorization.clone().unwrap_or_default()
                ),
                retry_after: None,
            };
        }
        if fnv(&key).is_multiple_of(3) {
            return Reply::Status {
                code: 400,
                body: "this model's maximum context length is 4096 tokens".into(),
                retry_after: None,
            };
        }
        Reply::Content {
            content: good_answer(&hit.prompt).to_string(),
            length: false,
        }
    });
    let docs: Vec<_> = sample_docs().into_iter().step_by(25).take(20).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &docs);
    let bin = env!("CARGO_BIN_EXE_openseek");
    let run = |key: &str, out: &str| {
        let p = pipeline(
            dir.path(),
            &synth_yaml(
                &input,
                &server.url,
                "  - quality_annotate: {ENDPOINT, api_key_env: OPENSEEK_TEST_KEY}\n",
            ),
        );
        std::process::Command::new(bin)
            .args(["run", p.to_str().unwrap(), "--output"])
            .arg(dir.path().join(out))
            .env("OPENSEEK_TEST_KEY", key)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap()
    };
    let ok = run("right", "ok");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let rejects = read_parquet_dir(&dir.path().join("ok/rejects"));
    let refused: Vec<&(String, String, &str)> = docs
        .iter()
        .filter(|(_, t, _)| fnv(&t.chars().take(200).collect::<String>()).is_multiple_of(3))
        .collect();
    assert!(!refused.is_empty());
    assert_eq!(rows(&rejects), refused.len());
    assert!(
        strings(&rejects, "reason")
            .iter()
            .all(|r| r.as_deref() == Some("synthesis:quality_annotate:refused"))
    );
    assert!(
        strings(&rejects, "detail")
            .iter()
            .all(|d| d.as_deref().unwrap().contains("HTTP 400"))
    );

    let wrong_key = "sk-wrong-0123456789abcdef";
    let bad = run(wrong_key, "bad");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        !stderr.contains(wrong_key),
        "the key is in the error: {stderr}"
    );
    assert!(
        stderr.contains("[api key]"),
        "the echoed key is redacted: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_and_tokens_per_minute_are_held() {
    let server = ScriptedServer::answering_well(Duration::ZERO);
    let docs: Vec<_> = sample_docs().into_iter().step_by(31).take(14).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &docs);
    // 120 a minute: two at once, then one every 60/118 s.
    let yaml = synth_yaml(
        &input,
        &server.url,
        "  - quality_annotate: {ENDPOINT, rpm: 120, max_concurrency: 8}\n",
    );
    run_lib(dir.path(), &yaml).await.unwrap();
    let times: Vec<f64> = {
        let hits = server.hits();
        let t0 = hits[0].at;
        hits.iter().map(|h| (h.at - t0).as_secs_f64()).collect()
    };
    assert_eq!(times.len(), docs.len());
    let interval = 60.0 / 118.0;
    for (i, &t) in times.iter().enumerate() {
        // Any window of w seconds holds at most the burst (2) plus w / interval.
        for (j, &u) in times.iter().enumerate().skip(i) {
            let allowed = 2.0 + (u - t) / interval + 0.05;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} requests in {:.3} s",
                j - i + 1,
                u - t
            );
        }
    }
    let span = times.last().unwrap();
    let expected = (docs.len() - 2) as f64 * interval;
    eprintln!(
        "RPM 120: {} requests in {span:.3} s (the limit allows {expected:.3} s at the earliest)",
        docs.len()
    );
    // The limit holds: the requests beyond the burst took at least their share of the minute (how
    // close to the limit they came is speed, which BENCHMARKS.md measures, not a test).
    assert!(
        *span >= expected - 0.05,
        "paced to the limit: {span:.2} s vs {expected:.2} s"
    );

    // Tokens: a request reserves its prompt's estimate plus the completion expected, and the usage
    // the endpoint reports corrects it. At 60,000 a minute (1,000 at once, then ~983 a second), the
    // tokens used never run ahead of the burst plus the rate, plus the one request that was let go.
    let server2 = ScriptedServer::answering_well(Duration::ZERO);
    let dir2 = tempfile::tempdir().unwrap();
    let short: Vec<_> = docs[..10]
        .iter()
        .map(|(i, t, l)| (i.clone(), t.chars().take(400).collect::<String>(), *l))
        .collect();
    let input2 = write_input(dir2.path(), &short);
    let yaml = synth_yaml(
        &input2,
        &server2.url,
        "  - quality_annotate: {ENDPOINT, tpm: 60000, max_tokens: 200}\n",
    );
    let r = run_lib(dir2.path(), &yaml).await.unwrap();
    let hits = server2.hits();
    let span = (hits.last().unwrap().at - hits[0].at).as_secs_f64();
    let syn = stage(&r, "quality_annotate").synthesis.clone().unwrap();
    let used = (syn.prompt_tokens + syn.completion_tokens) as f64;
    let largest = used / short.len() as f64 * 2.0;
    let allowed = 1000.0 + span * (60_000.0 - 1000.0) / 60.0 + largest;
    eprintln!(
        "TPM 60000: {used} tokens in {span:.3} s ({:.0} tokens/s; at most {allowed:.0} allowed)",
        used / span
    );
    assert!(used <= allowed, "{used} tokens in {span:.2} s");
    assert!(
        span > 1.0,
        "the requests were paced ({used} tokens in {span:.2} s)"
    );
}

#[test]
fn a_killed_run_resends_only_the_missing_requests_and_the_key_is_never_written() {
    let key = "sk-test-5fd2c1a9e8b7";
    let server = ScriptedServer::start(Duration::from_millis(150), move |hit: &Hit| {
        assert_eq!(
            hit.authorization.as_deref(),
            Some(&*format!("Bearer {key}"))
        );
        let doc = document_of(&hit.prompt);
        // Some answers echo the request's key, as a broken proxy might: it must never be stored.
        if fnv(doc).is_multiple_of(7) {
            return Reply::Content {
                content: format!("no JSON here, only {}", hit.authorization.clone().unwrap()),
                length: false,
            };
        }
        Reply::Content {
            content: good_answer(&hit.prompt).to_string(),
            length: false,
        }
    });
    let docs: Vec<_> = sample_docs().into_iter().step_by(5).take(80).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &docs);
    let p = pipeline(
        dir.path(),
        &synth_yaml(
            &input,
            &server.url,
            "  - qa_simple: {ENDPOINT, api_key_env: OPENSEEK_TEST_KEY, max_concurrency: 4, parse_retries: 0}\n",
        ),
    );
    let out = dir.path().join("out");
    let bin = env!("CARGO_BIN_EXE_openseek");
    let args = [
        "run",
        p.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    // Logs to files: a pipe nobody reads until the kill would fill and stall the run.
    let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
    let mut child = std::process::Command::new(bin)
        .args(args)
        .env("OPENSEEK_TEST_KEY", key)
        .env("RUST_LOG", "debug")
        .stdout(log("first.out"))
        .stderr(log("first.err"))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.hits().len() < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first_err = std::fs::read(dir.path().join("first.err")).unwrap();
    let first_out = std::fs::read(dir.path().join("first.out")).unwrap();
    assert!(!out.join("report.json").exists(), "killed before the end");
    let first_hits = server.hits().len();
    assert!(
        first_hits >= 30 && first_hits < docs.len(),
        "{first_hits} requests before the kill; {}",
        String::from_utf8_lossy(&first_err)
    );
    let cache = out.join("llm_cache/responses.jsonl");
    let stored = std::fs::read_to_string(&cache)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with('}'))
        .count();
    assert!(stored > 0 && stored <= first_hits);

    let second = std::process::Command::new(bin)
        .args(args)
        .env("OPENSEEK_TEST_KEY", key)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let hits = server.hits();
    let resent = hits.len() - first_hits;
    assert_eq!(
        resent,
        docs.len() - stored,
        "only the requests without a stored answer are sent again"
    );
    // No prompt answered and stored in the first run was sent again.
    let mut count: HashMap<&str, usize> = HashMap::new();
    for h in &hits {
        *count.entry(&h.prompt).or_default() += 1;
    }
    let twice = count.values().filter(|&&n| n > 1).count();
    assert_eq!(
        twice,
        first_hits - stored,
        "only the unstored in-flight requests were sent twice"
    );
    let r = report(&out);
    let syn = stage(&r, "qa_simple").synthesis.clone().unwrap();
    assert_eq!((syn.cached, syn.requests), (stored as u64, resent as u64));
    let data = read_parquet_dir(&out.join("data"));
    let rejects = read_parquet_dir(&out.join("rejects"));
    let sources: BTreeSet<String> = strings(&data, "source_id")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let rejected: BTreeSet<String> = strings(&rejects, "id")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(
        sources.len() + rejected.len(),
        docs.len(),
        "every document once"
    );
    assert!(sources.is_disjoint(&rejected));
    assert!(!rejected.is_empty(), "some answers echoed the key");

    // The key is in no file of the run and in no log line.
    let mut files = vec![];
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                files.push(p)
            }
        }
    }
    assert!(files.len() > 3);
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let text = if f.extension().is_some_and(|e| e == "parquet") {
            let batches = read_parquet_file(&f);
            format!("{batches:?}")
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        assert!(!text.contains(key), "the key is in {}", f.display());
    }
    for log in [&first_out, &first_err, &second.stdout, &second.stderr] {
        let log = String::from_utf8_lossy(log);
        assert!(!log.contains(key), "the key is in a log");
    }
}

/// `max_concurrency: 64` keeps 64 requests in flight, never more, and the rate limit holds over every
/// second. (How close the throughput comes to the ideal rate is timing, not asserted; the line printed
/// says it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_in_flight_within_the_limit() {
    let latency = Duration::from_millis(200);
    let server = ScriptedServer::answering_well(latency);
    let docs = sample_docs();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &docs);
    // 21,000 a minute (350 a second) is above the ideal 320 a second, but not by much.
    let rpm = 21_000.0;
    let yaml = synth_yaml(
        &input,
        &server.url,
        "  - quality_annotate: {ENDPOINT, max_concurrency: 64, rpm: 21000}\n",
    );
    let r = run_lib(dir.path(), &yaml).await.unwrap();
    let hits = server.hits();
    assert_eq!(hits.len(), docs.len());
    let t0 = hits[0].at;
    let times: Vec<f64> = hits.iter().map(|h| (h.at - t0).as_secs_f64()).collect();
    // From the first request sent to the last answer.
    let span = times.last().unwrap() + latency.as_secs_f64();
    let rate = docs.len() as f64 / span;
    let ideal = 64.0 / latency.as_secs_f64();
    eprintln!(
        "THROUGHPUT {} requests in {span:.3} s: {rate:.1}/s, {:.1}% of the ideal {ideal:.0}/s (stage: {:.3} s)",
        docs.len(),
        100.0 * rate / ideal,
        stage(&r, "quality_annotate").seconds
    );
    assert_eq!(server.peak_in_flight(), 64, "requests in flight at once");
    // The limit: a burst of one second's worth (350), then (rpm - 350) / 60 a second.
    let (burst, per_s) = (
        (rpm / 60.0f64).floor(),
        (rpm - (rpm / 60.0f64).floor()) / 60.0,
    );
    let mut j = 0;
    for (i, &t) in times.iter().enumerate() {
        while j < times.len() && times[j] < t + 1.0 {
            j += 1;
        }
        assert!(
            (j - i) as f64 <= burst + per_s + 1.0,
            "{} in the second from {t:.3}",
            j - i
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_build_a_taxonomy_and_route_documents_to_qa_or_cot() {
    let server = ScriptedServer::answering_well(Duration::ZERO);
    let docs: Vec<_> = sample_docs()
        .into_iter()
        .filter(|(_, t, _)| sentences(t).len() > 3 && t.chars().count() < 12_000)
        .step_by(11)
        .take(30)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &docs);
    let yaml = synth_yaml(
        &input,
        &server.url,
        "  - knowledge_tags: {ENDPOINT}\n  - tag_taxonomy: {output: tags/taxonomy.json}\n  \
         - qa_simple: {ENDPOINT, where: \"kp_difficulty = 'basic'\"}\n  \
         - cot_backward: {ENDPOINT, where: \"kp_difficulty <> 'basic' AND source_id IS NULL\"}\n",
    );
    let r = run_lib(dir.path(), &yaml).await.unwrap();
    r.check().unwrap();
    let out = dir.path().join("out");
    let data = read_parquet_dir(&out.join("data"));
    let basic: BTreeSet<&String> = docs
        .iter()
        .filter(|(_, t, _)| t.chars().count() % 2 == 0)
        .map(|(i, _, _)| i)
        .collect();
    assert!(!basic.is_empty() && basic.len() < docs.len());
    // Basic documents became two QA rows each, the others one CoT row; no document is left.
    let qa = by_column(&data, "source_id", "question");
    let cot = by_column(&data, "source_id", "cot");
    let with_question: BTreeSet<&String> = qa
        .iter()
        .filter(|(_, q)| q.iter().any(|q| !q.is_empty()))
        .map(|(s, _)| s)
        .collect();
    let with_cot: BTreeSet<&String> = cot
        .iter()
        .filter(|(_, c)| c.iter().any(|c| !c.is_empty()))
        .map(|(s, _)| s)
        .collect();
    assert_eq!(with_question, basic);
    assert_eq!(with_cot.len(), docs.len() - basic.len());
    assert!(with_cot.is_disjoint(&with_question));
    assert_eq!(rows(&data), 2 * basic.len() + (docs.len() - basic.len()));
    assert!(strings(&data, "source_id").iter().all(Option::is_some));
    // Made rows keep their document's columns.
    assert!(strings(&data, "kp_domain").iter().all(Option::is_some));
    // The taxonomy merges "History" and "history " and counts every document once.
    let t: openseek::stages::tag_taxonomy::Taxonomy =
        serde_json::from_slice(&std::fs::read(out.join("tags/taxonomy.json")).unwrap()).unwrap();
    assert_eq!(
        (t.documents, t.tagged),
        (docs.len() as u64, docs.len() as u64)
    );
    let keys: Vec<&str> = t.domains.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(
        keys.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["history", "literature"])
    );
    let history = t.domains.iter().find(|d| d.key == "history").unwrap();
    let expected = docs
        .iter()
        .filter(|(_, t, _)| t.chars().count() % 3 != 2)
        .count() as u64;
    assert_eq!(history.documents, expected);
    assert_eq!(history.aliases.len(), 2);
    assert_eq!(history.difficulty.values().sum::<u64>(), expected);
    let whaling = history.topics.iter().find(|t| t.key == "whaling").unwrap();
    assert_eq!(
        (whaling.documents, whaling.aliases.len()),
        (2 * expected, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_rag_searches_the_local_index_and_injects_what_it_found() {
    let server = ScriptedServer::answering_well(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let instructions: Vec<(String, String, &str)> = vec![
        (
            "q1".into(),
            "Who is the captain of the Pequod, and what does he hunt?".into(),
            "en",
        ),
        (
            "q2".into(),
            "What did the President say about the Navy?".into(),
            "en",
        ),
        ("q3".into(), "唐太宗写过哪些关于长安的诗？".into(), "zh"),
    ];
    let input = write_input(dir.path(), &instructions);
    let index_path = root().join("data/sample/en/sample-en-000.parquet");
    let yaml = synth_yaml(
        &input,
        &server.url,
        &format!(
            "  - cot_rag: {{ENDPOINT, index: {{path: {}, id: id}}, top_k: 2}}\n",
            index_path.display()
        ),
    );
    let r = run_lib(dir.path(), &yaml).await.unwrap();
    let out = dir.path().join("out");
    let data = read_parquet_dir(&out.join("data"));
    assert_eq!(
        rows(&data),
        3,
        "{:?}",
        read_parquet_dir(&out.join("rejects"))
    );
    let answers = strings(&data, "answer");
    assert!(answers.iter().all(|a| a.as_deref() == Some("Ahab")));
    let sample_ids: BTreeSet<String> = strings(&read_parquet_file(&index_path), "id")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let documents = data[0].column_by_name("documents").unwrap();
    let documents = arrow::array::AsArray::as_list::<i32>(documents);
    for row in 0..documents.len() {
        let ids = documents.value(row);
        let ids = arrow::array::AsArray::as_string::<i32>(&ids);
        assert_eq!(ids.len(), 2, "top_k documents used");
        assert!(ids.iter().all(|i| sample_ids.contains(i.unwrap())));
    }
    for trace in strings(&data, "trace") {
        let trace = trace.unwrap();
        assert!(
            trace.contains("<|begin_search_query|>whale ship captain<|end_search_query|>"),
            "{trace}"
        );
        assert!(
            trace.contains("<|begin_search_result|>the library says "),
            "{trace}"
        );
        assert!(trace.ends_with("Final answer: Ahab"), "{trace}");
    }
    let syn = stage(&r, "cot_rag").synthesis.clone().unwrap();
    // Per instruction: the first turn, the condensing call, and the turn that answers.
    assert_eq!(syn.requests, 9);
    assert!(
        out.join("rag_index").read_dir().unwrap().next().is_some(),
        "the index is kept for reruns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_mode_sends_each_stage_s_schema_and_rag_sends_its_stop_marker() {
    let server = ScriptedServer::answering_well(Duration::ZERO);
    let docs: Vec<_> = sample_docs().into_iter().step_by(50).take(4).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &docs);
    let yaml = synth_yaml(
        &input,
        &server.url,
        "  - quality_annotate: {ENDPOINT, response_format: json_schema}\n  - qa_simple: {ENDPOINT}\n",
    );
    run_lib(dir.path(), &yaml).await.unwrap();
    let hits = server.hits();
    assert_eq!(hits.len(), 2 * docs.len());
    let (quality, qa): (Vec<&Hit>, Vec<&Hit>) =
        hits.iter().partition(|h| h.response_format.is_some());
    assert_eq!(
        (quality.len(), qa.len()),
        (docs.len(), docs.len()),
        "text mode sends no format"
    );
    for h in quality {
        let f = h.response_format.as_ref().unwrap();
        assert_eq!(f["type"], "json_schema");
        assert_eq!(f["json_schema"]["name"], "quality_annotate");
        assert_eq!(f["json_schema"]["strict"], true);
        let schema = &f["json_schema"]["schema"];
        assert_eq!(schema["required"], serde_json::json!(["reason", "score"]));
        assert_eq!(schema["properties"]["score"]["type"], "integer");
    }
    // cot_rag stops generation at the end-of-query marker.
    let rag_server = ScriptedServer::answering_well(Duration::ZERO);
    let rag_dir = tempfile::tempdir().unwrap();
    let input = write_input(
        rag_dir.path(),
        &[("q".into(), "Who hunts the whale?".into(), "en")],
    );
    let yaml = synth_yaml(
        &input,
        &rag_server.url,
        &format!(
            "  - cot_rag: {{ENDPOINT, index: {{path: {}, id: id}}, response_format: json_schema}}\n",
            root()
                .join("data/sample/en/sample-en-000.parquet")
                .display()
        ),
    );
    run_lib(rag_dir.path(), &yaml).await.unwrap();
    let hits = rag_server.hits();
    assert_eq!(hits.len(), 3);
    assert!(
        hits.iter().all(|h| h.response_format.is_none()),
        "reasoning is free text"
    );
    assert_eq!(
        hits[0].stop,
        Some(serde_json::json!(["<|end_search_query|>"]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_routed_by_language_keep_each_other_s_values() {
    let server = ScriptedServer::answering_well(Duration::ZERO);
    let docs: Vec<_> = sample_docs().into_iter().step_by(37).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &docs);
    let yaml = synth_yaml(
        &input,
        &server.url,
        "  - quality_annotate: {ENDPOINT, where: \"language = 'en'\", max_input_chars: 1000}\n  \
         - quality_annotate: {ENDPOINT, where: \"language = 'zh'\", max_input_chars: 300}\n",
    );
    let r = run_lib(dir.path(), &yaml).await.unwrap();
    let data = read_parquet_dir(&dir.path().join("out/data"));
    assert_eq!(rows(&data), docs.len());
    let texts: HashMap<String, String> = docs
        .iter()
        .map(|(i, t, _)| (i.clone(), t.clone()))
        .collect();
    let langs: HashMap<String, &str> = docs.iter().map(|(i, _, l)| (i.clone(), *l)).collect();
    for (id, score) in strings(&data, "id")
        .into_iter()
        .zip(strings(&data, "quality_score"))
    {
        let id = id.unwrap();
        let max = if langs[&id] == "en" { 1000 } else { 300 };
        let shown = openseek::stages::synth::methods::truncate(&texts[&id], max);
        assert_eq!(score, Some((shown.chars().count() % 6).to_string()), "{id}");
    }
    let made = |name: &str| stage(&r, name).synthesis.as_ref().unwrap().rows_made;
    let en = langs.values().filter(|l| **l == "en").count() as u64;
    assert_eq!(
        (made("quality_annotate"), made("quality_annotate#2")),
        (en, docs.len() as u64 - en)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_rag_without_a_final_answer_is_rejected_with_its_trace() {
    // A model that never searches and never answers: every turn is talk.
    let server = ScriptedServer::start(Duration::ZERO, |hit: &Hit| Reply::Content {
        content: if hit.prompt.contains("search tool") {
            "I do not know.".into()
        } else {
            "Still thinking.".into()
        },
        length: false,
    });
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(
        dir.path(),
        &[
            ("q1".into(), "Who hunts the whale?".into(), "en"),
            ("q2".into(), "What is the Pequod?".into(), "en"),
        ],
    );
    let yaml = synth_yaml(
        &input,
        &server.url,
        &format!(
            "  - cot_rag: {{ENDPOINT, index: {{path: {}, id: id}}, max_turns: 3}}\n",
            root()
                .join("data/sample/en/sample-en-000.parquet")
                .display()
        ),
    );
    let r = run_lib(dir.path(), &yaml).await.unwrap();
    r.check().unwrap();
    let out = dir.path().join("out");
    assert_eq!(rows(&read_parquet_dir(&out.join("data"))), 0);
    let rejects = read_parquet_dir(&out.join("rejects"));
    assert_eq!(rows(&rejects), 2);
    assert!(
        strings(&rejects, "reason")
            .iter()
            .all(|r| r.as_deref() == Some("synthesis:cot_rag:unparseable"))
    );
    for d in strings(&rejects, "detail") {
        let d = d.unwrap();
        assert!(d.contains("no final answer after 3 turns"), "{d}");
        assert!(
            d.contains("I do not know.\nStill thinking.\nStill thinking."),
            "the trace is kept: {d}"
        );
    }
    assert_eq!(server.hits().len(), 6, "three turns each, no search");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_option_the_endpoint_refuses_stops_the_run_instead_of_rejecting_everything() {
    let server = ScriptedServer::start(Duration::ZERO, |_: &Hit| Reply::Status {
        code: 400,
        body:
            r#"{"error": {"message": "response_format json_schema is not supported", "code": 400}}"#
                .into(),
        retry_after: None,
    });
    let docs: Vec<_> = sample_docs().into_iter().step_by(20).take(30).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &docs);
    let yaml = synth_yaml(
        &input,
        &server.url,
        "  - quality_annotate: {ENDPOINT, response_format: json_schema, max_concurrency: 2}\n",
    );
    let e = format!("{:#}", run_lib(dir.path(), &yaml).await.unwrap_err());
    assert!(
        e.contains("refused the first") && e.contains("answered none"),
        "{e}"
    );
    assert!(e.contains("json_schema is not supported"), "{e}");
    assert!(
        server.hits().len() < docs.len(),
        "stopped early: {}",
        server.hits().len()
    );
}
