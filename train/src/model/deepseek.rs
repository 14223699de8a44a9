//! The whole model: embedding, decoder layers, final norm, output head (tied to the embedding or not),
//! and the multi-token prediction modules, with Hugging Face's DeepSeek-V3 names (`model.*`,
//! `lm_head.weight`; MTP module k as `model.layers.{num_hidden_layers + k}.*`, as DeepSeek-V3 ships it).
//!
//! MTP module k (DeepSeek-V3 §2.2): `h' = eh_proj([enorm(emb(t_{i+k})); hnorm(h_i)])`, one decoder block,
//! `shared_head.norm`, then the shared output head predicts `t_{i+k+1}`. `h_i` is the previous depth's
//! normed output (the main model's, for k = 1), as vLLM's DeepSeek MTP takes it.

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::{Embedding, Init, Linear, Module, VarBuilder};

use super::block::Block;
pub use super::cross_entropy::Pass;
use super::linear::linear;
use super::moe::Routing;
use super::norm::RmsNorm;
use super::rope::Rope;
use crate::config::ModelConfig;

#[derive(Debug, Clone)]
struct MtpModule {
    enorm: RmsNorm,
    hnorm: RmsNorm,
    eh_proj: Linear,
    block: Block,
    norm: RmsNorm,
}

#[derive(Debug, Clone)]
pub struct DeepSeek {
    pub config: ModelConfig,
    embed: Embedding,
    pub layers: Vec<Block>,
    norm: RmsNorm,
    head: Linear,
    mtp: Vec<MtpModule>,
    rope: Rope,
}

/// One batch: `tokens` (batch, seq + 1 + depth) as Megatron's samples with room for MTP targets, and
/// optionally each token's document number within its sequence for per-document attention.
pub struct Batch {
    pub tokens: Tensor,
    pub doc_ids: Option<Vec<Vec<u32>>>,
}

impl Batch {
    /// Samples of equal length as one batch; their document numbers only with `document_mask`.
    pub fn from_samples(
        samples: &[crate::data::Sample],
        device: &Device,
        document_mask: bool,
    ) -> Result<Self> {
        let (b, len) = (samples.len(), samples[0].tokens.len());
        let tokens: Vec<u32> = samples
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        Ok(Self {
            tokens: Tensor::from_vec(tokens, (b, len), device)?,
            doc_ids: document_mask.then(|| samples.iter().map(|s| s.doc_ids.clone()).collect()),
        })
    }
}

/// The losses of one forward pass.
#[derive(Debug, Clone)]
pub struct Losses {
    /// Next-token cross entropy (mean over tokens).
    pub lm: Tensor,
    /// Cross entropy of each MTP depth.
    pub mtp: Vec<Tensor>,
    /// Σ over MoE layers of the sequence-wise balance loss (not yet times α).
    pub balance: Tensor,
    /// Per MoE layer, tokens routed to each expert.
    pub loads: Vec<Vec<usize>>,
}

impl DeepSeek {
    pub fn new(c: &ModelConfig, dtype: DType, device: &Device, vb: VarBuilder) -> Result<Self> {
        c.validate()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let rope = Rope::new(c, dtype, device)?;
        let m = vb.pp("model");
        let std = c.initializer_range;
        let embed_weight = m.pp("embed_tokens").get_with_hints(
            (c.vocab_size, c.hidden_size),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        )?;
        let embed = Embedding::new(embed_weight.clone(), c.hidden_size);
        let layers = (0..c.num_hidden_layers)
            .map(|i| Block::new(c, i, &rope, m.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let head = if c.tie_word_embeddings {
            Linear::new(embed_weight, None)
        } else {
            linear(c.hidden_size, c.vocab_size, std, vb.pp("lm_head"))?
        };
        let mtp = (0..c.num_nextn_predict_layers)
            .map(|k| {
                let vb = m.pp("layers").pp(c.num_hidden_layers + k);
                let h = c.hidden_size;
                Ok(MtpModule {
                    enorm: RmsNorm::new(h, c.rms_norm_eps, vb.pp("enorm"))?,
                    hnorm: RmsNorm::new(h, c.rms_norm_eps, vb.pp("hnorm"))?,
                    eh_proj: linear(2 * h, h, std, vb.pp("eh_proj"))?,
                    block: Block::new(c, c.num_hidden_layers.saturating_sub(1), &rope, vb.clone())?,
                    norm: RmsNorm::new(h, c.rms_norm_eps, vb.pp("shared_head").pp("norm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: c.clone(),
            embed,
            layers,
            norm: RmsNorm::new(c.hidden_size, c.rms_norm_eps, m.pp("norm"))?,
            head,
            mtp,
            rope,
        })
    }

    /// The mixtures of experts of the MTP modules' blocks, in order (their loads follow the main
    /// layers' in [`Losses::loads`]).
    pub fn mtp_moes(&self) -> impl Iterator<Item = &super::moe::Moe> {
        self.mtp.iter().filter_map(|m| match &m.block.ffn {
            super::block::Ffn::Moe(x) => Some(x),
            super::block::Ffn::Dense(_) => None,
        })
    }

    /// Logits (batch, seq, vocab) of `ids` (batch, seq): the main model only.
    pub fn logits(&self, ids: &Tensor, doc_ids: Option<&[Vec<u32>]>) -> Result<Tensor> {
        let (h, _, _) = self.hidden(ids, doc_ids)?;
        self.head.forward(&h)
    }

    /// The final normed hidden states, the mask and positions used, and the routing of each MoE layer.
    fn hidden(
        &self,
        ids: &Tensor,
        doc_ids: Option<&[Vec<u32>]>,
    ) -> Result<(Tensor, (Tensor, Tensor), Vec<Routing>)> {
        let (b, s) = ids.dims2()?;
        let dtype = self.embed.embeddings().dtype();
        let mask = super::mask::attention_mask(doc_ids, b, s, dtype, ids.device())?;
        let positions = super::mask::positions(doc_ids, b, s, ids.device())?;
        let mut x = self.embed.forward(ids)?;
        let mut routing = Vec::new();
        for layer in &self.layers {
            let (y, r) = layer.forward(&x, &mask, &positions, &self.rope)?;
            x = y;
            routing.extend(r);
        }
        Ok((self.norm.forward(&x)?, (mask, positions), routing))
    }

    /// The training losses of `batch`, whose tokens hold seq + 1 + depth columns: inputs are the first
    /// seq, depth k predicts the tokens k + 1 ahead. `pass` says whether a backward follows.
    pub fn losses(&self, batch: &Batch, pass: Pass) -> Result<Losses> {
        let depth = self.mtp.len();
        let (b, total) = batch.tokens.dims2()?;
        let s = total - 1 - depth;
        let window = |from: usize| batch.tokens.narrow(1, from, s);
        let doc = |from: usize| {
            batch.doc_ids.as_ref().map(|d| {
                d.iter()
                    .map(|r| r[from..from + s].to_vec())
                    .collect::<Vec<_>>()
            })
        };
        let docs0 = doc(0);
        let (mut h, (mask, positions), routing) = self.hidden(&window(0)?, docs0.as_deref())?;
        let ce = |h: &Tensor, targets: &Tensor| -> Result<Tensor> {
            super::cross_entropy::linear_cross_entropy(
                &h.reshape((b * s, ()))?,
                self.head.weight(),
                &targets.flatten_all()?,
                pass,
            )
        };
        let lm = ce(&h, &window(1)?)?;
        let mut mtp_losses = Vec::with_capacity(depth);
        let mut loads: Vec<Vec<usize>> = routing.iter().map(|r| r.load.clone()).collect();
        let mut balance = lm.zeros_like()?;
        for r in &routing {
            balance = (balance + r.balance.to_dtype(lm.dtype())?)?;
        }
        for (k, m) in self.mtp.iter().enumerate() {
            // Depth k + 1 sees the embedding of the token k + 1 ahead (t_{i+k+1}) and predicts t_{i+k+2}.
            // A token whose look-ahead crosses into another document is still trained on, as
            // Megatron's MTP does; the attention mask is the main model's.
            let emb = m.enorm.forward(&self.embed.forward(&window(k + 1)?)?)?;
            let joined = Tensor::cat(&[emb, m.hnorm.forward(&h)?], D::Minus1)?;
            let x = m.eh_proj.forward(&joined)?;
            let (y, r) = m.block.forward(&x, &mask, &positions, &self.rope)?;
            if let Some(r) = r {
                balance = (balance + r.balance.to_dtype(lm.dtype())?)?;
                loads.push(r.load);
            }
            h = m.norm.forward(&y)?;
            mtp_losses.push(ce(&h, &window(k + 2)?)?);
        }
        Ok(Losses {
            lm,
            mtp: mtp_losses,
            balance,
            loads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::without_gradient;
    use candle_nn::VarMap;

    use crate::config::tiny_for_tests as tiny;

    /// Every parameter but the routing bias receives a non-zero gradient from the training loss, tied
    /// and untied, with and without the query's low rank.
    #[test]
    fn every_parameter_receives_a_gradient() -> Result<()> {
        let dev = Device::Cpu;
        for (tie, q_lora) in [(true, Some(16)), (false, None)] {
            let mut c = tiny();
            c.vocab_size = 97;
            c.tie_word_embeddings = tie;
            c.q_lora_rank = q_lora;
            // Every expert chosen at least once: as many choices as experts times a few.
            c.num_experts_per_tok = 4;
            c.topk_group = 2;
            let map = VarMap::new();
            let model = DeepSeek::new(
                &c,
                DType::F32,
                &dev,
                VarBuilder::from_varmap(&map, DType::F32, &dev),
            )?;
            let tokens = Tensor::from_vec(
                (0..2 * 18)
                    .map(|i| (i * 37 % 97) as u32)
                    .collect::<Vec<_>>(),
                (2, 18),
                &dev,
            )?;
            let doc_ids = Some(vec![
                vec![0; 18],
                (0..18).map(|i| u32::from(i >= 9)).collect(),
            ]);
            let l = model.losses(&Batch { tokens, doc_ids }, Pass::Train)?;
            assert!(
                l.loads.iter().all(|load| load.iter().all(|&n| n > 0)),
                "{:?}",
                l.loads
            );
            let total = ((&l.lm + (&l.mtp[0] * 0.3)?)? + (&l.balance * 1e-4)?)?;
            let missing = without_gradient(&map, &total)?;
            let expected: Vec<String> = (1..=2)
                .map(|layer| format!("model.layers.{layer}.mlp.gate.e_score_correction_bias"))
                .collect();
            assert_eq!(missing, expected, "tie {tie}");
            // Near ln(97) at initialisation.
            let lm = l.lm.to_scalar::<f32>()?;
            assert!((lm - 97f32.ln()).abs() < 0.5, "{lm}");
        }
        Ok(())
    }

    /// The MTP module's weights (projection, block, norms) and the shared embedding: gradients of the
    /// whole loss match central differences.
    #[test]
    fn mtp_gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let mut c = tiny();
        c.vocab_size = 31;
        c.hidden_size = 16;
        c.initializer_range = 0.3;
        let map = VarMap::new();
        let model = DeepSeek::new(
            &c,
            DType::F64,
            &dev,
            VarBuilder::from_varmap(&map, DType::F64, &dev),
        )?;
        let tokens = Tensor::from_vec(
            (0..2 * 9).map(|i| (i * 7 % 31) as u32).collect::<Vec<_>>(),
            (2, 9),
            &dev,
        )?;
        let batch = Batch {
            tokens,
            doc_ids: Some(vec![vec![0, 0, 0, 0, 1, 1, 1, 1, 1], vec![0; 9]]),
        };
        let loss = || -> Result<Tensor> {
            let l = model.losses(&batch, Pass::Train)?;
            (l.lm + (&l.mtp[0] * 0.3)?)? + (l.balance * 1e-2)?
        };
        let vars = map.data().lock().unwrap().clone();
        let mut checked = 0;
        for (name, var) in &vars {
            let mtp = name.starts_with("model.layers.2.");
            if !(mtp || name == "model.embed_tokens.weight")
                || name.ends_with("e_score_correction_bias")
            {
                continue;
            }
            // Idle experts have no gradient to check.
            if loss()?.backward()?.get(var.as_tensor()).is_none() {
                continue;
            }
            let err = crate::model::gradcheck::worst_error(var, &loss, 8)?;
            assert!(err < 1e-4, "{name}: {err}");
            checked += 1;
        }
        assert!(checked > 15, "{checked}");
        Ok(())
    }
}
