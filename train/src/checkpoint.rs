//! Checkpoints in Hugging Face's format: `config.json` (`model_type: deepseek_v3`, the config's keys)
//! and `model.safetensors` with DeepSeek-V3's tensor names, so that `transformers`'
//! `DeepseekV3ForCausalLM` loads them; and the reverse, any DeepSeek-V3 checkpoint (one file or shards
//! with `model.safetensors.index.json`; FP8 weights with 128×128 `weight_scale_inv` blocks dequantised)
//! into our model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde_json::{Value, json};

use crate::config::ModelConfig;

/// DeepSeek-V3's FP8 quantisation block.
const FP8_BLOCK: usize = 128;

/// `config.json` for `c`: its keys plus those `transformers` needs to pick the class.
pub fn hf_config(c: &ModelConfig) -> Result<Value> {
    let mut v = serde_json::to_value(c)?;
    let o = v.as_object_mut().expect("a struct is an object");
    o.insert("model_type".into(), json!("deepseek_v3"));
    o.insert("architectures".into(), json!(["DeepseekV3ForCausalLM"]));
    o.insert("hidden_act".into(), json!("silu"));
    o.insert("attention_bias".into(), json!(false));
    o.insert("attention_dropout".into(), json!(0.0));
    o.insert("rope_interleave".into(), json!(true));
    o.insert("use_cache".into(), json!(true));
    o.insert("torch_dtype".into(), json!("float32"));
    // transformers 5 reads the rotary settings from `rope_parameters` (and still accepts the keys
    // above, which DeepSeek-V3's own config.json and transformers 4 use).
    let mut rope = json!({"rope_type": "default", "rope_theta": c.rope_theta});
    if let Some(y) = &c.rope_scaling {
        rope = json!({
            "rope_type": y.kind, "rope_theta": c.rope_theta, "factor": y.factor,
            "original_max_position_embeddings": y.original_max_position_embeddings,
            "beta_fast": y.beta_fast, "beta_slow": y.beta_slow,
            "mscale": y.mscale, "mscale_all_dim": y.mscale_all_dim,
        });
    }
    o.insert("rope_parameters".into(), rope);
    Ok(v)
}

/// Writes `dir/config.json` and `dir/model.safetensors` (every variable of `vars`, in f32), under a
/// temporary name first: a checkpoint directory is complete or absent.
pub fn save(dir: &Path, c: &ModelConfig, vars: &VarMap) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    std::fs::write(
        tmp.join("config.json"),
        serde_json::to_string_pretty(&hf_config(c)?)?,
    )?;
    let tensors: HashMap<String, Tensor> = vars
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&tensors, tmp.join("model.safetensors"))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    Ok(())
}

/// The model configuration of a checkpoint directory (its `config.json`; other keys are ignored).
pub fn load_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if let Some(t) = v.get("model_type").and_then(Value::as_str)
        && t != "deepseek_v3"
    {
        bail!("{}: model_type is {t}, not deepseek_v3", path.display());
    }
    serde_json::from_value(normalise(v))
        .with_context(|| format!("{}: not a DeepSeek-V3 config", path.display()))
}

/// transformers 5 writes the rotary settings as `rope_parameters` (`rope_theta` inside, and YaRN's
/// keys with `rope_type: yarn`) instead of DeepSeek's `rope_theta` and `rope_scaling`.
fn normalise(mut v: Value) -> Value {
    let Some(o) = v.as_object_mut() else {
        return v;
    };
    if let Some(rope) = o.get("rope_parameters").cloned() {
        if !o.contains_key("rope_theta")
            && let Some(theta) = rope.get("rope_theta")
        {
            o.insert("rope_theta".into(), theta.clone());
        }
        let yarn = rope.get("rope_type").and_then(Value::as_str) == Some("yarn");
        if yarn && o.get("rope_scaling").is_none_or(Value::is_null) {
            let mut scaling = rope.clone();
            if let Some(s) = scaling.as_object_mut() {
                s.remove("rope_theta");
                s.remove("rope_type");
                s.insert("type".into(), json!("yarn"));
                if !s.contains_key("original_max_position_embeddings")
                    && let Some(m) = o.get("max_position_embeddings")
                {
                    s.insert("original_max_position_embeddings".into(), m.clone());
                }
            }
            o.insert("rope_scaling".into(), scaling);
        }
    }
    if !o.contains_key("num_nextn_predict_layers")
        && let Some(n) = o.get("num_mtp_layers").cloned()
    {
        o.insert("num_nextn_predict_layers".into(), n);
    }
    v
}

/// A checkpoint's model, for inference: its config and weights on `device` in f32, without the MTP
/// modules (they do not predict the next token, and transformers saves a model without them even when
/// its config counts them).
pub fn load_model(
    dir: &Path,
    device: &Device,
) -> Result<(crate::model::deepseek::DeepSeek, VarMap)> {
    let mut c = load_config(dir)?;
    c.num_nextn_predict_layers = 0;
    let vars = VarMap::new();
    let model = crate::model::deepseek::DeepSeek::new(
        &c,
        DType::F32,
        device,
        candle_nn::VarBuilder::from_varmap(&vars, DType::F32, device),
    )?;
    let unused = load_weights(dir, &vars, device)?;
    tracing::debug!("{}: {unused} tensors not used for inference", dir.display());
    Ok((model, vars))
}

/// The safetensors files of a checkpoint directory.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&index)?)
            .with_context(|| format!("parsing {}", index.display()))?;
        let mut files: Vec<PathBuf> = v["weight_map"]
            .as_object()
            .with_context(|| format!("{}: no weight_map", index.display()))?
            .values()
            .filter_map(Value::as_str)
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if !single.exists() {
        bail!(
            "{}: no model.safetensors or model.safetensors.index.json",
            dir.display()
        );
    }
    Ok(vec![single])
}

/// An FP8 weight times its per-block inverse scale, in f32.
pub fn dequantize_fp8(weight: &Tensor, scale_inv: &Tensor) -> candle_core::Result<Tensor> {
    let (rows, cols) = weight.dims2()?;
    let (br, bc) = scale_inv.dims2()?;
    let scale = scale_inv
        .to_dtype(DType::F32)?
        .reshape((br, 1, bc, 1))?
        .broadcast_as((br, FP8_BLOCK, bc, FP8_BLOCK))?
        .reshape((br * FP8_BLOCK, bc * FP8_BLOCK))?
        .narrow(0, 0, rows)?
        .narrow(1, 0, cols)?;
    weight.to_dtype(DType::F32)? * scale
}

/// Sets every variable of `vars` from the checkpoint in `dir`. A variable the checkpoint lacks is an
/// error (naming them); tensors the model does not have are counted and returned.
pub fn load_weights(dir: &Path, vars: &VarMap, device: &Device) -> Result<usize> {
    let files = weight_files(dir)?;
    // SAFETY: the files are read-only inputs; nothing writes them while mapped.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .with_context(|| format!("mapping the weights of {}", dir.display()))?;
    let names: std::collections::HashSet<String> =
        st.tensors().into_iter().map(|(n, _)| n).collect();
    let data = vars.data().lock().expect("varmap lock");
    let mut missing = Vec::new();
    for (name, var) in data.iter() {
        if !names.contains(name) {
            missing.push(name.clone());
            continue;
        }
        let mut t = st.load(name, device)?;
        if t.dtype() == DType::F8E4M3 {
            let scale_name = format!("{name}_scale_inv");
            let scale = st
                .load(&scale_name, device)
                .with_context(|| format!("{name} is FP8 without {scale_name}"))?;
            t = dequantize_fp8(&t, &scale)?;
        }
        if t.dims() != var.dims() {
            bail!(
                "{name}: the checkpoint has shape {:?}, the model {:?}",
                t.dims(),
                var.dims()
            );
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{}: {} of the model's tensors are not in the checkpoint, e.g. {}",
            dir.display(),
            missing.len(),
            missing
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let used = data.len();
    Ok(names
        .iter()
        .filter(|n| !n.ends_with("_scale_inv"))
        .count()
        .saturating_sub(used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::deepseek::DeepSeek;
    use candle_nn::VarBuilder;

    fn tiny() -> ModelConfig {
        let mut c = crate::config::tiny_for_tests();
        c.vocab_size = 101;
        c
    }

    #[test]
    fn a_saved_checkpoint_loads_back_to_the_same_logits() -> Result<()> {
        let dev = Device::Cpu;
        let c = tiny();
        let dir = tempfile::tempdir()?;
        let ckpt = dir.path().join("step-1");
        let a_vars = VarMap::new();
        let a = DeepSeek::new(
            &c,
            DType::F32,
            &dev,
            VarBuilder::from_varmap(&a_vars, DType::F32, &dev),
        )?;
        save(&ckpt, &c, &a_vars)?;
        assert!(!dir.path().join("step-1.tmp").exists());
        let loaded = load_config(&ckpt)?;
        assert_eq!(loaded, c);
        let b_vars = VarMap::new();
        let b = DeepSeek::new(
            &loaded,
            DType::F32,
            &dev,
            VarBuilder::from_varmap(&b_vars, DType::F32, &dev),
        )?;
        let ids = Tensor::new(&[[1u32, 5, 9, 33, 100]], &dev)?;
        let before = b.logits(&ids, None)?;
        assert_eq!(load_weights(&ckpt, &b_vars, &dev)?, 0);
        let diff = (a.logits(&ids, None)? - b.logits(&ids, None)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        let changed = (before - b.logits(&ids, None)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(changed > 0.0);
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(ckpt.join("config.json"))?)?;
        assert_eq!(config["model_type"], "deepseek_v3");
        Ok(())
    }

    /// DeepSeek-V3's FP8 blocks: a weight of 200 × 130 in 2 × 2 blocks of its own scale.
    #[test]
    fn fp8_blocks_are_dequantised() -> Result<()> {
        let dev = Device::Cpu;
        // Within E4M3's range (±448) in every block: |w| ≤ 3 over the smallest scale, 0.01.
        let w = Tensor::randn(0f32, 1., (200, 130), &dev)?.clamp(-3f32, 3f32)?;
        let scales = Tensor::new(&[[0.01f32, 0.02], [0.5, 4.0]], &dev)?;
        let full = dequantize_fp8(&Tensor::ones((200, 130), DType::F32, &dev)?, &scales)?;
        assert_eq!(full.get(0)?.get(0)?.to_scalar::<f32>()?, 0.01);
        assert_eq!(full.get(199)?.get(129)?.to_scalar::<f32>()?, 4.0);
        let q = (&w / &full)?.to_dtype(DType::F8E4M3)?;
        let back = dequantize_fp8(&q, &scales)?;
        // E4M3 keeps 3 bits of mantissa (rounding within 1/16 relative) down to its smallest subnormal,
        // 2^-9 of the block's scale.
        let bound = ((w.abs()? * 0.07)? + (&full * 2f64.powi(-9))?)?;
        let over = ((back - &w)?.abs()? - bound)?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(over <= 1e-7, "{over}");
        Ok(())
    }
}
