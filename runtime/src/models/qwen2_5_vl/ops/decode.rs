//! Attention of one query token per row without a gradient, on f32 CPU tensors.
//!
//! Decoding one token per row is the sampler's inner loop, and there candle's batched matmul
//! spends its time in per-(row, head) call overhead on matrices a few dozen wide. So
//! [`decode_attention`] computes that case directly on the CPU, reading the grouped key/value
//! heads in place (no `repeat_kv` copy) from a cache that may hold spare capacity.

use candle_core::{CpuStorage, DType, Layout, Storage, Tensor};
use rayon::prelude::*;

use super::cpu_f32_fast_path;
use crate::error::Result;

/// Attention of one query token per row, `q` `(b, heads, 1, d)`, over cached `k` and `v`
/// `(b, kv_heads, keys, d)` (any strides with a unit last stride), with an additive `mask`
/// `(b, 1, 1, keys)`. Query head `h` reads kv head `h / (heads / kv_heads)`, the head
/// `repeat_kv` would give it. Returns `None` where this path does not apply (a gradient can
/// flow, not f32 on the CPU, several queries per row): the caller then runs [`super::attention`],
/// whose values this matches up to float summation order.
pub fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
    let (b, heads, queries, d) = q.dims4()?;
    let (kb, kv_heads, keys, kd) = k.dims4()?;
    let applies = !(q.track_op() || k.track_op() || v.track_op())
        && cpu_f32_fast_path(&[q, k, v])
        && queries == 1
        && (kb, kd) == (b, d)
        && v.dims() == k.dims()
        && kv_heads > 0
        && heads % kv_heads == 0
        && k.stride()[3] == 1
        && v.stride()[3] == 1
        && mask.is_none_or(|m| m.dims() == [b, 1, 1, keys]);
    if !applies {
        return Ok(None);
    }
    let mask = match mask {
        Some(m) => Some(m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    let q_rows = q.flatten_all()?.to_vec1::<f32>()?;
    let (k_storage, k_layout) = k.storage_and_layout();
    let (v_storage, v_layout) = v.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(k_data)), Storage::Cpu(CpuStorage::F32(v_data))) =
        (&*k_storage, &*v_storage)
    else {
        return Ok(None);
    };
    let (k_heads, v_heads) = (HeadRows::new(k_data, k_layout), HeadRows::new(v_data, v_layout));
    let group = heads / kv_heads;
    // The scale as candle's `Tensor * f64` applies it, so scores round as in `attention`.
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let mut out = vec![0f32; b * heads * d];
    // Rows are independent and each sums in a fixed order, so the thread count changes nothing.
    out.par_chunks_mut(heads * d).enumerate().for_each(|(row, context)| {
        let mut probs = vec![0f32; keys];
        let row_mask = mask.as_ref().map(|m| &m[row * keys..(row + 1) * keys]);
        for (head, context) in context.chunks_exact_mut(d).enumerate() {
            let query = &q_rows[(row * heads + head) * d..][..d];
            let (kh, vh) = (k_heads.head(row, head / group), v_heads.head(row, head / group));
            for (j, p) in probs.iter_mut().enumerate() {
                *p = dot(query, kh.key(j, d)) * scale + row_mask.map_or(0.0, |m| m[j]);
            }
            let max = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for p in probs.iter_mut() {
                *p = (*p - max).exp();
                total += *p;
            }
            for (j, p) in probs.iter().enumerate() {
                // A masked key weighs exactly 0 and would add nothing.
                if *p == 0.0 {
                    continue;
                }
                let weight = p / total;
                for (c, x) in context.iter_mut().zip(vh.key(j, d)) {
                    *c += weight * x;
                }
            }
        }
    });
    Ok(Some(Tensor::from_vec(out, (b, heads, 1, d), q.device())?))
}

/// Strided access to the `(keys, d)` rows of one (batch row, kv head) of a cache tensor.
struct HeadRows<'a> {
    data: &'a [f32],
    start: usize,
    stride: [usize; 3],
}

impl<'a> HeadRows<'a> {
    fn new(data: &'a [f32], layout: &Layout) -> Self {
        let s = layout.stride();
        HeadRows { data, start: layout.start_offset(), stride: [s[0], s[1], s[2]] }
    }

    fn head(&self, row: usize, head: usize) -> HeadRows<'a> {
        let start = self.start + row * self.stride[0] + head * self.stride[1];
        HeadRows { data: self.data, start, stride: self.stride }
    }

    fn key(&self, j: usize, d: usize) -> &'a [f32] {
        let at = self.start + j * self.stride[2];
        &self.data[at..at + d]
    }
}

/// A dot product in eight independent lanes, which the compiler turns into vector code.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let split = a.len() / 8 * 8;
    let mut lanes = [0f32; 8];
    for (x, y) in a[..split].chunks_exact(8).zip(b[..split].chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a[split..].iter().zip(&b[split..]).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::super::{attention, MASKED};
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    fn ramp(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let values: Vec<f32> =
            (0..n).map(|i| ((i as u64 * 7919 + seed * 104729) % 1000) as f32 / 250.0 - 2.0).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// A decode step as the decoder runs it: 4 query heads over 2 kv heads, keys read from a
    /// cache buffer with spare capacity, two padding keys masked out in one row.
    #[test]
    fn decode_attention_matches_the_composed_path() {
        let (b, heads, kv_heads, keys, d) = (3, 4, 2, 7, 16);
        let q = ramp(&[b, heads, 1, d], 1);
        let k = ramp(&[b, kv_heads, keys + 5, d], 2).narrow(2, 0, keys).unwrap();
        let v = ramp(&[b, kv_heads, keys + 5, d], 3).narrow(2, 0, keys).unwrap();
        let mut mask = vec![0f32; b * keys];
        mask[keys] = MASKED;
        mask[keys + 1] = MASKED;
        let mask = Tensor::from_vec(mask, (b, 1, 1, keys), &Device::Cpu).unwrap();
        let heads_of = Tensor::new(&[0u32, 0, 1, 1], &Device::Cpu).unwrap();
        let repeat = |t: &Tensor| t.contiguous().unwrap().index_select(&heads_of, 1).unwrap();
        for mask in [None, Some(&mask)] {
            let fast = decode_attention(&q, &k, &v, mask).unwrap().expect("the decode path applies");
            let composed = attention(&q, &repeat(&k), &repeat(&v), mask).unwrap();
            assert!(max_diff(&fast, &composed) < 1e-5);
        }
    }

    #[test]
    fn decode_attention_leaves_gradients_and_prefill_to_the_composed_path() {
        let (q, k, v) = (ramp(&[1, 2, 1, 8], 1), ramp(&[1, 2, 3, 8], 2), ramp(&[1, 2, 3, 8], 3));
        let tracked = candle_core::Var::from_tensor(&q).unwrap();
        assert!(decode_attention(tracked.as_tensor(), &k, &v, None).unwrap().is_none());
        let two_queries = ramp(&[1, 2, 2, 8], 4);
        assert!(decode_attention(&two_queries, &k, &v, None).unwrap().is_none());
        assert!(decode_attention(&q, &k, &v, None).unwrap().is_some());
    }
}
