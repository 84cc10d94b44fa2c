//! The CPU kernels of the hand-derived training pass: attention that reads grouped key/value
//! heads in place and recomputes its probabilities backward from the saved log-sum-exp (as
//! FlashAttention does, so no `heads × seq × seq` tensor is kept), and the SwiGLU activation.
//! Everything is row-major f32 in the `(batch · seq, heads · head_dim)` layout the projections
//! produce, so no transpose or `repeat_kv` copy is ever made. Also here: borrowing a tensor's
//! values ([`view`]) and an `exp` the compiler can vectorise.

use std::ops::{Deref, Range};

use candle_core::{CpuStorage, Device, Storage, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul, Strided};
use crate::error::Result;
use crate::models::qwen2_5_vl::ops::fused::lane_sum;
use crate::models::qwen2_5_vl::ops::MASKED;

/// The values of a contiguous f32 CPU tensor, borrowed for as long as the view lives.
pub(super) struct View<'a> {
    storage: Box<dyn Deref<Target = Storage> + 'a>,
    range: Range<usize>,
}

/// Borrow `t`'s values; `t` must be a contiguous f32 CPU tensor.
pub(super) fn view(t: &Tensor) -> Result<View<'_>> {
    let (storage, layout) = t.storage_and_layout();
    let range = match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(_)), Some((start, end))) => start..end,
        _ => crate::bail!(
            "training kernels need a contiguous f32 CPU tensor, got {:?} {:?}",
            t.dtype(),
            t.shape()
        ),
    };
    Ok(View { storage: Box::new(storage), range })
}

impl Deref for View<'_> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &**self.storage {
            Storage::Cpu(CpuStorage::F32(data)) => &data[self.range.clone()],
            _ => unreachable!("view() only accepts f32 CPU storage"),
        }
    }
}

/// An f32 CPU tensor from `values`.
pub(super) fn tensor(values: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Sizes of one attention call. Queries are `(batch, seq, heads, head_dim)`, keys and values
/// `(batch, seq, kv_heads, head_dim)`, the additive mask `(batch, seq, seq)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttnShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    fn q_row(&self) -> usize {
        self.heads * self.head_dim
    }

    fn kv_row(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    fn scale(&self) -> f32 {
        (1.0 / (self.head_dim as f64).sqrt()) as f32
    }

    /// Rows `rows` of head `h` of one sequence's queries (or outputs), `(rows, head_dim)`.
    fn q_head(&self, h: usize, rows: &Range<usize>) -> Strided {
        let offset = rows.start * self.q_row() + h * self.head_dim;
        Strided { offset, rows: rows.len(), cols: self.head_dim, rs: self.q_row(), cs: 1 }
    }

    /// The first `keys` rows of key/value head `h` of one sequence, `(keys, head_dim)`.
    fn kv_head(&self, h: usize, keys: usize) -> Strided {
        Strided { offset: h * self.head_dim, rows: keys, cols: self.head_dim, rs: self.kv_row(), cs: 1 }
    }
}

/// Query rows are processed in blocks this tall, each against the keys up to the last one any
/// of its rows can see: under a causal mask that skips most of the masked half of the scores.
const BLOCK: usize = 32;

/// The additive attention mask `(batch, seq, seq)` of a batch, with each sequence's query blocks
/// and how many leading keys each block reads. Built once per batch: every layer's forward and
/// backward reads the same blocks.
pub(super) struct AttnMask {
    values: Option<Vec<f32>>,
    blocks: Vec<Vec<(Range<usize>, usize)>>,
}

impl AttnMask {
    /// The mask of `batch` sequences of `seq` tokens; `None` lets every query see every key.
    pub fn new(values: Option<Vec<f32>>, batch: usize, seq: usize) -> Self {
        let visible = |b: usize, i: usize| match &values {
            Some(m) => m[(b * seq + i) * seq..][..seq].iter().rposition(|&v| v > MASKED).map_or(0, |j| j + 1),
            None => seq,
        };
        let blocks = (0..batch)
            .map(|b| {
                (0..seq)
                    .step_by(BLOCK)
                    .map(|start| {
                        let rows = start..(start + BLOCK).min(seq);
                        let keys = rows.clone().map(|i| visible(b, i)).max().unwrap_or(0);
                        (rows, keys)
                    })
                    .collect()
            })
            .collect();
        Self { values, blocks }
    }

    /// Sequence `b`'s `(seq, seq)` mask values.
    fn sequence(&self, b: usize, seq: usize) -> Option<&[f32]> {
        self.values.as_deref().map(|m| part(m, b, seq * seq))
    }
}

/// `e^x` to a relative error below 4e-6, in plain arithmetic the compiler vectorises (libm's
/// `expf` is a call per value): `2^n · 2^f` with `n` the nearest integer to `x·log2(e)` and a
/// degree-6 polynomial for `2^f` on `[-1/2, 1/2]`. Adding `1.5·2^23 + 127` rounds `x·log2(e)`
/// and leaves `n + 127` in the low mantissa bits, which shift straight into the exponent of
/// `2^n` (a float-to-integer cast saturates, which does not vectorise; `mul_add` is a library
/// call where the target has no FMA). The error comes from rounding `x·log2(e)` and grows with
/// `|x|`: about 1e-6 over the `[-20, 0]` a softmax mostly sees. Below -87 it returns 0.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const SHIFT: f32 = 12_583_039.0; // 1.5 · 2^23 + 127
    let t = x.clamp(-87.0, 88.0) * std::f32::consts::LOG2_E;
    let r = t + SHIFT;
    let f = t - (r - SHIFT);
    let p = 1.535_336_2e-4f32;
    let p = p * f + 1.339_887_4e-3;
    let p = p * f + 9.618_437e-3;
    let p = p * f + 5.550_332_5e-2;
    let p = p * f + 2.402_264_9e-1;
    let p = p * f + 6.931_472e-1;
    let p = p * f + 1.0;
    let scaled = p * f32::from_bits(r.to_bits() << 23);
    if x < -87.0 {
        0.0
    } else {
        scaled
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// Turn a row of scores `q kᵀ · scale` into probabilities in place, given the additive mask
/// row (masked keys hold [`MASKED`], so their probability underflows to exactly zero). Returns
/// the row's log-sum-exp, or -inf when no key is visible (the row is then all zeros).
fn softmax_row(row: &mut [f32], mask: Option<&[f32]>) -> f32 {
    if let Some(m) = mask {
        row.iter_mut().zip(m).for_each(|(s, m)| *s += m);
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max <= MASKED / 2.0 {
        row.fill(0.0);
        return f32::NEG_INFINITY;
    }
    row.iter_mut().for_each(|s| *s = exp(*s - max));
    let total = lane_sum(row, |p| p);
    let inv = 1.0 / total;
    row.iter_mut().for_each(|p| *p *= inv);
    max + total.ln()
}

/// The probabilities of a block of query rows (`keys` wide) from their scores, recomputed from
/// the saved log-sum-exp (every `heads`-th value of `lse`); rows without a visible key are zero.
fn probabilities(
    scores: &mut [f32],
    keys: usize,
    mask: Option<&[f32]>,
    seq: usize,
    lse: &[f32],
    heads: usize,
) {
    for (i, row) in scores.chunks_exact_mut(keys).enumerate() {
        let l = lse[i * heads];
        match mask {
            _ if l == f32::NEG_INFINITY => row.fill(0.0),
            Some(m) => {
                row.iter_mut().zip(&m[i * seq..i * seq + keys]).for_each(|(p, m)| *p = exp(*p + m - l))
            }
            None => row.iter_mut().for_each(|p| *p = exp(*p - l)),
        }
    }
}

/// One sequence's slice of a `(batch, ...)` buffer with `per` values per sequence.
fn part(x: &[f32], b: usize, per: usize) -> &[f32] {
    &x[b * per..(b + 1) * per]
}

/// `softmax(q kᵀ / sqrt(d) + mask) v` per head, and each query's log-sum-exp `(batch, seq, heads)`.
/// A query with no visible key gets a zero output and a log-sum-exp of -inf.
pub(super) fn attention_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &AttnMask,
    sh: AttnShape,
) -> (Vec<f32>, Vec<f32>) {
    let (s, group) = (sh.seq, sh.heads / sh.kv_heads);
    let mut out = vec![0f32; sh.batch * s * sh.q_row()];
    let mut lse = vec![0f32; sh.batch * s * sh.heads];
    out.par_chunks_mut(s * sh.q_row()).zip(lse.par_chunks_mut(s * sh.heads)).enumerate().for_each(
        |(b, (out, lse))| {
            let (q, k, v) =
                (part(q, b, s * sh.q_row()), part(k, b, s * sh.kv_row()), part(v, b, s * sh.kv_row()));
            let (blocks, mask) = (&mask.blocks[b], mask.sequence(b, s));
            let mut p = vec![0f32; BLOCK * s];
            for (rows, keys) in blocks.iter().cloned() {
                if keys == 0 {
                    rows.for_each(|i| lse[i * sh.heads..(i + 1) * sh.heads].fill(f32::NEG_INFINITY));
                    continue;
                }
                let p = &mut p[..rows.len() * keys];
                for h in 0..sh.heads {
                    let (qh, kv) = (sh.q_head(h, &rows), sh.kv_head(h / group, keys));
                    matmul(p, Strided::dense(rows.len(), keys), q, qh, k, kv.t(), sh.scale(), false, 1);
                    for (i, row) in rows.clone().zip(p.chunks_exact_mut(keys)) {
                        lse[i * sh.heads + h] = softmax_row(row, mask.map(|m| &m[i * s..i * s + keys]));
                    }
                    matmul(out, qh, p, Strided::dense(rows.len(), keys), v, kv, 1.0, false, 1);
                }
            }
        },
    );
    (out, lse)
}

/// Gradients of [`attention_forward`] with respect to `q`, `k` and `v`, given its output, its
/// log-sum-exp and the output's gradient `dout`. The probabilities are recomputed.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    mask: &AttnMask,
    sh: AttnShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (s, d, group, scale) = (sh.seq, sh.head_dim, sh.heads / sh.kv_heads, sh.scale());
    let mut dq = vec![0f32; q.len()];
    let mut dk = vec![0f32; k.len()];
    let mut dv = vec![0f32; v.len()];
    dq.par_chunks_mut(s * sh.q_row())
        .zip(dk.par_chunks_mut(s * sh.kv_row()))
        .zip(dv.par_chunks_mut(s * sh.kv_row()))
        .enumerate()
        .for_each(|(b, ((dq, dk), dv))| {
            let (q, k, v) =
                (part(q, b, s * sh.q_row()), part(k, b, s * sh.kv_row()), part(v, b, s * sh.kv_row()));
            let (out, dout) = (part(out, b, s * sh.q_row()), part(dout, b, s * sh.q_row()));
            let (blocks, lse, mask) = (&mask.blocks[b], part(lse, b, s * sh.heads), mask.sequence(b, s));
            let (mut p, mut ds) = (vec![0f32; BLOCK * s], vec![0f32; BLOCK * s]);
            for (rows, keys) in blocks.iter().cloned() {
                let (p, ds) = (&mut p[..rows.len() * keys], &mut ds[..rows.len() * keys]);
                let block = Strided::dense(rows.len(), keys);
                let block_mask = mask.map(|m| &m[rows.start * s..]);
                for h in 0..sh.heads {
                    let (qh, kv) = (sh.q_head(h, &rows), sh.kv_head(h / group, keys));
                    matmul(p, block, q, qh, k, kv.t(), scale, false, 1);
                    probabilities(p, keys, block_mask, s, &lse[rows.start * sh.heads + h..], sh.heads);
                    matmul(ds, block, dout, qh, v, kv.t(), 1.0, false, 1);
                    for (i, (ds, p)) in
                        rows.clone().zip(ds.chunks_exact_mut(keys.max(1)).zip(p.chunks_exact(keys.max(1))))
                    {
                        let at = i * sh.q_row() + h * d;
                        let delta = dot(&dout[at..at + d], &out[at..at + d]);
                        ds.iter_mut().zip(p).for_each(|(ds, p)| *ds = p * (*ds - delta) * scale);
                    }
                    matmul(dq, qh, ds, block, k, kv, 1.0, false, 1);
                    matmul(dk, kv, ds, block.t(), q, qh, 1.0, true, 1);
                    matmul(dv, kv, p, block.t(), dout, qh, 1.0, true, 1);
                }
            }
        });
    (dq, dk, dv)
}

/// `silu(gate) · up`, elementwise.
pub(super) fn swiglu_forward(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect()
}

/// Gradients of [`swiglu_forward`] with respect to `gate` and `up` given the output's `grad`.
pub(super) fn swiglu_backward(gate: &[f32], up: &[f32], grad: &[f32]) -> (Vec<f32>, Vec<f32>) {
    gate.iter()
        .zip(up)
        .zip(grad)
        .map(|((&g, &u), &dy)| {
            let sig = 1.0 / (1.0 + (-g).exp());
            (dy * u * sig * (1.0 + g * (1.0 - sig)), dy * g * sig)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_its_stated_error_over_its_range() {
        let mut worst = 0f64;
        for i in 0..=175_000 {
            let x = (-87.0 + i as f64 * 0.001) as f32;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 4e-6, "relative error {worst}");
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    /// One sequence of three queries over one head; the first query sees no key (a left pad).
    #[test]
    fn a_query_with_no_visible_key_gets_zeros_and_no_gradient() {
        let sh = AttnShape { batch: 1, seq: 3, heads: 1, kv_heads: 1, head_dim: 2 };
        let q = [0.5, -1.0, 0.25, 0.75, -0.5, 1.5];
        let (k, v) = ([1.0, 0.0, 0.5, -0.5, -1.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let mut mask = vec![MASKED; 9];
        for (i, j) in [(1, 1), (2, 1), (2, 2)] {
            mask[i * 3 + j] = 0.0;
        }
        let mask = AttnMask::new(Some(mask), 1, 3);
        let (out, lse) = attention_forward(&q, &k, &v, &mask, sh);
        assert_eq!((&out[..2], lse[0]), (&[0.0, 0.0][..], f32::NEG_INFINITY));
        assert_eq!(&out[2..4], &[3.0, 4.0], "the second query sees one key: its value");
        let (dq, dk, dv) = attention_backward(&q, &k, &v, &out, &lse, &[1.0; 6], &mask, sh);
        assert!(dq.iter().chain(&dk).chain(&dv).all(|g| g.is_finite()));
        assert_eq!((&dq[..2], &dk[..2], &dv[..2]), (&[0.0, 0.0][..], &[0.0, 0.0][..], &[0.0, 0.0][..]));
    }
}
