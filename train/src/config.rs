//! The model's configuration, with the names and meanings of Hugging Face's DeepSeek-V3 `config.json`
//! (`model_type: deepseek_v3`), so that a config is written as `config.json` and read back as it is.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// YaRN context extension of the rotary embedding (DeepSeek-V3's `rope_scaling`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    #[serde(rename = "type", default = "yarn")]
    pub kind: String,
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    #[serde(default = "beta_fast")]
    pub beta_fast: f64,
    #[serde(default = "one")]
    pub beta_slow: f64,
    #[serde(default = "one")]
    pub mscale: f64,
    #[serde(default = "one")]
    pub mscale_all_dim: f64,
}

fn yarn() -> String {
    "yarn".into()
}
fn beta_fast() -> f64 {
    32.0
}
fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// The dense FFN of the first `first_k_dense_replace` layers.
    pub intermediate_size: usize,
    /// Each routed (and shared) expert's FFN.
    pub moe_intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub n_shared_experts: usize,
    pub n_routed_experts: usize,
    pub num_experts_per_tok: usize,
    pub routed_scaling_factor: f64,
    /// Group-limited routing: experts fall into `n_group` groups, tokens choose among the `topk_group`
    /// best (1 and 1: no limit).
    pub n_group: usize,
    pub topk_group: usize,
    pub first_k_dense_replace: usize,
    #[serde(default = "yes")]
    pub norm_topk_prob: bool,
    /// The query's low-rank projection; `None` (null): a plain `q_proj`.
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub initializer_range: f64,
    /// Multi-token prediction modules (DeepSeek-V3: 1).
    pub num_nextn_predict_layers: usize,
    #[serde(default = "sigmoid")]
    pub scoring_func: String,
    #[serde(default = "noaux_tc")]
    pub topk_method: String,
}

fn yes() -> bool {
    true
}
fn sigmoid() -> String {
    "sigmoid".into()
}
fn noaux_tc() -> String {
    "noaux_tc".into()
}

/// Parameters of a model, all and those one token uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterCount {
    pub total: u64,
    pub active: u64,
    /// Of `total`, the multi-token prediction modules (not used at inference).
    pub mtp: u64,
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        if self.n_routed_experts > 0 {
            if self.num_experts_per_tok == 0 || self.num_experts_per_tok > self.n_routed_experts {
                bail!(
                    "num_experts_per_tok {} must be in 1..={}",
                    self.num_experts_per_tok,
                    self.n_routed_experts
                );
            }
            if self.n_group == 0 || !self.n_routed_experts.is_multiple_of(self.n_group) {
                bail!(
                    "n_group {} must divide n_routed_experts {}",
                    self.n_group,
                    self.n_routed_experts
                );
            }
            if self.topk_group == 0 || self.topk_group > self.n_group {
                bail!(
                    "topk_group {} must be in 1..={}",
                    self.topk_group,
                    self.n_group
                );
            }
            let per_group = self.n_routed_experts / self.n_group;
            if self.topk_group * per_group < self.num_experts_per_tok {
                bail!(
                    "the {} groups kept hold fewer experts than num_experts_per_tok",
                    self.topk_group
                );
            }
        }
        if !self.qk_rope_head_dim.is_multiple_of(2) {
            bail!(
                "qk_rope_head_dim {} must be even (pairs rotate)",
                self.qk_rope_head_dim
            );
        }
        if self.first_k_dense_replace > self.num_hidden_layers {
            bail!("first_k_dense_replace is above num_hidden_layers");
        }
        if self.scoring_func != "sigmoid" {
            bail!(
                "scoring_func {} is not supported (sigmoid)",
                self.scoring_func
            );
        }
        Ok(())
    }

    /// The per-head width of queries and keys.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Whether layer `i` has a mixture of experts (else a dense FFN).
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.n_routed_experts > 0 && i >= self.first_k_dense_replace
    }

    pub fn parameter_count(&self) -> ParameterCount {
        let h = self.hidden_size as u64;
        let heads = self.num_attention_heads as u64;
        let attention = {
            let q = match self.q_lora_rank {
                Some(r) => h * r as u64 + r as u64 + r as u64 * heads * self.qk_head_dim() as u64,
                None => h * heads * self.qk_head_dim() as u64,
            };
            let kv_a =
                h * (self.kv_lora_rank + self.qk_rope_head_dim) as u64 + self.kv_lora_rank as u64;
            let kv_b =
                self.kv_lora_rank as u64 * heads * (self.qk_nope_head_dim + self.v_head_dim) as u64;
            let o = heads * self.v_head_dim as u64 * h;
            q + kv_a + kv_b + o
        };
        let ffn = |width: usize| 3 * h * width as u64;
        let expert = ffn(self.moe_intermediate_size);
        let shared = self.n_shared_experts as u64 * expert;
        let router = self.n_routed_experts as u64 * (h + 1);
        let moe_total = self.n_routed_experts as u64 * expert + shared + router;
        let moe_active = self.num_experts_per_tok as u64 * expert + shared + router;
        let norms = 2 * h;
        let (mut total, mut active) = (0u64, 0u64);
        for i in 0..self.num_hidden_layers {
            let (t, a) = if self.is_moe_layer(i) {
                (moe_total, moe_active)
            } else {
                (ffn(self.intermediate_size), ffn(self.intermediate_size))
            };
            total += attention + norms + t;
            active += attention + norms + a;
        }
        let embed = self.vocab_size as u64 * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        total += embed + head + h;
        active += embed + head + h;
        // Each MTP module: two norms, the 2h → h projection, one decoder block (with the last layer's
        // kind of FFN) and its final norm; it shares the embedding and the output head.
        let last_moe = self.is_moe_layer(self.num_hidden_layers.saturating_sub(1));
        let block = attention
            + norms
            + if last_moe {
                moe_total
            } else {
                ffn(self.intermediate_size)
            };
        let mtp = self.num_nextn_predict_layers as u64 * (2 * h + 2 * h * h + block + h);
        ParameterCount {
            total: total + mtp,
            active,
            mtp,
        }
    }
}

/// The model of `configs/tiny.yaml`, which the blocks' tests start from.
#[cfg(test)]
pub fn tiny_for_tests() -> ModelConfig {
    tests::load("configs/tiny.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn load(path: &str) -> ModelConfig {
        let text =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
                .unwrap();
        let v: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        serde_norway::from_value(v["model"].clone()).unwrap()
    }

    /// OpenSeek-Small v1 is 1.4B parameters, 0.4B active (DESIGN.md §7), without its MTP module.
    #[test]
    fn openseek_small_has_its_published_size() {
        let c = load("configs/openseek-small.yaml");
        c.validate().unwrap();
        let n = c.parameter_count();
        let (total, active) = ((n.total - n.mtp) as f64 / 1e9, n.active as f64 / 1e9);
        assert!((1.35..1.45).contains(&total), "{total}");
        assert!((0.37..0.43).contains(&active), "{active}");
    }

    #[test]
    fn bad_routing_is_refused() {
        let mut c = load("configs/tiny.yaml");
        c.validate().unwrap();
        c.n_group = 3;
        assert!(c.validate().is_err());
    }
}
