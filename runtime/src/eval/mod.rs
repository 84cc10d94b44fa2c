//! Evaluation of a model on a multiple-choice task: one greedy answer per question (Acc@1) and n
//! sampled answers (Pass@k, maj@k, the support gap), read by the task's own extractor, so the
//! evaluator and GRPO's reward can never disagree about what an answer is.
//!
//! The greedy row and the n sampled rows of a question decode from one shared prefill.

use crate::bail;
use crate::error::{Context, Result};
use crate::metrics::{BootstrapOptions, QuestionRecord, SupportReport};
use crate::models::vlm::Vlm;
use crate::run::{CancelFlag, ProgressMode};
use crate::sample::{generate, Job, LogitsOptions, RowSpec, Sample, SampleRequest, SamplerOptions};
use crate::task::McqTask;

mod modality;
pub use modality::{label_modality, DEFAULT_LABELS, MODALITY_QUESTION};

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
    opts.sampler.validate()?;
    opts.bootstrap.validate()?;
    if opts.limit == Some(0) {
        bail!("evaluate option limit = 0: at least one question is needed");
    }
    let task = opts.limit.map_or_else(|| task.clone(), |n| task.limit(n));
    if task.is_empty() {
        bail!("evaluate: task {} has no questions", task.name());
    }
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
        records.push(QuestionRecord {
            id: item.id.clone(),
            task: item.task.clone(),
            modality: item.modality.map_or("unknown", |m| m.as_str()).to_string(),
            class: item.class_name.clone().unwrap_or_else(|| "unknown".to_string()),
            gold: item.answer,
            greedy: answer(&greedy)?,
            samples: samples.iter().map(answer).collect::<Result<_>>()?,
            n_options: item.options.len(),
        });
        completions.push(Completions { id: item.id.clone(), greedy, samples });
    }
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
