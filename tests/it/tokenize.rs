//! The `tokenize` stage and `openseek shards`: shards that hold exactly the tokenizer's ids, framed by
//! the template, one prefix per dataset; errors for templates naming tokens the tokenizer lacks.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use openseek::context::Engine;
use openseek::pipeline::{RunOptions, run_pipeline};
use openseek::stages::tokenize::tokenizer;
use openseek_shards::{IndexedDataset, Sidecar, json_path, prefixes_in};

use crate::common::*;

async fn run(dir: &Path, yaml: &str) -> anyhow::Result<openseek::report::Report> {
    let engine = Engine::new(Some(2));
    let p = pipeline(dir, yaml);
    let opts = RunOptions {
        output: Some(dir.join("out")),
        catalog: Some(root().join("datasets.yaml")),
        print_summary: false,
        ..Default::default()
    };
    run_pipeline(&engine, &p, &opts).await
}

/// The bundled sample through a filter and `tokenize`: every document that stays is in its dataset's
/// prefix, as the tokenizer's own ids between the template's, and its row says how many tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_hold_the_tokenizers_ids_framed_by_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    // A stale temporary and a stale prefix of an interrupted attempt, which the stage must clear.
    std::fs::create_dir_all(&shards).unwrap();
    std::fs::write(shards.join("sample-en-00007.bin.tmp"), b"junk").unwrap();
    let yaml = format!(
        "name: tok\ninput: {{datasets: [sample-en, sample-zh]}}\nstages:\n  - text_length: {{min_chars: 100}}\n  - tokenize: {{tokenizer: qwen3, template: \"{{text}}<|endoftext|>\", output: {}, batch_docs: 64}}\n",
        shards.display()
    );
    let report = run(dir.path(), &yaml).await.unwrap();
    report.check().unwrap();
    let stage = report.stages.iter().find(|s| s.name == "tokenize").unwrap();
    let summary = stage.tokenize.as_ref().unwrap();
    assert_eq!(summary.dtype, "int32"); // 151,669 ids: Megatron's choice is int32
    assert_eq!(summary.documents, report.rows_written);

    let prefixes = prefixes_in(&shards).unwrap();
    let names: Vec<String> = prefixes
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["sample-en-00000", "sample-zh-00000"]);
    assert!(!shards.join("sample-en-00007.bin.tmp").exists());

    let mut tok = tokenizer::load("qwen3", Path::new(".")).unwrap().tokenizer;
    tok.set_encode_special_tokens(true);
    let eot = tok.token_to_id("<|endoftext|>").unwrap();
    // Every output row, by dataset, in output order: (text, tokens column).
    let out = read_parquet_dir(&dir.path().join("out/data"));
    let mut rows: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for b in &out {
        let texts = strings(std::slice::from_ref(b), "text");
        let ds = strings(std::slice::from_ref(b), "dataset");
        let tokens = b
            .column_by_name("tokens")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            rows.entry(ds[i].clone().unwrap())
                .or_default()
                .push((texts[i].clone().unwrap(), tokens.value(i)));
        }
    }
    let mut total_tokens = 0u64;
    for prefix in &prefixes {
        let sidecar = Sidecar::read(&json_path(prefix)).unwrap();
        let group = sidecar.group.clone().unwrap();
        let ds = IndexedDataset::open(prefix).unwrap();
        let docs = &rows[&group];
        assert_eq!(ds.documents(), docs.len(), "{group}");
        assert_eq!(sidecar.tokens, ds.total_tokens());
        total_tokens += ds.total_tokens();
        // Output rows may be spread over partitions, so compare the sequences as multisets.
        let mut expected: Vec<Vec<i64>> = docs
            .iter()
            .map(|(text, n)| {
                let ids = framed_ids(&tok, text, eot);
                assert_eq!(*n as usize, ids.len(), "the row's token count");
                ids
            })
            .collect();
        let mut written: Vec<Vec<i64>> = (0..ds.len()).map(|i| ds.sequence(i)).collect();
        expected.sort();
        written.sort();
        assert!(
            written == expected,
            "{group}: the shard's sequences differ from the tokenizer's"
        );
    }
    assert_eq!(total_tokens, summary.tokens);

    // `openseek shards verify` and `blend` on what was written.
    let (ok, stdout, stderr) = openseek(&["shards", "verify", shards.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(stdout.matches("┆ ok ").count(), 2, "{stdout}");
    let blend_yaml = dir.path().join("blend.yaml");
    let (ok, stdout, stderr) = openseek(&[
        "shards",
        "blend",
        shards.to_str().unwrap(),
        "--weights",
        "sample-en=3,sample-zh=1",
        "--out",
        blend_yaml.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}{stderr}");
    let yaml: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(&blend_yaml).unwrap()).unwrap();
    let list = yaml["data"]["data_path"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[0].as_f64().unwrap(), 0.75);
    assert!(list[1].as_str().unwrap().ends_with("sample-en-00000"));
    assert!(stdout.contains("--data-path 0.75000000 "), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_naming_a_token_the_tokenizer_lacks_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // OpenSeek's framing belongs to the original Qwen tokenizer; Qwen3's has no extra tokens.
    let yaml = format!(
        "name: tok\ninput: {{dataset: sample-en}}\nstages:\n  - tokenize: {{tokenizer: qwen3, template: \"<|extra_203|>{{text}}<|extra_204|>\", output: {}}}\n",
        dir.path().join("shards").display()
    );
    let e = format!("{:#}", run(dir.path(), &yaml).await.unwrap_err());
    assert!(
        e.contains("<|extra_203|>") && e.contains("does not have") && e.contains("<|endoftext|>"),
        "{e}"
    );
    let yaml = yaml.replace("<|extra_203|>{text}<|extra_204|>", "no placeholder");
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    let e = format!("{:#}", run(dir.path(), &yaml).await.unwrap_err());
    assert!(e.contains("{text}"), "{e}");
}

/// `text`'s ids by Hugging Face's own tokenizer (with `encode_special_tokens` set, as document text is
/// encoded), then `eot`: what `{text}<|endoftext|>` writes.
fn framed_ids(tok: &tokenizers::Tokenizer, text: &str, eot: u32) -> Vec<i64> {
    let mut ids: Vec<i64> = tok
        .encode(text, false)
        .unwrap()
        .get_ids()
        .iter()
        .map(|&t| i64::from(t))
        .collect();
    ids.push(i64::from(eot));
    ids
}

/// The bundled Qwen3 `tokenizer.json`, as text.
fn bundled_qwen3_json() -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(
            std::fs::File::open(root().join("data/tokenizers/qwen3/tokenizer.json.gz")).unwrap(),
        ),
        &mut text,
    )
    .unwrap();
    text
}

/// A run's identity covers the tokenizer's contents: after the file changes, the finished run is not
/// taken for this one (its shards were made by the old tokenizer); `--fresh` is asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tokenizer_file_is_a_changed_run() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("tokenizer.json");
    let text = bundled_qwen3_json();
    std::fs::write(&json, &text).unwrap();
    let yaml = format!(
        "name: tok\ninput: {{dataset: sample-en}}\nstages:\n  - tokenize: {{tokenizer: {}, template: \"{{text}}<|endoftext|>\", output: shards}}\n",
        json.display()
    );
    let first = run(dir.path(), &yaml).await.unwrap();
    // The same run again is the finished one.
    assert_eq!(
        run(dir.path(), &yaml).await.unwrap().rows_written,
        first.rows_written
    );
    std::fs::write(&json, format!("{text}\n")).unwrap();
    let e = format!("{:#}", run(dir.path(), &yaml).await.unwrap_err());
    assert!(e.contains("--fresh"), "{e}");
}

/// The tokenizers of the shared corpus: GPT-2's, from its original vocab.json and merges.txt, is the
/// bundled `gpt2` ("Hello world!" is [15496, 995, 0], and its 50,257 ids make Megatron choose uint16);
/// DeepSeek-V3's loads by path, with its sentence tokens usable in a template.
#[test]
fn the_corpus_tokenizers_load() {
    let Some(corpus) = corpus("the_corpus_tokenizers_load") else {
        return;
    };
    let dir = corpus.join("tokenizers");
    let gpt2 = tokenizer::load(dir.join("gpt2").to_str().unwrap(), Path::new(".")).unwrap();
    let ids = gpt2.tokenizer.encode("Hello world!", false).unwrap();
    assert_eq!(ids.get_ids(), &[15496, 995, 0]);
    assert_eq!(gpt2.info.vocab_size, 50_257);
    assert_eq!(
        openseek_shards::DType::for_vocab(gpt2.info.vocab_size),
        openseek_shards::DType::U16
    );
    assert_eq!(
        gpt2.info.sha256,
        tokenizer::load("gpt2", Path::new(".")).unwrap().info.sha256,
        "the bundled gpt2 is the corpus's"
    );
    let qwen3 = tokenizer::load(dir.join("qwen3").to_str().unwrap(), Path::new(".")).unwrap();
    assert_eq!(
        qwen3.info.sha256,
        tokenizer::sha256("qwen3", Path::new(".")).unwrap(),
        "the bundled qwen3 is the corpus's"
    );
    let ds = tokenizer::load(dir.join("deepseek-v3").to_str().unwrap(), Path::new(".")).unwrap();
    let t = openseek::stages::tokenize::template::Template::parse(
        "<｜begin▁of▁sentence｜>{text}<｜end▁of▁sentence｜>",
        &ds.tokenizer,
        "deepseek-v3",
    )
    .unwrap();
    assert_eq!(t.prefix.len(), 1);
    assert_eq!(t.suffix.len(), 1);
    assert_ne!(t.prefix, t.suffix);
}

/// Megatron's own `IndexedDataset` reads our shards of the bundled sample and gets Python
/// `tokenizers`' ids, and its `IndexedDatasetBuilder` writes the same bytes
/// (`benches/tokenize/megatron_check.py`). Needs the PyTorch virtualenv of `scripts/setup-torch-venv`
/// (`OPENSEEK_TORCH_VENV`, default `~/.cache/openseek/torch-venv`), which `scripts/install-test-deps`
/// makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megatron_reads_our_shards_and_writes_the_same_bytes() {
    let Some(python) =
        openseek_testkit::torch_python("megatron_reads_our_shards_and_writes_the_same_bytes")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    let yaml = format!(
        "name: tok\ninput: {{datasets: [sample-en, sample-zh]}}\nstages:\n  - tokenize: {{tokenizer: qwen3, template: \"{{text}}<|endoftext|>\", output: {}, max_shard_mb: 1}}\n",
        shards.display()
    );
    run(dir.path(), &yaml).await.unwrap().check().unwrap();
    assert!(
        prefixes_in(&shards).unwrap().len() > 2,
        "max_shard_mb splits the English sample"
    );
    let out = std::process::Command::new(python)
        .arg(root().join("benches/tokenize/megatron_check.py"))
        .arg(&shards)
        .arg(dir.path().join("out"))
        .arg(root().join("data/tokenizers/qwen3/tokenizer.json.gz"))
        .arg("<|endoftext|>")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert!(stdout.contains("byte-identical"), "{stdout}");
}

/// Documents over 256 KB (encoded apart from the others) keep their place among the small ones, and a
/// `tokenizer.json` saved with truncation and padding still gives whole documents: every shard sequence,
/// in order, is the plain tokenizer's ids of its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_documents_and_a_truncating_tokenizer_give_whole_documents_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sample = read_parquet_dir(&root().join("data/sample/en"));
    let small: Vec<String> = strings(&sample, "text").into_iter().flatten().collect();
    // Every fifth document is ~300 KB of real text: the sample's documents one after another.
    let mut docs = Vec::new();
    let mut next = small.iter().cycle();
    for i in 0..40 {
        let mut text = next.next().unwrap().clone();
        while i % 5 == 2 && text.len() < 300 << 10 {
            text.push_str("\n\n");
            text.push_str(next.next().unwrap());
        }
        docs.push(text);
    }
    let input = dir.path().join("docs.jsonl");
    let lines: Vec<String> = docs
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": i.to_string(), "text": t}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();

    let text = bundled_qwen3_json();
    let mut plain = tokenizers::Tokenizer::from_bytes(text.as_bytes()).unwrap();
    plain.set_encode_special_tokens(true);
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["truncation"] = serde_json::json!({"direction": "Right", "max_length": 16, "strategy": "LongestFirst", "stride": 0});
    json["padding"] = serde_json::json!({"strategy": {"Fixed": 32}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "!"});
    let truncating = dir.path().join("tokenizer.json");
    std::fs::write(&truncating, json.to_string()).unwrap();

    let yaml = format!(
        "name: huge\ninput: {{path: {}, id: id}}\nstages:\n  - tokenize: {{tokenizer: {}, template: \"{{text}}<|endoftext|>\", output: {}, batch_docs: 8}}\n",
        input.display(),
        truncating.display(),
        dir.path().join("shards").display()
    );
    run(dir.path(), &yaml).await.unwrap().check().unwrap();
    let eot = plain.token_to_id("<|endoftext|>").unwrap();
    let prefixes = prefixes_in(&dir.path().join("shards")).unwrap();
    assert_eq!(prefixes.len(), 1, "{prefixes:?}");
    let ds = IndexedDataset::open(&prefixes[0]).unwrap();
    assert_eq!(ds.documents(), docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let ids = framed_ids(&plain, doc, eot);
        assert!(ds.sequence(i) == ids, "document {i} ({} bytes)", doc.len());
    }
}

/// Document text is text: `<|endoftext|>` and `<|im_start|>` quoted inside a document are encoded as
/// their characters, as Hugging Face `tokenizers` does with `encode_special_tokens` (transformers'
/// `split_special_tokens=True`); only the template's `<|endoftext|>` is the special id, once, at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_token_strings_inside_documents_are_text() {
    let dir = tempfile::tempdir().unwrap();
    let docs = [
        "A web page that quotes a chat template: <|im_start|>user\nHello<|im_end|> and then <|endoftext|> in the middle.",
        "<|endoftext|>",
        "Qwen3's <think> is an added token that is not special, so it stays one id.",
    ];
    let input = dir.path().join("docs.jsonl");
    let lines: Vec<String> = docs
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": format!("d{i}"), "text": t}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let yaml = format!(
        "name: special\ninput: {{path: {}}}\nstages:\n  - tokenize: {{tokenizer: qwen3, template: \"{{text}}<|endoftext|>\", output: {}}}\n",
        input.display(),
        dir.path().join("shards").display()
    );
    run(dir.path(), &yaml).await.unwrap().check().unwrap();
    let plain = tokenizer::load("qwen3", Path::new(".")).unwrap().tokenizer;
    let mut as_text = plain.clone();
    as_text.set_encode_special_tokens(true);
    let eot = plain.token_to_id("<|endoftext|>").unwrap();
    let im_start = plain.token_to_id("<|im_start|>").unwrap();
    let think = plain.token_to_id("<think>").unwrap();
    let prefixes = prefixes_in(&dir.path().join("shards")).unwrap();
    assert_eq!(prefixes.len(), 1, "{prefixes:?}");
    let ds = IndexedDataset::open(&prefixes[0]).unwrap();
    assert_eq!(ds.documents(), docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let seq = ds.sequence(i);
        assert_eq!(seq, framed_ids(&as_text, doc, eot), "document {i}");
        assert_eq!(
            seq.iter().filter(|&&t| t == i64::from(eot)).count(),
            1,
            "document {i}: only the template's <|endoftext|> is the special id"
        );
        assert!(!seq.contains(&i64::from(im_start)), "document {i}");
        // What the bug did: the plain encoding has the special ids.
        if doc.contains("<|") {
            assert_ne!(seq, framed_ids(&plain, doc, eot), "document {i}");
        }
    }
    assert!(
        ds.sequence(2).contains(&i64::from(think)),
        "non-special added tokens still match"
    );
}

/// Run from a directory that holds its own `data/tokenizers/qwen3` (with GPT-2's files in it), the
/// binary's `qwen3` is still the bundled Qwen3: the shard's sidecar records its hash.
#[test]
fn the_bundled_tokenizer_does_not_depend_on_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let decoy = dir.path().join("data/tokenizers/qwen3");
    std::fs::create_dir_all(&decoy).unwrap();
    let corpus_gpt2 = root().join("data/tokenizers/gpt2");
    for f in ["vocab.json", "merges.txt"] {
        let mut text = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(
                std::fs::File::open(corpus_gpt2.join(format!("{f}.gz"))).unwrap(),
            ),
            &mut text,
        )
        .unwrap();
        std::fs::write(decoy.join(f), text).unwrap();
    }
    let input = dir.path().join("docs.jsonl");
    std::fs::write(
        &input,
        r#"{"id": "a", "text": "Hello world, a short document."}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "name: cwd\ninput: {path: docs.jsonl}\noutput: {path: out}\nstages:\n  - tokenize: {tokenizer: qwen3, template: \"{text}<|endoftext|>\", output: shards}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openseek"))
        .args(["run", "p.yaml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefixes = prefixes_in(&dir.path().join("out/shards")).unwrap();
    assert_eq!(prefixes.len(), 1);
    let sidecar = Sidecar::read(&json_path(&prefixes[0])).unwrap();
    let recorded = sidecar.tokenizer.unwrap();
    assert_eq!(recorded.name, "qwen3");
    assert_eq!(
        recorded.sha256,
        tokenizer::sha256("qwen3", Path::new(".")).unwrap()
    );
    assert_eq!(recorded.vocab_size, 151_669);
}
