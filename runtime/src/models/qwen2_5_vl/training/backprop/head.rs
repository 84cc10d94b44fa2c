//! The final norm, the LM head and the log-softmax of the chosen token, at the scored rows only,
//! forward and backward. Most of a VLM's sequence is prompt and image, so neither the norm nor
//! the `(rows, vocab)` logits are computed anywhere else.

use candle_core::Tensor;

use super::kernels::{tensor, view};
use super::linear::{self, Grads};
use crate::error::Result;
use crate::models::qwen2_5_vl::lora::Linear;
use crate::models::qwen2_5_vl::ops::fused::{rms_norm_grads, rms_norm_plain};
use crate::models::qwen2_5_vl::text::TextModel;

/// Log-probabilities of the targets, the entropy at each scored row and how many targets are
/// the argmax.
pub(super) struct Scored {
    pub logprobs: Vec<f32>,
    pub entropy: Vec<f32>,
    pub hits: usize,
}

pub(super) struct Saved {
    rows: Tensor,
    head: linear::Saved,
    probs: Vec<f32>,
    vocab: usize,
    positions: Vec<u32>,
    targets: Vec<u32>,
    temperature: f32,
}

/// The head as a linear layer (the embedding matrix when tied).
fn head(text: &TextModel) -> Linear {
    text.lm_head.clone().unwrap_or_else(|| Linear {
        weight: text.embed_tokens.clone(),
        bias: None,
        lora: None,
    })
}

/// Score `targets[i]` at row `positions[i]` of the last layer's output `hidden` `(rows, h)`.
pub(super) fn forward(
    text: &TextModel,
    hidden: &Tensor,
    positions: Vec<u32>,
    targets: Vec<u32>,
    temperature: f64,
) -> Result<(Scored, Saved)> {
    let index = Tensor::from_vec(positions.clone(), positions.len(), hidden.device())?;
    let rows = hidden.index_select(&index, 0)?;
    let normed = rms_norm_plain(&rows, &text.norm.weight, text.norm.eps)?;
    let (logits, head_saved) = linear::forward(&head(text), &normed)?;
    let vocab = logits.dim(1)?;
    let inv_t = (1.0 / temperature) as f32;
    let mut probs = view(&logits)?.to_vec();
    let mut scored = Scored { logprobs: Vec::with_capacity(targets.len()), entropy: Vec::new(), hits: 0 };
    for (row, &target) in probs.chunks_exact_mut(vocab).zip(&targets) {
        if temperature != 1.0 {
            row.iter_mut().for_each(|z| *z *= inv_t);
        }
        let (argmax, max) =
            row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |best, (j, &z)| {
                    if z > best.1 {
                        (j, z)
                    } else {
                        best
                    }
                },
            );
        let log_total = row.iter().map(|z| (z - max).exp()).sum::<f32>().ln();
        let mut entropy = 0f32;
        scored.logprobs.push((row[target as usize] - max) - log_total);
        for z in row.iter_mut() {
            let logp = (*z - max) - log_total;
            *z = logp.exp();
            entropy -= *z * logp;
        }
        scored.entropy.push(entropy);
        scored.hits += usize::from(argmax == target as usize);
    }
    let saved = Saved { rows, head: head_saved, probs, vocab, positions, targets, temperature: inv_t };
    Ok((scored, saved))
}

/// The gradient of the last layer's output `(rows, h)` for log-prob gradients `dlogp`.
pub(super) fn backward(
    text: &TextModel,
    s: &Saved,
    dlogp: &[f32],
    rows: usize,
    grads: &mut Grads,
) -> Result<Tensor> {
    let mut dlogits = s.probs.clone();
    for ((row, &target), &g) in dlogits.chunks_exact_mut(s.vocab).zip(&s.targets).zip(dlogp) {
        row.iter_mut().for_each(|p| *p *= -g * s.temperature);
        row[target as usize] += g * s.temperature;
    }
    let dlogits = tensor(dlogits, &[s.targets.len(), s.vocab])?;
    let d_normed = linear::backward(&head(text), &s.head, &dlogits, grads, true)?
        .ok_or_else(|| crate::error::Error::msg("the LM head gave no input gradient"))?;
    let norm = &text.norm;
    let (d_rows, dw) = rms_norm_grads(&s.rows, &norm.weight, &d_normed, norm.eps, grads.wants(&norm.weight))?;
    if let Some(dw) = dw {
        grads.add(&norm.weight, dw)?;
    }
    let width = d_rows.dim(1)?;
    let mut dx = vec![0f32; rows * width];
    for (&p, row) in s.positions.iter().zip(view(&d_rows)?.chunks_exact(width)) {
        dx[p as usize * width..][..width].copy_from_slice(row);
    }
    tensor(dx, &[rows, width])
}
