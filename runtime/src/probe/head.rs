//! The classification head shared by the linear probe and the vision baselines: how MedMNIST
//! labels become training targets, the training loss, and how logits become the score columns
//! that `data::medmnist_eval` expects.
//!
//! Multi-class, ordinal and binary tasks use a softmax over one column per class (binary tasks
//! have two columns, as MedMNIST's own baselines do, and the evaluator reads the positive one);
//! multi-label tasks use one independent sigmoid per finding. The losses are written with
//! differentiable compositions because candle's fused softmax has no backward pass.
//!
//! The input checks and the top-5 count live here too, so every probe method refuses the same bad
//! inputs with the same words and counts top-5 the same way.

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

impl Targets {
    /// The targets of rows `index` (`u32` of shape `[B]`), for a mini-batch.
    pub(crate) fn rows(&self, index: &Tensor) -> Result<Targets> {
        Ok(match self {
            Targets::Classes(ids) => Targets::Classes(ids.index_select(index, 0)?),
            Targets::MultiHot(y) => Targets::MultiHot(y.index_select(index, 0)?),
        })
    }
}

/// Check train and test features against their label rows and each other; returns the feature
/// width. `probe` names the caller in the messages.
pub(crate) fn check_features(
    probe: &str,
    train: &Tensor,
    train_labels: &[Vec<i64>],
    test: &Tensor,
    test_labels: &[Vec<i64>],
    n_classes: usize,
) -> Result<usize> {
    let shape = |which: &str, x: &Tensor, n_labels: usize| -> Result<usize> {
        match x.dims() {
            [n, d] if *n == n_labels && *n > 0 && *d > 0 => Ok(*d),
            dims => crate::bail!(
                "{probe}: {which} features have shape {dims:?}, expected [{n_labels}, D] (one row per label row)"
            ),
        }
    };
    let dim = shape("train", train, train_labels.len())?;
    if shape("test", test, test_labels.len())? != dim {
        crate::bail!("{probe}: train features have {dim} columns but test features {}", test.dim(1)?);
    }
    if n_classes < 1 {
        crate::bail!("{probe}: the task needs at least one class");
    }
    Ok(dim)
}

/// Fraction of rows whose label is among the 5 highest scores (lowest class first on ties), as
/// `linprobe.py`'s `accuracy(topk=(1, 5))` counts it; `None` where `ProbeReport::top5` says.
pub(crate) fn top5_accuracy(task: TaskType, labels: &[Vec<i64>], scores: &[Vec<f64>]) -> Option<f64> {
    let width = scores.first()?.len();
    if !has_top5(task, width) {
        return None;
    }
    let hits = labels.iter().zip(scores).filter(|(l, s)| {
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
        order[..5].contains(&(l[0] as usize))
    });
    Some(hits.count() as f64 / labels.len() as f64)
}

/// Whether top-5 accuracy says anything: single-label and more than 5 classes.
pub(crate) fn has_top5(task: TaskType, n_classes: usize) -> bool {
    matches!(task, TaskType::MultiClass | TaskType::OrdinalRegression) && n_classes > 5
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
