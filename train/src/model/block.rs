//! One decoder layer: `h = x + attention(norm(x))`, `out = h + ffn(norm(h))`, where the FFN is dense
//! in the first `first_k_dense_replace` layers and a mixture of experts after.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::mla::Mla;
use super::mlp::Mlp;
use super::moe::{Moe, Routing};
use super::norm::RmsNorm;
use super::rope::Rope;
use crate::config::ModelConfig;

#[derive(Debug, Clone)]
pub enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

#[derive(Debug, Clone)]
pub struct Block {
    input_norm: RmsNorm,
    attention: Mla,
    post_norm: RmsNorm,
    pub ffn: Ffn,
}

impl Block {
    /// Layer `index` (its kind of FFN) under `vb` (`model.layers.N`).
    pub fn new(c: &ModelConfig, index: usize, rope: &Rope, vb: VarBuilder) -> Result<Self> {
        let ffn = if c.is_moe_layer(index) {
            Ffn::Moe(Moe::new(c, vb.pp("mlp"))?)
        } else {
            Ffn::Dense(Mlp::new(
                c.hidden_size,
                c.intermediate_size,
                c.initializer_range,
                vb.pp("mlp"),
            )?)
        };
        Ok(Self {
            input_norm: RmsNorm::new(c.hidden_size, c.rms_norm_eps, vb.pp("input_layernorm"))?,
            attention: Mla::new(c, rope, vb.pp("self_attn"))?,
            post_norm: RmsNorm::new(
                c.hidden_size,
                c.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            ffn,
        })
    }

    /// The layer's output, and what its experts were given (none for a dense layer).
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        positions: &Tensor,
        rope: &Rope,
    ) -> Result<(Tensor, Option<Routing>)> {
        let h =
            (x + self
                .attention
                .forward(&self.input_norm.forward(x)?, mask, positions, rope)?)?;
        let normed = self.post_norm.forward(&h)?;
        let (y, routing) = match &self.ffn {
            Ffn::Dense(m) => (m.forward(&normed)?, None),
            Ffn::Moe(m) => {
                let (y, r) = m.forward(&normed)?;
                (y, Some(r))
            }
        };
        Ok(((h + y)?, routing))
    }
}
