//! The model a trainer trains: a copy of the input with fresh adapters (or copied weights for
//! full fine-tuning) over the shared frozen base, so the caller's model is never changed.

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
    let base = if model.lora.is_some() { model.merge()? } else { model.clone() };
    if full {
        return base.full_finetune();
    }
    let default = LoraConfig { seed, ..LoraConfig::new(8, 16.0) };
    let lora = lora.unwrap_or(&default);
    let model = base.with_lora(lora)?;
    check_targets(&model, lora)?;
    Ok(model)
}
