//! Fused CPU kernels, with a backward pass, for the (scaled, masked) softmax, RMSNorm and rotary
//! embedding of training. The attention softmax and the rotary embedding run them in inference
//! too, on f32 CPU tensors; the hand-derived training pass calls the `_plain`/`_grads`/`_rows`
//! entry points directly.
//!
//! candle's own fused `softmax_last_dim`, `rms_norm` and `rope` cut the gradient, so the
//! trainable path used to compose them from a handful of elementary ops, each allocating a
//! tensor and each recorded for backprop. On the tiny models trained on CPU (hidden size 64) that per-op cost,
//! doubled by the backward, dominated a training step. Each op here is one pass over contiguous
//! f32 rows forward and one backward, as a candle custom op whose `bwd` returns the exact
//! gradient (computed by a second kernel that is itself not differentiable: nothing here needs
//! second derivatives).
//!
//! Only f32 CPU tensors of rank 1 or more are handled ([`super::cpu_f32_fast_path`]; strided
//! views are made contiguous first); [`softmax_last`], [`scaled_masked_softmax`], [`rms_norm`]
//! and [`rotary`] return `None` otherwise and the caller composes the op from elementary ones.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::cpu_f32_fast_path;
use crate::error::Result;

/// Rows below this many values are processed on the calling thread: splitting them costs more
/// than it saves.
const PARALLEL_MIN: usize = 1 << 14;

/// Softmax over the last dimension of an f32 CPU tensor, or `None` where not applicable.
pub fn softmax_last(x: &Tensor) -> Result<Option<Tensor>> {
    scaled_masked_softmax(x, 1.0, None)
}

/// `softmax(scores · scale + mask)` over the last dimension, the attention weights, or `None`
/// where not applicable. `mask` (a constant: it gets no gradient, so it must not track one) is
/// broadcast onto `scores` and must span the last dimension. Fusing the scale and the mask
/// saves two score-sized tensors forward and, backward, the mask's gradient, which candle would
/// otherwise reduce over the broadcast heads only to drop it.
pub fn scaled_masked_softmax(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !applies(&[scores]) {
        return Ok(None);
    }
    let op = ScaledSoftmax { scale: scale as f32 };
    let scores = scores.contiguous()?;
    let Some(mask) = mask else {
        return Ok(Some(scores.apply_op1(op)?));
    };
    let keys = scores.dim(D::Minus1)?;
    if !applies(&[mask]) || mask.track_op() || mask.rank() > scores.rank() || mask.dim(D::Minus1)? != keys {
        return Ok(None);
    }
    let Ok(mask) = mask.broadcast_as(scores.shape()) else {
        return Ok(None);
    };
    Ok(Some(scores.apply_op2(&mask, op)?))
}

/// `x·cos + rotate_half(x)·sin` over the last dimension, or `None` where not applicable. `cos`
/// and `sin` (constants: they get no gradient, so they must not track one) have `x`'s shape or
/// a 1 in one dimension, the head dimension they are broadcast over.
pub fn rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Option<Tensor>> {
    let broadcast = broadcast_dim(x.dims(), cos.dims());
    if !applies(&[x, cos, sin])
        || cos.track_op()
        || sin.track_op()
        || sin.dims() != cos.dims()
        || x.dim(D::Minus1)? % 2 != 0
        || broadcast.is_none()
    {
        return Ok(None);
    }
    let dims = x.dims();
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let op = match broadcast.flatten() {
        Some(k) => {
            Rotary { heads: dims[k], inner: dims[k + 1..dims.len() - 1].iter().product(), transposed: false }
        }
        None => Rotary { heads: 1, inner: rows, transposed: false },
    };
    Ok(Some(x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, op)?))
}

/// `Some(None)` where `table` has the shape `x`, `Some(Some(k))` where it differs only by a 1 in
/// dimension `k` (not the last), `None` otherwise.
fn broadcast_dim(x: &[usize], table: &[usize]) -> Option<Option<usize>> {
    if x.len() != table.len() {
        return None;
    }
    let differing: Vec<usize> = (0..x.len()).filter(|&k| x[k] != table[k]).collect();
    match differing[..] {
        [] => Some(None),
        [k] if table[k] == 1 && k + 1 < x.len() => Some(Some(k)),
        _ => None,
    }
}

/// `x / sqrt(mean(x²) + eps) * weight` over the last dimension, or `None` where not applicable.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !applies(&[x, weight]) || weight.dims() != [x.dim(D::Minus1)?] {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })?))
}

/// The RMSNorm kernel outside autograd, on contiguous f32 rows `x` `(.., n)` with `weight` `[n]`.
pub(crate) fn rms_norm_plain(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(x.apply_op2_no_bwd(weight, &RmsNorm { eps: eps as f32 })?)
}

/// The gradients of [`rms_norm_plain`] for output gradient `g`: the input's, and the weight's
/// when `with_weight`.
pub(crate) fn rms_norm_grads(
    x: &Tensor,
    weight: &Tensor,
    g: &Tensor,
    eps: f64,
    with_weight: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let norm = || RmsNorm { eps: eps as f32 };
    let dx = x.apply_op3_no_bwd(weight, g, &RmsNormGradX { norm: norm() })?;
    let dw = if with_weight { Some(x.apply_op2_no_bwd(g, &RmsNormGradW { norm: norm() })?) } else { None };
    Ok((dx, dw))
}

/// The rotary kernel outside autograd on contiguous f32 `x` `(rows, heads, head_dim)` with
/// tables `(rows, head_dim)`; `transposed` applies its transpose, which is its backward.
pub(crate) fn rotary_rows(x: &Tensor, cos: &Tensor, sin: &Tensor, transposed: bool) -> Result<Tensor> {
    let op = Rotary { heads: x.dim(1)?, inner: 1, transposed };
    Ok(x.apply_op3_no_bwd(cos, sin, &op)?)
}

/// `Σ f(x)` in eight interleaved partial sums, which the compiler vectorises (one running sum
/// must keep its order and cannot be).
pub(crate) fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, &x)| *l += f(x));
    }
    lanes.iter().sum::<f32>() + tail
}

/// The kernels work on rows of the last dimension, so each tensor must be f32 on the CPU and
/// have one (not a scalar).
fn applies(tensors: &[&Tensor]) -> bool {
    cpu_f32_fast_path(tensors) && tensors.iter().all(|t| t.rank() > 0)
}

/// The contiguous f32 values of a custom op's argument.
fn values<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("fused op: expected f32, got {:?}", storage.dtype())
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("fused op: expected a contiguous tensor"),
    }
}

/// Width of the rows the op works on: the last dimension.
fn row_len(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1)
}

/// Applies `f` to each output row with its index, in parallel when the tensor is large.
fn for_rows(out: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if n == 0 {
        return;
    }
    if out.len() < PARALLEL_MIN {
        out.chunks_mut(n).enumerate().for_each(|(i, row)| f(i, row));
    } else {
        out.par_chunks_mut(n).enumerate().for_each(|(i, row)| f(i, row));
    }
}

/// Softmax of `x · scale (+ mask)` per row. As a one-argument op it has no mask; as a
/// two-argument op its second argument is the mask, broadcast onto `x` (a strided view whose
/// last stride is 1).
struct ScaledSoftmax {
    scale: f32,
}

impl ScaledSoftmax {
    fn forward(&self, x: &[f32], n: usize, mask: Option<(&[f32], &Layout)>) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, n, |i, y| {
            let row = &x[i * n..(i + 1) * n];
            match mask {
                Some((m, l)) => {
                    let at = row_offset(l, i);
                    for ((y, x), m) in y.iter_mut().zip(row).zip(&m[at..at + n]) {
                        *y = x * self.scale + m;
                    }
                }
                None => y.iter_mut().zip(row).for_each(|(y, x)| *y = x * self.scale),
            }
            let max = y.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0f32;
            for y in y.iter_mut() {
                *y = (*y - max).exp();
                total += *y;
            }
            y.iter_mut().for_each(|y| *y /= total);
        });
        out
    }

    fn backward(&self, y: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxGrad { scale: self.scale })
    }
}

/// Where row `i` (counting over all dimensions but the last) of a strided view starts.
fn row_offset(layout: &Layout, mut i: usize) -> usize {
    let (dims, stride) = (layout.dims(), layout.stride());
    let mut at = layout.start_offset();
    for d in (0..dims.len().saturating_sub(1)).rev() {
        at += i % dims[d] * stride[d];
        i /= dims[d];
    }
    at
}

impl CustomOp1 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        "medbridge-scaled-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(self.forward(values(s, l)?, row_len(l), None)), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.backward(y, g)?))
    }
}

impl CustomOp2 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        "medbridge-scaled-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(mask) = ms else { candle_core::bail!("fused op: expected an f32 mask") };
        if ml.dims() != xl.dims() || ml.stride().last() != Some(&1) {
            candle_core::bail!("fused op: the mask must be broadcast onto the scores, keys contiguous")
        }
        let n = row_len(xl);
        Ok((CpuStorage::F32(self.forward(values(xs, xl)?, n, Some((mask, ml)))), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _mask: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.backward(y, g)?), None))
    }
}

/// `scale · y · (g − Σ g·y)` per row: the scaled softmax's vector-Jacobian product.
struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "medbridge-softmax-last-grad"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, g) = (values(ys, yl)?, values(gs, gl)?);
        let n = row_len(yl);
        let mut out = vec![0f32; y.len()];
        for_rows(&mut out, n, |i, dx| {
            let (y, g) = (&y[i * n..(i + 1) * n], &g[i * n..(i + 1) * n]);
            let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
            for ((dx, y), g) in dx.iter_mut().zip(y).zip(g) {
                *dx = self.scale * y * (g - dot);
            }
        });
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }
}

struct RmsNorm {
    eps: f32,
}

impl RmsNorm {
    /// `sqrt(mean(x²) + eps)` of one row.
    fn rms(&self, row: &[f32]) -> f32 {
        (lane_sum(row, |x| x * x) / row.len() as f32 + self.eps).sqrt()
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "medbridge-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (values(xs, xl)?, values(ws, wl)?);
        let n = row_len(xl);
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, n, |i, y| {
            let row = &x[i * n..(i + 1) * n];
            let rms = self.rms(row);
            for ((y, x), w) in y.iter_mut().zip(row).zip(w) {
                *y = x / rms * w;
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let eps = self.eps;
        let dx = match x.track_op() {
            true => Some(x.apply_op3_no_bwd(w, &g, &RmsNormGradX { norm: RmsNorm { eps } })?),
            false => None,
        };
        let dw = match w.track_op() {
            true => Some(x.apply_op2_no_bwd(&g, &RmsNormGradW { norm: RmsNorm { eps } })?),
            false => None,
        };
        Ok((dx, dw))
    }
}

/// Gradient of the input: with `r = 1/rms`, `dx = r·(g·w − x·r²·mean(g·w·x))` per row.
struct RmsNormGradX {
    norm: RmsNorm,
}

impl CustomOp3 for RmsNormGradX {
    fn name(&self) -> &'static str {
        "medbridge-rms-norm-grad-x"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, g) = (values(xs, xl)?, values(ws, wl)?, values(gs, gl)?);
        let n = row_len(xl);
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, n, |i, dx| {
            let (x, g) = (&x[i * n..(i + 1) * n], &g[i * n..(i + 1) * n]);
            let r = 1.0 / self.norm.rms(x);
            let dot: f32 = x.iter().zip(g).zip(w).map(|((x, g), w)| x * g * w).sum();
            let shift = r * r * dot / n as f32;
            for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                *dx = r * (g * w - x * shift);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// Gradient of the weight: `Σ_rows g·x/rms`.
struct RmsNormGradW {
    norm: RmsNorm,
}

impl CustomOp2 for RmsNormGradW {
    fn name(&self) -> &'static str {
        "medbridge-rms-norm-grad-w"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (values(xs, xl)?, values(gs, gl)?);
        let n = row_len(xl);
        let mut dw = vec![0f32; n];
        if n > 0 {
            for (x, g) in x.chunks_exact(n).zip(g.chunks_exact(n)) {
                let rms = self.norm.rms(x);
                for ((dw, x), g) in dw.iter_mut().zip(x).zip(g) {
                    *dw += g * x / rms;
                }
            }
        }
        Ok((CpuStorage::F32(dw), Shape::from(n)))
    }
}

/// Rotate-half rotary embedding. With its rows seen as `(outer, heads, inner)`, `x` reads the
/// table's row `(outer, inner)`. The same kernel, `transposed`, is the backward: with halves `1` and `2`,
/// forward `y1 = x1·c1 − x2·s1`, `y2 = x2·c2 + x1·s2`; backward `d1 = g1·c1 + g2·s2`,
/// `d2 = g2·c2 − g1·s1`.
struct Rotary {
    heads: usize,
    inner: usize,
    transposed: bool,
}

impl CustomOp3 for Rotary {
    fn name(&self) -> &'static str {
        if self.transposed {
            "medbridge-rotary-grad"
        } else {
            "medbridge-rotary"
        }
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, cos, sin) = (values(xs, xl)?, values(cs, cl)?, values(ss, sl)?);
        let n = row_len(xl);
        let half = n / 2;
        let (heads, inner) = (self.heads.max(1), self.inner.max(1));
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, n, |i, y| {
            let t = (i / (heads * inner) * inner + i % inner) * n;
            let (c, s) = (&cos[t..t + n], &sin[t..t + n]);
            let (x1, x2) = x[i * n..(i + 1) * n].split_at(half);
            let (y1, y2) = y.split_at_mut(half);
            for j in 0..half {
                let (a, b) = (x1[j], x2[j]);
                if self.transposed {
                    y1[j] = a * c[j] + b * s[half + j];
                    y2[j] = b * c[half + j] - a * s[j];
                } else {
                    y1[j] = a * c[j] - b * s[j];
                    y2[j] = b * c[half + j] + a * s[half + j];
                }
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = Rotary { heads: self.heads, inner: self.inner, transposed: true };
        Ok((Some(g.contiguous()?.apply_op3_no_bwd(cos, sin, &grad)?), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Deterministic pseudo-random values in [-2, 2) (a 64-bit LCG), so failures reproduce.
    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn composed_softmax(x: &Tensor) -> Tensor {
        let max = x.max_keepdim(D::Minus1).unwrap().detach();
        let e = x.broadcast_sub(&max).unwrap().exp().unwrap();
        e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
    }

    fn composed_rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
        let rms = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + eps).unwrap().sqrt().unwrap();
        x.broadcast_div(&rms).unwrap().broadcast_mul(w).unwrap()
    }

    /// The gradient of `Σ f(x)·probe` with respect to each of `vars`.
    fn grads(f: impl Fn() -> Tensor, probe: &Tensor, vars: &[&Var]) -> Vec<Tensor> {
        let grads = (f() * probe).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter().map(|v| grads.get(v.as_tensor()).expect("a gradient").clone()).collect()
    }

    #[test]
    fn softmax_matches_the_composition_forward_and_backward_with_masked_entries() {
        let x = random(&[2, 3, 5, 37], 1);
        let mut values = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for j in [0, 3, 36] {
            values[j] = f32::NEG_INFINITY;
        }
        let x = Var::from_tensor(&Tensor::from_vec(values, x.shape(), &Device::Cpu).unwrap()).unwrap();
        let probe = random(x.dims(), 2);
        let fused = softmax_last(x.as_tensor()).unwrap().expect("f32 on the CPU");
        let composed = composed_softmax(x.as_tensor());
        assert!(max_diff(&fused, &composed) <= 1e-6);
        let masked = fused.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!((masked[0], masked[3], masked[36]), (0.0, 0.0, 0.0));
        let fused_grad = grads(|| softmax_last(x.as_tensor()).unwrap().unwrap(), &probe, &[&x]);
        let composed_grad = grads(|| composed_softmax(x.as_tensor()), &probe, &[&x]);
        assert!(max_diff(&fused_grad[0], &composed_grad[0]) <= 1e-5);
    }

    /// Attention scores `(batch, heads, queries, keys)` with a `(batch, 1, queries, keys)` mask
    /// holding `MASKED` and `-inf` entries, and a `(batch, 1, 1, keys)` padding mask.
    #[test]
    fn scaled_masked_softmax_matches_the_composition_forward_and_backward() {
        let scores = Var::from_tensor(&random(&[2, 3, 4, 6], 40)).unwrap();
        let scale = 0.125;
        let mut causal = random(&[2, 1, 4, 6], 41).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        causal[5] = super::super::MASKED;
        causal[30] = f32::NEG_INFINITY;
        let causal = Tensor::from_vec(causal, (2, 1, 4, 6), &Device::Cpu).unwrap();
        let padding = random(&[2, 1, 1, 6], 42);
        let probe = random(scores.dims(), 43);
        for mask in [Some(&causal), Some(&padding), None] {
            let composed = || {
                let x = (scores.as_tensor() * scale).unwrap();
                composed_softmax(&mask.map_or(x.clone(), |m| x.broadcast_add(m).unwrap()))
            };
            let fused = || scaled_masked_softmax(scores.as_tensor(), scale, mask).unwrap().unwrap();
            assert!(max_diff(&fused(), &composed()) <= 1e-6);
            let (fused_grad, composed_grad) =
                (grads(fused, &probe, &[&scores]), grads(composed, &probe, &[&scores]));
            assert!(max_diff(&fused_grad[0], &composed_grad[0]) <= 1e-5);
        }
        let tracked_mask = Var::from_tensor(&padding).unwrap();
        assert!(scaled_masked_softmax(scores.as_tensor(), scale, Some(tracked_mask.as_tensor()))
            .unwrap()
            .is_none());
    }

    #[test]
    fn softmax_of_a_strided_view_matches_the_composition() {
        let x = Var::from_tensor(&random(&[4, 6, 9], 3)).unwrap();
        let view = x.as_tensor().transpose(0, 1).unwrap();
        let fused = softmax_last(&view).unwrap().expect("f32 on the CPU");
        assert!(max_diff(&fused, &composed_softmax(&view)) <= 1e-6);
    }

    #[test]
    fn rms_norm_matches_the_composition_forward_and_backward() {
        let eps = 1e-6;
        let x = Var::from_tensor(&random(&[3, 7, 64], 4)).unwrap();
        let w = Var::from_tensor(&random(&[64], 5)).unwrap();
        let probe = random(x.dims(), 6);
        let fused = rms_norm(x.as_tensor(), w.as_tensor(), eps).unwrap().expect("f32 on the CPU");
        assert!(max_diff(&fused, &composed_rms_norm(x.as_tensor(), w.as_tensor(), eps)) <= 1e-6);
        let run_fused = || rms_norm(x.as_tensor(), w.as_tensor(), eps).unwrap().unwrap();
        let fused_grad = grads(run_fused, &probe, &[&x, &w]);
        let composed_grad = grads(|| composed_rms_norm(x.as_tensor(), w.as_tensor(), eps), &probe, &[&x, &w]);
        assert!(max_diff(&fused_grad[0], &composed_grad[0]) <= 1e-5);
        assert!(max_diff(&fused_grad[1], &composed_grad[1]) <= 1e-5);
    }

    #[test]
    fn rms_norm_with_a_frozen_weight_gives_the_input_its_gradient() {
        let x = Var::from_tensor(&random(&[5, 16], 7)).unwrap();
        let w = random(&[16], 8);
        let probe = random(x.dims(), 9);
        let fused = grads(|| rms_norm(x.as_tensor(), &w, 1e-5).unwrap().unwrap(), &probe, &[&x]);
        let composed = grads(|| composed_rms_norm(x.as_tensor(), &w, 1e-5), &probe, &[&x]);
        assert!(max_diff(&fused[0], &composed[0]) <= 1e-5);
    }

    fn composed_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let half = x.dim(D::Minus1).unwrap() / 2;
        let x1 = x.narrow(D::Minus1, 0, half).unwrap();
        let x2 = x.narrow(D::Minus1, half, half).unwrap();
        let rotated = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
        (x.broadcast_mul(cos).unwrap() + rotated.broadcast_mul(sin).unwrap()).unwrap()
    }

    /// The decoder's layout `(batch, heads, seq, d)` with a `(batch, 1, seq, d)` table, read
    /// through a transposed view as the decoder does, the vision tower's `(n, heads, d)` with an
    /// `(n, 1, d)` table, and a table of `x`'s own shape.
    #[test]
    fn rotary_matches_the_composition_forward_and_backward() {
        let decoder = random(&[2, 5, 3, 8], 11).transpose(1, 2).unwrap();
        let cases = [
            (decoder, vec![2, 1, 5, 8]),
            (random(&[6, 2, 8], 12), vec![6, 1, 8]),
            (random(&[4, 6], 13), vec![4, 6]),
        ];
        for (seed, (x, table)) in (20..).step_by(3).zip(cases) {
            let x = Var::from_tensor(&x).unwrap();
            let (cos, sin) = (random(&table, seed), random(&table, seed + 1));
            let probe = random(x.dims(), seed + 2);
            let fused = rotary(x.as_tensor(), &cos, &sin).unwrap().expect("f32 on the CPU");
            assert!(max_diff(&fused, &composed_rotary(x.as_tensor(), &cos, &sin)) <= 1e-6);
            let fused_grad = grads(|| rotary(x.as_tensor(), &cos, &sin).unwrap().unwrap(), &probe, &[&x]);
            let composed_grad = grads(|| composed_rotary(x.as_tensor(), &cos, &sin), &probe, &[&x]);
            assert!(max_diff(&fused_grad[0], &composed_grad[0]) <= 1e-5);
        }
    }

    #[test]
    fn rotary_leaves_a_tracked_table_an_odd_width_or_a_second_broadcast_to_the_composition() {
        let x = random(&[3, 2, 8], 30);
        let table = Var::from_tensor(&random(&[3, 1, 8], 31)).unwrap();
        assert!(rotary(&x, table.as_tensor(), table.as_tensor()).unwrap().is_none());
        let odd = random(&[3, 2, 7], 32);
        let odd_table = random(&[3, 1, 7], 33);
        assert!(rotary(&odd, &odd_table, &odd_table).unwrap().is_none());
        let two_broadcasts = random(&[1, 1, 8], 34);
        assert!(rotary(&x, &two_broadcasts, &two_broadcasts).unwrap().is_none());
        assert!(rotary(&x, &random(&[3, 1, 8], 35), &random(&[3, 1, 8], 36)).unwrap().is_some());
    }

    #[test]
    fn other_dtypes_are_left_to_the_composition() {
        let x = random(&[2, 8], 10).to_dtype(DType::F64).unwrap();
        assert!(softmax_last(&x).unwrap().is_none());
        let w = Tensor::ones(8, DType::F64, &Device::Cpu).unwrap();
        assert!(rms_norm(&x, &w, 1e-6).unwrap().is_none());
    }
}
