//! PEFT LoRA adapter directories (`adapter_config.json` + `adapter_model.safetensors`):
//! writing a model's adapters so PEFT can load them, and attaching saved adapters to a base.
//!
//! Tensor names are PEFT's for the hub layout (`base_model.model.model.layers.0.self_attn.
//! q_proj.lora_A.weight`). Only what medbridge trains is accepted: a list of target modules,
//! plain `alpha / r` scaling (no rsLoRA, no DoRA).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde_json::{json, Value};

use super::lora::{LoraConfig, LoraInit};
use super::Qwen25VL;
use crate::error::{Context, Error, Result};

const CONFIG_FILE: &str = "adapter_config.json";
const WEIGHTS_FILE: &str = "adapter_model.safetensors";

impl Qwen25VL {
    /// Write this model's adapters as a PEFT adapter directory. `lora` must be the
    /// configuration the adapters were made with.
    pub fn save_adapter(&self, dir: &Path, lora: &LoraConfig, base_model: &str) -> Result<()> {
        if self.lora.is_none() {
            crate::bail!("this model has no LoRA adapters to save");
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let config = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": lora.rank,
            "lora_alpha": lora.alpha,
            "lora_dropout": lora.dropout,
            "target_modules": lora.targets,
            "bias": "none",
            "use_rslora": false,
            "use_dora": false,
            "fan_in_fan_out": false,
            "inference_mode": true,
        });
        let path = dir.join(CONFIG_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&config)?).map_err(|e| Error::io(&path, e))?;
        let tensors: HashMap<String, Tensor> = self
            .trainable()
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        let path = dir.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&tensors, &path).with_context(|| path.display().to_string())
    }

    /// A new model with the PEFT adapter in `dir` attached to this base.
    pub fn with_adapter(&self, dir: &Path) -> Result<Self> {
        let run = || -> Result<Self> {
            let path = dir.join(CONFIG_FILE);
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let config: Value = serde_json::from_str(&text).with_context(|| path.display().to_string())?;
            let weights_path = dir.join(WEIGHTS_FILE);
            let tensors = candle_core::safetensors::load(&weights_path, self.device())
                .with_context(|| format!("{}: not a readable safetensors file", weights_path.display()))?;
            let lora = lora_config(&config, tensors.keys().any(|k| k.contains(".visual.")))
                .with_context(|| path.display().to_string())?;
            let model = self.with_lora(&lora)?;
            for (name, var) in model.trainable() {
                let t = tensors
                    .get(name)
                    .with_context(|| format!("{}: tensor {name} is missing", weights_path.display()))?;
                if t.dims() != var.dims() {
                    crate::bail!(
                        "{}: tensor {name} has shape {:?}, expected {:?}",
                        weights_path.display(),
                        t.dims(),
                        var.dims()
                    );
                }
                var.set(&t.to_dtype(var.dtype())?)?;
            }
            if let Some(extra) = tensors.keys().find(|k| !model.trainable().iter().any(|(n, _)| n == *k)) {
                crate::bail!(
                    "{}: tensor {extra} matches no adapted module of this model",
                    weights_path.display()
                );
            }
            Ok(model)
        };
        run().with_context(|| format!("loading adapter {}", dir.display()))
    }
}

/// The LoRA configuration of a PEFT `adapter_config.json`.
fn lora_config(config: &Value, vision: bool) -> Result<LoraConfig> {
    let number = |key: &str| config.get(key).and_then(Value::as_f64);
    if config.get("peft_type").and_then(Value::as_str).is_some_and(|t| t != "LORA") {
        crate::bail!("`peft_type` is not LORA");
    }
    for flag in ["use_rslora", "use_dora"] {
        if config.get(flag).and_then(Value::as_bool) == Some(true) {
            crate::bail!("`{flag}` adapters are not supported");
        }
    }
    let targets = match config.get("target_modules") {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => crate::bail!("`target_modules` must be a list of module names"),
    };
    let rank = number("r").context("key `r` missing or not a number")? as usize;
    Ok(LoraConfig {
        rank,
        alpha: number("lora_alpha").context("key `lora_alpha` missing or not a number")?,
        targets,
        dropout: number("lora_dropout").unwrap_or(0.0),
        init: LoraInit::Peft,
        seed: 0,
        vision,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_diff, tiny};
    use super::*;
    use candle_core::Device;

    #[test]
    fn saved_adapters_reload_onto_the_base() {
        let dev = &Device::Cpu;
        let base = tiny(DType::F32, dev);
        let cfg = LoraConfig {
            init: LoraInit::Random,
            seed: 5,
            targets: vec!["q_proj".into(), "v_proj".into()],
            ..LoraConfig::new(4, 8.0)
        };
        let adapted = base.with_lora(&cfg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        adapted.save_adapter(dir.path(), &cfg, "qwen2_5_vl_tiny").unwrap();
        let reloaded = base.with_adapter(dir.path()).unwrap();
        let ids = Tensor::new(&[[3u32, 1, 4, 1, 5]], dev).unwrap();
        let a = adapted.forward(&ids, None, &[]).unwrap();
        assert_eq!(max_diff(&a, &reloaded.forward(&ids, None, &[]).unwrap()), 0.0);
        assert!(max_diff(&a, &base.forward(&ids, None, &[]).unwrap()) > 0.0);

        let path = dir.path().join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).unwrap().replace("\"r\": 4", "\"r\": 2");
        std::fs::write(&path, text).unwrap();
        let err = base.with_adapter(dir.path()).unwrap_err().to_string();
        assert!(err.contains("has shape [4, 64], expected [2, 64]"), "{err}");
        assert!(base.save_adapter(dir.path(), &cfg, "x").is_err());
    }
}
