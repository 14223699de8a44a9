//! The DeepSeek-V3 architecture, one file per block, each a struct with a pure `forward` built only
//! from differentiable tensor operations: Candle's fused `rms_norm`, `rope*`, `softmax_last_dim` and
//! flash attention have no backward and would silently cut the graph (DESIGN.md §7). The one custom op,
//! the fused cross entropy, carries its own backward and is checked against Candle's composite one.

pub mod block;
pub mod cross_entropy;
pub mod deepseek;
#[cfg(test)]
pub mod gradcheck;
pub mod linear;
pub mod mask;
pub mod mla;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod rope;
