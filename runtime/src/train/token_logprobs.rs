//! Per-token log-probabilities of chosen tokens under the model, from one forward pass over a
//! right-padded batch: the shared core of SFT's completion-only loss and GRPO's policy ratio.
//!
//! Only the scored positions (a completion's tokens) go through the LM head and the
//! log-softmax, so their cost grows with the completion, not the prompt. Training steps score
//! through [`score_tokens_for_training`], which takes the model's hand-derived training pass
//! where it applies and the per-layer checkpointed autograd pass elsewhere (bf16, CUDA, a
//! trainable vision tower); [`TokenScores::backward`] then finishes the gradients either way.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var, D};

use crate::device::on_cpu_pool;
use crate::error::{Context, Result};
use crate::models::qwen2_5_vl::backprop::{TrainBatch, TrainForward};
use crate::models::qwen2_5_vl::training::checkpointed::CheckpointedForward;
use crate::models::qwen2_5_vl::{Grid, Qwen25VL};

/// One sequence to score: prompt and completion ids, which ids are scored (predicted from
/// the position before), and its image.
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    pub ids: &'a [u32],
    pub scored: &'a [bool],
    pub pixel_values: Option<&'a Tensor>,
    pub grid: Option<Grid>,
}

/// The scored tokens of a batch, flattened in row order.
#[derive(Debug)]
pub struct TokenScores {
    /// `log p(token | prefix)`, f32 `[n]`, differentiable with respect to the trainable weights.
    pub logprobs: Tensor,
    /// Entropy of the predictive distribution at each scored position, f32 `[n]` (detached).
    pub entropy: Tensor,
    /// How many scored tokens are the model's argmax.
    pub argmax_hits: usize,
    /// The sequence each scored token belongs to.
    pub rows: Vec<usize>,
    /// The forward pass to continue backward from, when the hand-derived pass scored these.
    hand_backprop: Option<TrainForward>,
    /// The layer inputs to recompute from, when the checkpointed autograd pass scored these.
    checkpointed: Option<CheckpointedForward>,
}

impl TokenScores {
    /// Gradients of `loss` (a function of [`Self::logprobs`]) for every trainable tensor.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let mut grads = loss.backward()?;
        if let Some(pass) = &self.checkpointed {
            pass.backward(&mut grads)?;
        }
        if let Some(pass) = &self.hand_backprop {
            let d = match grads.remove(&self.logprobs) {
                Some(g) => g.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                None => vec![0.0; self.logprobs.elem_count()],
            };
            for (id, g) in pass.backward(&d)? {
                grads.insert_id(id, g);
            }
        }
        Ok(grads)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rearrange a per-token `[n]` tensor into `[rows, width]`, padding with zeros; token `j` of
    /// row `r` lands in column `j`.
    pub fn to_padded(&self, values: &Tensor, rows: usize, width: usize) -> Result<Tensor> {
        let n = self.rows.len();
        let mut index = vec![n as u32; rows * width];
        let mut next = vec![0usize; rows];
        for (k, &r) in self.rows.iter().enumerate() {
            if next[r] >= width {
                crate::bail!("row {r} has more than {width} scored tokens");
            }
            index[r * width + next[r]] = k as u32;
            next[r] += 1;
        }
        let pool = Tensor::cat(&[values, &Tensor::zeros(1, values.dtype(), values.device())?], 0)?;
        let index = Tensor::from_vec(index, rows * width, values.device())?;
        Ok(pool.index_select(&index, 0)?.reshape((rows, width))?)
    }
}

/// A batch laid out for one forward pass: right-padded ids and mask, the images, and the
/// scored tokens (`targets[i]` predicted at flattened position `positions[i]`, in row `rows[i]`).
struct Prepared {
    ids: Tensor,
    mask: Tensor,
    pixel_values: Option<Tensor>,
    grids: Vec<Grid>,
    positions: Vec<u32>,
    targets: Vec<u32>,
    rows: Vec<usize>,
}

impl Prepared {
    fn new(model: &Qwen25VL, seqs: &[Sequence], pad_id: u32, temperature: f64) -> Result<Self> {
        if !(temperature.is_finite() && temperature > 0.0) {
            crate::bail!("temperature {temperature} must be a positive number");
        }
        if seqs.is_empty() {
            crate::bail!("score_tokens needs at least one sequence");
        }
        let width = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        let (b, device) = (seqs.len(), model.device());
        let mut ids = vec![pad_id; b * width];
        let mut mask = vec![0u32; b * width];
        let (mut positions, mut targets, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        let (mut pixels, mut grids) = (Vec::new(), Vec::new());
        for (r, seq) in seqs.iter().enumerate() {
            if seq.scored.len() != seq.ids.len() {
                crate::bail!("sequence {r}: {} ids but {} scored flags", seq.ids.len(), seq.scored.len());
            }
            ids[r * width..r * width + seq.ids.len()].copy_from_slice(seq.ids);
            mask[r * width..r * width + seq.ids.len()].fill(1);
            for p in 1..seq.ids.len() {
                if seq.scored[p] {
                    positions.push((r * width + p - 1) as u32);
                    targets.push(seq.ids[p]);
                    rows.push(r);
                }
            }
            if let (Some(px), Some(grid)) = (seq.pixel_values, seq.grid) {
                pixels.push(px.clone());
                grids.push(grid);
            }
        }
        if positions.is_empty() {
            crate::bail!("no sequence in the batch has a scored token");
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (b, width), device)?,
            mask: Tensor::from_vec(mask, (b, width), device)?,
            pixel_values: if pixels.is_empty() { None } else { Some(Tensor::cat(&pixels, 0)?) },
            grids,
            positions,
            targets,
            rows,
        })
    }
}

/// Score `seqs` in one forward pass, right-padded with `pad_id` under an attention mask. The
/// logits are divided by `temperature` first, as TRL does, so GRPO's ratios compare the same
/// distribution the sampler drew from. Gradients flow through candle's autograd.
pub fn score_tokens(
    model: &Qwen25VL,
    seqs: &[Sequence],
    pad_id: u32,
    temperature: f64,
) -> Result<TokenScores> {
    score_by_autograd(model, seqs, pad_id, temperature, false)
}

/// [`score_tokens`] through the per-layer checkpointed forward: the same values and, after
/// [`TokenScores::backward`], the same gradients, keeping only each layer's input.
pub fn score_tokens_checkpointed(
    model: &Qwen25VL,
    seqs: &[Sequence],
    pad_id: u32,
    temperature: f64,
) -> Result<TokenScores> {
    score_by_autograd(model, seqs, pad_id, temperature, true)
}

fn score_by_autograd(
    model: &Qwen25VL,
    seqs: &[Sequence],
    pad_id: u32,
    temperature: f64,
    checkpointed: bool,
) -> Result<TokenScores> {
    let b = Prepared::new(model, seqs, pad_id, temperature)?;
    let (ids, mask, pixels) = (&b.ids, Some(&b.mask), b.pixel_values.as_ref());
    let (hidden, pass) = on_cpu_pool(|| match checkpointed {
        true => model.checkpointed_hidden(ids, mask, pixels, &b.grids).map(|(h, p)| (h, Some(p))),
        false => model.prefill_hidden(ids, mask, pixels, &b.grids).map(|(h, _)| (h, None)),
    })
    .context("forward pass over the training batch")?;
    score_hidden(model, b, &hidden, temperature, pass)
}

/// The scored tokens' log-probs and entropies from the final hidden states of `batch`.
fn score_hidden(
    model: &Qwen25VL,
    batch: Prepared,
    hidden: &Tensor,
    temperature: f64,
    checkpointed: Option<CheckpointedForward>,
) -> Result<TokenScores> {
    let device = model.device();
    let n = batch.positions.len();
    // The LM head only where a token is scored: most of a VLM's sequence is prompt and image.
    let hidden = hidden.reshape((hidden.elem_count() / hidden.dim(D::Minus1)?, hidden.dim(D::Minus1)?))?;
    let picked = model
        .lm_head(&hidden.index_select(&Tensor::from_vec(batch.positions, n, device)?, 0)?)?
        .to_dtype(DType::F32)?;
    let picked = if temperature == 1.0 { picked } else { (picked / temperature)? };
    let log_probs = candle_nn::ops::log_softmax(&picked, D::Minus1)?;
    let targets_t = Tensor::from_vec(batch.targets.clone(), (n, 1), device)?;
    let logprobs = log_probs.gather(&targets_t, 1)?.squeeze(1)?;
    let detached = log_probs.detach();
    let entropy = (detached.exp()? * &detached)?.sum(D::Minus1)?.neg()?;
    let argmax: Vec<u32> = detached.argmax(D::Minus1)?.to_vec1()?;
    let argmax_hits = argmax.iter().zip(&batch.targets).filter(|(a, t)| a == t).count();
    Ok(TokenScores { logprobs, entropy, argmax_hits, rows: batch.rows, hand_backprop: None, checkpointed })
}

/// [`score_tokens`] for a training step: on the model's hand-derived training pass where it
/// applies ([`Qwen25VL::hand_backprop_applies`]), on candle's autograd otherwise. Take the
/// gradients with [`TokenScores::backward`].
pub fn score_tokens_for_training(
    model: &Qwen25VL,
    seqs: &[Sequence],
    pad_id: u32,
    temperature: f64,
) -> Result<TokenScores> {
    if !model.hand_backprop_applies() {
        return score_tokens_checkpointed(model, seqs, pad_id, temperature);
    }
    let batch = Prepared::new(model, seqs, pad_id, temperature)?;
    let pass = model
        .train_forward(TrainBatch {
            input_ids: &batch.ids,
            attention_mask: &batch.mask,
            pixel_values: batch.pixel_values.as_ref(),
            grids: &batch.grids,
            positions: batch.positions,
            targets: batch.targets,
            temperature,
        })
        .context("forward pass over the training batch")?;
    let n = pass.logprobs.len();
    let device = model.device();
    let logprobs =
        Var::from_tensor(&Tensor::from_vec(pass.logprobs.clone(), n, device)?)?.as_tensor().clone();
    let entropy = Tensor::from_vec(pass.entropy.clone(), n, device)?;
    Ok(TokenScores {
        logprobs,
        entropy,
        argmax_hits: pass.argmax_hits,
        rows: batch.rows,
        hand_backprop: Some(pass),
        checkpointed: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::qwen2_5_vl::tests::{max_diff, tiny};
    use candle_core::Device;

    #[test]
    fn padded_batch_scores_each_row_as_alone() {
        let dev = &Device::Cpu;
        let m = tiny(DType::F32, dev);
        const A: [u32; 5] = [5, 6, 7, 8, 9];
        const B: [u32; 3] = [10, 11, 12];
        const SA: [bool; 5] = [false, false, true, true, true];
        const SB: [bool; 3] = [false, true, true];
        let (a, b, sa, sb) = (&A, &B, &SA, &SB);
        fn seq<'a>(ids: &'a [u32], scored: &'a [bool]) -> Sequence<'a> {
            Sequence { ids, scored, pixel_values: None, grid: None }
        }
        let both = score_tokens(&m, &[seq(a, sa), seq(b, sb)], 0, 1.0).unwrap();
        let alone = score_tokens(&m, &[seq(b, sb)], 0, 1.0).unwrap();
        assert_eq!(both.rows, vec![0, 0, 0, 1, 1]);
        assert!(max_diff(&both.logprobs.narrow(0, 3, 2).unwrap(), &alone.logprobs) < 1e-5);
        // The log-prob of id 7 after [5, 6] is read from the logits at position 1.
        let logits = m.forward(&Tensor::new(&[[5u32, 6]], dev).unwrap(), None, &[]).unwrap();
        let lp = candle_nn::ops::log_softmax(&logits.get(0).unwrap().get(1).unwrap(), 0).unwrap();
        assert!(max_diff(&lp.get(7).unwrap(), &both.logprobs.get(0).unwrap()) < 1e-5);
        let padded = both.to_padded(&both.logprobs, 2, 3).unwrap();
        assert_eq!(padded.dims(), [2, 3]);
        assert_eq!(padded.get(1).unwrap().get(2).unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }
}
