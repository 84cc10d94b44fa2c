//! Making a model trainable, and taking stock of it: LoRA adapters, full fine-tuning, merging,
//! saving in the hub layout and a parameter summary.
//!
//! Every variant is a new [`Qwen25VL`] that shares the frozen base tensors with the model it
//! came from (candle tensors are reference-counted); only the new trainable [`Var`]s are fresh
//! memory. Trainable names follow PEFT (`base_model.model.<module>.lora_A.weight`) for adapters
//! and the hub layout (`model.layers.0.mlp.up_proj.weight`) for full fine-tuning.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Tensor, Var};

use super::lora::{LoraConfig, LoraState};
use super::weights::Param;
use super::Qwen25VL;
use crate::device::device_name;
use crate::error::{Context, Error, Result};

/// What `info()` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub total_params: usize,
    pub trainable_params: usize,
    pub dtype: String,
    pub device: String,
    /// One line: the main sizes of the text and vision parts.
    pub summary: String,
}

impl Qwen25VL {
    /// A new model with LoRA adapters on the modules `cfg` names, sharing this model's frozen
    /// weights. Adapters go on the language model unless `cfg.vision` is set.
    pub fn with_lora(&self, cfg: &LoraConfig) -> Result<Self> {
        cfg.validate()?;
        if self.lora.is_some() {
            crate::bail!("this model already carries LoRA adapters: merge() them before adding new ones");
        }
        let state = Arc::new(LoraState::new(cfg.seed));
        let mut model = self.clone();
        let mut trainable = Vec::new();
        model.visit_all(&mut |name, p| {
            if let Param::Linear(linear) = p {
                if cfg.matches(name) {
                    *linear = linear.with_adapter(name, cfg, &state)?;
                    if let Some(adapter) = linear.adapter() {
                        trainable.push((format!("base_model.model.{name}.lora_A.weight"), adapter.a.clone()));
                        trainable.push((format!("base_model.model.{name}.lora_B.weight"), adapter.b.clone()));
                    }
                }
            }
            Ok(())
        })?;
        if trainable.is_empty() {
            crate::bail!("lora targets {:?} match no module of this model", cfg.targets);
        }
        model.lora = Some(state);
        model.trainable = trainable;
        Ok(model)
    }

    /// A new model whose language-model weights are all trainable `Var`s (copies; this model
    /// is left untouched). The vision tower stays frozen.
    pub fn full_finetune(&self) -> Result<Self> {
        if self.lora.is_some() {
            crate::bail!("full fine-tuning a model with LoRA adapters: merge() them first");
        }
        let mut model = self.clone();
        let mut trainable = Vec::new();
        let mut to_var = |name: String, t: &mut Tensor| -> Result<()> {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            trainable.push((name, var));
            Ok(())
        };
        model.text.visit(&mut |name, p| match p {
            Param::Tensor(t) => to_var(name.to_string(), t),
            Param::Linear(l) => {
                to_var(format!("{name}.weight"), &mut l.weight)?;
                match &mut l.bias {
                    Some(b) => to_var(format!("{name}.bias"), b),
                    None => Ok(()),
                }
            }
        })?;
        model.trainable = trainable;
        Ok(model)
    }

    /// The tensors an optimiser should update, with their names.
    pub fn trainable(&self) -> &[(String, Var)] {
        &self.trainable
    }

    /// Switch LoRA adapters off (reference forward) or back on; no effect without adapters.
    pub fn set_adapters_enabled(&self, on: bool) {
        if let Some(state) = &self.lora {
            state.set_enabled(on)
        }
    }

    /// Turn adapter dropout on for training or off for evaluation.
    pub fn set_training(&self, on: bool) {
        if let Some(state) = &self.lora {
            state.set_training(on)
        }
    }

    /// A new model with the adapters folded into the base weights and no trainable tensors.
    pub fn merge(&self) -> Result<Self> {
        let mut model = self.clone();
        model.visit_all(&mut |_, p| {
            if let Param::Linear(linear) = p {
                *linear = linear.merged()?;
            }
            Ok(())
        })?;
        model.lora = None;
        model.trainable = Vec::new();
        Ok(model)
    }

    /// Every weight under its hub-layout name; adapters are merged in first.
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut model = self.merge()?;
        let mut out = Vec::new();
        model.visit_all(&mut |name, p| {
            match p {
                Param::Tensor(t) => out.push((name.to_string(), t.clone())),
                Param::Linear(l) => {
                    out.push((format!("{name}.weight"), l.weight.clone()));
                    if let Some(b) = &l.bias {
                        out.push((format!("{name}.bias"), b.clone()));
                    }
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Write `config.json` and `model.safetensors` in the hub layout, which transformers loads.
    /// Adapters are merged into the saved weights.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut config = self.config().to_hub_json();
        config["torch_dtype"] = serde_json::Value::String(dtype_name(self.dtype()).to_string());
        let config_path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&config)?;
        std::fs::write(&config_path, text).map_err(|e| Error::io(&config_path, e))?;
        let tensors: HashMap<String, Tensor> = self
            .named_tensors()?
            .into_iter()
            .map(|(n, t)| Ok((n, t.contiguous()?)))
            .collect::<Result<_>>()?;
        let weights_path = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &weights_path)
            .with_context(|| weights_path.display().to_string())
    }

    /// Parameter counts, dtype, device and a one-line configuration summary.
    pub fn info(&self) -> Result<ModelInfo> {
        let mut total = 0;
        let mut model = self.clone();
        model.visit_all(&mut |_, p| {
            total += match p {
                Param::Tensor(t) => t.elem_count(),
                Param::Linear(l) => {
                    let adapter = l.adapter().map_or(0, |a| a.a.elem_count() + a.b.elem_count());
                    l.weight.elem_count() + l.bias.as_ref().map_or(0, Tensor::elem_count) + adapter
                }
            };
            Ok(())
        })?;
        let (t, v) = (&self.config().text, &self.config().vision);
        Ok(ModelInfo {
            total_params: total,
            trainable_params: self.trainable.iter().map(|(_, var)| var.elem_count()).sum(),
            dtype: dtype_name(self.dtype()).to_string(),
            device: device_name(self.device()),
            summary: format!(
                "qwen2_5_vl: text {} layers, hidden {}, {} heads ({} kv), vocab {}; vision depth {}, hidden {}, \
                 patch {}, merge {}, window {}px, full attention in {:?}{}",
                t.num_hidden_layers,
                t.hidden_size,
                t.num_attention_heads,
                t.num_key_value_heads,
                t.vocab_size,
                v.depth,
                v.hidden_size,
                v.patch_size,
                v.spatial_merge_size,
                v.window_size,
                v.fullatt_block_indexes,
                if self.lora.is_some() { "; LoRA adapters attached" } else { "" }
            ),
        })
    }

    fn visit_all(&mut self, f: &mut super::weights::Visitor) -> Result<()> {
        self.text.visit(f)?;
        self.vision.visit(f)
    }
}

/// The name transformers uses for a dtype in `config.json`.
pub fn dtype_name(dtype: candle_core::DType) -> &'static str {
    match dtype {
        candle_core::DType::BF16 => "bfloat16",
        candle_core::DType::F16 => "float16",
        candle_core::DType::F64 => "float64",
        _ => "float32",
    }
}
