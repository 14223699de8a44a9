//! RMSNorm, `x / sqrt(mean(x²) + eps) * weight`, written out so that it has a gradient
//! (`candle_nn::RmsNorm::forward` takes the fused kernel on contiguous input, which has none).

use candle_core::{D, DType, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Weight `name.weight` of `dim`, ones when new (Hugging Face's initialisation).
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        Ok(Self { weight, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Half precision is normalised in f32, as Hugging Face's DeepseekV3RMSNorm does.
        let dtype = x.dtype();
        let x = match dtype {
            DType::BF16 | DType::F16 => x.to_dtype(DType::F32)?,
            _ => x.clone(),
        };
        let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x.broadcast_div(&(mean_square + self.eps)?.sqrt()?)?;
        normed.to_dtype(dtype)?.broadcast_mul(&self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    #[test]
    fn normalises_and_has_a_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let norm = RmsNorm::new(4, 1e-6, vb.pp("norm"))?;
        let x = Var::new(&[[1f32, 2., 3., 4.], [0., 0., 0., 2.]], &dev)?;
        let y = norm.forward(x.as_tensor())?;
        let rms = (30f32 / 4.).sqrt();
        let expected = [1. / rms, 2. / rms, 3. / rms, 4. / rms];
        for (a, b) in y.get(0)?.to_vec1::<f32>()?.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5);
        }
        // The second row's mean square is 1: unchanged, but for eps.
        for (a, b) in y.get(1)?.to_vec1::<f32>()?.iter().zip([0., 0., 0., 2.]) {
            assert!((a - b).abs() < 1e-5);
        }
        let grads = y.sqr()?.sum_all()?.backward()?;
        let w = map.data().lock().unwrap()["norm.weight"].clone();
        assert!(grads.get(&w).is_some(), "no gradient for the weight");
        assert!(
            grads.get(x.as_tensor()).is_some(),
            "no gradient for the input"
        );
        Ok(())
    }
}
