//! The sampling benchmarks behind `medbridge bench`, each comparing two runs of the same rows
//! (same seeds, so both must give the same tokens, which the reports record):
//!
//! - [`bench_sampling`]: K samples per question decoded from one shared prefill against K
//!   separate prefills. Stop tokens are turned off so every sample is exactly `max_new_tokens`
//!   long and both runs do the same decoding work; only the prefill differs.
//! - [`bench_variable_lengths`]: samples that end at very different lengths (a stop token set of
//!   one vocabulary id in [`STOP_EVERY`]), decoded by the engine with continuous batching
//!   against fixed batches of the same size that each run until their longest row ends, as the
//!   sampler before the engine did.

use super::engine::EngineStats;
use super::generate::{engine_options, generate, generate_with, sample, Job, RowSpec, Sample, SampleRequest};
use super::options::SamplerOptions;
use crate::bail;
use crate::bench::timed;
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

/// Every sample's tokens, in order: what two runs of the same rows must agree on.
fn tokens_of(runs: &[Vec<Sample>]) -> Vec<Vec<u32>> {
    runs.iter().flatten().map(|s| s.token_ids.clone()).collect()
}

/// Time `k` samples of every question (temperature 1, seed 0) both ways, each the median of
/// `repeats` runs after a warm-up.
pub fn bench_sampling(
    vlm: &Vlm,
    questions: &[SampleRequest],
    k: usize,
    max_new_tokens: usize,
    repeats: usize,
) -> Result<BenchReport> {
    if questions.is_empty() {
        bail!("bench: no questions to sample");
    }
    let opts =
        SamplerOptions { n: k, max_new_tokens, stop_token_ids: Some(Vec::new()), ..Default::default() };
    opts.validate()?;

    let (shared, seconds_shared_prefill) =
        timed(repeats, || sample(vlm, questions, &opts, None, ProgressMode::Auto))?;

    let jobs: Vec<Job> = questions
        .iter()
        .flat_map(|request| {
            (0..k as u64).map(move |sample_index| Job {
                request,
                rows: vec![RowSpec { logits: opts.logits, sample_index }],
            })
        })
        .collect();
    let (separate, seconds_separate_prefills) =
        timed(repeats, || generate(vlm, &jobs, &opts, None, ProgressMode::Auto))?;

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

/// The variable-length workload stops a sample at any vocabulary id that is a multiple of this:
/// on near-uniform next-token distributions a sample then ends after about this many tokens,
/// geometrically distributed, many far sooner and some only at `max_new_tokens`.
pub const STOP_EVERY: u32 = 50;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VariableLengthReport {
    pub questions: usize,
    pub k: usize,
    pub max_new_tokens: usize,
    /// Rows decoded at once in both runs.
    pub max_seqs: usize,
    /// Generated tokens (the same in both runs), and the shortest and longest sample.
    pub tokens: usize,
    pub shortest: usize,
    pub longest: usize,
    pub seconds_continuous: f64,
    pub seconds_fixed_batches: f64,
    pub tokens_per_s_continuous: f64,
    pub tokens_per_s_fixed_batches: f64,
    /// `tokens_per_s_continuous / tokens_per_s_fixed_batches`.
    pub speedup: f64,
    pub decode_steps_continuous: usize,
    pub decode_steps_fixed_batches: usize,
    pub rows_admitted_mid_decode: usize,
    pub identical: bool,
}

/// An engine run's samples and what the engine did.
type Engined = (Vec<Vec<Sample>>, EngineStats);

/// Time `k` samples of every question (temperature 1, seed 0, stop ids every [`STOP_EVERY`]
/// vocabulary ids, up to `max_new_tokens`) with `max_seqs` rows at once, continuously and in
/// fixed batches, each the median of `repeats` runs after a warm-up.
pub fn bench_variable_lengths(
    vlm: &Vlm,
    questions: &[SampleRequest],
    k: usize,
    max_new_tokens: usize,
    max_seqs: usize,
    repeats: usize,
) -> Result<VariableLengthReport> {
    if questions.is_empty() {
        bail!("bench: no questions to sample");
    }
    let vocab = vlm.model.config().text.vocab_size as u32;
    let opts = SamplerOptions {
        n: k,
        max_new_tokens,
        stop_token_ids: Some((0..vocab).step_by(STOP_EVERY as usize).collect()),
        max_seqs,
        // Rows, not KV positions, bound both runs.
        max_batch_tokens: usize::MAX / 2,
        ..Default::default()
    };
    opts.validate()?;
    let rows: Vec<RowSpec> =
        (0..k as u64).map(|sample_index| RowSpec { logits: opts.logits, sample_index }).collect();
    let jobs: Vec<Job> = questions.iter().map(|request| Job { request, rows: rows.clone() }).collect();
    let run = |continuous: bool| -> Result<(Engined, f64)> {
        let engine = super::engine::EngineOptions { continuous, ..engine_options(&opts) };
        timed(repeats, || generate_with(vlm, &jobs, &opts, &engine, None, ProgressMode::Auto))
    };
    let ((continuous, stats_continuous), seconds_continuous) = run(true)?;
    let ((fixed, stats_fixed), seconds_fixed_batches) = run(false)?;
    let lengths: Vec<usize> = continuous.iter().flatten().map(|s| s.token_ids.len()).collect();
    let tokens: usize = lengths.iter().sum();
    let per_s = |seconds: f64| tokens as f64 / seconds.max(f64::MIN_POSITIVE);
    Ok(VariableLengthReport {
        questions: questions.len(),
        k,
        max_new_tokens,
        max_seqs,
        tokens,
        shortest: lengths.iter().copied().min().unwrap_or(0),
        longest: lengths.iter().copied().max().unwrap_or(0),
        seconds_continuous,
        seconds_fixed_batches,
        tokens_per_s_continuous: per_s(seconds_continuous),
        tokens_per_s_fixed_batches: per_s(seconds_fixed_batches),
        speedup: seconds_fixed_batches / seconds_continuous.max(f64::MIN_POSITIVE),
        decode_steps_continuous: stats_continuous.decode_steps,
        decode_steps_fixed_batches: stats_fixed.decode_steps,
        rows_admitted_mid_decode: stats_continuous.rows_admitted_mid_decode,
        identical: tokens_of(&continuous) == tokens_of(&fixed),
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
        let report = bench_sampling(&vlm, &requests()[..3], 4, 5, 1).unwrap();
        assert!(report.identical);
        assert_eq!(report.tokens, 3 * 4 * 5);
        assert!(report.tokens_per_s_shared_prefill > 0.0 && report.speedup > 0.0);
        assert!(bench_sampling(&vlm, &[], 4, 5, 1).unwrap_err().to_string().contains("no questions"));
        let report = bench_variable_lengths(&vlm, &requests(), 4, 60, 6, 1).unwrap();
        assert!(report.identical && report.rows_admitted_mid_decode > 0, "{report:?}");
        assert!(report.shortest < report.longest && report.tokens >= report.longest);
        assert!(report.decode_steps_continuous < report.decode_steps_fixed_batches, "{report:?}");
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
        let report = bench_sampling(&vlm, &questions, 16, 16, 3).unwrap();
        println!("{report:#?}");
        assert!(report.identical);
    }
}
