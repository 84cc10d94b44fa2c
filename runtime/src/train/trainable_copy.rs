//! The model a trainer trains: a copy of the input with fresh adapters (or copied weights for
//! full fine-tuning) over the shared frozen base, so the caller's model is never changed.
//! GRPO-CARE's reference is a second such copy over the same base (see [`super::ema_reference`]).

use super::adapters::check_targets;
use crate::error::Result;
use crate::models::qwen2_5_vl::{LoraConfig, Qwen25VL};

/// A trainable copy of `model`: full fine-tuning when `full`, else adapters `lora` (by default
/// rank 8 / alpha 16 on the seven language-model projections, seeded with `seed`). Adapters
/// already on `model` are merged into the base first, so training from an SFT'd model adds a new
/// adapter on top of it.
pub(crate) fn trainable_copy(
    model: &Qwen25VL,
    lora: Option<&LoraConfig>,
    full: bool,
    seed: u64,
) -> Result<Qwen25VL> {
    trainable_on(&frozen_base(model)?, lora, full, seed)
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
pub(crate) fn trainable_on(
    base: &Qwen25VL,
    lora: Option<&LoraConfig>,
    full: bool,
    seed: u64,
) -> Result<Qwen25VL> {
    if full {
        return base.full_finetune();
    }
    let default = LoraConfig { seed, ..LoraConfig::new(8, 16.0) };
    let lora = lora.unwrap_or(&default);
    let model = base.with_lora(lora)?;
    check_targets(&model, lora)?;
    Ok(model)
}
