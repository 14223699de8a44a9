//! Finite-difference gradient checks for the blocks' tests (f64).

use candle_core::{Result, Tensor, Var};

/// The largest relative error between autograd's gradient of `loss` with respect to `var` and central
/// differences, over `samples` entries spread over the tensor.
pub fn worst_error(var: &Var, loss: &dyn Fn() -> Result<Tensor>, samples: usize) -> Result<f64> {
    let eps = 1e-6;
    let grads = loss()?.backward()?;
    let g: Vec<f64> = grads
        .get(var.as_tensor())
        .expect("a gradient")
        .flatten_all()?
        .to_vec1()?;
    let original = var.as_tensor().copy()?;
    let values: Vec<f64> = original.flatten_all()?.to_vec1()?;
    let n = values.len();
    let mut worst = 0f64;
    for k in 0..samples.min(n) {
        let i = (k * 7919 + 13) % n;
        let at = |delta: f64| -> Result<f64> {
            let mut v = values.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, original.shape(), original.device())?)?;
            loss()?.to_scalar::<f64>()
        };
        let fd = (at(eps)? - at(-eps)?) / (2.0 * eps);
        var.set(&original)?;
        // Relative, but against at least 1e-3: the loss's rounding (~1e-14) over 2·eps is ~1e-8 of
        // absolute error, which is no evidence about a gradient of 1e-5.
        let err = (fd - g[i]).abs() / fd.abs().max(g[i].abs()).max(1e-3);
        worst = worst.max(err);
    }
    Ok(worst)
}

/// Every variable of `map` whose gradient in `loss` is missing or zero everywhere.
pub fn without_gradient(map: &candle_nn::VarMap, loss: &Tensor) -> Result<Vec<String>> {
    let grads = loss.backward()?;
    let mut missing = Vec::new();
    for (name, var) in map.data().lock().expect("varmap lock").iter() {
        let zero = match grads.get(var.as_tensor()) {
            Some(g) => {
                g.abs()?
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?
                    == 0.0
            }
            None => true,
        };
        if zero {
            missing.push(name.clone());
        }
    }
    missing.sort();
    Ok(missing)
}
