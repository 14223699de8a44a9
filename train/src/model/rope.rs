//! Rotary position embedding with interleaved pairs, as DeepSeek-V3 applies it: dimensions (2i, 2i + 1)
//! rotate together by `position · θ_i`, θ_i = base^(−2i/d). Written with plain tensor operations so that
//! it has a gradient (Candle's `rope_i` kernel has none). Positions are given per token, so that they
//! can restart at each document of a packed sequence.

use candle_core::{D, DType, Device, Result, Tensor};

use crate::config::ModelConfig;

#[derive(Debug, Clone)]
pub struct Rope {
    /// (max positions, d/2) each.
    cos: Tensor,
    sin: Tensor,
    /// YaRN's factor on the softmax scale, applied squared: `yarn_get_mscale(factor, mscale_all_dim)`
    /// (1 without YaRN).
    pub mscale: f64,
}

impl Rope {
    pub fn new(c: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let d = c.qk_rope_head_dim;
        let mut inv_freq: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / c.rope_theta.powf(2.0 * i as f64 / d as f64))
            .collect();
        let (mut mscale, mut table_scale) = (1.0, 1.0);
        if let Some(y) = &c.rope_scaling {
            // YaRN (Peng et al. 2023), as DeepSeek-V3's `yarn_find_correction_range` and `yarn_get_mscale`:
            // frequencies above the fast band keep their value, those below the slow band are divided by
            // `factor`, with a linear ramp between.
            let dims = |rot: f64| {
                d as f64
                    * (y.original_max_position_embeddings as f64
                        / (rot * 2.0 * std::f64::consts::PI))
                        .ln()
                    / (2.0 * c.rope_theta.ln())
            };
            let low = dims(y.beta_fast).floor().max(0.0);
            let high = dims(y.beta_slow).ceil().min(d as f64 - 1.0);
            let span = if high == low {
                high + 0.001 - low
            } else {
                high - low
            };
            for (i, f) in inv_freq.iter_mut().enumerate() {
                let ramp = ((i as f64 - low) / span).clamp(0.0, 1.0);
                let keep = 1.0 - ramp;
                *f = *f / y.factor * (1.0 - keep) + *f * keep;
            }
            let get = |m: f64| {
                if y.factor <= 1.0 {
                    1.0
                } else {
                    0.1 * m * y.factor.ln() + 1.0
                }
            };
            // DeepSeek-V3 (and transformers) scale cos and sin by the ratio of the two mscales, and
            // the softmax by the square of the second.
            table_scale = get(y.mscale) / get(y.mscale_all_dim);
            if y.mscale_all_dim != 0.0 {
                mscale = get(y.mscale_all_dim);
            }
        }
        let positions = c.max_position_embeddings;
        let mut angles = Vec::with_capacity(positions * d / 2);
        for p in 0..positions {
            angles.extend(inv_freq.iter().map(|f| (p as f64 * f) as f32));
        }
        let angles = Tensor::from_vec(angles, (positions, d / 2), device)?;
        Ok(Self {
            cos: (angles.cos()? * table_scale)?.to_dtype(dtype)?,
            sin: (angles.sin()? * table_scale)?.to_dtype(dtype)?,
            mscale,
        })
    }

    /// Rotates `x` of shape (batch, heads, seq, d) at `positions` (batch, seq) of u32.
    pub fn forward(&self, x: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let (b, h, s, d) = x.dims4()?;
        let flat = positions.flatten_all()?;
        let cos = self
            .cos
            .index_select(&flat, 0)?
            .reshape((b, 1, s, d / 2, 1))?;
        let sin = self
            .sin
            .index_select(&flat, 0)?
            .reshape((b, 1, s, d / 2, 1))?;
        let pairs = x.reshape((b, h, s, d / 2, 2))?;
        let x0 = pairs.narrow(D::Minus1, 0, 1)?;
        let x1 = pairs.narrow(D::Minus1, 1, 1)?;
        let r0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
        let r1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
        Tensor::cat(&[r0, r1], D::Minus1)?.reshape((b, h, s, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    use crate::config::tiny_for_tests as config;

    #[test]
    fn rotates_pairs_by_position_and_keeps_dot_products_relative() -> Result<()> {
        let c = config();
        let dev = Device::Cpu;
        let rope = Rope::new(&c, DType::F32, &dev)?;
        let d = c.qk_rope_head_dim;
        let q: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..d).map(|i| (i as f32 * 0.11).cos()).collect();
        let at = |v: &[f32], p: u32| -> Result<Vec<f32>> {
            let x = Tensor::from_slice(v, (1, 1, 1, d), &dev)?;
            let pos = Tensor::new(&[[p]], &dev)?;
            rope.forward(&x, &pos)?.flatten_all()?.to_vec1()
        };
        // Position 0 leaves x as it is; pair 0 turns by exactly p radians.
        assert_eq!(at(&q, 0)?, q);
        let r = at(&q, 3)?;
        let (c3, s3) = (3f32.cos(), 3f32.sin());
        assert!((r[0] - (q[0] * c3 - q[1] * s3)).abs() < 1e-5);
        assert!((r[1] - (q[0] * s3 + q[1] * c3)).abs() < 1e-5);
        // q·k depends only on the distance between positions.
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let a = dot(&at(&q, 7)?, &at(&k, 2)?);
        let b = dot(&at(&q, 105)?, &at(&k, 100)?);
        assert!((a - b).abs() < 1e-4, "{a} {b}");
        Ok(())
    }

    #[test]
    fn has_a_gradient() -> Result<()> {
        let c = config();
        let dev = Device::Cpu;
        let rope = Rope::new(&c, DType::F32, &dev)?;
        let x = Var::randn(0f32, 1., (2, 3, 5, c.qk_rope_head_dim), &dev)?;
        let pos = Tensor::new(&[[0u32, 1, 2, 0, 1], [4, 5, 6, 7, 8]], &dev)?;
        let y = rope.forward(x.as_tensor(), &pos)?;
        let g = y.sqr()?.sum_all()?.backward()?;
        // A rotation keeps norms: d|y|²/dx = 2x.
        let gx = g.get(x.as_tensor()).unwrap();
        let diff = (gx - (x.as_tensor() * 2.0)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-4, "{diff}");
        Ok(())
    }
}
