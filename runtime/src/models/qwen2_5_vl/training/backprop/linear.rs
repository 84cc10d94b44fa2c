//! `y = x Wᵀ + b + s · (x ∘ dropout) Aᵀ Bᵀ` forward and backward, for LoRA adapters and full
//! fine-tuning alike: gradients are computed only for the tensors [`Grads`] asks for, so a frozen
//! base weight costs its input gradient (one matmul) and nothing more.

use std::collections::{HashMap, HashSet};

use candle_core::{Tensor, TensorId};

use super::gemm::{matmul, Strided};
use super::kernels::{tensor, view};
use crate::error::Result;
use crate::models::qwen2_5_vl::lora::Linear;

/// Gradients of the trainable tensors, summed where a tensor is used twice (tied embeddings).
#[derive(Debug)]
pub(crate) struct Grads {
    wanted: HashSet<TensorId>,
    sums: HashMap<TensorId, Tensor>,
}

impl Grads {
    pub(crate) fn new(wanted: HashSet<TensorId>) -> Self {
        Self { wanted, sums: HashMap::new() }
    }

    pub(super) fn wants(&self, t: &Tensor) -> bool {
        self.wanted.contains(&t.id())
    }

    pub(super) fn add(&mut self, t: &Tensor, grad: Tensor) -> Result<()> {
        let sum = match self.sums.remove(&t.id()) {
            Some(sum) => (sum + grad)?,
            None => grad,
        };
        self.sums.insert(t.id(), sum);
        Ok(())
    }

    pub(crate) fn into_inner(self) -> HashMap<TensorId, Tensor> {
        self.sums
    }
}

/// What [`forward`] keeps for [`backward`].
pub(super) struct Saved {
    input: Tensor,
    lora: Option<LoraSaved>,
}

struct LoraSaved {
    /// The input after dropout, `A`'s input, and the dropout multiplier.
    dropped: Tensor,
    mask: Option<Tensor>,
    /// `dropped · Aᵀ`, `B`'s input.
    down: Vec<f32>,
}

/// The threads a product of the training pass may use: the pool's.
fn threads() -> usize {
    rayon::current_num_threads()
}

/// How [`product`] reads its right operand `b`.
#[derive(Clone, Copy)]
enum Rhs {
    /// Row-major `(k, n)`.
    AsIs,
    /// Row-major `(n, k)`, used as its transpose (a weight `[out, in]` applied to rows).
    Transposed,
}

/// `a · b` (or `+=` into `dst` when `accumulate`) for row-major `a` `(m, k)`, scaled by `beta`.
fn product(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    rhs: Rhs,
    beta: f32,
    accumulate: bool,
) {
    let b_view = match rhs {
        Rhs::AsIs => Strided::dense(k, n),
        Rhs::Transposed => Strided::dense(n, k).t(),
    };
    matmul(dst, Strided::dense(m, n), a, Strided::dense(m, k), b, b_view, beta, accumulate, threads());
}

/// `aᵀ · b` for row-major `a` `(k, m)` and `b` `(k, n)`, scaled by `beta`: a weight gradient.
fn t_times(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize), beta: f32) -> Vec<f32> {
    let mut dst = vec![0f32; m * n];
    let at = Strided::dense(k, m).t();
    matmul(&mut dst, Strided::dense(m, n), a, at, b, Strided::dense(k, n), beta, false, threads());
    dst
}

/// `layer` on rows `x` `(rows, in)`.
pub(super) fn forward(layer: &Linear, x: &Tensor) -> Result<(Tensor, Saved)> {
    let (rows, in_dim) = x.dims2()?;
    let out = layer.out_dim();
    let mut y = vec![0f32; rows * out];
    product(&mut y, &view(x)?, &view(&layer.weight)?, (rows, in_dim, out), Rhs::Transposed, 1.0, false);
    if let Some(b) = &layer.bias {
        let b = view(b)?;
        y.chunks_exact_mut(out).for_each(|row| row.iter_mut().zip(b.iter()).for_each(|(y, b)| *y += b));
    }
    let mut lora = None;
    if let Some(adapter) = layer.adapter().filter(|a| a.enabled()) {
        let (a, b) = (adapter.a.as_tensor(), adapter.b.as_tensor());
        let rank = a.dim(0)?;
        let mask = adapter.dropout_mask(x)?;
        let dropped = match &mask {
            Some(m) => (x * m)?,
            None => x.clone(),
        };
        let mut down = vec![0f32; rows * rank];
        product(&mut down, &view(&dropped)?, &view(a)?, (rows, in_dim, rank), Rhs::Transposed, 1.0, false);
        product(&mut y, &down, &view(b)?, (rows, rank, out), Rhs::Transposed, adapter.scale as f32, true);
        lora = Some(LoraSaved { dropped, mask, down });
    }
    Ok((tensor(y, &[rows, out])?, Saved { input: x.clone(), lora }))
}

/// Record the parameter gradients of `layer` for output gradient `dy` `(rows, out)` and return
/// the input's gradient when `need_input`.
pub(super) fn backward(
    layer: &Linear,
    saved: &Saved,
    dy: &Tensor,
    grads: &mut Grads,
    need_input: bool,
) -> Result<Option<Tensor>> {
    let dy = dy.contiguous()?;
    let (rows, out) = dy.dims2()?;
    let in_dim = layer.in_dim();
    let g = view(&dy)?;
    if grads.wants(&layer.weight) {
        let dw = t_times(&g, &view(&saved.input)?, (out, rows, in_dim), 1.0);
        grads.add(&layer.weight, tensor(dw, &[out, in_dim])?)?;
    }
    if let Some(b) = layer.bias.as_ref().filter(|b| grads.wants(b)) {
        let mut db = vec![0f32; out];
        g.chunks_exact(out).for_each(|row| db.iter_mut().zip(row).for_each(|(d, g)| *d += g));
        grads.add(b, tensor(db, &[out])?)?;
    }
    let mut dx = if need_input {
        let mut dx = vec![0f32; rows * in_dim];
        product(&mut dx, &g, &view(&layer.weight)?, (rows, out, in_dim), Rhs::AsIs, 1.0, false);
        Some(dx)
    } else {
        None
    };
    if let (Some(adapter), Some(lora)) = (layer.adapter(), &saved.lora) {
        let (a, b) = (adapter.a.as_tensor(), adapter.b.as_tensor());
        let rank = a.dim(0)?;
        let scale = adapter.scale as f32;
        if grads.wants(b) {
            grads.add(b, tensor(t_times(&g, &lora.down, (out, rows, rank), scale), &[out, rank])?)?;
        }
        let mut d_down = vec![0f32; rows * rank];
        product(&mut d_down, &g, &view(b)?, (rows, out, rank), Rhs::AsIs, scale, false);
        if grads.wants(a) {
            let da = t_times(&d_down, &view(&lora.dropped)?, (rank, rows, in_dim), 1.0);
            grads.add(a, tensor(da, &[rank, in_dim])?)?;
        }
        if let Some(dx) = &mut dx {
            match &lora.mask {
                None => product(dx, &d_down, &view(a)?, (rows, rank, in_dim), Rhs::AsIs, 1.0, true),
                Some(mask) => {
                    let mut through = vec![0f32; rows * in_dim];
                    product(&mut through, &d_down, &view(a)?, (rows, rank, in_dim), Rhs::AsIs, 1.0, false);
                    for ((dx, t), m) in dx.iter_mut().zip(&through).zip(view(mask)?.iter()) {
                        *dx += t * m;
                    }
                }
            }
        }
    }
    dx.map(|dx| tensor(dx, &[rows, in_dim])).transpose()
}
