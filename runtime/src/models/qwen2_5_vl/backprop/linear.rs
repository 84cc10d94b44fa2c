//! `y = x Wᵀ + b + s · (x ∘ dropout) Aᵀ Bᵀ` forward and backward, for LoRA adapters and full
//! fine-tuning alike: gradients are computed only for the tensors [`Grads`] asks for, so a frozen
//! base weight costs its input gradient (one matmul) and nothing more.

use std::collections::{HashMap, HashSet};

use candle_core::{Tensor, TensorId};

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
    /// The input after dropout, `A`'s input.
    dropped: Tensor,
    mask: Option<Tensor>,
    /// `dropped · Aᵀ`, `B`'s input.
    down: Tensor,
}

/// `layer` on rows `x` `(rows, in)`.
pub(super) fn forward(layer: &Linear, x: &Tensor) -> Result<(Tensor, Saved)> {
    let mut y = x.matmul(&layer.weight.t()?)?;
    if let Some(b) = &layer.bias {
        y = y.broadcast_add(b)?;
    }
    let mut lora = None;
    if let Some(adapter) = layer.adapter().filter(|a| a.enabled()) {
        let mask = adapter.dropout_mask(x)?;
        let dropped = match &mask {
            Some(m) => (x * m)?,
            None => x.clone(),
        };
        let down = dropped.matmul(&adapter.a.as_tensor().t()?)?;
        y = (y + (down.matmul(&adapter.b.as_tensor().t()?)? * adapter.scale)?)?;
        lora = Some(LoraSaved { dropped, mask, down });
    }
    Ok((y, Saved { input: x.clone(), lora }))
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
    if grads.wants(&layer.weight) {
        grads.add(&layer.weight, dy.t()?.matmul(&saved.input)?)?;
    }
    if let Some(b) = layer.bias.as_ref().filter(|b| grads.wants(b)) {
        grads.add(b, dy.sum(0)?)?;
    }
    let mut dx = if need_input { Some(dy.matmul(&layer.weight)?) } else { None };
    if let (Some(adapter), Some(lora)) = (layer.adapter(), &saved.lora) {
        let (a, b) = (adapter.a.as_tensor(), adapter.b.as_tensor());
        if grads.wants(b) {
            grads.add(b, (dy.t()?.matmul(&lora.down)? * adapter.scale)?)?;
        }
        let d_down = (dy.matmul(b)? * adapter.scale)?;
        if grads.wants(a) {
            grads.add(a, d_down.t()?.matmul(&lora.dropped)?)?;
        }
        if let Some(dx) = &mut dx {
            let through = d_down.matmul(a)?;
            let through = match &lora.mask {
                Some(m) => (through * m)?,
                None => through,
            };
            *dx = (&*dx + through)?;
        }
    }
    Ok(dx)
}
