//! The hand-derived pass against candle's autograd on the same batch: log-probs, entropy and
//! every trainable gradient, for LoRA (with GQA, padding, an image and a temperature), full
//! fine-tuning, tied embeddings, and a trainable vision tower (adapters or full weights).

use candle_core::{DType, Device, Tensor, D};

use super::*;
use crate::models::qwen2_5_vl::tests::{pixels, prompt, GRID};
use crate::models::qwen2_5_vl::{Config, LoraConfig, LoraInit};

/// A right-padded batch: an image prompt with a completion, and a shorter text-only one.
struct Batch {
    ids: Tensor,
    mask: Tensor,
    positions: Vec<u32>,
    targets: Vec<u32>,
}

fn batch(cfg: &Config, dev: &Device) -> Batch {
    let mut first = prompt(cfg);
    first.extend([40, 41, 42, 43]);
    let second = [7u32, 8, 9, 10, 11, 12];
    let width = first.len();
    let mut ids = first.clone();
    ids.extend(second);
    ids.resize(2 * width, 0);
    let mut mask = vec![1u32; width];
    mask.extend((0..width).map(|j| u32::from(j < second.len())));
    // The first row's last four tokens and the second row's from its third on, each predicted
    // at the position before it.
    let scored = (width - 4..width).chain(width + 2..width + second.len());
    let positions: Vec<u32> = scored.clone().map(|p| (p - 1) as u32).collect();
    let targets: Vec<u32> = scored.map(|p| ids[p]).collect();
    Batch {
        ids: Tensor::from_vec(ids, (2, width), dev).unwrap(),
        mask: Tensor::from_vec(mask, (2, width), dev).unwrap(),
        positions,
        targets,
    }
}

/// Per-token weights for a loss `Σ wᵢ log pᵢ` whose gradient differs across tokens.
fn weights(n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.5 + (i as f32 * 0.37).sin()).collect()
}

/// The candle-autograd log-probs (with entropy) of the same batch.
fn reference(m: &Qwen25VL, b: &Batch, temperature: f64) -> (Tensor, Tensor) {
    let dev = m.device();
    let (hidden, _) =
        m.prefill_hidden(&b.ids, Some(&b.mask), Some(&pixels(DType::F32, dev)), &[GRID]).unwrap();
    let hidden = hidden.reshape((b.ids.elem_count(), hidden.dim(D::Minus1).unwrap())).unwrap();
    let index = Tensor::new(b.positions.as_slice(), dev).unwrap();
    let logits = (m.lm_head(&hidden.index_select(&index, 0).unwrap()).unwrap() / temperature).unwrap();
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
    let picked =
        logp.gather(&Tensor::new(b.targets.as_slice(), dev).unwrap().unsqueeze(1).unwrap(), 1).unwrap();
    let entropy = (logp.exp().unwrap() * &logp).unwrap().sum(D::Minus1).unwrap().neg().unwrap();
    (picked.squeeze(1).unwrap(), entropy.detach())
}

/// Largest difference relative to the largest magnitude.
fn relative(a: &Tensor, b: &Tensor) -> f32 {
    let diff =
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    diff / scale.max(1e-12)
}

fn check_against_autograd(m: &Qwen25VL, temperature: f64) {
    check_against_twin(m, m, temperature)
}

/// `ours` by hand against `twin` (the same weights and dropout stream) by autograd.
fn check_against_twin(ours: &Qwen25VL, twin: &Qwen25VL, temperature: f64) {
    let m = ours;
    let dev = m.device();
    let b = batch(m.config(), dev);
    let px = pixels(DType::F32, dev);
    let pass = m
        .train_forward(TrainBatch {
            input_ids: &b.ids,
            attention_mask: &b.mask,
            pixel_values: Some(&px),
            grids: &[GRID],
            positions: b.positions.clone(),
            targets: b.targets.clone(),
            temperature,
        })
        .unwrap();
    let (want, want_entropy) = reference(twin, &b, temperature);
    let n = b.targets.len();
    let got = Tensor::from_vec(pass.logprobs.clone(), n, dev).unwrap();
    assert!(relative(&got, &want) < 1e-5, "log-probs differ by {}", relative(&got, &want));
    let entropy = Tensor::from_vec(pass.entropy.clone(), n, dev).unwrap();
    assert!(relative(&entropy, &want_entropy) < 1e-5);
    let w = weights(n);
    let grads =
        (want * Tensor::from_vec(w.clone(), n, dev).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    let grads_by_hand = pass.backward(&w).unwrap();
    let ours = &grads_by_hand;
    assert_eq!(ours.len(), m.trainable().len());
    for ((name, var), (_, twin_var)) in m.trainable().iter().zip(twin.trainable()) {
        let expected =
            grads.get(twin_var.as_tensor()).unwrap_or_else(|| panic!("{name}: no autograd gradient"));
        let got = &ours[&var.as_tensor().id()];
        let err = relative(got, expected);
        assert!(err < 1e-4, "{name}: gradients differ by {err} (relative)");
        assert!(
            got.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0,
            "{name}: zero gradient"
        );
    }
}

fn tiny(cfg: &Config) -> Qwen25VL {
    Qwen25VL::new_random(cfg, 7, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn lora_gradients_match_autograd() {
    let lora = LoraConfig { init: LoraInit::Random, seed: 3, ..LoraConfig::new(4, 8.0) };
    let m = tiny(&Config::tiny()).with_lora(&lora).unwrap();
    assert!(m.hand_backprop_applies());
    check_against_autograd(&m, 0.7);
}

#[test]
fn lora_dropout_draws_the_same_masks_and_gradients_as_autograd() {
    let lora = LoraConfig { init: LoraInit::Random, seed: 3, dropout: 0.3, ..LoraConfig::new(4, 8.0) };
    let base = tiny(&Config::tiny());
    let (ours, twin) = (base.with_lora(&lora).unwrap(), base.with_lora(&lora).unwrap());
    ours.set_training(true);
    twin.set_training(true);
    check_against_twin(&ours, &twin, 1.0);
}

#[test]
fn full_fine_tuning_gradients_match_autograd() {
    let m = tiny(&Config::tiny()).full_finetune().unwrap();
    assert!(m.hand_backprop_applies());
    check_against_autograd(&m, 1.0);
}

#[test]
fn tied_embeddings_sum_both_uses() {
    let mut cfg = Config::tiny();
    cfg.text.tie_word_embeddings = true;
    check_against_autograd(&tiny(&cfg).full_finetune().unwrap(), 1.0);
}

#[test]
fn vision_adapters_get_the_gradient_autograd_gives_them() {
    let lora = LoraConfig { init: LoraInit::Random, seed: 5, vision: true, ..LoraConfig::new(4, 8.0) };
    let m = tiny(&Config::tiny()).with_lora(&lora).unwrap();
    assert!(m.trainable().iter().any(|(name, _)| name.contains("visual.")));
    assert!(m.hand_backprop_applies());
    check_against_autograd(&m, 0.7);
}

#[test]
fn full_fine_tuning_with_the_vision_tower_matches_autograd() {
    let m = tiny(&Config::tiny()).full_finetune_with_vision().unwrap();
    assert!(m.trainable().iter().any(|(name, _)| name == "visual.patch_embed.proj.weight"));
    assert!(m.hand_backprop_applies());
    check_against_autograd(&m, 1.0);
}

#[test]
fn applies_only_to_trainable_models_on_the_cpu_in_f32() {
    let base = tiny(&Config::tiny());
    assert!(!base.hand_backprop_applies(), "nothing to train");
    let half = Qwen25VL::new_random(&Config::tiny(), 7, DType::BF16, &Device::Cpu).unwrap();
    assert!(!half.with_lora(&LoraConfig::new(4, 8.0)).unwrap().hand_backprop_applies(), "bf16");
}
