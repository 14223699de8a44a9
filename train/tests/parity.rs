//! Parity with Hugging Face `transformers`' `DeepseekV3ForCausalLM`, both ways (train/parity/reference.py):
//! a tiny random model saved by transformers gives our model the same logits, and our saved checkpoint
//! gives transformers ours. Needs the PyTorch virtualenv of `scripts/setup-torch-venv`
//! (`OPENSEEK_TORCH_VENV`, default `~/.cache/openseek/torch-venv`), which `scripts/install-test-deps`
//! makes: in CI its absence fails, elsewhere the tests say SKIPPED.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use openseek_train::checkpoint;
use openseek_train::model::deepseek::DeepSeek;

/// ‖a − b‖ / ‖b‖ at most this, in f32 (the bound).
const LIMIT: f64 = 1e-4;

/// The PyTorch venv's python; in CI its absence fails the test (`openseek_testkit`).
fn python(test: &str) -> Option<PathBuf> {
    openseek_testkit::torch_python(test)
}

fn reference(python: &Path, args: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("parity/reference.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .expect("running reference.py");
    assert!(
        out.status.success() || args[0] == "check",
        "reference.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let sum_sq = |t: &Tensor| -> candle_core::Result<f64> {
        t.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()
    };
    let diff =
        sum_sq(&(a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap()).unwrap());
    (diff.unwrap() / sum_sq(b).unwrap()).sqrt()
}

/// transformers → ours: four tiny random models (query LoRA or not, tied head or not, YaRN), with
/// random routing biases, saved by `save_pretrained`.
#[test]
fn transformers_checkpoints_give_our_model_the_same_logits() {
    let Some(py) = python("transformers_checkpoints_give_our_model_the_same_logits") else {
        return;
    };
    let dev = Device::Cpu;
    for flags in [
        &[][..],
        &["--tie"],
        &["--no-q-lora"],
        &["--yarn", "--seed", "3"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let mut args = vec!["make", d];
        args.extend_from_slice(flags);
        reference(&py, &args);
        let (model, _vars) = checkpoint::load_model(dir.path(), &dev).unwrap();
        let r =
            candle_core::safetensors::load(dir.path().join("reference.safetensors"), &dev).unwrap();
        let ids = r["ids"].to_dtype(DType::U32).unwrap();
        let ours = model.logits(&ids, None).unwrap();
        let err = relative_error(&ours, &r["logits"]);
        eprintln!("transformers -> openseek-train {flags:?}: relative error {err:.2e}");
        assert!(err < LIMIT, "{flags:?}: relative error {err}");
    }
}

/// ours → transformers: our tiny config (MTP module included, which transformers ignores), random
/// weights and routing biases, saved by our trainer's checkpoint writer; and greedy generation gives
/// the same ids.
#[test]
fn our_checkpoints_give_transformers_the_same_logits() {
    let Some(py) = python("our_checkpoints_give_transformers_the_same_logits") else {
        return;
    };
    let dev = Device::Cpu;
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml"))
            .unwrap();
    let cfg: openseek_train::train::Config = serde_norway::from_str(&text).unwrap();
    for (tie, q_lora) in [(true, Some(32)), (false, None)] {
        let mut c = cfg.model.clone();
        c.vocab_size = 503;
        c.tie_word_embeddings = tie;
        c.q_lora_rank = q_lora;
        let vars = VarMap::new();
        let model = DeepSeek::new(
            &c,
            DType::F32,
            &dev,
            VarBuilder::from_varmap(&vars, DType::F32, &dev),
        )
        .unwrap();
        openseek_train::train::init_weights(&vars, 0.1, 7).unwrap();
        for (name, var) in vars.data().lock().unwrap().iter() {
            if name.ends_with("e_score_correction_bias") {
                let n = var.elem_count();
                let b: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32) * 0.01).collect();
                var.set(&Tensor::from_vec(b, n, &dev).unwrap()).unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("step-000001");
        checkpoint::save(&ckpt, &c, &vars).unwrap();
        let ids: Vec<i64> = (0..2 * 40).map(|i| (i * 131 + 7) % 503).collect();
        let ids = Tensor::from_vec(ids, (2, 40), &dev).unwrap();
        let logits = model
            .logits(&ids.to_dtype(DType::U32).unwrap(), None)
            .unwrap();
        // Greedy continuation of a prompt, compared with transformers' `generate`.
        let prompt: Vec<u32> = (0..8).map(|i| (i * 61 + 5) % 503).collect();
        let generated = openseek_train::infer::generate(&model, &prompt, 12, None, &dev).unwrap();
        let as_i64 = |v: &[u32]| {
            Tensor::from_vec(
                v.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                v.len(),
                &dev,
            )
            .unwrap()
        };
        let tensors: HashMap<String, Tensor> = [
            ("ids".to_string(), ids),
            ("logits".to_string(), logits),
            ("prompt".to_string(), as_i64(&prompt)),
            ("generated".to_string(), as_i64(&generated)),
        ]
        .into();
        candle_core::safetensors::save(&tensors, ckpt.join("reference.safetensors")).unwrap();
        let out = reference(&py, &["check", ckpt.to_str().unwrap()]);
        let report = String::from_utf8_lossy(&out.stdout);
        eprintln!("openseek-train -> transformers (tied {tie}, q_lora {q_lora:?}): {report}");
        assert!(
            out.status.success(),
            "tied {tie}, q_lora {q_lora:?}: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
