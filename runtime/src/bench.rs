//! Benchmarks of the model itself, reported by `medbridge bench` beside transformers' numbers
//! from `tests/fixtures/bench_transformers.py`: full forward passes over the fixture's inputs
//! (vision tower + language model, no cache, batch 1), timed as the median of repeats after a
//! warm-up — the same protocol the Python script uses. [`training`] times SFT and GRPO steps.

pub mod training;

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::error::Result;
use crate::image::Image;
use crate::models::Vlm;

#[derive(Debug, Clone, Serialize)]
pub struct ForwardBench {
    pub model: String,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
}

/// `f`'s result (from its warm-up run) and its median wall time over `repeats` runs after that
/// warm-up: the protocol the Python references use.
pub fn timed<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<(T, f64)> {
    let out = f()?;
    let mut times = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((out, times[times.len() / 2]))
}

/// Forward tokens/s of `vlm` over each (image, prompt), summed as the Python script sums them.
pub fn bench_forward(vlm: &Vlm, inputs: &[(Image, String)], repeats: usize) -> Result<ForwardBench> {
    let (mut tokens, mut seconds) = (0, 0.0);
    for (image, prompt) in inputs {
        let enc = vlm.encode(Some(image), prompt)?;
        let ids = Tensor::new(enc.input_ids.as_slice(), vlm.device())?.unsqueeze(0)?;
        let grids: Vec<[usize; 3]> = enc.grid_thw.into_iter().collect();
        seconds += timed(repeats, || vlm.model.forward(&ids, enc.pixel_values.as_ref(), &grids))?.1;
        tokens += enc.input_ids.len();
    }
    Ok(ForwardBench { model: vlm.source.clone(), tokens, seconds, tokens_per_s: tokens as f64 / seconds })
}

/// The parity fixture's images, in the order the Python benchmarks read them.
pub const FIXTURE_IMAGES: [&str; 2] = ["image_grid.png", "image_resize.png"];

/// The parity fixture's two images with its prompt (the inputs `bench_transformers.py` uses).
pub fn fixture_inputs(fixture: &Path) -> Result<Vec<(Image, String)>> {
    let text =
        std::fs::read_to_string(fixture.join("reference.json")).map_err(|e| crate::Error::io(fixture, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let prompt = json["prompt"].as_str().unwrap_or_default().to_string();
    FIXTURE_IMAGES.iter().map(|name| Ok((Image::open(&fixture.join(name))?, prompt.clone()))).collect()
}

/// The multiple-choice questions `bench_transformers.py` samples (its `QUESTIONS`, same order);
/// benchmark question i is `SAMPLING_QUESTIONS[i mod 8]` about fixture image i mod 2.
pub const SAMPLING_QUESTIONS: [&str; 8] = [
    "Which organ is shown? A. liver B. kidney C. spleen D. lung",
    "What tissue does this pathology slide show? A. adipose B. mucus C. debris D. lymphocytes",
    "Which skin lesion is shown? A. melanoma B. melanocytic nevi C. dermatofibroma D. vascular lesions",
    "What does this chest X-ray show? A. normal B. pneumonia",
    "Which blood cell is shown? A. basophil B. eosinophil C. neutrophil D. platelet",
    "What retinal finding does this OCT scan show? A. drusen B. normal C. diabetic macular edema D. choroidal neovascularization",
    "Which breast finding is shown? A. malignant B. normal or benign",
    "What diabetic retinopathy grade is shown? A. grade 0 B. grade 1 C. grade 2 D. grade 3",
];

/// Benchmark question i: `SAMPLING_QUESTIONS[i mod 8]` about image i mod 2.
fn sampling_requests(images: &[(Image, String)], questions: usize) -> Vec<crate::sample::SampleRequest> {
    (0..questions)
        .map(|i| crate::sample::SampleRequest {
            question_id: format!("bench/{i}"),
            image: Some(images[i % images.len()].0.clone()),
            prompt: SAMPLING_QUESTIONS[i % SAMPLING_QUESTIONS.len()].to_string(),
        })
        .collect()
}

/// K samples of each of `questions` benchmark questions with one shared prefill, and with K
/// separate prefills.
pub fn bench_sampling_questions(
    vlm: &Vlm,
    images: &[(Image, String)],
    questions: usize,
    k: usize,
    max_new_tokens: usize,
    repeats: usize,
) -> Result<crate::sample::BenchReport> {
    crate::sample::bench_sampling(vlm, &sampling_requests(images, questions), k, max_new_tokens, repeats)
}

/// K samples of each benchmark question ending at very different lengths, decoded with
/// continuous batching and in fixed batches of `max_seqs` rows.
pub fn bench_variable_length_questions(
    vlm: &Vlm,
    images: &[(Image, String)],
    questions: usize,
    k: usize,
    max_new_tokens: usize,
    max_seqs: usize,
    repeats: usize,
) -> Result<crate::sample::VariableLengthReport> {
    let requests = sampling_requests(images, questions);
    crate::sample::bench_variable_lengths(vlm, &requests, k, max_new_tokens, max_seqs, repeats)
}

/// The tiny preset timed on the same inputs, for scale.
pub fn bench_tiny(inputs: &[(Image, String)], repeats: usize) -> Result<ForwardBench> {
    let vlm = Vlm::new_preset("qwen2_5_vl_tiny", 0, &Device::Cpu)?;
    bench_forward(&vlm, inputs, repeats)
}
