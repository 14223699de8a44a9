//! DeepSeekMoE: shared experts plus routed experts chosen per token.
//!
//! Routing (DeepSeek-V3, `noaux_tc`): sigmoid scores of the router; a per-expert bias
//! (`e_score_correction_bias`) is added for choosing only; with groups, only the `topk_group` groups
//! whose two best biased scores sum highest are eligible; the top `num_experts_per_tok` eligible experts
//! are chosen, weighted by their *unbiased* scores normalised to sum 1, times `routed_scaling_factor`.
//! The choice is made on the host (it has no gradient); the weights are gathered from the scores, so
//! the router learns through them. Dispatch is `index_select` in and `index_add` out (Candle's
//! `scatter_add` has a wrong gradient).

use candle_core::{D, DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::mlp::Mlp;
use crate::config::ModelConfig;

#[derive(Debug, Clone)]
pub struct Moe {
    router: candle_nn::Linear,
    /// Added to the scores for choosing only; moved by the auxiliary-loss-free update, not by gradients.
    pub bias: candle_core::Var,
    experts: Vec<Mlp>,
    shared: Option<Mlp>,
    top_k: usize,
    n_group: usize,
    topk_group: usize,
    norm_topk_prob: bool,
    scaling: f64,
}

/// What one forward pass routed: for the bias update, the balance loss and the metrics.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Tokens routed to each expert.
    pub load: Vec<usize>,
    /// The sequence-wise balance loss Σ f_i·P_i, averaged over sequences (not yet times α).
    pub balance: Tensor,
}

impl Moe {
    pub fn new(c: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (h, e, std) = (c.hidden_size, c.n_routed_experts, c.initializer_range);
        // The router and its bias stay in f32 when the model is in half precision, as DeepSeek-V3 and
        // transformers keep them: choosing among close scores needs the digits.
        let router_dtype = match vb.dtype() {
            DType::BF16 | DType::F16 => DType::F32,
            d => d,
        };
        let gate = vb.pp("gate");
        let router = candle_nn::Linear::new(
            gate.get_with_hints_dtype(
                (e, h),
                "weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
                router_dtype,
            )?,
            None,
        );
        let bias = candle_core::Var::from_tensor(&gate.get_with_hints_dtype(
            e,
            "e_score_correction_bias",
            Init::Const(0.0),
            router_dtype,
        )?)?;
        let experts = (0..e)
            .map(|i| Mlp::new(h, c.moe_intermediate_size, std, vb.pp("experts").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let shared = (c.n_shared_experts > 0)
            .then(|| {
                Mlp::new(
                    h,
                    c.moe_intermediate_size * c.n_shared_experts,
                    std,
                    vb.pp("shared_experts"),
                )
            })
            .transpose()?;
        Ok(Self {
            router,
            bias,
            experts,
            shared,
            top_k: c.num_experts_per_tok,
            n_group: c.n_group,
            topk_group: c.topk_group,
            norm_topk_prob: c.norm_topk_prob,
            scaling: c.routed_scaling_factor,
        })
    }

    pub fn experts(&self) -> usize {
        self.experts.len()
    }

    /// The experts each token chooses, from its scores and the bias (host-side; no gradient).
    pub fn choose(&self, scores: &[f32], bias: &[f32]) -> Vec<usize> {
        let e = bias.len();
        let biased: Vec<f32> = scores.iter().zip(bias).map(|(s, b)| s + b).collect();
        let per_group = e / self.n_group;
        let mut eligible = vec![true; e];
        if self.topk_group < self.n_group {
            // A group's score: the sum of its two best biased scores.
            let mut groups: Vec<(f32, usize)> = (0..self.n_group)
                .map(|g| {
                    let mut s: Vec<f32> = biased[g * per_group..(g + 1) * per_group].to_vec();
                    s.sort_by(|a, b| b.total_cmp(a));
                    (s.iter().take(2).sum(), g)
                })
                .collect();
            groups.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            eligible = vec![false; e];
            for &(_, g) in groups.iter().take(self.topk_group) {
                eligible[g * per_group..(g + 1) * per_group].fill(true);
            }
        }
        let mut order: Vec<usize> = (0..e).filter(|&i| eligible[i]).collect();
        order.sort_by(|&a, &b| biased[b].total_cmp(&biased[a]).then(a.cmp(&b)));
        order.truncate(self.top_k);
        order
    }

    /// `x` (batch, seq, hidden) → the layer's output and what was routed.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Routing)> {
        let (b, s, h) = x.dims3()?;
        let n = b * s;
        let e = self.experts.len();
        let flat = x.reshape((n, h))?;
        let router_in = flat.to_dtype(self.router.weight().dtype())?;
        let scores =
            candle_nn::ops::sigmoid(&candle_nn::Module::forward(&self.router, &router_in)?)?;
        let host: Vec<f32> = scores.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let bias: Vec<f32> = self.bias.as_tensor().to_dtype(DType::F32)?.to_vec1()?;
        let chosen: Vec<Vec<usize>> = (0..n)
            .map(|t| self.choose(&host[t * e..(t + 1) * e], &bias))
            .collect();

        // Gate weights: the chosen experts' unbiased scores, normalised, scaled.
        let k = self.top_k;
        let picks: Vec<u32> = chosen.iter().flatten().map(|&i| i as u32).collect();
        let picks = Tensor::from_vec(picks, (n, k), x.device())?;
        let mut weights = scores.gather(&picks, 1)?;
        if self.norm_topk_prob {
            weights = weights.broadcast_div(&(weights.sum_keepdim(1)? + 1e-20)?)?;
        }
        let weights = (weights * self.scaling)?
            .flatten_all()?
            .to_dtype(x.dtype())?;

        let mut out = flat.zeros_like()?;
        let mut load = vec![0usize; e];
        for (i, expert) in self.experts.iter().enumerate() {
            let (mut tokens, mut slots) = (Vec::new(), Vec::new());
            for (t, c) in chosen.iter().enumerate() {
                if let Some(j) = c.iter().position(|&x| x == i) {
                    tokens.push(t as u32);
                    slots.push((t * k + j) as u32);
                }
            }
            load[i] = tokens.len();
            if tokens.is_empty() {
                continue;
            }
            let tokens = Tensor::new(tokens.as_slice(), x.device())?;
            let slots = Tensor::new(slots.as_slice(), x.device())?;
            let y = expert.forward(&flat.index_select(&tokens, 0)?)?;
            let w = weights.index_select(&slots, 0)?.unsqueeze(1)?;
            out = out.index_add(&tokens, &y.broadcast_mul(&w)?, 0)?;
        }
        if let Some(shared) = &self.shared {
            out = (out + shared.forward(&flat)?)?;
        }

        // Sequence-wise balance loss: f_i = E/(K·T) · tokens of the sequence sent to i, P_i = the mean of
        // the scores normalised over all experts.
        let mut f = vec![0f32; b * e];
        for (t, c) in chosen.iter().enumerate() {
            for &i in c {
                f[(t / s) * e + i] += e as f32 / (k * s) as f32;
            }
        }
        let f = Tensor::from_vec(f, (b, e), x.device())?.to_dtype(scores.dtype())?;
        let p = scores
            .broadcast_div(&scores.sum_keepdim(D::Minus1)?)?
            .reshape((b, s, e))?
            .mean(1)?;
        let balance = (f * p)?.sum(1)?.mean(0)?;
        Ok((out.reshape((b, s, h))?, Routing { load, balance }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{without_gradient, worst_error};
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    use crate::config::tiny_for_tests as tiny;

    /// Group-limited choice against a brute force: among all sets of `topk_group` groups, the best by
    /// group score; within them, the best biased scores.
    #[test]
    fn choice_follows_groups_and_bias() -> Result<()> {
        let dev = Device::Cpu;
        let mut c = tiny();
        c.n_routed_experts = 8;
        c.n_group = 4;
        c.topk_group = 2;
        c.num_experts_per_tok = 3;
        let moe = Moe::new(
            &c,
            VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev),
        )?;
        let scores = [0.9, 0.1, 0.5, 0.6, 0.8, 0.05, 0.3, 0.2];
        // Group sums of the two best: g0 1.0, g1 1.1, g2 0.85, g3 0.5 → groups 1 and 0.
        assert_eq!(moe.choose(&scores, &[0.0; 8]), vec![0, 3, 2]);
        // A bias that lifts expert 6 makes group 3 the best (1.3 + 0.2), beside group 1; expert 0 of
        // group 0 is no longer eligible, whatever its score.
        let mut bias = [0.0; 8];
        bias[6] = 1.0;
        assert_eq!(moe.choose(&scores, &bias), vec![6, 3, 2]);
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let mut c = tiny();
        c.hidden_size = 12;
        c.initializer_range = 0.5;
        let map = VarMap::new();
        let moe = Moe::new(
            &c,
            VarBuilder::from_varmap(&map, DType::F64, &dev).pp("mlp"),
        )?;
        let x = Var::randn(0f64, 1., (2, 5, c.hidden_size), &dev)?;
        let probe = Tensor::randn(0f64, 1., (2, 5, c.hidden_size), &dev)?;
        let loss = || -> Result<Tensor> {
            let (y, routing) = moe.forward(x.as_tensor())?;
            (y * &probe)?.sum_all()? + routing.balance
        };
        // The bias chooses and is moved by the balancing update, not by a gradient; an expert no token
        // chose this time has none either.
        let (_, routing) = moe.forward(x.as_tensor())?;
        let idle: Vec<usize> = (0..c.n_routed_experts)
            .filter(|&i| routing.load[i] == 0)
            .collect();
        let missing = without_gradient(&map, &loss()?)?;
        for name in &missing {
            let expert: Option<usize> = name
                .strip_prefix("mlp.experts.")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse().ok());
            assert!(
                name == "mlp.gate.e_score_correction_bias"
                    || expert.is_some_and(|i| idle.contains(&i)),
                "{name} has no gradient"
            );
        }
        assert!(worst_error(&x, &loss, 40)? < 1e-4);
        for (name, var) in map.data().lock().unwrap().iter() {
            if missing.contains(name) {
                continue;
            }
            let err = worst_error(var, &loss, 12)?;
            assert!(err < 1e-4, "{name}: {err}");
        }
        assert_eq!(
            routing.load.iter().sum::<usize>(),
            10 * c.num_experts_per_tok
        );
        Ok(())
    }
}
