//! The model a trainer trains: a copy of the input with fresh adapters (or copied weights for
//! full fine-tuning) over the shared frozen base, so the caller's model is never changed.
//! GRPO-CARE's reference is a second such copy over the same base (see [`super::ema_reference`]).

use super::adapters::check_targets;
use crate::error::Result;
use crate::models::qwen2_5_vl::{LoraConfig, Qwen25VL};

/// What a trainer makes trainable: adapters (`lora`, by default rank 8 / alpha 16 on the seven
/// language-model projections, seeded with `seed`), or every language-model weight (`full`),
/// and with `full` the vision tower's weights too (`train_vision`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Trainable<'a> {
    pub lora: Option<&'a LoraConfig>,
    pub full: bool,
    pub train_vision: bool,
    pub seed: u64,
}

impl<'a> Trainable<'a> {
    /// Adapters only: `lora`, or the default ones seeded with `seed`.
    #[cfg(test)]
    pub fn adapters(lora: Option<&'a LoraConfig>, seed: u64) -> Self {
        Trainable { lora, full: false, train_vision: false, seed }
    }
}

/// A trainable copy of `model` as `what` says. Adapters already on `model` are merged into the
/// base first, so training from an SFT'd model adds a new adapter on top of it.
pub(crate) fn trainable_copy(model: &Qwen25VL, what: Trainable) -> Result<Qwen25VL> {
    trainable_on(&frozen_base(model)?, what)
}

/// The base a trainable copy of `model` is built on: `model` with any adapters merged in.
pub(crate) fn frozen_base(model: &Qwen25VL) -> Result<Qwen25VL> {
    if model.lora.is_some() {
        model.merge()
    } else {
        Ok(model.clone())
    }
}

/// [`trainable_copy`] over a `base` from [`frozen_base`]: copies built on one base share its
/// frozen tensors.
pub(crate) fn trainable_on(base: &Qwen25VL, what: Trainable) -> Result<Qwen25VL> {
    if what.train_vision && !what.full {
        crate::bail!(
            "train_vision trains the vision tower's weights with full fine-tuning: set full too \
             (adapters on the vision tower are lora's `vision`)"
        );
    }
    if what.full {
        return if what.train_vision { base.full_finetune_with_vision() } else { base.full_finetune() };
    }
    let default = LoraConfig { seed: what.seed, ..LoraConfig::new(8, 16.0) };
    let lora = what.lora.unwrap_or(&default);
    let model = base.with_lora(lora)?;
    check_targets(&model, lora)?;
    Ok(model)
}
