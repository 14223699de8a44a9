//! A linear layer without bias, initialised as DeepSeek-V3 initialises its weights: normal with the
//! config's `initializer_range` (Candle's default is Kaiming-uniform).

use candle_core::Result;
use candle_nn::{Init, Linear, VarBuilder};

pub fn linear(in_dim: usize, out_dim: usize, std: f64, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints(
        (out_dim, in_dim),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    )?;
    Ok(Linear::new(weight, None))
}
