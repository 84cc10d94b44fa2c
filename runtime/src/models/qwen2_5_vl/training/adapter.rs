//! PEFT LoRA adapter directories (`adapter_config.json` + `adapter_model.safetensors`):
//! writing a model's adapters so PEFT can load them, and attaching saved adapters to a base.
//!
//! PEFT names an adapter tensor after the module path in the transformers model it was made
//! on. transformers 5 nests the decoder under `model.language_model` and the vision tower under
//! `model.visual`, so current PEFT writes and reads `base_model.model.model.language_model.
//! layers.0.self_attn.q_proj.lora_A.weight` and `base_model.model.model.visual.blocks.0.mlp.
//! down_proj.lora_A.weight`; adapters made against transformers 4.x say `base_model.model.model.
//! layers.*` and `base_model.model.visual.*`, which current PEFT silently skips (all adapter keys
//! "missing"). medbridge writes the transformers 5 layout and reads both.
//!
//! Which tower an adapter covers: PEFT matches `target_modules` by suffix in both towers, and the
//! vision MLP reuses `gate_proj`, `up_proj` and `down_proj`, so a language-model-only adapter is
//! written with `exclude_modules` set to [`VISION_EXCLUDE`]; on reading, the tensors present say
//! whether the vision tower is adapted. Only what medbridge trains is accepted: plain
//! `alpha / r` scaling (no rsLoRA, DoRA, per-module rank or alpha patterns).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde_json::{json, Value};

use super::super::lora::{LoraConfig, LoraInit};
use super::super::Qwen25VL;
use crate::error::{Context, Error, Result};

const CONFIG_FILE: &str = "adapter_config.json";
const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// PEFT's `exclude_modules` (a regex when a string) for an adapter on the language model only.
pub const VISION_EXCLUDE: &str = ".*visual.*";

/// Internal (hub-layout) name prefixes and their transformers 5 spelling in PEFT files.
const LAYOUT: [(&str, &str); 2] = [
    ("base_model.model.model.", "base_model.model.model.language_model."),
    ("base_model.model.visual.", "base_model.model.model.visual."),
];

impl Qwen25VL {
    /// Write this model's adapters as a PEFT adapter directory. `lora` must be the
    /// configuration the adapters were made with.
    pub fn save_adapter(&self, dir: &Path, lora: &LoraConfig, base_model: &str) -> Result<()> {
        if self.lora.is_none() {
            crate::bail!("this model has no LoRA adapters to save");
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut config = json!({
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
        if !lora.vision {
            config["exclude_modules"] = json!(VISION_EXCLUDE);
        }
        let path = dir.join(CONFIG_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&config)?).map_err(|e| Error::io(&path, e))?;
        let tensors: HashMap<String, Tensor> = self
            .trainable()
            .iter()
            .map(|(name, var)| Ok((peft_name(name), var.as_tensor().to_dtype(DType::F32)?)))
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
            let tensors: HashMap<String, Tensor> =
                candle_core::safetensors::load(&weights_path, self.device())
                    .with_context(|| format!("{}: not a readable safetensors file", weights_path.display()))?
                    .into_iter()
                    .map(|(k, t)| (internal_name(&k), t))
                    .collect();
            let lora = lora_config(&config, &tensors).with_context(|| path.display().to_string())?;
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

/// The name PEFT gives the tensor medbridge calls `name` (transformers 5 layout).
fn peft_name(name: &str) -> String {
    for (internal, peft) in LAYOUT {
        if let Some(rest) = name.strip_prefix(internal) {
            return format!("{peft}{rest}");
        }
    }
    name.to_string()
}

/// medbridge's name for a PEFT tensor name in either layout.
fn internal_name(key: &str) -> String {
    for (internal, peft) in LAYOUT {
        if let Some(rest) = key.strip_prefix(peft) {
            return format!("{internal}{rest}");
        }
    }
    key.to_string()
}

/// The LoRA configuration of a PEFT `adapter_config.json` whose tensors (under medbridge's
/// names) are `tensors`.
fn lora_config(config: &Value, tensors: &HashMap<String, Tensor>) -> Result<LoraConfig> {
    let number = |key: &str| config.get(key).and_then(Value::as_f64);
    if config.get("peft_type").and_then(Value::as_str).is_some_and(|t| t != "LORA") {
        crate::bail!("`peft_type` is not LORA");
    }
    for flag in ["use_rslora", "use_dora"] {
        if config.get(flag).and_then(Value::as_bool) == Some(true) {
            crate::bail!("`{flag}` adapters are not supported");
        }
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if config.get(pattern).and_then(Value::as_object).is_some_and(|p| !p.is_empty()) {
            crate::bail!("`{pattern}` (per-module rank or alpha) is not supported");
        }
    }
    let targets = match config.get("target_modules") {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        // A regex or "all-linear": the adapted modules are the ones the weights file holds.
        Some(Value::String(_)) => {
            let mut names: Vec<String> = tensors
                .keys()
                .filter_map(|k| k.strip_suffix(".lora_A.weight"))
                .filter_map(|module| module.rsplit('.').next().map(str::to_string))
                .collect();
            names.sort();
            names.dedup();
            names
        }
        _ => crate::bail!("`target_modules` must be a list of module names or a regex"),
    };
    let rank = number("r").context("key `r` missing or not a number")? as usize;
    Ok(LoraConfig {
        rank,
        alpha: number("lora_alpha").context("key `lora_alpha` missing or not a number")?,
        targets,
        dropout: number("lora_dropout").unwrap_or(0.0),
        init: LoraInit::Peft,
        seed: 0,
        vision: tensors.keys().any(|k| k.starts_with("base_model.model.visual.")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::qwen2_5_vl::tests::{max_diff, tiny};
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

    /// Current PEFT (on transformers 5) skips every tensor of the 4.x layout without an error,
    /// so the written names must be the transformers 5 ones, and a text-only adapter must tell
    /// PEFT to leave the vision MLP's `down_proj` alone.
    #[test]
    fn saved_names_follow_transformers5_and_say_which_tower() {
        let dev = &Device::Cpu;
        let base = tiny(DType::F32, dev);
        for vision in [false, true] {
            let cfg = LoraConfig { vision, targets: vec!["down_proj".into()], ..LoraConfig::new(2, 4.0) };
            let dir = tempfile::tempdir().unwrap();
            base.with_lora(&cfg).unwrap().save_adapter(dir.path(), &cfg, "tiny").unwrap();
            let saved = candle_core::safetensors::load(dir.path().join(WEIGHTS_FILE), dev).unwrap();
            let mut names: Vec<&str> = saved.keys().map(String::as_str).collect();
            names.sort();
            assert!(
                names.contains(&"base_model.model.model.language_model.layers.0.mlp.down_proj.lora_A.weight")
            );
            let vision_name = "base_model.model.model.visual.blocks.0.mlp.down_proj.lora_B.weight";
            assert_eq!(names.contains(&vision_name), vision, "{names:?}");
            let text = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
            let config: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(config.get("exclude_modules").is_some(), !vision);
            assert_eq!(base.with_adapter(dir.path()).unwrap().trainable().len(), names.len());
        }
    }

    #[test]
    fn both_key_layouts_map_to_the_same_modules() {
        let old = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight";
        let new = "base_model.model.model.language_model.layers.1.self_attn.q_proj.lora_A.weight";
        assert_eq!(internal_name(new), old);
        assert_eq!(internal_name(old), old);
        assert_eq!(peft_name(old), new);
        let old = "base_model.model.visual.blocks.2.mlp.up_proj.lora_B.weight";
        let new = "base_model.model.model.visual.blocks.2.mlp.up_proj.lora_B.weight";
        assert_eq!((internal_name(new).as_str(), internal_name(old).as_str()), (old, old));
        assert_eq!(peft_name(old), new);
    }

    #[test]
    fn unsupported_adapter_configs_are_named() {
        let tensors = HashMap::new();
        let base = json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]});
        assert!(lora_config(&base, &tensors).is_ok());
        for (key, value, message) in [
            ("use_dora", json!(true), "use_dora"),
            ("rank_pattern", json!({"q_proj": 8}), "rank_pattern"),
            ("peft_type", json!("IA3"), "LORA"),
            ("target_modules", json!(3), "target_modules"),
        ] {
            let mut config = base.clone();
            config[key] = value;
            let err = lora_config(&config, &tensors).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }
}
