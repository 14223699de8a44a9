//! The command line as users and scripts call it: `train`, then `eval` and `generate` on its checkpoint,
//! on shards of the bundled Chinese sample tokenized with Qwen3's tokenizer.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;

use openseek_shards::{DType, ShardWriter};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Qwen3's tokenizer.json, unpacked from the repository's gzipped copy into `dir`.
fn qwen3(dir: &Path) -> PathBuf {
    let gz = std::fs::File::open(repo().join("data/tokenizers/qwen3/tokenizer.json.gz")).unwrap();
    let mut json = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut json).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// The bundled Chinese sample's texts, each followed by `<|endoftext|>`, as one shard.
fn shard(dir: &Path, tokenizer: &Path) -> PathBuf {
    let tok = tokenizers::Tokenizer::from_file(tokenizer).unwrap();
    let eos = tok.token_to_id("<|endoftext|>").unwrap();
    let gz = std::fs::File::open(repo().join("data/sample/zh/sample-zh-000.jsonl.gz")).unwrap();
    let prefix = dir.join("zh");
    let mut w = ShardWriter::create(&prefix, DType::I32).unwrap();
    for line in BufReader::new(flate2::read::GzDecoder::new(gz))
        .lines()
        .take(200)
    {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let mut ids = tok
            .encode(v["text"].as_str().unwrap(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        ids.push(eos);
        w.add_document(&ids).unwrap();
    }
    w.finish(&Default::default()).unwrap();
    prefix
}

fn run<S: AsRef<str>>(args: &[S]) -> String {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_openseek-train"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openseek-train {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn train_then_eval_and_generate_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = qwen3(dir.path());
    let prefix = shard(dir.path(), &tokenizer);
    // The tiny config, shorter: 40 steps of 4 × 32 tokens.
    let config = std::fs::read_to_string(repo().join("train/configs/tiny.yaml"))
        .unwrap()
        .replace("seq_len: 128", "seq_len: 32")
        .replace("eval_every: 50", "eval_every: 20")
        .replace("checkpoint_every: 100", "checkpoint_every: 20");
    let cfg = dir.path().join("tiny.yaml");
    std::fs::write(&cfg, config).unwrap();
    let out = dir.path().join("run");
    let p = prefix.to_str().unwrap();
    run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        p,
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "40",
    ]);
    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(metrics.len(), 40);
    let ckpt = out.join("step-000040");
    for f in ["config.json", "model.safetensors", "training.json"] {
        assert!(ckpt.join(f).exists(), "{f}");
    }

    // eval: one number, below the untrained model's ln(vocab) ≈ 11.93, and lower at step 40 than at
    // step 20.
    let eval = |step: &str| -> f64 {
        let c = out.join(step);
        run(&[
            "eval",
            "--checkpoint",
            c.to_str().unwrap(),
            "--data",
            p,
            "--max-tokens",
            "8192",
        ])
        .trim()
        .parse()
        .unwrap()
    };
    let (early, late) = (eval("step-000020"), eval("step-000040"));
    assert!(late.is_finite() && late < 151_936f64.ln() - 1.0, "{late}");
    assert!(late < early, "step 20: {early}, step 40: {late}");

    // generate --ids: N ids on one line, deterministic; the text form starts with the prompt and
    // continues with the same tokens.
    let args = |ids: bool| {
        let mut a = vec![
            "generate",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--prompt",
            "秦川雄帝宅，",
            "--max-new-tokens",
            "12",
        ];
        if ids {
            a.push("--ids");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let line = run(&args(true));
    let ids: Vec<u32> = line
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 12, "{line}");
    assert!(ids.iter().all(|&t| t < 151_936));
    assert_eq!(line.trim_end().lines().count(), 1);
    assert_eq!(run(&args(true)), line);
    let text = run(&args(false));
    assert!(text.starts_with("秦川雄帝宅，"), "{text}");
    let tok = tokenizers::Tokenizer::from_file(&tokenizer).unwrap();
    let continuation = tok.decode(&ids, false).unwrap();
    // The prompt, the continuation, and the line's end.
    assert_eq!(text, format!("秦川雄帝宅，{continuation}\n"));
}

/// Errors name what is wrong: a missing checkpoint, a shard that is not there.
#[test]
fn bad_paths_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_openseek-train"))
        .args([
            "eval",
            "--checkpoint",
            "/nonexistent/ckpt",
            "--data",
            "/nonexistent/shard",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/ckpt"), "{err}");
    let cfg = repo().join("train/configs/tiny.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_openseek-train"))
        .args([
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            "/nonexistent/shard",
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/shard"), "{err}");
}
