//! The output head and the mean cross entropy against target ids, fused: `mean_i(logsumexp(h_i·Wᵀ) −
//! h_i·w_{t_i})`, without ever holding the whole logits.
//!
//! Why by hand: with a vocabulary of 152k the logits of one micro-batch are hundreds of MB, and Candle
//! builds each of them several times over: its `cross_entropy` is six tensor passes forward and as many
//! backward, and its backprop adds every gradient into a fresh tensor of zeros. That was most of a
//! training step on the CPU. Here, as Liger-Kernel's fused linear cross entropy does on GPUs, rows are
//! taken a chunk at a time: the chunk's logits (one GEMM), their log-sum-exp, and in training at once
//! the gradient `softmax − one_hot` folded into ∂h and ∂W by two more GEMMs. The backward only scales
//! them. Memory is one chunk of logits (about 64 MB) whatever the batch. Other devices and dtypes take
//! Candle's composite path, which computes the same function.

use std::ops::{Mul, Sub};
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether the backward will run: training computes the gradients during the forward pass (the exps
/// are computed once, for the loss and the gradient); evaluation does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Train,
    Eval,
}

/// Bytes of logits computed at once.
const CHUNK_BYTES: usize = 64 << 20;

/// `h` (n, hidden) through the head `weight` (vocab, hidden), then the mean cross entropy against
/// `targets` (n ids).
pub fn linear_cross_entropy(
    h: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    pass: Pass,
) -> Result<Tensor> {
    let fused = matches!(h.device(), Device::Cpu)
        && matches!(h.dtype(), DType::F32 | DType::F64)
        && weight.dtype() == h.dtype();
    if !fused {
        let logits = h.matmul(&weight.t()?)?;
        // Half-precision logits are taken to f32 for the softmax.
        let logits = match logits.dtype() {
            DType::BF16 | DType::F16 => logits.to_dtype(DType::F32)?,
            _ => logits,
        };
        return candle_nn::loss::cross_entropy(&logits, targets);
    }
    let rows = (CHUNK_BYTES / (weight.dim(0)? * h.dtype().size_in_bytes())).max(8);
    fused_mean(h, weight, targets, pass, rows)
}

fn fused_mean(
    h: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    pass: Pass,
    chunk_rows: usize,
) -> Result<Tensor> {
    let (n, hidden) = h.dims2()?;
    let (vocab, w_hidden) = weight.dims2()?;
    if w_hidden != hidden {
        candle_core::bail!("linear_cross_entropy: hidden {hidden} against a head of {w_hidden}");
    }
    let targets: Vec<u32> = targets.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
    if targets.len() != n {
        candle_core::bail!(
            "linear_cross_entropy: {} targets for {n} rows",
            targets.len()
        );
    }
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("linear_cross_entropy: target {t} outside the vocabulary of {vocab}");
    }
    let op = HeadLoss {
        targets,
        pass,
        chunk_rows,
        grads: Arc::new(Mutex::new(None)),
    };
    let total = h.contiguous()?.apply_op2(&weight.contiguous()?, op)?;
    total / n as f64
}

/// Forward: Σ_i of row i's loss (a scalar); in training also ∂/∂h and ∂/∂W of that sum, kept for
/// the backward.
struct HeadLoss {
    targets: Vec<u32>,
    pass: Pass,
    chunk_rows: usize,
    grads: Arc<Mutex<Option<(CpuStorage, CpuStorage)>>>,
}

/// The two float types of the fused path.
trait Real:
    Copy + Send + Sync + PartialOrd + Sub<Output = Self> + Mul<Output = Self> + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
    fn exp(self) -> Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn exp(self) -> Self {
        exp_f32(self)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// `e^x` in f32 to about 2 ulp (Cephes' `expf`: x = k·ln 2 + r, a degree-6 polynomial in r, times
/// 2^k). Why by hand: libm's `expf` is a call per value, which no loop vectorises, and the exps of the
/// logits were a sixth of a training step.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest with the 1.5·2^23 trick: no rounding instruction needed.
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + SHIFTER) - SHIFTER;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

fn row_max<T: Real>(row: &[T]) -> T {
    row.iter().fold(row[0], |m, &x| if x > m { x } else { m })
}

/// Σ of `row`, in eight f64 lanes (152k terms in one f32 sum would lose digits; eight independent
/// lanes still vectorise).
fn sum<T: Real>(row: &[T]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = row.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|x| x.to_f64()).sum();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k].to_f64();
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Row `row`'s loss; with `grad`, the row becomes `softmax − one_hot(target)`.
#[inline(always)]
fn row_loss<T: Real>(row: &mut [T], target: usize, grad: bool) -> f64 {
    let max = row_max(row);
    let picked = row[target].to_f64();
    for x in row.iter_mut() {
        *x = (*x - max).exp();
    }
    let total = sum(row);
    if grad {
        let inv = T::from_f64(1.0 / total);
        row.iter_mut().for_each(|v| *v = *v * inv);
        row[target] = T::from_f64(row[target].to_f64() - 1.0);
    }
    max.to_f64() + total.ln() - picked
}

/// The same, compiled for AVX2 and FMA (eight lanes and fused multiply-adds in the exps); chosen at
/// run time, as the GEMMs choose their kernels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_loss_avx2<T: Real>(row: &mut [T], target: usize, grad: bool) -> f64 {
    row_loss(row, target, grad)
}

fn rows_loss<T: Real>(logits: &mut [T], vocab: usize, targets: &[u32], grad: bool) -> f64 {
    #[cfg(target_arch = "x86_64")]
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    logits
        .par_chunks_mut(vocab)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                return unsafe { row_loss_avx2(row, t as usize, grad) };
            }
            row_loss(row, t as usize, grad)
        })
        .sum()
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, each given as (pointer, row stride, column stride).
#[allow(clippy::too_many_arguments)]
fn gemm_into<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: (*mut T, usize, usize),
    accumulate: bool,
    lhs: (*const T, usize, usize),
    rhs: (*const T, usize, usize),
) {
    // SAFETY: the callers pass buffers of the sizes and strides named, which do not overlap `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2 as isize,
            dst.1 as isize,
            accumulate,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            if accumulate { T::ONE } else { T::ZERO },
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(candle_core::utils::get_num_threads()),
        )
    }
}

/// ∂h and ∂W.
type HeadGrads<T> = (Vec<T>, Vec<T>);

/// Σ of the rows' losses, and in training ∂h and ∂W of it.
fn head_loss<T: Real>(
    h: &[T],
    w: &[T],
    (hidden, vocab): (usize, usize),
    targets: &[u32],
    chunk_rows: usize,
    train: bool,
) -> (f64, Option<HeadGrads<T>>) {
    let n = targets.len();
    let mut logits = vec![T::ZERO; chunk_rows.min(n) * vocab];
    let (mut dh, mut dw) = if train {
        (vec![T::ZERO; n * hidden], vec![T::ZERO; vocab * hidden])
    } else {
        (Vec::new(), Vec::new())
    };
    let mut total = 0.0;
    for start in (0..n).step_by(chunk_rows) {
        let c = chunk_rows.min(n - start);
        let hc = &h[start * hidden..(start + c) * hidden];
        let lc = &mut logits[..c * vocab];
        // logits = h_c · Wᵀ
        gemm_into(
            (c, vocab, hidden),
            (lc.as_mut_ptr(), vocab, 1),
            false,
            (hc.as_ptr(), hidden, 1),
            (w.as_ptr(), 1, hidden),
        );
        total += rows_loss(lc, vocab, &targets[start..start + c], train);
        if train {
            // ∂h_c = G · W
            gemm_into(
                (c, hidden, vocab),
                (dh[start * hidden..].as_mut_ptr(), hidden, 1),
                false,
                (lc.as_ptr(), vocab, 1),
                (w.as_ptr(), hidden, 1),
            );
            // ∂W += Gᵀ · h_c
            gemm_into(
                (vocab, hidden, c),
                (dw.as_mut_ptr(), hidden, 1),
                true,
                (lc.as_ptr(), 1, vocab),
                (hc.as_ptr(), hidden, 1),
            );
        }
    }
    (total, train.then_some((dh, dw)))
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: inputs must be contiguous"),
    }
}

impl HeadLoss {
    fn run<T: Real>(
        &self,
        h: &[T],
        w: &[T],
        shape: (usize, usize),
        wrap: fn(Vec<T>) -> CpuStorage,
    ) -> CpuStorage {
        let (total, grads) = head_loss(
            h,
            w,
            shape,
            &self.targets,
            self.chunk_rows,
            self.pass == Pass::Train,
        );
        *self.grads.lock().expect("gradient lock") = grads.map(|(dh, dw)| (wrap(dh), wrap(dw)));
        wrap(vec![T::from_f64(total)])
    }
}

impl CustomOp2 for HeadLoss {
    fn name(&self) -> &'static str {
        "linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, hidden) = l1.shape().dims2()?;
        let (vocab, _) = l2.shape().dims2()?;
        let name = self.name();
        let out = match (s1, s2) {
            (CpuStorage::F32(h), CpuStorage::F32(w)) => self.run(
                contiguous(h, l1, name)?,
                contiguous(w, l2, name)?,
                (hidden, vocab),
                CpuStorage::F32,
            ),
            (CpuStorage::F64(h), CpuStorage::F64(w)) => self.run(
                contiguous(h, l1, name)?,
                contiguous(w, l2, name)?,
                (hidden, vocab),
                CpuStorage::F64,
            ),
            _ => candle_core::bail!("{name}: f32 or f64, alike, only"),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        h: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some((dh, dw)) = self.grads.lock().expect("gradient lock").take() else {
            candle_core::bail!(
                "{}: no gradient kept (an evaluation pass, or a second backward)",
                self.name()
            );
        };
        let g = grad_res.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let tensor = |s: CpuStorage, like: &Tensor| -> Result<Tensor> {
            let t = match s {
                CpuStorage::F32(v) => Tensor::from_vec(v, like.shape(), like.device())?,
                CpuStorage::F64(v) => Tensor::from_vec(v, like.shape(), like.device())?,
                _ => unreachable!("kept in the logits' dtype"),
            };
            if g == 1.0 { Ok(t) } else { t * g }
        };
        Ok((Some(tensor(dh, h)?), Some(tensor(dw, w)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn values(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                (((i + seed) * 7919 % 1000) as f64 / 500.0 - 1.0)
                    * if i % 11 == 0 { 3.0 } else { 1.0 }
            })
            .collect()
    }

    /// Loss and both gradients equal the composite head-then-cross-entropy, in f32 and f64, in one chunk
    /// and in chunks that do not divide the rows.
    #[test]
    fn matches_the_composite_head_and_cross_entropy() -> Result<()> {
        let dev = Device::Cpu;
        let (n, hidden, vocab) = (13, 6, 301);
        for dtype in [DType::F32, DType::F64] {
            for chunk in [64, 5] {
                let h = Var::from_tensor(
                    &Tensor::from_vec(values(n * hidden, 1), (n, hidden), &dev)?.to_dtype(dtype)?,
                )?;
                let w = Var::from_tensor(
                    &Tensor::from_vec(values(vocab * hidden, 2), (vocab, hidden), &dev)?
                        .to_dtype(dtype)?,
                )?;
                let targets = Tensor::from_vec(
                    (0..n as u32)
                        .map(|i| i * 41 % vocab as u32)
                        .collect::<Vec<_>>(),
                    n,
                    &dev,
                )?;
                let ours = fused_mean(h.as_tensor(), w.as_tensor(), &targets, Pass::Train, chunk)?;
                let eval = fused_mean(h.as_tensor(), w.as_tensor(), &targets, Pass::Eval, chunk)?;
                let logits = h.as_tensor().matmul(&w.as_tensor().t()?)?;
                let theirs = candle_nn::loss::cross_entropy(&logits, &targets)?;
                let scalar = |t: &Tensor| t.to_dtype(DType::F64)?.to_scalar::<f64>();
                let (a, b) = (scalar(&ours)?, scalar(&theirs)?);
                assert!((a - b).abs() < 1e-6 * b.abs(), "{dtype:?}: {a} vs {b}");
                assert_eq!(a, scalar(&eval)?, "training and evaluation passes differ");
                let ga = (ours * 3.0)?.backward()?;
                let gb = (theirs * 3.0)?.backward()?;
                for v in [&h, &w] {
                    let (x, y) = (
                        ga.get(v.as_tensor()).unwrap(),
                        gb.get(v.as_tensor()).unwrap(),
                    );
                    let diff = scalar(&(x - y)?.abs()?.max_all()?)?;
                    assert!(
                        diff < 1e-5,
                        "{dtype:?} chunk {chunk}: gradient differs by {diff}"
                    );
                }
            }
        }
        Ok(())
    }

    /// The vectorisable exp: within 3 ulp of f64's over the range logits take, and 0 far below.
    #[test]
    fn exp_f32_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
            x += 0.000_731;
        }
        assert!(worst < 3.0 * f32::EPSILON as f64, "{worst}");
        assert!(exp_f32(-1e30) < 1e-37);
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn a_target_outside_the_vocabulary_is_an_error() {
        let dev = Device::Cpu;
        let h = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((5, 3), DType::F32, &dev).unwrap();
        let t = Tensor::from_vec(vec![1u32, 5], 2, &dev).unwrap();
        let e = linear_cross_entropy(&h, &w, &t, Pass::Eval)
            .unwrap_err()
            .to_string();
        assert!(e.contains("target 5"), "{e}");
    }
}
