//! A hand-derived training pass for the language model on f32 CPU tensors: the forward keeps
//! what each layer's backward needs, and the backward computes exactly the gradients of the
//! trainable tensors, LoRA adapters or full fine-tuning weights.
//!
//! Why not candle's autograd: on CPU, its backward allocates a zero tensor for every node's
//! gradient, adds into it, and records dozens of small ops per layer. On the models trained on
//! CPU that bookkeeping, not arithmetic, was most of a step. Here a layer is a dozen matmuls and
//! four fused kernels each way, attention reads grouped key/value heads in place and recomputes
//! its probabilities backward (no `seq × seq` tensor is kept), and the LM head and final norm
//! run only at the scored rows. The vision tower runs once; when it is frozen, without gradient.
//! When it trains too (vision adapters, or full fine-tuning with `train_vision`), its small
//! forward is recorded by candle's autograd, and the backward hands it the decoder's gradient
//! at the image-token rows: one autograd pass through the tower, none through the decoder.
//!
//! [`Qwen25VL::hand_backprop_applies`] says when that is; otherwise training runs on candle's
//! autograd, which this matches (tested in `tests.rs` against it to 1e-4 relative).

mod gemm;
mod head;
mod kernels;
mod layer;
mod linear;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Tensor, TensorId, Var};

use crate::device::on_cpu_pool;
use crate::error::Result;
use crate::models::qwen2_5_vl::ops::cpu_f32_fast_path;
use crate::models::qwen2_5_vl::weights::Param;
use crate::models::qwen2_5_vl::{DecoderInputs, Grid, Qwen25VL};
use kernels::{tensor, view, AttnMask};
use linear::Grads;

/// A training batch: right-padded ids `(b, s)`, its 0/1 attention mask, the images, and the
/// scored tokens (`targets[i]` predicted at flattened row `positions[i]`).
pub struct TrainBatch<'a> {
    pub input_ids: &'a Tensor,
    pub attention_mask: &'a Tensor,
    pub pixel_values: Option<&'a Tensor>,
    pub grids: &'a [Grid],
    pub positions: Vec<u32>,
    pub targets: Vec<u32>,
    pub temperature: f64,
}

/// The scored tokens of a training forward pass and what its backward needs.
pub struct TrainForward {
    pub logprobs: Vec<f32>,
    pub entropy: Vec<f32>,
    pub argmax_hits: usize,
    trace: Trace,
}

struct Trace {
    model: Qwen25VL,
    input_ids: Vec<u32>,
    layers: Vec<layer::Saved>,
    head: head::Saved,
    cos: Tensor,
    sin: Tensor,
    mask: AttnMask,
    batch: usize,
    seq: usize,
    wanted: HashSet<TensorId>,
    vision: Option<VisionTrace>,
}

/// The trainable vision tower's part of a pass: its features at the image-token rows (still
/// attached to autograd's record of the tower) and the tower's trainable tensors.
struct VisionTrace {
    rows: Tensor,
    features: Tensor,
    vars: Vec<Var>,
}

impl Qwen25VL {
    /// Whether [`Self::train_forward`] can train this model: something trainable, f32 on the
    /// CPU. The language model's tensors train by hand, the vision tower's (when it trains)
    /// through autograd from the decoder's gradient at the image rows.
    pub fn hand_backprop_applies(&self) -> bool {
        !self.trainable.is_empty() && cpu_f32_fast_path(&[&self.text.embed_tokens])
    }

    /// The trainable tensors of the vision tower (adapters included).
    fn trainable_vision(&self) -> Vec<Var> {
        let vision = vision_tensor_ids(self);
        self.trainable
            .iter()
            .filter(|(_, v)| vision.contains(&v.as_tensor().id()))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The forward pass of [`Self::hand_backprop_applies`] models over `batch`.
    pub fn train_forward(&self, batch: TrainBatch) -> Result<TrainForward> {
        on_cpu_pool(|| self.train_forward_on_pool(batch))
    }

    fn train_forward_on_pool(&self, batch: TrainBatch) -> Result<TrainForward> {
        if !self.hand_backprop_applies() {
            crate::bail!("the hand-derived training pass needs an f32 CPU model with something to train");
        }
        let (b, s) = batch.input_ids.dims2()?;
        let DecoderInputs { embeds, pos, mask, .. } = self.decoder_inputs(
            batch.input_ids,
            Some(batch.attention_mask),
            batch.pixel_values,
            batch.grids,
        )?;
        let (cos, sin) = self.text.rotary.cos_sin(&pos, DType::F32, self.device())?;
        let width = cos.dim(3)?;
        let (cos, sin) = (cos.reshape((b * s, width))?, sin.reshape((b * s, width))?);
        let mask = AttnMask::new(mask.map(|m| m.flatten_all()?.to_vec1::<f32>()).transpose()?, b, s);
        let ctx = layer::Context { cos: &cos, sin: &sin, mask: &mask, batch: b, seq: s };
        let hidden = embeds.dim(2)?;
        let vars = self.trainable_vision();
        let vision = if vars.is_empty() {
            None
        } else {
            let image = self.config().tokens.image_token_id;
            let ids = batch.input_ids.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
            let rows: Vec<u32> = (0..ids.len() as u32).filter(|&r| ids[r as usize] == image).collect();
            let rows = Tensor::new(rows, embeds.device())?;
            let features = embeds.reshape((b * s, hidden))?.index_select(&rows, 0)?;
            Some(VisionTrace { rows, features, vars })
        };
        let mut x = embeds.detach().reshape((b * s, hidden))?.contiguous()?;
        let mut layers = Vec::with_capacity(self.text.layers.len());
        for l in &self.text.layers {
            let (out, saved) = layer::forward(l, &x, &ctx)?;
            layers.push(saved);
            x = out;
        }
        let (scored, head) =
            head::forward(&self.text, &x, batch.positions, batch.targets, batch.temperature)?;
        let trace = Trace {
            model: self.clone(),
            input_ids: batch.input_ids.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?,
            layers,
            head,
            cos,
            sin,
            mask,
            batch: b,
            seq: s,
            wanted: self.trainable.iter().map(|(_, v)| v.as_tensor().id()).collect(),
            vision,
        };
        Ok(TrainForward {
            logprobs: scored.logprobs,
            entropy: scored.entropy,
            argmax_hits: scored.hits,
            trace,
        })
    }
}

impl std::fmt::Debug for TrainForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainForward").field("scored", &self.logprobs.len()).finish_non_exhaustive()
    }
}

impl TrainForward {
    /// Gradients of every trainable tensor (by id) given the gradient of each scored log-prob.
    pub fn backward(&self, dlogprobs: &[f32]) -> Result<HashMap<TensorId, Tensor>> {
        on_cpu_pool(|| self.backward_on_pool(dlogprobs))
    }

    fn backward_on_pool(&self, dlogprobs: &[f32]) -> Result<HashMap<TensorId, Tensor>> {
        let t = &self.trace;
        let text = &t.model.text;
        if dlogprobs.len() != self.logprobs.len() {
            crate::bail!("{} log-prob gradients for {} scored tokens", dlogprobs.len(), self.logprobs.len());
        }
        let mut grads = Grads::new(t.wanted.clone());
        let rows = t.batch * t.seq;
        let mut dx = head::backward(text, &t.head, dlogprobs, rows, &mut grads)?;
        let ctx = layer::Context { cos: &t.cos, sin: &t.sin, mask: &t.mask, batch: t.batch, seq: t.seq };
        let embeddings = grads.wants(&text.embed_tokens);
        for (i, (l, saved)) in text.layers.iter().zip(&t.layers).enumerate().rev() {
            let need_input = i > 0 || embeddings || t.vision.is_some();
            match layer::backward(l, saved, &dx, &ctx, &mut grads, need_input)? {
                Some(d) => dx = d,
                None => break,
            }
        }
        if embeddings {
            grads.add(&text.embed_tokens, self.embedding_grad(&dx)?)?;
        }
        if let Some(vision) = &t.vision {
            // d/dθ Σ features · dx at the image rows is the tower's gradient: autograd walks
            // back from the features it recorded, through the tower only.
            let at_images = dx.index_select(&vision.rows, 0)?.detach();
            let tower = (&vision.features * at_images)?.sum_all()?.backward()?;
            for var in &vision.vars {
                if let Some(g) = tower.get(var.as_tensor()) {
                    grads.add(var.as_tensor(), g.clone())?;
                }
            }
        }
        Ok(grads.into_inner())
    }

    /// The embedding matrix's gradient: each text token's row of `dx`, added at its id. Image
    /// placeholders hold vision features instead and get none.
    fn embedding_grad(&self, dx: &Tensor) -> Result<Tensor> {
        let t = &self.trace;
        let (vocab, hidden) = t.model.text.embed_tokens.dims2()?;
        let image = t.model.config().tokens.image_token_id;
        let mut grad = vec![0f32; vocab * hidden];
        for (&id, row) in t.input_ids.iter().zip(view(&dx.contiguous()?)?.chunks_exact(hidden)) {
            if id != image {
                let at = id as usize * hidden;
                grad[at..at + hidden].iter_mut().zip(row).for_each(|(g, d)| *g += d);
            }
        }
        tensor(grad, &[vocab, hidden])
    }
}

/// Ids of every vision-tower tensor, adapters included.
fn vision_tensor_ids(model: &Qwen25VL) -> HashSet<TensorId> {
    let mut ids = HashSet::new();
    let mut vision = model.vision.clone();
    let _ = vision.visit(&mut |_, p| {
        match p {
            Param::Tensor(t) => {
                ids.insert(t.id());
            }
            Param::Linear(l) => {
                ids.insert(l.weight.id());
                ids.extend(l.bias.as_ref().map(|b| b.id()));
                if let Some(a) = l.adapter() {
                    ids.extend([a.a.as_tensor().id(), a.b.as_tensor().id()]);
                }
            }
        }
        Ok(())
    });
    ids
}
