//! Evaluation of a model on a multiple-choice task: one greedy answer per question (Acc@1) and n
//! sampled answers (Pass@k, maj@k, the support gap), read by the task's own extractor, so the
//! evaluator and GRPO's reward can never disagree about what an answer is.
//!
//! The greedy row and the n sampled rows of a question decode from one shared prefill.
//!
//! `EvalOptions::preset(TaskPreset::MedbridgeRl)` is the released `inference.py`'s sampling:
//! K = 16, temperature 0.7, top-p 0.9, top-k off, 2,048 new tokens, seed 123. Deviations: the
//! release reseeds torch with `seed + 1000 * row + i` before sample i of row `row`, while our
//! sampler draws each sample from its own stream keyed by (seed, question id, sample index), so
//! the same seed gives other (equally distributed) samples; and we also decode one greedy answer
//! per question (for Acc@1), which the release does not, and which leaves its three numbers alone.

use crate::bail;
use crate::error::{Context, Result};
use crate::metrics::{BootstrapOptions, QuestionRecord, SupportReport};
use crate::models::vlm::Vlm;
use crate::run::{CancelFlag, ProgressMode};
use crate::sample::{generate, Job, LogitsOptions, RowSpec, Sample, SampleRequest, SamplerOptions};
use crate::task::{McqTask, TaskPreset};

mod modality;
mod sharded;
pub use modality::{label_modality, DEFAULT_LABELS, MODALITY_QUESTION};
pub use sharded::evaluate_on;

/// Long enough for `<answer>X</answer>` and a little slack; think-style tasks need far more.
pub const DEFAULT_EVAL_MAX_NEW_TOKENS: usize = 16;

/// Samples per question when not given: enough for Pass@16, the paper's K.
pub const DEFAULT_EVAL_SAMPLES: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// How the n samples are drawn (`sampler.n` of them per question); the greedy answer uses the
    /// same stops and budget at temperature 0.
    pub sampler: SamplerOptions,
    /// Evaluate only the first `limit` questions.
    pub limit: Option<usize>,
    pub bootstrap: BootstrapOptions,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            sampler: SamplerOptions {
                n: DEFAULT_EVAL_SAMPLES,
                max_new_tokens: DEFAULT_EVAL_MAX_NEW_TOKENS,
                ..Default::default()
            },
            limit: None,
            bootstrap: BootstrapOptions::default(),
        }
    }
}

/// The released `inference.py`'s defaults (`--k`, `--temperature`, `--top_p`, `--top_k`,
/// `--max_new_tokens`, `--seed`).
pub const MEDBRIDGERL_K: usize = 16;
pub const MEDBRIDGERL_TEMPERATURE: f32 = 0.7;
pub const MEDBRIDGERL_TOP_P: f32 = 0.9;
pub const MEDBRIDGERL_TOP_K: usize = 0;
pub const MEDBRIDGERL_MAX_NEW_TOKENS: usize = 2048;
pub const MEDBRIDGERL_SEED: u64 = 123;

impl EvalOptions {
    /// The evaluation settings a task preset comes with: ours, or the release's (module header).
    pub fn preset(preset: TaskPreset) -> EvalOptions {
        let mut opts = EvalOptions::default();
        if preset == TaskPreset::MedbridgeRl {
            opts.sampler.n = MEDBRIDGERL_K;
            opts.sampler.max_new_tokens = MEDBRIDGERL_MAX_NEW_TOKENS;
            opts.sampler.seed = MEDBRIDGERL_SEED;
            opts.sampler.logits = LogitsOptions {
                temperature: MEDBRIDGERL_TEMPERATURE,
                top_p: MEDBRIDGERL_TOP_P,
                top_k: MEDBRIDGERL_TOP_K,
                ..LogitsOptions::default()
            };
        }
        opts
    }
}

/// What the model wrote for one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Completions {
    pub id: String,
    pub greedy: Sample,
    pub samples: Vec<Sample>,
}

/// The scored report and the raw completions behind it, in question order.
#[derive(Debug, Clone)]
pub struct EvalRun {
    pub report: SupportReport,
    pub completions: Vec<Completions>,
}

/// Greedy and sampled answers for (the first `limit`) questions of `task`, scored.
pub fn evaluate(
    vlm: &Vlm,
    task: &McqTask,
    opts: &EvalOptions,
    cancel: Option<&CancelFlag>,
    progress: ProgressMode,
) -> Result<EvalRun> {
    let task = questions(task, opts)?;
    let (records, completions) = answer(vlm, &task, opts, cancel, progress)?;
    score(&task, records, completions, opts)
}

/// The questions an evaluation answers (the first `limit` of `task`), after checking `opts`.
fn questions(task: &McqTask, opts: &EvalOptions) -> Result<McqTask> {
    opts.sampler.validate()?;
    opts.bootstrap.validate()?;
    if opts.limit == Some(0) {
        bail!("evaluate option limit = 0: at least one question is needed");
    }
    let task = opts.limit.map_or_else(|| task.clone(), |n| task.limit(n));
    if task.is_empty() {
        bail!("evaluate: task {} has no questions", task.name());
    }
    Ok(task)
}

/// The per-question records and completions of every question of `task`, in order.
fn answer(
    vlm: &Vlm,
    task: &McqTask,
    opts: &EvalOptions,
    cancel: Option<&CancelFlag>,
    progress: ProgressMode,
) -> Result<(Vec<QuestionRecord>, Vec<Completions>)> {
    let mut requests = Vec::with_capacity(task.len());
    for (i, item) in task.items().iter().enumerate() {
        if item.is_free_text() {
            bail!(
                "evaluate: task {} item {} has no options; evaluate scores multiple-choice questions",
                task.name(),
                item.id
            );
        }
        requests.push(SampleRequest {
            question_id: item.id.clone(),
            image: item.image.clone(),
            prompt: task.prompt(i)?,
        });
    }
    let greedy = RowSpec { logits: LogitsOptions::greedy(), sample_index: u64::MAX };
    let rows: Vec<RowSpec> = std::iter::once(greedy)
        .chain(
            (0..opts.sampler.n as u64)
                .map(|sample_index| RowSpec { logits: opts.sampler.logits, sample_index }),
        )
        .collect();
    let jobs: Vec<Job> = requests.iter().map(|request| Job { request, rows: rows.clone() }).collect();
    let outputs = generate(vlm, &jobs, &opts.sampler, cancel, progress)
        .with_context(|| format!("evaluating task {}", task.name()))?;

    let mut records = Vec::with_capacity(task.len());
    let mut completions = Vec::with_capacity(task.len());
    for (i, (item, mut rows)) in task.items().iter().zip(outputs).enumerate() {
        let samples = rows.split_off(1);
        let greedy = rows.pop().context("evaluate: the greedy row is missing")?;
        let answer = |s: &Sample| task.extract(i, &s.text).map(|e| e.choice);
        let read: Vec<_> = samples.iter().map(|s| task.extract(i, &s.text)).collect::<Result<_>>()?;
        records.push(QuestionRecord {
            id: item.id.clone(),
            task: item.task.clone(),
            modality: item.modality.map_or("unknown", |m| m.as_str()).to_string(),
            class: item.class_name.clone().unwrap_or_else(|| "unknown".to_string()),
            gold: item.answer,
            greedy: answer(&greedy)?,
            samples: read.iter().map(|e| e.choice).collect(),
            n_options: item.options.len(),
            format_ok: read.iter().map(|e| e.format_ok).collect(),
        });
        completions.push(Completions { id: item.id.clone(), greedy, samples });
    }
    Ok((records, completions))
}

/// The support report of `task`'s records (bootstrap intervals included), with the completions.
fn score(
    task: &McqTask,
    records: Vec<QuestionRecord>,
    completions: Vec<Completions>,
    opts: &EvalOptions,
) -> Result<EvalRun> {
    let report = SupportReport::new(records, opts.bootstrap)
        .with_context(|| format!("scoring task {}", task.name()))?;
    Ok(EvalRun { report, completions })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::data::medmnist_info::Modality;
    use crate::image::Image;
    use crate::sample::sample;
    use crate::task::{AnswerFormat, McqItem};

    fn task() -> McqTask {
        let items = (0..4)
            .map(|i| McqItem {
                id: format!("derma/{i}"),
                image: Some(Image::new(28, 28, 3, vec![(i * 60) as u8; 28 * 28 * 3]).unwrap()),
                question: "Which lesion is shown?".into(),
                options: vec!["nevus".into(), "melanoma".into(), "keratosis".into()],
                answer: i % 3,
                answer_text: None,
                rationale: None,
                class_id: Some(i % 3),
                class_name: Some(["nevus", "melanoma", "keratosis"][i % 3].into()),
                task: "dermamnist".into(),
                modality: Some(Modality::VisibleLight),
            })
            .collect();
        McqTask::new("derma", items, None, AnswerFormat::Letter).unwrap()
    }

    fn options() -> EvalOptions {
        let mut opts = EvalOptions::default();
        opts.sampler.n = 5;
        opts.sampler.max_new_tokens = 6;
        opts.sampler.seed = 4;
        opts.bootstrap.resamples = 50;
        opts
    }

    #[test]
    fn the_report_counts_what_the_completions_say() {
        let vlm = Vlm::new_preset("qwen2_5_vl_tiny", 5, &Device::Cpu).unwrap();
        let task = task();
        let run = evaluate(&vlm, &task, &options(), None, ProgressMode::Quiet).unwrap();
        assert_eq!((run.report.questions(), run.report.n(), run.completions.len()), (4, 5, 4));
        let mut greedy_correct = 0;
        for (i, (record, done)) in run.report.records().iter().zip(&run.completions).enumerate() {
            assert_eq!((&record.id, &done.id), (&task.items()[i].id, &task.items()[i].id));
            assert_eq!((record.modality.as_str(), record.gold), ("visible_light", i % 3));
            let read = |s: &Sample| task.extract(i, &s.text).unwrap().choice;
            assert_eq!(record.greedy, read(&done.greedy));
            assert_eq!(record.samples, done.samples.iter().map(read).collect::<Vec<_>>());
            let formatted: Vec<bool> =
                done.samples.iter().map(|s| task.extract(i, &s.text).unwrap().format_ok).collect();
            assert_eq!(record.format_ok, formatted);
            let correct = done.samples.iter().filter(|s| read(s) == Some(i % 3)).count();
            assert_eq!(record.correct_count(), correct);
            greedy_correct += usize::from(read(&done.greedy) == Some(i % 3));
        }
        assert_eq!(run.report.acc1().value, greedy_correct as f64 / 4.0);
    }

    #[test]
    fn greedy_and_samples_are_the_samplers_own() {
        let vlm = Vlm::new_preset("qwen2_5_vl_tiny", 5, &Device::Cpu).unwrap();
        let task = task();
        let opts = EvalOptions { limit: Some(2), ..options() };
        let run = evaluate(&vlm, &task, &opts, None, ProgressMode::Quiet).unwrap();
        assert_eq!(run.completions.len(), 2);
        let requests: Vec<SampleRequest> = (0..2)
            .map(|i| SampleRequest {
                question_id: task.items()[i].id.clone(),
                image: task.items()[i].image.clone(),
                prompt: task.prompt(i).unwrap(),
            })
            .collect();
        let sampled = sample(&vlm, &requests, &opts.sampler, None, ProgressMode::Quiet).unwrap();
        let greedy_opts = SamplerOptions { logits: LogitsOptions::greedy(), n: 1, ..opts.sampler.clone() };
        let greedy = sample(&vlm, &requests, &greedy_opts, None, ProgressMode::Quiet).unwrap();
        for ((done, s), g) in run.completions.iter().zip(&sampled).zip(&greedy) {
            let tokens = |v: &[Sample]| v.iter().map(|x| x.token_ids.clone()).collect::<Vec<_>>();
            assert_eq!(tokens(&done.samples), tokens(s));
            assert_eq!(done.greedy.token_ids, g[0].token_ids);
        }
    }

    #[test]
    fn the_medbridgerl_preset_samples_as_the_release() {
        assert_eq!(EvalOptions::preset(TaskPreset::Default), EvalOptions::default());
        let s = EvalOptions::preset(TaskPreset::MedbridgeRl).sampler;
        assert_eq!((s.n, s.max_new_tokens, s.seed), (16, 2048, 123));
        assert_eq!(
            (s.logits.temperature, s.logits.top_p, s.logits.top_k, s.logits.min_p),
            (0.7, 0.9, 0, 0.0)
        );
        s.validate().unwrap();
    }

    #[test]
    fn bad_options_and_free_text_tasks_are_refused() {
        let vlm = Vlm::new_preset("qwen2_5_vl_tiny", 5, &Device::Cpu).unwrap();
        let err =
            evaluate(&vlm, &task(), &EvalOptions { limit: Some(0), ..options() }, None, ProgressMode::Quiet)
                .unwrap_err();
        assert!(err.to_string().contains("limit = 0"), "{err}");
        let mut zero = options();
        zero.sampler.n = 0;
        let err = evaluate(&vlm, &task(), &zero, None, ProgressMode::Quiet).unwrap_err();
        assert!(err.to_string().contains("n = 0"), "{err}");
        let mut item = task().items()[0].clone();
        item.options.clear();
        item.answer_text = Some("nevus".into());
        let free = McqTask::new("vqa", vec![item], None, AnswerFormat::Letter).unwrap();
        let err = evaluate(&vlm, &free, &options(), None, ProgressMode::Quiet).unwrap_err();
        assert!(err.to_string().contains("has no options"), "{err}");
    }
}
