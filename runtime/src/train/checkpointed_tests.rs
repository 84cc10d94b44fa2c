//! The checkpointed autograd pass against plain autograd on the same batch: every trainable
//! gradient equal, for LoRA with dropout (the masks must be replayed), LoRA on the vision tower
//! too (the embedding keeps its graph), and full fine-tuning with tied embeddings (the table is
//! both the first and the last layer).

use candle_core::{DType, Device, Tensor};

use super::token_logprobs::{score_tokens, Sequence, TokenScores};
use crate::models::qwen2_5_vl::tests::{pixels, prompt, GRID};
use crate::models::qwen2_5_vl::{Config, LoraConfig, LoraInit, Qwen25VL};

/// Two right-padded sequences: an image prompt with a completion, and a short text one.
fn sequences(cfg: &Config) -> (Vec<Vec<u32>>, Vec<Vec<bool>>) {
    let mut first = prompt(cfg);
    let n = first.len();
    first.extend([40, 41, 42, 43]);
    let second = vec![7u32, 8, 9, 10, 11, 12];
    let scored =
        vec![(0..first.len()).map(|i| i >= n).collect(), (0..second.len()).map(|i| i >= 2).collect()];
    (vec![first, second], scored)
}

/// Per-token weights, so tokens' gradients differ (as GRPO's advantages make them).
fn loss(scores: &TokenScores) -> Tensor {
    let w: Vec<f32> = (0..scores.len()).map(|i| 0.5 + (i as f32 * 0.37).sin()).collect();
    let w = Tensor::new(w.as_slice(), scores.logprobs.device()).unwrap();
    (&scores.logprobs * w).unwrap().sum_all().unwrap().neg().unwrap()
}

/// The gradients of [`loss`] by `score`, in the order of `model.trainable()`.
fn gradients(model: &Qwen25VL, checkpointed: bool) -> Vec<Vec<f32>> {
    let px = pixels(model.dtype(), model.device());
    let (ids, scored) = sequences(model.config());
    let seqs = [
        Sequence { ids: &ids[0], scored: &scored[0], pixel_values: Some(&px), grid: Some(GRID) },
        Sequence { ids: &ids[1], scored: &scored[1], pixel_values: None, grid: None },
    ];
    model.set_training(true);
    let scores = match checkpointed {
        true => super::token_logprobs::score_tokens_checkpointed(model, &seqs, 0, 0.8).unwrap(),
        false => score_tokens(model, &seqs, 0, 0.8).unwrap(),
    };
    let grads = scores.backward(&loss(&scores)).unwrap();
    model
        .trainable()
        .iter()
        .map(|(name, var)| {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has no gradient"));
            g.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
        })
        .collect()
}

/// `make` builds the same model twice (same weights, same dropout seed), one per pass.
fn assert_same_gradients(what: &str, make: impl Fn() -> Qwen25VL) {
    let (plain, checkpointed) = (gradients(&make(), false), gradients(&make(), true));
    let names: Vec<String> = make().trainable().iter().map(|(n, _)| n.clone()).collect();
    assert!(!names.is_empty());
    for ((name, a), b) in names.iter().zip(&plain).zip(&checkpointed) {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
        let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-5 * scale.max(1.0), "{what}: {name} differs by {diff} (scale {scale})");
    }
}

fn base() -> Qwen25VL {
    Qwen25VL::new_random(&Config::tiny(), 7, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn checkpointed_lora_with_dropout_equals_autograd() {
    let lora = LoraConfig { init: LoraInit::Random, seed: 5, dropout: 0.2, ..LoraConfig::new(4, 8.0) };
    assert_same_gradients("lora", || base().with_lora(&lora).unwrap());
}

#[test]
fn checkpointed_vision_lora_equals_autograd() {
    let lora = LoraConfig { init: LoraInit::Random, seed: 5, vision: true, ..LoraConfig::new(4, 8.0) };
    assert_same_gradients("vision lora", || base().with_lora(&lora).unwrap());
}

#[test]
fn checkpointed_full_finetune_with_tied_embeddings_equals_autograd() {
    let mut cfg = Config::tiny();
    cfg.text.tie_word_embeddings = true;
    let make = || Qwen25VL::new_random(&cfg, 7, DType::F32, &Device::Cpu).unwrap().full_finetune().unwrap();
    assert_same_gradients("full, tied", make);
}
