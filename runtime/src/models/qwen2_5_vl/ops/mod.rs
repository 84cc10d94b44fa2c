//! Differentiable building blocks shared by the vision tower and the decoder: RMSNorm, softmax
//! attention and rotate-half rotary embedding, and the choice of kernel for each.
//!
//! candle's fused `rms_norm` and `softmax_last_dim` kernels have no backward pass. When no
//! gradient can flow (no input tracks a `Var`), the norm and the softmax run them: they give
//! the same values and make an inference forward about four times faster on CPU. On f32 CPU
//! tensors ([`cpu_f32_fast_path`]) the attention softmax, the rotary embedding and, when a
//! gradient can flow, the norm run the kernels of [`fused`], which have a backward. Other dtypes
//! and devices compose these ops from elementary ones. Half-precision inputs are upcast to f32
//! for the norm and the softmax, as transformers does. [`decode`] holds the no-gradient kernel
//! for one query token per row. The folder's `README.md` tables which runs when.

pub mod decode;
pub mod fused;

use candle_core::{DType, Tensor, D};

use super::weights::{Init, Weights};
use crate::error::Result;

/// Root-mean-square layer norm with a learned scale (`Qwen2RMSNorm`).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
}

impl RmsNorm {
    pub fn new(w: &Weights, size: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: w.get(&[size], "weight", Init::Ones)?, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() == DType::F32 && !x.track_op() && !self.weight.track_op() {
            return Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32)?);
        }
        if let Some(normed) = fused::rms_norm(x, &self.weight, self.eps)? {
            return Ok(normed);
        }
        let dtype = x.dtype();
        let x = upcast(x)?;
        let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        let normed = x.broadcast_div(&rms)?.to_dtype(dtype)?;
        Ok(normed.broadcast_mul(&self.weight)?)
    }
}

/// Whether every one of `tensors` is an f32 tensor on the CPU: the one condition, shared by the
/// kernels of [`fused`], [`decode`] and the hand-derived training pass, under which medbridge's
/// own CPU kernels may read the values directly. Each kernel adds its own shape conditions.
pub(crate) fn cpu_f32_fast_path(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Half precision is computed in f32; f32 and f64 stay as they are.
pub fn upcast(x: &Tensor) -> Result<Tensor> {
    Ok(match x.dtype() {
        DType::BF16 | DType::F16 => x.to_dtype(DType::F32)?,
        _ => x.clone(),
    })
}

/// Softmax over the last dimension. The max is detached: softmax does not depend on the shift,
/// so its gradient path through the max would only add rounding noise.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        return Ok(candle_nn::ops::softmax_last_dim(x)?);
    }
    if let Some(probs) = fused::softmax_last(x)? {
        return Ok(probs);
    }
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Scaled dot-product attention on `(.., seq, head_dim)` tensors; `mask` is additive and
/// broadcast onto the scores. The softmax runs in at least f32.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let dtype = q.dtype();
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let scores = q.contiguous()?.matmul(&k.t()?.contiguous()?)?;
    if let Some(probs) = fused::scaled_masked_softmax(&scores, scale, mask)? {
        return Ok(probs.matmul(&v.contiguous()?)?);
    }
    let scores = (scores * scale)?;
    let mut scores = upcast(&scores)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(&mask.to_dtype(scores.dtype())?)?;
    }
    let probs = softmax_last(&scores)?.to_dtype(dtype)?;
    Ok(probs.matmul(&v.contiguous()?)?)
}

/// `x * cos + rotate_half(x) * sin`, with `cos`/`sin` broadcast onto `x`.
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if let Some(rotated) = fused::rotary(x, cos, sin)? {
        return Ok(rotated);
    }
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// Additive mask value for a forbidden key. Finite, so that a fully masked row (a padding
/// query) yields a harmless uniform distribution instead of NaN.
pub const MASKED: f32 = -1e30;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn differentiable_softmax_matches_the_fused_one_and_has_a_gradient() {
        let dev = Device::Cpu;
        let x = candle_core::Var::new(&[[1.0f32, 2.0, 3.0], [0.5, -1.0, 4.0]], &dev).unwrap();
        let composed = softmax_last(x.as_tensor()).unwrap();
        let fused = softmax_last(&x.as_tensor().detach()).unwrap();
        assert!(max_diff(&composed, &fused) < 1e-6);
        let w = Tensor::new(&[[1.0f32, 0.0, 0.0], [0.0, 0.0, 1.0]], &dev).unwrap();
        let grads = (composed * w).unwrap().sum_all().unwrap().backward().unwrap();
        let g =
            grads.get(x.as_tensor()).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(g > 0.0);
    }

    #[test]
    fn the_fast_path_is_f32_on_the_cpu_whatever_the_shape() {
        let f32_matrix = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let f32_scalar = Tensor::new(1f32, &Device::Cpu).unwrap();
        let f64_matrix = f32_matrix.to_dtype(DType::F64).unwrap();
        let bf16_matrix = f32_matrix.to_dtype(DType::BF16).unwrap();
        assert!(cpu_f32_fast_path(&[&f32_matrix, &f32_scalar]));
        assert!(!cpu_f32_fast_path(&[&f32_matrix, &f64_matrix]));
        assert!(!cpu_f32_fast_path(&[&bf16_matrix]));
    }

    #[test]
    fn differentiable_rms_norm_matches_the_fused_one() {
        let dev = Device::Cpu;
        let x = candle_core::Var::new(&[[1.0f32, -2.0, 3.0, 0.5]], &dev).unwrap();
        let weight = Tensor::new(&[1.0f32, 2.0, 0.5, -1.0], &dev).unwrap();
        let norm = RmsNorm { weight, eps: 1e-6 };
        let composed = norm.forward(x.as_tensor()).unwrap();
        let fused = norm.forward(&x.as_tensor().detach()).unwrap();
        assert!(composed.track_op() && !fused.track_op());
        assert!(max_diff(&composed, &fused) < 1e-5);
    }
}
