//! The prefix-sharing benchmark behind `medbridge bench`: K samples per question decoded from one
//! shared prefill against K separate prefills, same seeds, same batching budget.
//!
//! Stop tokens are turned off so every sample is exactly `max_new_tokens` long and both runs do
//! the same decoding work; only the prefill differs. Both runs must give the same tokens, which
//! the report records.

use std::time::Instant;

use super::generate::{generate, sample, Job, RowSpec, Sample, SampleRequest};
use super::options::SamplerOptions;
use crate::bail;
use crate::error::Result;
use crate::models::vlm::Vlm;
use crate::run::ProgressMode;

#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub questions: usize,
    pub k: usize,
    pub max_new_tokens: usize,
    /// Generated tokens per run (questions × k × max_new_tokens).
    pub tokens: usize,
    pub seconds_shared_prefill: f64,
    pub seconds_separate_prefills: f64,
    pub tokens_per_s_shared_prefill: f64,
    pub tokens_per_s_separate_prefills: f64,
    /// `tokens_per_s_shared_prefill / tokens_per_s_separate_prefills`.
    pub speedup: f64,
    /// Whether both runs produced the same tokens.
    pub identical: bool,
}

/// Time `k` samples of every question (temperature 1, seed 0) both ways.
pub fn bench_sampling(
    vlm: &Vlm,
    questions: &[SampleRequest],
    k: usize,
    max_new_tokens: usize,
) -> Result<BenchReport> {
    if questions.is_empty() {
        bail!("bench: no questions to sample");
    }
    let opts =
        SamplerOptions { n: k, max_new_tokens, stop_token_ids: Some(Vec::new()), ..Default::default() };
    opts.validate()?;

    let start = Instant::now();
    let shared = sample(vlm, questions, &opts, None, ProgressMode::Auto)?;
    let seconds_shared_prefill = start.elapsed().as_secs_f64();

    let jobs: Vec<Job> = questions
        .iter()
        .flat_map(|request| {
            (0..k as u64).map(move |sample_index| Job {
                request,
                rows: vec![RowSpec { logits: opts.logits, sample_index }],
            })
        })
        .collect();
    let start = Instant::now();
    let separate = generate(vlm, &jobs, &opts, None, ProgressMode::Auto)?;
    let seconds_separate_prefills = start.elapsed().as_secs_f64();

    let tokens_of = |runs: &[Vec<Sample>]| -> Vec<Vec<u32>> {
        runs.iter().flatten().map(|s| s.token_ids.clone()).collect()
    };
    let tokens = questions.len() * k * max_new_tokens;
    let per_s = |seconds: f64| tokens as f64 / seconds.max(f64::MIN_POSITIVE);
    let (shared_rate, separate_rate) = (per_s(seconds_shared_prefill), per_s(seconds_separate_prefills));
    Ok(BenchReport {
        questions: questions.len(),
        k,
        max_new_tokens,
        tokens,
        seconds_shared_prefill,
        seconds_separate_prefills,
        tokens_per_s_shared_prefill: shared_rate,
        tokens_per_s_separate_prefills: separate_rate,
        speedup: shared_rate / separate_rate,
        identical: tokens_of(&shared) == tokens_of(&separate),
    })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::sample::generate::tests::requests;

    #[test]
    fn both_ways_give_the_same_tokens_and_count_them() {
        let vlm = Vlm::new_preset("qwen2_5_vl_tiny", 1, &Device::Cpu).unwrap();
        let report = bench_sampling(&vlm, &requests()[..3], 4, 5).unwrap();
        assert!(report.identical);
        assert_eq!(report.tokens, 3 * 4 * 5);
        assert!(report.tokens_per_s_shared_prefill > 0.0 && report.speedup > 0.0);
        assert!(bench_sampling(&vlm, &[], 4, 5).unwrap_err().to_string().contains("no questions"));
    }

    /// `cargo test --release -p medbridge-runtime bench_tiny_k16_x32 -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing run, not a check"]
    fn bench_tiny_k16_x32() {
        let vlm = Vlm::new_preset("qwen2_5_vl_tiny", 0, &Device::Cpu).unwrap();
        let base = requests();
        let questions: Vec<SampleRequest> = (0..32)
            .map(|i| SampleRequest { question_id: format!("bench/{i}"), ..base[i % base.len()].clone() })
            .collect();
        let report = bench_sampling(&vlm, &questions, 16, 16).unwrap();
        println!("{report:#?}");
        assert!(report.identical);
    }
}
