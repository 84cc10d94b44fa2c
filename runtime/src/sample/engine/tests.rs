//! The engine end to end on the tiny preset: continuous admission really happens and changes no
//! token, and what cannot fit is refused before any work.

use super::super::generate::{engine_options, generate_with, Job, RowSpec, Sample};
use super::super::golden_tests::{golden_requests, tiny};
use super::super::options::SamplerOptions;
use super::{EngineOptions, EngineStats};
use crate::run::ProgressMode;

fn tokens(samples: &[Vec<Sample>]) -> Vec<Vec<u32>> {
    samples.iter().flatten().map(|s| s.token_ids.clone()).collect()
}

/// Rows ending at very different lengths (one stop token in 29, up to 40 tokens): with four rows
/// at once, waiting rows join while others are mid-decode, in fewer steps than fixed batches
/// that run until their longest row ends, and every token equals decoding all rows at once.
#[test]
fn rows_of_very_different_lengths_are_admitted_as_others_end() {
    let vlm = tiny();
    let reqs = golden_requests();
    let vocab = vlm.model.config().text.vocab_size as u32;
    let opts = SamplerOptions {
        max_new_tokens: 40,
        stop_token_ids: Some((0..vocab).step_by(29).collect()),
        seed: 2,
        ..Default::default()
    };
    let jobs: Vec<Job> = reqs
        .iter()
        .map(|request| Job {
            request,
            rows: (0..4).map(|sample_index| RowSpec { logits: opts.logits, sample_index }).collect(),
        })
        .collect();
    let run = |engine: EngineOptions| -> (Vec<Vec<Sample>>, EngineStats) {
        generate_with(&vlm, &jobs, &opts, &engine, None, ProgressMode::Quiet).unwrap()
    };
    let (all, all_stats) = run(engine_options(&opts));
    let (narrow, narrow_stats) = run(EngineOptions { max_seqs: 4, ..engine_options(&opts) });
    let (fixed, fixed_stats) = run(EngineOptions { max_seqs: 4, continuous: false, ..engine_options(&opts) });
    let lengths: Vec<usize> = all.iter().flatten().map(|s| s.token_ids.len()).collect();
    let (shortest, longest) = (lengths.iter().min().unwrap(), lengths.iter().max().unwrap());
    assert!(*shortest <= 10 && *longest >= 30, "lengths should vary widely: {lengths:?}");
    assert_eq!(tokens(&narrow), tokens(&all));
    assert_eq!(tokens(&fixed), tokens(&all));
    assert_eq!(all_stats.peak_rows, 24);
    assert_eq!(all_stats.rows_admitted_mid_decode, 0);
    assert!(narrow_stats.rows_admitted_mid_decode > 0, "{narrow_stats:?}");
    assert_eq!(fixed_stats.rows_admitted_mid_decode, 0);
    assert!(narrow_stats.peak_rows <= 4 && fixed_stats.peak_rows <= 4);
    assert!(narrow_stats.decode_steps < fixed_stats.decode_steps, "{narrow_stats:?} vs {fixed_stats:?}");
    // One prefill per request: its samples share it, and the vision tower ran once per image.
    for stats in [all_stats, narrow_stats, fixed_stats] {
        assert_eq!(stats.prefills, reqs.len());
        // 3 layers x (k, v) x 2 kv heads x 16 dims x 4 bytes per position.
        assert_eq!(stats.kv_cache_bytes, (stats.pool_blocks * 16 * 768) as u64);
    }
}

/// A request whose prompt and one sample exceed `max_batch_tokens` is refused before any work,
/// with the numbers and the option to raise.
#[test]
fn a_request_that_cannot_fit_alone_is_a_clear_error() {
    let vlm = tiny();
    let reqs = golden_requests();
    let jobs =
        [Job { request: &reqs[0], rows: vec![RowSpec { logits: Default::default(), sample_index: 0 }] }];
    let opts = SamplerOptions { max_new_tokens: 40, max_batch_tokens: 32, ..Default::default() };
    let err = generate_with(&vlm, &jobs, &opts, &engine_options(&opts), None, ProgressMode::Quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sampling question golden/0: a prompt of"), "{err}");
    assert!(err.contains("more than sampler option max_batch_tokens = 32"), "{err}");
    assert!(err.contains("raise max_batch_tokens to at least"), "{err}");
}

/// In bf16 the pool is not f32, so every step takes the gather-and-mask attention, the candle
/// ops CUDA runs: its samples are whole and finite, and do not depend on the rows at once.
#[test]
fn bf16_samples_take_the_device_agnostic_path_and_do_not_depend_on_batching() {
    let init = crate::models::vlm::RandomInit {
        dtype: candle_core::DType::BF16,
        ..crate::models::vlm::RandomInit::new(3, &candle_core::Device::Cpu)
    };
    let vlm = crate::models::Vlm::new_preset_with("qwen2_5_vl_tiny", &init).unwrap();
    let reqs = golden_requests();
    let opts =
        SamplerOptions { n: 3, max_new_tokens: 12, stop_token_ids: Some(vec![]), ..Default::default() };
    let jobs: Vec<Job> = reqs
        .iter()
        .map(|request| Job {
            request,
            rows: (0..3).map(|sample_index| RowSpec { logits: opts.logits, sample_index }).collect(),
        })
        .collect();
    let run = |max_seqs: usize| {
        let engine = EngineOptions { max_seqs, ..engine_options(&opts) };
        generate_with(&vlm, &jobs, &opts, &engine, None, ProgressMode::Quiet).unwrap()
    };
    let (wide, stats) = run(64);
    assert_eq!(stats.kv_cache_bytes, (stats.pool_blocks * 16 * 384) as u64, "bf16 halves the pool");
    for s in wide.iter().flatten() {
        assert_eq!(s.token_ids.len(), 12);
        assert!(s.logprobs.iter().all(|p| p.is_finite() && *p <= 0.0), "{:?}", s.logprobs);
    }
    assert_eq!(tokens(&run(1).0), tokens(&wide));
}

/// `memory_plan`'s rollout KV cache bounds the pool the engine really allocates for a GRPO group:
/// G samples of one prompt, each to its full length, at any `max_seqs`.
#[test]
fn memory_plans_kv_cache_bounds_the_engines_pool_for_a_group() {
    let vlm = tiny();
    let reqs = golden_requests();
    let (group, new_tokens) = (8, 20);
    let opts =
        SamplerOptions { max_new_tokens: new_tokens, stop_token_ids: Some(vec![]), ..Default::default() };
    let request = &reqs[0];
    let rows = (0..group as u64).map(|sample_index| RowSpec { logits: opts.logits, sample_index }).collect();
    let jobs = [Job { request, rows }];
    let prompt = vlm.processor.prompt_len(request.image.as_ref(), &request.prompt).unwrap();
    let cfg = vlm.model.config();
    let planned =
        crate::train::memory_plan::kv_cache_bytes(cfg, group, prompt + new_tokens, vlm.model.dtype());
    for max_seqs in [1, 3, 8] {
        let engine = EngineOptions { max_seqs, ..engine_options(&opts) };
        let (samples, stats) = generate_with(&vlm, &jobs, &opts, &engine, None, ProgressMode::Quiet).unwrap();
        assert!(samples[0].iter().all(|s| s.token_ids.len() == new_tokens));
        assert!(
            stats.kv_cache_bytes > 0 && stats.kv_cache_bytes <= planned,
            "{stats:?} vs planned {planned}"
        );
    }
}
