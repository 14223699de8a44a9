//! Multi-head latent attention (DeepSeek-V2/V3). Queries: `q_proj`, or `q_b_proj(norm(q_a_proj x))`.
//! Keys and values come from a compressed latent: `kv_a_proj_with_mqa x` gives the latent (rows first)
//! and one RoPE key shared by all heads; `kv_b_proj(norm(latent))` gives each head's key (no RoPE part)
//! and value. Each head's query and key are its no-RoPE part and its RoPE part side by side.

use candle_core::{D, Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

use super::linear::linear;
use super::norm::RmsNorm;
use super::rope::Rope;
use crate::config::ModelConfig;

#[derive(Debug, Clone)]
enum QueryProj {
    Plain(Linear),
    LowRank { a: Linear, norm: RmsNorm, b: Linear },
}

#[derive(Debug, Clone)]
pub struct Mla {
    q: QueryProj,
    kv_a: Linear,
    kv_norm: RmsNorm,
    kv_b: Linear,
    o: Linear,
    heads: usize,
    nope: usize,
    rope_dim: usize,
    v: usize,
    kv_lora: usize,
    scale: f64,
}

impl Mla {
    pub fn new(c: &ModelConfig, rope: &Rope, vb: VarBuilder) -> Result<Self> {
        let (h, heads, std) = (c.hidden_size, c.num_attention_heads, c.initializer_range);
        let qk = c.qk_head_dim();
        let q = match c.q_lora_rank {
            None => QueryProj::Plain(linear(h, heads * qk, std, vb.pp("q_proj"))?),
            Some(r) => QueryProj::LowRank {
                a: linear(h, r, std, vb.pp("q_a_proj"))?,
                norm: RmsNorm::new(r, c.rms_norm_eps, vb.pp("q_a_layernorm"))?,
                b: linear(r, heads * qk, std, vb.pp("q_b_proj"))?,
            },
        };
        let kv_a = linear(
            h,
            c.kv_lora_rank + c.qk_rope_head_dim,
            std,
            vb.pp("kv_a_proj_with_mqa"),
        )?;
        let kv_norm = RmsNorm::new(c.kv_lora_rank, c.rms_norm_eps, vb.pp("kv_a_layernorm"))?;
        let kv_b = linear(
            c.kv_lora_rank,
            heads * (c.qk_nope_head_dim + c.v_head_dim),
            std,
            vb.pp("kv_b_proj"),
        )?;
        let o = linear(heads * c.v_head_dim, h, std, vb.pp("o_proj"))?;
        Ok(Self {
            q,
            kv_a,
            kv_norm,
            kv_b,
            o,
            heads,
            nope: c.qk_nope_head_dim,
            rope_dim: c.qk_rope_head_dim,
            v: c.v_head_dim,
            kv_lora: c.kv_lora_rank,
            scale: rope.mscale * rope.mscale / (qk as f64).sqrt(),
        })
    }

    /// `x` (batch, seq, hidden); `mask` additive (batch, 1, seq, seq); `positions` (batch, seq).
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        positions: &Tensor,
        rope: &Rope,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (heads, nope, rd, v) = (self.heads, self.nope, self.rope_dim, self.v);
        let q = match &self.q {
            QueryProj::Plain(l) => l.forward(x)?,
            QueryProj::LowRank { a, norm, b } => b.forward(&norm.forward(&a.forward(x)?)?)?,
        };
        let q = q.reshape((b, s, heads, nope + rd))?.transpose(1, 2)?;
        let q_nope = q.narrow(D::Minus1, 0, nope)?;
        let q_rope = rope.forward(&q.narrow(D::Minus1, nope, rd)?.contiguous()?, positions)?;

        let kv = self.kv_a.forward(x)?;
        let latent = kv.narrow(D::Minus1, 0, self.kv_lora)?;
        let k_rope = kv
            .narrow(D::Minus1, self.kv_lora, rd)?
            .reshape((b, s, 1, rd))?
            .transpose(1, 2)?
            .contiguous()?;
        let k_rope = rope
            .forward(&k_rope, positions)?
            .broadcast_as((b, heads, s, rd))?;
        let kv = self
            .kv_b
            .forward(&self.kv_norm.forward(&latent)?)?
            .reshape((b, s, heads, nope + v))?
            .transpose(1, 2)?;
        let k_nope = kv.narrow(D::Minus1, 0, nope)?;
        let value = kv.narrow(D::Minus1, nope, v)?.contiguous()?;

        let query = Tensor::cat(&[q_nope, q_rope], D::Minus1)?.contiguous()?;
        let key = Tensor::cat(&[k_nope, k_rope.contiguous()?], D::Minus1)?.contiguous()?;
        let scores = (query.matmul(&key.t()?)? * self.scale)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = probs
            .matmul(&value)?
            .transpose(1, 2)?
            .reshape((b, s, heads * v))?;
        self.o.forward(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{without_gradient, worst_error};
    use crate::model::mask::{attention_mask, positions};
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    use crate::config::tiny_for_tests as tiny;

    /// With and without the query's low rank: every weight has a gradient, and the gradients of the
    /// input and of each weight match central differences.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        for q_lora in [Some(8), None] {
            let mut c = tiny();
            c.q_lora_rank = q_lora;
            c.hidden_size = 16;
            c.kv_lora_rank = 8;
            c.initializer_range = 0.3;
            let map = VarMap::new();
            let vb = VarBuilder::from_varmap(&map, DType::F64, &dev);
            let rope = Rope::new(&c, DType::F64, &dev)?;
            let mla = Mla::new(&c, &rope, vb.pp("self_attn"))?;
            let (b, s) = (2, 5);
            let docs = vec![vec![0, 0, 0, 1, 1], vec![0, 0, 0, 0, 0]];
            let mask = attention_mask(Some(&docs), b, s, DType::F64, &dev)?;
            let pos = positions(Some(&docs), b, s, &dev)?;
            let x = Var::randn(0f64, 1., (b, s, c.hidden_size), &dev)?;
            let probe = Tensor::randn(0f64, 1., (b, s, c.hidden_size), &dev)?;
            let loss = || (mla.forward(x.as_tensor(), &mask, &pos, &rope)? * &probe)?.sum_all();
            assert_eq!(without_gradient(&map, &loss()?)?, Vec::<String>::new());
            let err = worst_error(&x, &loss, 40)?;
            assert!(err < 1e-4, "input: {err}");
            for (name, var) in map.data().lock().unwrap().iter() {
                let err = worst_error(var, &loss, 20)?;
                assert!(err < 1e-4, "{q_lora:?} {name}: {err}");
            }
        }
        Ok(())
    }

    /// A token of the second document does not see the first: changing the first changes nothing there.
    #[test]
    fn documents_do_not_see_each_other() -> Result<()> {
        let dev = Device::Cpu;
        let c = tiny();
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let rope = Rope::new(&c, DType::F32, &dev)?;
        let mla = Mla::new(&c, &rope, vb)?;
        let docs = vec![vec![0, 0, 1, 1]];
        let mask = attention_mask(Some(&docs), 1, 4, DType::F32, &dev)?;
        let pos = positions(Some(&docs), 1, 4, &dev)?;
        let x = Tensor::randn(0f32, 1., (1, 4, c.hidden_size), &dev)?;
        let noise = Tensor::randn(0f32, 1., (1, 2, c.hidden_size), &dev)?;
        let changed = Tensor::cat(&[(x.narrow(1, 0, 2)? + noise)?, x.narrow(1, 2, 2)?], 1)?;
        let a = mla.forward(&x, &mask, &pos, &rope)?.narrow(1, 2, 2)?;
        let b = mla.forward(&changed, &mask, &pos, &rope)?.narrow(1, 2, 2)?;
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }
}
