//! Per-layer activation checkpointing for the autograd training pass, as transformers'
//! `gradient_checkpointing_enable()` at decoder-layer granularity (the paper's runs set
//! `--gradient_checkpointing true`).
//!
//! The forward runs every decoder layer without keeping its graph and stores only the layer's
//! input, `(batch, seq, hidden)`. The backward walks the layers from the last, recomputes one
//! layer under autograd from its stored input and pushes the incoming gradient through it. So
//! activation memory is `layers × tokens × hidden` plus one layer's graph, never every layer's
//! attention probabilities (`tokens² × heads`) at once. This is the pass bf16 and CUDA training
//! take; the hand-derived pass in [`super::backprop`] is f32-CPU-only. Gradients equal plain
//! autograd's: LoRA dropout masks are replayed by restoring the generator's state before each
//! recompute, and the embedding (with the vision tower, when trainable) keeps its graph.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::super::cache::LayerKv;
use super::super::{DecoderInputs, Grid, Qwen25VL};
use crate::error::{Context, Result};

/// What the backward needs from a checkpointed forward.
#[derive(Debug)]
pub struct CheckpointedForward {
    model: Qwen25VL,
    /// Each decoder layer's input, detached.
    inputs: Vec<Tensor>,
    /// The LoRA dropout generator before each layer, and after the last.
    dropout_before: Vec<Option<ChaCha8Rng>>,
    dropout_after: Option<ChaCha8Rng>,
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
    /// The embeddings with their graph (to the embedding table and vision tower), when trainable.
    embeds: Tensor,
    /// The last layer's output, the root of the graph the caller's loss builds.
    last: Var,
}

impl Qwen25VL {
    /// Final-normed hidden states `(batch, seq, hidden)` from a checkpointed forward: the
    /// returned tensor's graph reaches back only to the last layer's output. Finish a loss's
    /// gradients with [`CheckpointedForward::backward`].
    pub fn checkpointed_hidden(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        pixel_values: Option<&Tensor>,
        grids: &[Grid],
    ) -> Result<(Tensor, CheckpointedForward)> {
        let DecoderInputs { embeds, pos, mask, .. } =
            self.decoder_inputs(input_ids, attention_mask, pixel_values, grids)?;
        let (cos, sin) = self.text.rotary.cos_sin(&pos, embeds.dtype(), embeds.device())?;
        let dropout = |m: &Qwen25VL| m.lora.as_ref().map(|l| l.dropout_state()).transpose();
        let mut x = embeds.detach();
        let (mut inputs, mut dropout_before) = (Vec::new(), Vec::new());
        for layer in &self.text.layers {
            dropout_before.push(dropout(self)?);
            inputs.push(x.clone());
            x = layer.forward(&x, &cos, &sin, mask.as_ref(), &mut LayerKv::default())?.detach();
        }
        let last = Var::from_tensor(&x)?;
        let hidden = self.text.norm.forward(last.as_tensor())?;
        let pass = CheckpointedForward {
            model: self.clone(),
            inputs,
            dropout_before,
            dropout_after: dropout(self)?,
            cos,
            sin,
            mask,
            embeds,
            last,
        };
        Ok((hidden, pass))
    }
}

impl CheckpointedForward {
    /// Add the gradients of every trainable tensor to `grads`, the store of a loss over the
    /// hidden states [`Qwen25VL::checkpointed_hidden`] returned (which holds the final norm's
    /// and LM head's already).
    pub fn backward(&self, grads: &mut GradStore) -> Result<()> {
        let mut incoming =
            grads.remove(self.last.as_tensor()).context("the loss does not depend on the hidden states")?;
        // candle's matmul backward also computes the gradient of a frozen weight and leaves it in
        // the store (the LM head's is vocabulary × hidden): keep only what is trained.
        let mut trained = GradStore::default();
        self.keep_trainable(grads, &mut trained)?;
        *grads = trained;
        let model = &self.model;
        for (i, layer) in model.text.layers.iter().enumerate().rev() {
            if let (Some(lora), Some(state)) = (&model.lora, &self.dropout_before[i]) {
                lora.set_dropout_state(state.clone())?;
            }
            let input = Var::from_tensor(&self.inputs[i])?;
            let out = layer.forward(
                input.as_tensor(),
                &self.cos,
                &self.sin,
                self.mask.as_ref(),
                &mut LayerKv::default(),
            )?;
            let mut layer_grads = (out * incoming.detach())?.sum_all()?.backward()?;
            self.keep_trainable(&mut layer_grads, grads)?;
            incoming = layer_grads
                .remove(input.as_tensor())
                .context("a decoder layer's output does not depend on its input")?;
        }
        if let (Some(lora), Some(state)) = (&model.lora, &self.dropout_after) {
            lora.set_dropout_state(state.clone())?;
        }
        if self.embeds.track_op() {
            let mut embed_grads = (&self.embeds * incoming)?.sum_all()?.backward()?;
            self.keep_trainable(&mut embed_grads, grads)?;
        }
        Ok(())
    }

    /// Move the trainable tensors' gradients from `from` into `into`, adding where present; the
    /// rest of `from` (every intermediate of the recomputed graph) is dropped with it.
    fn keep_trainable(&self, from: &mut GradStore, into: &mut GradStore) -> Result<()> {
        for (_, var) in self.model.trainable() {
            if let Some(g) = from.remove(var.as_tensor()) {
                let sum = match into.remove(var.as_tensor()) {
                    Some(previous) => (previous + g)?,
                    None => g,
                };
                into.insert(var.as_tensor(), sum);
            }
        }
        Ok(())
    }
}
