//! The SwiGLU feed-forward block, `down(silu(gate x) · up x)`: the dense FFN of the first layers, each
//! routed expert, and the shared experts (one block as wide as all of them).

use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

use super::linear::linear;

#[derive(Debug, Clone)]
pub struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    pub fn new(hidden: usize, width: usize, std: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gate: linear(hidden, width, std, vb.pp("gate_proj"))?,
            up: linear(hidden, width, std, vb.pp("up_proj"))?,
            down: linear(width, hidden, std, vb.pp("down_proj"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gated = (candle_nn::ops::silu(&self.gate.forward(x)?)? * self.up.forward(x)?)?;
        self.down.forward(&gated)
    }
}
