//! `openseek-train`: a Candle trainer for DeepSeek-V3-style mixture-of-experts models (MLA, shared and
//! routed experts, auxiliary-loss-free balancing, multi-token prediction) on Megatron shards.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod infer;
pub mod model;
pub mod optim;
pub mod train;
