//! The classification head shared by the linear probe and the vision baselines: how MedMNIST
//! labels become training targets, the training loss, and how logits become the score columns
//! that `data::medmnist_eval` expects.
//!
//! Multi-class, ordinal and binary tasks use a softmax over one column per class (binary tasks
//! have two columns, as MedMNIST's own baselines do, and the evaluator reads the positive one);
//! multi-label tasks use one independent sigmoid per finding. The losses are written with
//! differentiable compositions because candle's fused softmax has no backward pass.

use candle_core::{DType, Device, Tensor};

use crate::data::medmnist_info::TaskType;
use crate::error::Result;

/// Training targets in the form the loss needs.
pub(crate) enum Targets {
    /// Class ids, `u32` of shape `[N]`.
    Classes(Tensor),
    /// Multi-hot findings, `f32` of shape `[N, L]`.
    MultiHot(Tensor),
}

/// Check raw label rows against the head's width and turn them into targets.
pub(crate) fn targets(task: TaskType, labels: &[Vec<i64>], width: usize, device: &Device) -> Result<Targets> {
    if task == TaskType::MultiLabel {
        let mut flat = Vec::with_capacity(labels.len() * width);
        for (row, l) in labels.iter().enumerate() {
            if l.len() != width || l.iter().any(|&v| v != 0 && v != 1) {
                crate::bail!(
                    "label row {row} is {l:?}: a multi-label task needs {width} values, each 0 or 1"
                );
            }
            flat.extend(l.iter().map(|&v| v as f32));
        }
        return Ok(Targets::MultiHot(Tensor::from_vec(flat, (labels.len(), width), device)?));
    }
    let mut ids = Vec::with_capacity(labels.len());
    for (row, l) in labels.iter().enumerate() {
        match l.as_slice() {
            [v] if (0..width as i64).contains(v) => ids.push(*v as u32),
            _ => crate::bail!("label row {row} is {l:?}: a {task} task needs one class id in 0..{width}"),
        }
    }
    Ok(Targets::Classes(Tensor::from_vec(ids, labels.len(), device)?))
}

/// Mean loss of `logits` `[N, width]`: cross-entropy for softmax heads, binary cross-entropy per
/// finding for multi-label heads.
pub(crate) fn loss(logits: &Tensor, targets: &Targets) -> Result<Tensor> {
    Ok(match targets {
        Targets::Classes(ids) => candle_nn::loss::cross_entropy(logits, ids)?,
        Targets::MultiHot(y) => {
            // max(x, 0) - x*y + log(1 + exp(-|x|)): the overflow-free form of BCE with logits.
            let softplus = ((logits.abs()?.neg()?.exp()? + 1.0)?).log()?;
            (logits.relu()? - (logits * y)?)?.add(&softplus)?.mean_all()?
        }
    })
}

/// The score columns MedMNIST's evaluator reads: softmax probabilities, or per-finding sigmoids.
pub(crate) fn scores(task: TaskType, logits: &Tensor) -> Result<Vec<Vec<f64>>> {
    let logits = logits.to_dtype(DType::F64)?;
    let probs = if task == TaskType::MultiLabel {
        ((logits.neg()?.exp()? + 1.0)?).recip()?
    } else {
        candle_nn::ops::softmax(&logits, candle_core::D::Minus1)?
    };
    Ok(probs.to_vec2::<f64>()?)
}
