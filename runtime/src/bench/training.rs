//! Training-step benchmarks for `medbridge bench`: seconds per SFT step and per GRPO step with
//! LoRA, through the same [`sft`] and [`grpo`] a script calls, on a small multiple-choice task
//! over the parity fixture's images. The workload is written out as JSON
//! ([`TrainingWorkload::to_json`]) so `tests/fixtures/bench_training.py` trains transformers +
//! PEFT and TRL's `GRPOTrainer` on the same examples, batch, group and completion length.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::Result;
use crate::image::Image;
use crate::models::qwen2_5_vl::LoraConfig;
use crate::models::Vlm;
use crate::task::mcq::{AnswerFormat, McqItem, McqTask};
use crate::train::{grpo, sft, GrpoOptions, GrpoStepOptions, Schedule, SftOptions, TrainContext};

/// The benchmark's questions: (question, options, index of the answer).
const QUESTIONS: [(&str, [&str; 4], usize); 4] = [
    ("Which organ is shown?", ["liver", "kidney", "spleen", "lung"], 1),
    ("What tissue does this pathology slide show?", ["adipose", "mucus", "debris", "lymphocytes"], 2),
    ("Which blood cell is shown?", ["basophil", "eosinophil", "neutrophil", "platelet"], 0),
    ("What diabetic retinopathy grade is shown?", ["grade 0", "grade 1", "grade 2", "grade 3"], 3),
];

/// The shapes both sides train with.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingWorkload {
    /// Examples per SFT step (one micro-batch).
    pub sft_batch: usize,
    /// Prompts per GRPO step, each with `group` completions of at most `max_completion_length`.
    pub grpo_batch: usize,
    pub group: usize,
    pub max_completion_length: usize,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub sft_lr: f64,
    pub grpo_lr: f64,
}

impl Default for TrainingWorkload {
    fn default() -> Self {
        Self {
            sft_batch: 4,
            grpo_batch: 2,
            group: 4,
            max_completion_length: 16,
            lora_rank: 8,
            lora_alpha: 16.0,
            sft_lr: 1e-4,
            grpo_lr: 1e-6,
        }
    }
}

impl TrainingWorkload {
    fn lora(&self) -> LoraConfig {
        LoraConfig::new(self.lora_rank, self.lora_alpha)
    }

    /// The workload with each task item's image file, prompt and SFT target, as
    /// `bench_training.py` reads it. `image_files[i % len]` is the file of item i's image.
    pub fn to_json(&self, task: &McqTask, image_files: &[PathBuf]) -> Result<Value> {
        let items = (0..task.len())
            .map(|i| {
                Ok(json!({
                    "image": image_files[i % image_files.len()],
                    "prompt": task.prompt(i)?,
                    "target": task.target(i)?,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut value = serde_json::to_value(self)?;
        value["items"] = Value::Array(items);
        value["lora_targets"] = json!(self.lora().targets);
        Ok(value)
    }
}

/// Seconds per step of one model.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingBench {
    pub model: String,
    /// Tokens (prompt, image and target) in one SFT batch, to check against the other side's.
    pub sft_tokens: usize,
    pub sft_seconds_per_step: f64,
    pub grpo_seconds_per_step: f64,
}

/// The benchmark task: [`QUESTIONS`] about `images[i % len]` (the fixture's two images).
pub fn bench_task(images: &[(Image, String)]) -> Result<McqTask> {
    let items = QUESTIONS
        .iter()
        .enumerate()
        .map(|(i, (question, options, answer))| McqItem {
            id: format!("bench/{i}"),
            image: images.get(i % images.len().max(1)).map(|(image, _)| image.clone()),
            question: question.to_string(),
            options: options.iter().map(|s| s.to_string()).collect(),
            answer: *answer,
            answer_text: None,
            rationale: None,
            class_id: None,
            class_name: None,
            task: "bench".into(),
            modality: None,
        })
        .collect();
    McqTask::new("bench", items, None, AnswerFormat::Letter)
}

/// The median seconds per step over `repeats` steps after a warm-up step, as
/// `bench_training.py` times the other side; `run(steps)` returns each step's seconds.
fn steady_seconds(repeats: usize, run: impl Fn(u64) -> Result<Vec<f64>>) -> Result<f64> {
    let mut steps = run(1 + repeats.max(1) as u64)?;
    steps.remove(0);
    steps.sort_by(f64::total_cmp);
    let mid = steps.len() / 2;
    Ok(if steps.len() % 2 == 1 { steps[mid] } else { (steps[mid - 1] + steps[mid]) / 2.0 })
}

/// Seconds per SFT step and per GRPO step of `vlm` with fresh LoRA adapters on `task`.
pub fn bench_training(
    vlm: &Vlm,
    task: &McqTask,
    workload: &TrainingWorkload,
    repeats: usize,
) -> Result<TrainingBench> {
    let ctx = TrainContext::quiet();
    let sft_seconds = steady_seconds(repeats, |steps| {
        let opts = SftOptions {
            steps: Some(steps),
            lr: workload.sft_lr,
            batch: workload.sft_batch,
            lora: Some(workload.lora()),
            schedule: Schedule::Constant,
            ..SftOptions::default()
        };
        Ok(sft(vlm, task, &opts, &ctx)?.1.step_seconds)
    })?;
    let grpo_seconds = steady_seconds(repeats, |steps| {
        let opts = GrpoOptions {
            steps,
            batch: workload.grpo_batch,
            step: GrpoStepOptions { group: workload.group, ..GrpoStepOptions::default() },
            lr: workload.grpo_lr,
            lora: Some(workload.lora()),
            max_new_tokens: workload.max_completion_length,
            ..GrpoOptions::default()
        };
        Ok(grpo(vlm, task, &opts, &ctx)?.1.step_seconds)
    })?;
    let sft_tokens = (0..workload.sft_batch.min(task.len()))
        .map(|i| {
            let item = task.item(i)?;
            let enc =
                vlm.processor.encode_conversation(item.image.as_ref(), &task.prompt(i)?, &task.target(i)?)?;
            Ok(enc.input_ids.len())
        })
        .sum::<Result<usize>>()?;
    Ok(TrainingBench {
        model: vlm.source.clone(),
        sft_tokens,
        sft_seconds_per_step: sft_seconds,
        grpo_seconds_per_step: grpo_seconds,
    })
}

/// The fixture's image files, in the order [`super::fixture_inputs`] reads them.
pub fn fixture_image_files(fixture: &Path) -> Vec<PathBuf> {
    super::FIXTURE_IMAGES.iter().map(|name| fixture.join(name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::fixture_inputs;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen2_5_vl_tiny")
    }

    #[test]
    fn workload_names_each_item_with_its_image_prompt_and_target() {
        let task = bench_task(&fixture_inputs(&fixture()).unwrap()).unwrap();
        let files = fixture_image_files(&fixture());
        let json = TrainingWorkload::default().to_json(&task, &files).unwrap();
        let items = json["items"].as_array().unwrap();
        assert_eq!(items.len(), QUESTIONS.len());
        assert_eq!(items[1]["image"].as_str().unwrap(), files[1].to_str().unwrap());
        assert!(items[0]["prompt"].as_str().unwrap().contains("Which organ is shown?"));
        assert_eq!(items[0]["target"].as_str().unwrap(), task.target(0).unwrap());
        assert_eq!((json["sft_batch"].as_u64(), json["group"].as_u64()), (Some(4), Some(4)));
        assert_eq!(json["lora_targets"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn training_steps_are_timed_on_the_fixture() {
        let vlm = Vlm::load(fixture().to_str().unwrap(), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
        let task = bench_task(&fixture_inputs(&fixture()).unwrap()).unwrap();
        let small = TrainingWorkload { max_completion_length: 4, ..TrainingWorkload::default() };
        let bench = bench_training(&vlm, &task, &small, 1).unwrap();
        assert!(bench.sft_seconds_per_step.is_finite() && bench.grpo_seconds_per_step.is_finite());
        // transformers' processor gives 665 tokens for the same four conversations.
        assert_eq!(bench.sft_tokens, 665);
    }
}
