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

use super::super::lora::{LoraConfig, LoraState};
use super::super::weights::{Param, Visitor};
use super::super::Qwen25VL;
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
        let mut model = self.detached()?;
        // A rank above min(in, out) adds no capacity and, far enough above, more memory than any
        // machine has; refuse it before allocating anything, naming the narrowest layer.
        let mut narrowest: Option<(String, usize)> = None;
        model.visit_all(&mut |name, p| {
            if let Param::Linear(linear) = p {
                if cfg.matches(name) {
                    let (out, inp) = linear.weight.dims2()?;
                    if narrowest.as_ref().is_none_or(|(_, n)| out.min(inp) < *n) {
                        narrowest = Some((name.to_string(), out.min(inp)));
                    }
                }
            }
            Ok(())
        })?;
        if let Some((layer, dim)) = narrowest.filter(|(_, dim)| cfg.rank > *dim) {
            crate::bail!(
                "lora rank {} is larger than layer `{layer}` allows: a rank is at most min(in, out) = {dim} of every targeted layer",
                cfg.rank
            );
        }
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
        self.full_finetune_towers(false)
    }

    /// [`Self::full_finetune`] with the vision tower's weights (patch embedding, blocks and
    /// merger) trainable too, as the paper's release trained them.
    pub fn full_finetune_with_vision(&self) -> Result<Self> {
        self.full_finetune_towers(true)
    }

    fn full_finetune_towers(&self, vision: bool) -> Result<Self> {
        if self.lora.is_some() {
            crate::bail!("full fine-tuning a model with LoRA adapters: merge() them first");
        }
        let mut model = self.detached()?;
        let mut trainable = Vec::new();
        let mut to_var = |name: String, t: &mut Tensor| -> Result<()> {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            trainable.push((name, var));
            Ok(())
        };
        let mut every_weight = |name: &str, p: Param| match p {
            Param::Tensor(t) => to_var(name.to_string(), t),
            Param::Linear(l) => {
                to_var(format!("{name}.weight"), &mut l.weight)?;
                match &mut l.bias {
                    Some(b) => to_var(format!("{name}.bias"), b),
                    None => Ok(()),
                }
            }
        };
        model.text.visit(&mut every_weight)?;
        if vision {
            model.vision.visit(&mut every_weight)?;
        }
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
        model.detached()
    }

    /// The same weights (shared storage) cut loose from any autograd graph, with nothing
    /// trainable. A fully fine-tuned model's weights are `Var`s: without this, training it again
    /// would update them in place — changing the input model — and LoRA on top of it would
    /// compute gradients for every frozen weight.
    fn detached(&self) -> Result<Self> {
        let mut model = self.clone();
        model.visit_all(&mut |_, p| {
            match p {
                Param::Tensor(t) => *t = t.detach(),
                Param::Linear(l) => {
                    l.weight = l.weight.detach();
                    if let Some(b) = &mut l.bias {
                        *b = b.detach();
                    }
                }
            }
            Ok(())
        })?;
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

    /// Call `f` with every tensor the model holds, by name: weights, biases and LoRA's `A`/`B`
    /// unmerged, so nothing of the model's size is copied (the MPI ranks' model check).
    pub fn each_tensor(&self, f: &mut dyn FnMut(&str, &Tensor) -> Result<()>) -> Result<()> {
        let mut model = self.clone();
        model.visit_all(&mut |name, p| match p {
            Param::Tensor(t) => f(name, t),
            Param::Linear(l) => {
                f(&format!("{name}.weight"), &l.weight)?;
                if let Some(b) = &l.bias {
                    f(&format!("{name}.bias"), b)?;
                }
                if let Some(a) = l.adapter() {
                    f(&format!("{name}.lora_A"), &a.a)?;
                    f(&format!("{name}.lora_B"), &a.b)?;
                }
                Ok(())
            }
        })
    }

    fn visit_all(&mut self, f: &mut Visitor) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::qwen2_5_vl::tests::{max_diff, pixels, prompt, tiny, GRID};
    use crate::models::qwen2_5_vl::{Config, LoraInit};
    use candle_core::{DType, Device, D};

    /// Next-token cross-entropy over the prompt, the shape of loss SFT uses.
    fn loss(m: &Qwen25VL, dtype: DType, dev: &Device) -> Tensor {
        let ids = prompt(m.config());
        let n = ids.len();
        let input = Tensor::new(&ids[..n - 1], dev).unwrap().unsqueeze(0).unwrap();
        let target = Tensor::new(&ids[1..], dev).unwrap();
        let logits = m.forward(&input, Some(&pixels(dtype, dev)), &[GRID]).unwrap().squeeze(0).unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        logp.gather(&target.unsqueeze(1).unwrap(), 1).unwrap().neg().unwrap().mean_all().unwrap()
    }

    /// A fully fine-tuned model's weights are `Var`s; training it again (fully or with LoRA)
    /// must work on copies, so the model a script passed in stays as it was.
    #[test]
    fn training_a_fine_tuned_model_again_leaves_it_unchanged() {
        let dev = Device::Cpu;
        let first = tiny(DType::F32, &dev).full_finetune().unwrap();
        let before = loss(&first, DType::F32, &dev).to_scalar::<f32>().unwrap();
        for again in [first.full_finetune().unwrap(), first.with_lora(&random_lora()).unwrap()] {
            for (_, var) in again.trainable() {
                var.set(&var.as_tensor().ones_like().unwrap()).unwrap();
            }
            assert_eq!(loss(&first, DType::F32, &dev).to_scalar::<f32>().unwrap(), before);
        }
        let lora = first.with_lora(&random_lora()).unwrap();
        let grads = loss(&lora, DType::F32, &dev).backward().unwrap();
        let frozen = first.trainable();
        assert!(
            frozen.iter().all(|(_, v)| grads.get(v.as_tensor()).is_none()),
            "LoRA differentiates frozen weights"
        );
    }

    fn random_lora() -> LoraConfig {
        LoraConfig { init: LoraInit::Random, seed: 3, ..LoraConfig::new(4, 8.0) }
    }

    fn assert_all_gradients_finite_and_nonzero(m: &Qwen25VL, dev: &Device) {
        let grads = loss(m, m.dtype(), dev).backward().unwrap();
        for (name, var) in m.trainable() {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has no gradient"));
            let g = g.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            assert!(g.iter().all(|v| v.is_finite()), "{name}: non-finite gradient");
            assert!(g.iter().any(|&v| v != 0.0), "{name}: zero gradient");
        }
    }

    #[test]
    fn lora_on_all_seven_projections_gets_gradients() {
        let dev = &Device::Cpu;
        let m = tiny(DType::F32, dev).with_lora(&random_lora()).unwrap();
        // 3 layers x 7 projections x (A, B).
        assert_eq!(m.trainable().len(), 42);
        assert_eq!(m.trainable()[0].0, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
        assert!(m.trainable().iter().all(|(n, _)| !n.contains("visual")));
        assert_all_gradients_finite_and_nonzero(&m, dev);
    }

    #[test]
    fn full_finetuning_gets_gradients_on_every_lm_weight() {
        let dev = &Device::Cpu;
        let base = tiny(DType::F32, dev);
        let m = base.full_finetune().unwrap();
        let names: Vec<&str> = m.trainable().iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"model.embed_tokens.weight") && names.contains(&"lm_head.weight"));
        assert!(names.contains(&"model.layers.2.self_attn.k_proj.bias"));
        assert_all_gradients_finite_and_nonzero(&m, dev);
        // Updating a trainable copy leaves the base untouched.
        let (_, var) = &m.trainable()[0];
        var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
        let ids = Tensor::new(&[[1u32, 2, 3]], dev).unwrap();
        assert!(
            max_diff(&base.forward(&ids, None, &[]).unwrap(), &m.forward(&ids, None, &[]).unwrap()) > 0.0
        );
    }

    #[test]
    fn lora_gradient_matches_finite_differences_in_f64() {
        let dev = &Device::Cpu;
        let m = Qwen25VL::new_random(&Config::tiny(), 7, DType::F64, dev)
            .unwrap()
            .with_lora(&random_lora())
            .unwrap();
        let grads = loss(&m, DType::F64, dev).backward().unwrap();
        for (name, var) in [&m.trainable()[0], &m.trainable()[13], &m.trainable()[41]] {
            let analytic =
                grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let original = var.as_tensor().copy().unwrap();
            let shape = original.dims().to_vec();
            let flat = original.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let i = analytic.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap().0;
            let eps = 1e-6;
            let at = |delta: f64| {
                let mut v = flat.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, shape.as_slice(), dev).unwrap()).unwrap();
                loss(&m, DType::F64, dev).to_scalar::<f64>().unwrap()
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            var.set(&original).unwrap();
            let rel = (numeric - analytic[i]).abs() / analytic[i].abs().max(1e-12);
            assert!(rel < 1e-3, "{name}[{i}]: analytic {} numeric {numeric}", analytic[i]);
        }
    }

    #[test]
    fn adapters_switch_off_and_merge() {
        let dev = &Device::Cpu;
        let base = tiny(DType::F32, dev);
        let ids = Tensor::new(&[[1u32, 2, 3, 4]], dev).unwrap();
        let reference = base.forward(&ids, None, &[]).unwrap();
        let peft = base.with_lora(&LoraConfig::new(4, 8.0)).unwrap();
        // Zero B: unchanged up to the rounding of the differentiable kernels.
        assert!(max_diff(&peft.forward(&ids, None, &[]).unwrap(), &reference) < 1e-6);
        let m = base.with_lora(&random_lora()).unwrap();
        let adapted = m.forward(&ids, None, &[]).unwrap();
        assert!(max_diff(&adapted, &reference) > 1e-4);
        m.set_adapters_enabled(false);
        assert_eq!(max_diff(&m.forward(&ids, None, &[]).unwrap(), &reference), 0.0);
        m.set_adapters_enabled(true);
        let merged = m.merge().unwrap();
        assert!(merged.trainable().is_empty());
        assert!(max_diff(&merged.forward(&ids, None, &[]).unwrap(), &adapted) < 1e-5);
        assert!(m.with_lora(&random_lora()).is_err());
        let none = LoraConfig { targets: vec!["nothing".into()], ..random_lora() };
        assert!(base.with_lora(&none).unwrap_err().to_string().contains("match no module"));
    }

    #[test]
    fn save_then_load_gives_the_same_model() {
        let dev = &Device::Cpu;
        let m = tiny(DType::F32, dev).with_lora(&random_lora()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        let loaded = Qwen25VL::load(dir.path().to_str().unwrap(), DType::F32, dev).unwrap();
        assert_eq!(loaded.config(), m.config());
        let ids = Tensor::new(prompt(m.config()), dev).unwrap().unsqueeze(0).unwrap();
        let pv = pixels(DType::F32, dev);
        let a = m.forward(&ids, Some(&pv), &[GRID]).unwrap();
        let b = loaded.forward(&ids, Some(&pv), &[GRID]).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
    }

    #[test]
    fn tied_embeddings_round_trip_without_an_lm_head() {
        let dev = &Device::Cpu;
        let mut cfg = Config::tiny();
        cfg.text.tie_word_embeddings = true;
        let m = Qwen25VL::new_random(&cfg, 1, DType::F32, dev).unwrap();
        assert!(m.named_tensors().unwrap().iter().all(|(n, _)| !n.starts_with("lm_head")));
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        let loaded = Qwen25VL::load(dir.path().to_str().unwrap(), DType::F32, dev).unwrap();
        let ids = Tensor::new(&[[4u32, 5, 6]], dev).unwrap();
        assert_eq!(
            max_diff(&m.forward(&ids, None, &[]).unwrap(), &loaded.forward(&ids, None, &[]).unwrap()),
            0.0
        );
    }

    #[test]
    fn info_counts_parameters() {
        let dev = &Device::Cpu;
        let m = tiny(DType::F32, dev);
        let info = m.info().unwrap();
        let stored: usize = m.named_tensors().unwrap().iter().map(|(_, t)| t.elem_count()).sum();
        assert_eq!(info.total_params, stored);
        assert_eq!(info.trainable_params, 0);
        assert_eq!((info.dtype.as_str(), info.device.as_str()), ("float32", "cpu"));
        let lora = m.with_lora(&LoraConfig::new(2, 4.0)).unwrap().info().unwrap();
        let per_layer = 2 * (64 + 64) + 2 * (64 + 32) * 2 + 2 * (64 + 64) + 3 * 2 * (64 + 176);
        assert_eq!(lora.trainable_params, 3 * per_layer);
        assert_eq!(lora.total_params, info.total_params + lora.trainable_params);
    }
}
