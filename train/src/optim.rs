//! AdamW with decoupled weight decay (PyTorch's `torch.optim.AdamW`), none on norms; the learning-rate
//! schedule (linear warmup, then cosine decay to a floor); the global gradient norm and its clipping.
//!
//! Written here rather than using `candle_nn::AdamW`: that one decays every variable alike and keeps
//! its moments private, and a resumed run needs them (and the step count) to continue exactly.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
use candle_nn::VarMap;

/// Variables the optimiser leaves alone: moved by the balancing update, not by gradients.
pub fn is_untrained(name: &str) -> bool {
    name.ends_with("e_score_correction_bias")
}

/// Norm weights (and biases) are not decayed, as in DeepSeek-V3 and Megatron.
pub fn is_decayed(name: &str) -> bool {
    !(name.ends_with("norm.weight") || name.ends_with(".bias"))
}

struct Param {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
    /// The f32 weights of a variable held in half precision (Megatron's main parameters): updates
    /// smaller than a bf16 step would otherwise be lost.
    master: Option<Tensor>,
}

pub struct AdamW {
    params: Vec<Param>,
    pub step: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    pub fn new(vars: &VarMap, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Result<Self> {
        let mut params = Vec::new();
        let data = vars.data().lock().expect("varmap lock");
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            if is_untrained(name) {
                continue;
            }
            let var = data[name].clone();
            // Moments in f32 whatever the weights' dtype.
            let zeros = var.as_tensor().zeros_like()?.to_dtype(DType::F32)?;
            let master = (var.dtype() != DType::F32 && var.dtype() != DType::F64)
                .then(|| var.as_tensor().to_dtype(DType::F32))
                .transpose()?;
            params.push(Param {
                name: name.clone(),
                decay: is_decayed(name),
                m: zeros.clone(),
                v: zeros,
                master,
                var,
            });
        }
        Ok(Self {
            params,
            step: 0,
            beta1,
            beta2,
            eps,
            weight_decay,
        })
    }

    /// The global L2 norm of the gradients of the trained variables.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sum = 0f64;
        for p in &self.params {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                sum += g
                    .to_dtype(DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(sum.sqrt())
    }

    /// One update at learning rate `lr`, with every gradient multiplied by `grad_scale` (clipping).
    pub fn update(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let g = (g.to_dtype(DType::F32)? * grad_scale)?;
            p.m = ((&p.m * b1)? + (&g * (1.0 - b1))?)?;
            p.v = ((&p.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let step = ((&p.m / c1)? / ((&p.v / c2)?.sqrt()? + self.eps)?)?;
            let w = match &p.master {
                Some(m) => m.clone(),
                None => p.var.as_tensor().to_dtype(DType::F32)?,
            };
            let decayed = if p.decay {
                (&w * (1.0 - lr * self.weight_decay))?
            } else {
                w
            };
            let new = (decayed - (step * lr)?)?;
            p.var.set(&new.to_dtype(p.var.dtype())?)?;
            if p.master.is_some() {
                p.master = Some(new);
            }
        }
        Ok(())
    }

    /// The moments, by `m.NAME` and `v.NAME`, and the f32 weights of half-precision variables, by
    /// `master.NAME`, for a checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut s = HashMap::new();
        for p in &self.params {
            s.insert(format!("m.{}", p.name), p.m.clone());
            s.insert(format!("v.{}", p.name), p.v.clone());
            if let Some(m) = &p.master {
                s.insert(format!("master.{}", p.name), m.clone());
            }
        }
        s
    }

    /// Restores the moments written by [`AdamW::state`] and the step count.
    pub fn restore(&mut self, state: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for p in &mut self.params {
            let get = |k: String| {
                state
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks {k}")))
            };
            p.m = get(format!("m.{}", p.name))?.to_device(p.var.device())?;
            p.v = get(format!("v.{}", p.name))?.to_device(p.var.device())?;
            if p.master.is_some() {
                p.master = Some(get(format!("master.{}", p.name))?.to_device(p.var.device())?);
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Linear warmup over `warmup` steps to `max_lr`, then cosine decay to `min_lr` at `total` steps.
pub fn learning_rate(step: u64, warmup: u64, total: u64, max_lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return max_lr * (step + 1) as f64 / warmup as f64;
    }
    if step >= total {
        return min_lr;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    min_lr + 0.5 * (max_lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The factor that brings a gradient of norm `norm` within `clip` (1 when it already is).
pub fn clip_scale(norm: f64, clip: f64) -> f64 {
    if clip > 0.0 && norm > clip {
        clip / (norm + 1e-6)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{Init, VarBuilder};

    /// Two steps on known gradients against PyTorch's AdamW formulas by hand; norms not decayed.
    #[test]
    fn adamw_matches_the_formula_and_spares_norms() -> Result<()> {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let w = vb.get_with_hints(1, "w.weight", Init::Const(1.0))?;
        let n = vb.get_with_hints(1, "input_layernorm.weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(1, "gate.e_score_correction_bias", Init::Const(0.5))?;
        let mut opt = AdamW::new(&map, 0.9, 0.95, 1e-8, 0.1)?;
        let (lr, mut expected, mut m, mut v) = (0.01f64, 1.0f64, 0.0f64, 0.0f64);
        for (t, g) in [(1, 0.5f64), (2, -0.2)] {
            let loss = ((&w * g)?.sum_all()? + (&n * g)?.sum_all()? + (&bias * 3.0)?.sum_all()?)?;
            let grads = loss.backward()?;
            opt.update(&grads, lr, 1.0)?;
            m = 0.9 * m + 0.1 * g;
            v = 0.95 * v + 0.05 * g * g;
            let step = (m / (1.0 - 0.9f64.powi(t))) / ((v / (1.0 - 0.95f64.powi(t))).sqrt() + 1e-8);
            expected = expected * (1.0 - lr * 0.1) - lr * step;
        }
        let got = w.to_vec1::<f32>()?[0] as f64;
        assert!((got - expected).abs() < 1e-6, "{got} {expected}");
        // The norm weight moved by the same steps without the decay; the bias not at all.
        let norm = n.to_vec1::<f32>()?[0] as f64;
        assert!(
            norm > got && (norm - got - (1.0 - (1.0 - lr * 0.1) * (1.0 - lr * 0.1))).abs() < 1e-3
        );
        assert_eq!(bias.to_vec1::<f32>()?, vec![0.5]);
        assert_eq!(opt.state().len(), 4);
        Ok(())
    }

    #[test]
    fn warmup_then_cosine_and_clipping() {
        let lr = |s| learning_rate(s, 10, 110, 1e-3, 1e-4);
        assert!((lr(0) - 1e-4).abs() < 1e-12);
        assert!((lr(9) - 1e-3).abs() < 1e-12);
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!((lr(60) - 5.5e-4).abs() < 1e-9);
        assert!((lr(110) - 1e-4).abs() < 1e-12);
        assert_eq!(clip_scale(0.5, 1.0), 1.0);
        assert!((clip_scale(4.0, 1.0) - 0.25).abs() < 1e-6);
    }
}
