//! The sampler against a recorded golden file: `tests/fixtures/sampler_golden.json` holds the
//! tokens, log-probabilities, finish reasons and texts the sampler gave on the tiny preset for a
//! fixed, varied request set (non-square images of different sizes, a prompt without an image,
//! several temperatures and filters, K > 1, stop tokens and stop strings).
//!
//! The file was recorded from the dense, batch-until-the-longest-row-ends sampler before the
//! paged engine replaced it, so this test is the engine's proof that it changes nothing a caller
//! sees. To re-record it (only when a change to the samples is intended):
//! `MEDBRIDGE_RECORD_GOLDEN=1 cargo test --release -p medbridge-runtime --lib record_sampler_golden -- --ignored`.

use std::path::PathBuf;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::engine::EngineOptions;
use super::generate::{engine_options, generate_with, FinishReason, Job, RowSpec, Sample, SampleRequest};
use super::logits::LogitsOptions;
use super::options::SamplerOptions;
use crate::image::Image;
use crate::models::vlm::Vlm;
use crate::run::ProgressMode;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GoldenRow {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    sample_index: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GoldenJob {
    /// Index into [`golden_requests`].
    request: usize,
    rows: Vec<GoldenRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct GoldenSample {
    token_ids: Vec<u32>,
    logprobs: Vec<f32>,
    finish_reason: String,
    text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GoldenCall {
    seed: u64,
    max_new_tokens: usize,
    stop_token_ids: Option<Vec<u32>>,
    stop_strings: Vec<String>,
    jobs: Vec<GoldenJob>,
    samples: Vec<Vec<GoldenSample>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Golden {
    note: String,
    calls: Vec<GoldenCall>,
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sampler_golden.json")
}

pub(crate) fn tiny() -> Vlm {
    Vlm::new_preset("qwen2_5_vl_tiny", 3, &Device::Cpu).unwrap()
}

fn image(width: u32, height: u32, shade: u8) -> Image {
    let pixels: Vec<u8> =
        (0..width * height * 3).map(|i| (i as u8).wrapping_mul(31).wrapping_add(shade)).collect();
    Image::new(width, height, 3, pixels).unwrap()
}

/// Prompts of different lengths; images of different non-square sizes and one prompt without.
pub(crate) fn golden_requests() -> Vec<SampleRequest> {
    let cases: [(&str, Option<(u32, u32)>); 6] = [
        ("What is shown?", Some((28, 56))),
        ("Is there a lesion in this image? Answer yes or no, then say why in a sentence.", Some((56, 42))),
        ("Grade it.", None),
        ("A or B?", Some((42, 28))),
        ("Describe the tissue in one word.", Some((84, 28))),
        ("Which organ is shown here, and which side of the body is it on?", Some((28, 70))),
    ];
    cases
        .iter()
        .enumerate()
        .map(|(i, (prompt, size))| SampleRequest {
            question_id: format!("golden/{i}"),
            image: size.map(|(w, h)| image(w, h, i as u8 * 45)),
            prompt: prompt.to_string(),
        })
        .collect()
}

fn row(temperature: f32, top_k: usize, top_p: f32, min_p: f32, sample_index: u64) -> GoldenRow {
    GoldenRow { temperature, top_k, top_p, min_p, sample_index }
}

/// Rows of every request: greedy, plain, filtered, hot and cold, one to four samples.
fn varied_jobs() -> Vec<GoldenJob> {
    vec![
        GoldenJob { request: 0, rows: (0..3).map(|i| row(1.0, 0, 1.0, 0.0, i)).collect() },
        GoldenJob { request: 1, rows: vec![row(0.0, 0, 1.0, 0.0, 0)] },
        GoldenJob { request: 2, rows: (0..2).map(|i| row(0.7, 20, 1.0, 0.0, i)).collect() },
        GoldenJob { request: 3, rows: (0..4).map(|i| row(1.3, 0, 0.9, 0.0, i)).collect() },
        GoldenJob { request: 4, rows: (0..2).map(|i| row(0.5, 0, 1.0, 0.05, i)).collect() },
        GoldenJob { request: 5, rows: vec![row(1.0, 0, 1.0, 0.0, 7), row(0.0, 0, 1.0, 0.0, 1)] },
    ]
}

/// The call's samples under `opts` and `engine` (the engine options `opts` gives when `None`),
/// with the jobs submitted in reverse order when `reversed` (the samples come back in call order).
fn run_call(
    vlm: &Vlm,
    reqs: &[SampleRequest],
    call: &GoldenCall,
    opts: &SamplerOptions,
    engine: Option<EngineOptions>,
    reversed: bool,
) -> Vec<Vec<Sample>> {
    let mut jobs: Vec<Job> = call
        .jobs
        .iter()
        .map(|j| Job {
            request: &reqs[j.request],
            rows: j
                .rows
                .iter()
                .map(|r| RowSpec {
                    logits: LogitsOptions {
                        temperature: r.temperature,
                        top_k: r.top_k,
                        top_p: r.top_p,
                        min_p: r.min_p,
                    },
                    sample_index: r.sample_index,
                })
                .collect(),
        })
        .collect();
    let opts = SamplerOptions {
        seed: call.seed,
        max_new_tokens: call.max_new_tokens,
        stop_token_ids: call.stop_token_ids.clone(),
        stop_strings: call.stop_strings.clone(),
        ..opts.clone()
    };
    if reversed {
        jobs.reverse();
    }
    let engine = engine.unwrap_or_else(|| engine_options(&opts));
    let mut samples = generate_with(vlm, &jobs, &opts, &engine, None, ProgressMode::Quiet).unwrap().0;
    if reversed {
        samples.reverse();
    }
    samples
}

fn record(samples: &[Vec<Sample>]) -> Vec<Vec<GoldenSample>> {
    samples
        .iter()
        .map(|group| {
            group
                .iter()
                .map(|s| GoldenSample {
                    token_ids: s.token_ids.clone(),
                    logprobs: s.logprobs.clone(),
                    finish_reason: s.finish_reason.as_str().to_string(),
                    text: s.text.clone(),
                })
                .collect()
        })
        .collect()
}

/// Re-records the golden file from the sampler as it is now (see the module header).
#[test]
#[ignore = "writes tests/fixtures/sampler_golden.json; run only to re-record it"]
fn record_sampler_golden() {
    if std::env::var("MEDBRIDGE_RECORD_GOLDEN").as_deref() != Ok("1") {
        panic!("set MEDBRIDGE_RECORD_GOLDEN=1 to overwrite the golden file");
    }
    let vlm = tiny();
    let reqs = golden_requests();
    let base = SamplerOptions::default();
    let mut varied = GoldenCall {
        seed: 5,
        max_new_tokens: 14,
        stop_token_ids: None,
        stop_strings: Vec::new(),
        jobs: varied_jobs(),
        samples: Vec::new(),
    };
    let free = run_call(&vlm, &reqs, &varied, &base, None, false);
    varied.samples = record(&free);
    // Stops drawn from the free run, so they do occur: a token one sample makes at its sixth
    // step, and a two-character piece of another sample's text.
    let stop_token = free[0][1].token_ids[5];
    let text: Vec<char> = free[0][0].text.chars().collect();
    let stop_string: String = text[4..6].iter().collect();
    let mut stops = GoldenCall {
        seed: 5,
        max_new_tokens: 16,
        stop_token_ids: Some(vec![stop_token]),
        stop_strings: vec![stop_string],
        jobs: varied_jobs(),
        samples: Vec::new(),
    };
    stops.samples = record(&run_call(&vlm, &reqs, &stops, &base, None, false));
    let reasons: Vec<&str> = stops.samples.iter().flatten().map(|s| s.finish_reason.as_str()).collect();
    assert!(
        reasons.contains(&"stop") && reasons.contains(&"stop_string") && reasons.contains(&"length"),
        "{reasons:?} {:?}",
        stops.stop_strings
    );
    let golden = Golden {
        note: "Recorded by runtime/src/sample/golden_tests.rs (record_sampler_golden) on the tiny preset, seed 3."
            .into(),
        calls: vec![varied, stops],
    };
    std::fs::write(golden_path(), serde_json::to_string(&golden).unwrap() + "\n").unwrap();
}

fn load() -> Golden {
    let text = std::fs::read_to_string(golden_path()).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every recorded call, replayed under `opts`' batching (and `engine`'s, when given), gives the
/// recorded tokens, finish reasons and texts, and log-probabilities within 1e-4.
fn assert_matches_golden(vlm: &Vlm, opts: &SamplerOptions, engine: Option<EngineOptions>, reversed: bool) {
    let reqs = golden_requests();
    for (c, call) in load().calls.iter().enumerate() {
        let got = record(&run_call(vlm, &reqs, call, opts, engine, reversed));
        assert_eq!(got.len(), call.samples.len());
        for (j, (g, want)) in got.iter().zip(&call.samples).enumerate() {
            assert_eq!(g.len(), want.len(), "call {c} job {j}");
            for (i, (g, w)) in g.iter().zip(want).enumerate() {
                let at = format!("call {c} job {j} row {i} under {opts:?}, {engine:?}, reversed {reversed}");
                assert_eq!(g.token_ids, w.token_ids, "{at}");
                assert_eq!((&g.finish_reason, &g.text), (&w.finish_reason, &w.text), "{at}");
                for (p, q) in g.logprobs.iter().zip(&w.logprobs) {
                    assert!((p - q).abs() < 1e-4, "{at}: logprob {p} vs {q}");
                }
            }
        }
    }
}

#[test]
fn the_sampler_gives_the_recorded_samples() {
    assert_matches_golden(&tiny(), &SamplerOptions::default(), None, false);
}

/// The same samples whatever the batching: one row at a time, 7 and 64 rows, budgets from one
/// request's worth of blocks up, one request at a time, the requests reversed, and the
/// gather-and-mask attention every device runs instead of the in-place CPU kernel.
#[test]
fn the_recorded_samples_do_not_depend_on_batching() {
    let vlm = tiny();
    let base = SamplerOptions::default();
    for max_seqs in [1, 7, 64] {
        assert_matches_golden(&vlm, &SamplerOptions { max_seqs, ..base.clone() }, None, false);
    }
    // The longest golden prompt with 16 new tokens needs 7 blocks of 16 alone.
    for max_batch_tokens in [112, 300, 1000] {
        assert_matches_golden(&vlm, &SamplerOptions { max_batch_tokens, ..base.clone() }, None, false);
    }
    assert_matches_golden(&vlm, &SamplerOptions { batch: Some(1), ..base.clone() }, None, false);
    assert_matches_golden(&vlm, &SamplerOptions { max_seqs: 7, ..base.clone() }, None, true);
    let gather = EngineOptions { cpu_kernel: false, ..engine_options(&base) };
    assert_matches_golden(&vlm, &base, Some(gather), false);
    let fixed = EngineOptions { continuous: false, max_seqs: 5, ..engine_options(&base) };
    assert_matches_golden(&vlm, &base, Some(fixed), true);
}

#[test]
fn the_golden_file_covers_every_finish_reason() {
    let golden = load();
    let reasons: Vec<&str> = golden
        .calls
        .iter()
        .flat_map(|c| c.samples.iter().flatten())
        .map(|s| s.finish_reason.as_str())
        .collect();
    for reason in [FinishReason::Stop, FinishReason::Length, FinishReason::StopString] {
        assert!(reasons.contains(&reason.as_str()), "{reason:?}");
    }
}
