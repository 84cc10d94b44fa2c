//! Supervised fine-tuning on a multiple-choice (or free-text) task with a completion-only loss.
//!
//! Each example is the task's prompt with its image, followed by `task.target(i)` (for example
//! `<answer>C</answer>`) as the assistant turn. Only the answer and the template's closing
//! `<|im_end|>\n` are scored, as TRL's completion-only loss does; prompt, system and image
//! tokens are masked. The loss of a step is the mean over every scored token of its
//! `batch × grad_accum` examples, so splitting a batch into micro-batches does not change it.
//! The input model is left untouched: training happens on a copy with fresh LoRA adapters (or
//! copied weights for full fine-tuning) over the shared frozen base. This file is SFT's step;
//! resume, checkpoints, evaluation and the rest are [`super::train_loop`]'s.
//!
//! Under MPI each rank scores a contiguous share of the step's examples, divides by the scored
//! tokens of the whole step (every rank encodes every example, so each knows that count), and the
//! gradients, loss and hits are summed over the ranks: the update is one process's.

use std::path::PathBuf;

use super::context::TrainContext;
use super::grad::GradAccumulator;
use super::optim::AdamWConfig;
use super::periodic_eval::{EvalPoint, PeriodicEval};
use super::schedule::Schedule;
use super::token_logprobs::{score_tokens_for_training, Sequence};
use super::train_loop::{self, LoopSettings, StepReport, TrainState, Trainer};
use super::trainable_copy::{trainable_copy, Trainable};
use crate::dist::World;
use crate::error::{Context, Result};
use crate::models::qwen2_5_vl::{EncodedConversation, LoraConfig, Qwen25VL};
use crate::models::vlm::Vlm;
use crate::task::mcq::McqTask;

/// `sft(model, task, #{...})`'s options. Defaults follow TRL's `SFTConfig` where it has one.
#[derive(Debug, Clone)]
pub struct SftOptions {
    pub epochs: usize,
    /// Optimiser steps; when `None`, as many as `epochs` passes over the task take.
    pub steps: Option<u64>,
    pub lr: f64,
    /// Examples per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Adapters to train; with neither `lora` nor `full`, rank 8 / alpha 16 adapters on the seven
    /// language-model projections, seeded with `seed`.
    pub lora: Option<LoraConfig>,
    /// Train every language-model weight instead of adapters.
    pub full: bool,
    /// With `full`, train the vision tower's weights too.
    pub train_vision: bool,
    pub schedule: Schedule,
    pub warmup: u64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this; `None` disables clipping.
    pub max_grad_norm: Option<f64>,
    /// Checkpoint every this many steps (and always at the end, when there is an output dir).
    pub save_every: Option<u64>,
    /// A checkpoint directory, or an output directory whose latest checkpoint to continue.
    pub resume: Option<PathBuf>,
    /// Evaluate support (Acc@1, Pass@k) every so many steps.
    pub eval: Option<PeriodicEval>,
    pub seed: u64,
    /// Non-finite steps tolerated in a row before the run fails.
    pub max_bad_steps: usize,
}

impl Default for SftOptions {
    fn default() -> Self {
        Self {
            epochs: 1,
            steps: None,
            lr: 2e-5,
            batch: 8,
            grad_accum: 1,
            lora: None,
            full: false,
            train_vision: false,
            schedule: Schedule::Linear,
            warmup: 0,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            save_every: None,
            resume: None,
            eval: None,
            seed: 0,
            max_bad_steps: 5,
        }
    }
}

/// What a finished SFT run reports.
#[derive(Debug, Clone)]
pub struct SftSummary {
    /// The step this call started from: 0, or the checkpoint's step when resuming.
    pub first_step: u64,
    /// Per step of this call: loss, token accuracy and gradient norm (before clipping).
    pub losses: Vec<f64>,
    pub token_accuracy: Vec<f64>,
    pub grad_norms: Vec<f64>,
    pub skipped_steps: Vec<u64>,
    /// The periodic evaluations, when `eval` was set.
    pub eval: Vec<EvalPoint>,
    pub last_checkpoint: Option<PathBuf>,
    pub seconds_per_step: f64,
    /// Wall time of each step (no evaluation or saving).
    pub step_seconds: Vec<f64>,
}

/// Fine-tune `vlm` on `task`; returns the trained model (sharing `vlm`'s frozen weights) and a
/// summary. `vlm` itself is unchanged.
pub fn sft(vlm: &Vlm, task: &McqTask, opts: &SftOptions, ctx: &TrainContext) -> Result<(Vlm, SftSummary)> {
    run_sft(vlm, task, opts, ctx, &|_| false)
}

/// Options that cannot work, named.
fn check(opts: &SftOptions, task: &McqTask) -> Result<()> {
    if opts.batch == 0 || opts.grad_accum == 0 {
        crate::bail!("sft: batch ({}) and grad_accum ({}) must be at least 1", opts.batch, opts.grad_accum);
    }
    if opts.steps.is_none() && opts.epochs == 0 {
        crate::bail!("sft: set epochs or steps to at least 1");
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0) {
        crate::bail!("sft: lr {} must be a positive number", opts.lr);
    }
    if opts.full && opts.lora.is_some() {
        crate::bail!("sft: `full` and `lora` exclude each other: choose full fine-tuning or adapters");
    }
    if task.is_empty() {
        crate::bail!("sft: task {} has no items", task.name());
    }
    if let Some(eval) = &opts.eval {
        eval.check("sft")?;
    }
    Ok(())
}

/// [`sft`] with a hook that poisons the loss of chosen steps, for testing the non-finite guard.
pub(crate) fn run_sft(
    vlm: &Vlm,
    task: &McqTask,
    opts: &SftOptions,
    ctx: &TrainContext,
    poison: &dyn Fn(u64) -> bool,
) -> Result<(Vlm, SftSummary)> {
    check(opts, task)?;
    crate::dist::check_call(
        &ctx.world,
        "sft",
        &vlm.model,
        &format!("{opts:?} on task {} of {}", task.name(), task.len()),
    )?;
    let what = Trainable {
        lora: opts.lora.as_ref(),
        full: opts.full,
        train_vision: opts.train_vision,
        seed: opts.seed,
    };
    let policy = vlm.with_model(trainable_copy(&vlm.model, what)?);
    let per_step = opts.batch * opts.grad_accum;
    let settings = LoopSettings {
        total: opts.steps.unwrap_or_else(|| (opts.epochs * task.len()).div_ceil(per_step) as u64),
        lr: opts.lr,
        schedule: opts.schedule,
        warmup: opts.warmup,
        adamw: AdamWConfig { weight_decay: opts.weight_decay, ..AdamWConfig::default() },
        seed: opts.seed,
        max_bad_steps: opts.max_bad_steps,
        save_every: opts.save_every,
        resume: opts.resume.as_deref(),
        eval: opts.eval.as_ref(),
    };
    let mut trainer = SftStep {
        model: &policy.model,
        examples: encode_task(vlm, task)?,
        opts,
        pad: vlm.processor.endoftext_id(),
        poison,
        curves: Curves::default(),
        world: &ctx.world,
    };
    let run = train_loop::run(&mut trainer, &policy, task, &settings, ctx)?;
    let Curves { losses, token_accuracy, grad_norms } = trainer.curves;
    let summary = SftSummary {
        first_step: run.first_step,
        losses,
        token_accuracy,
        grad_norms,
        skipped_steps: run.skipped_steps,
        eval: run.eval,
        last_checkpoint: run.last_checkpoint,
        seconds_per_step: run.seconds_per_step,
        step_seconds: run.step_seconds,
    };
    Ok((policy, summary))
}

/// SFT's per-step curves.
#[derive(Default)]
struct Curves {
    losses: Vec<f64>,
    token_accuracy: Vec<f64>,
    grad_norms: Vec<f64>,
}

/// One SFT step: `batch × grad_accum` examples in `grad_accum` micro-batches, their gradients
/// summed and clipped, one update.
struct SftStep<'a> {
    model: &'a Qwen25VL,
    examples: Vec<EncodedConversation>,
    opts: &'a SftOptions,
    pad: u32,
    poison: &'a dyn Fn(u64) -> bool,
    curves: Curves,
    world: &'a World,
}

impl Trainer for SftStep<'_> {
    const NAME: &'static str = "sft";

    fn step(&mut self, state: &mut TrainState, step: u64, lr: f64) -> Result<StepReport> {
        let (model, examples, optimizer) = (self.model, &self.examples, &mut state.optimizer);
        // Periodic evaluation switches adapter dropout off; the step switches it back on.
        model.set_training(true);
        let indices = state.order.next_batch(self.opts.batch * self.opts.grad_accum);
        let scored_total: usize =
            indices.iter().map(|&i| examples[i].completion_mask.iter().skip(1).filter(|&&m| m).count()).sum();
        let mut acc = GradAccumulator::new(optimizer.vars().map(|(_, v)| v))?;
        let (mut loss_sum, mut hits) = (0.0f64, 0usize);
        let mine = &indices[self.world.shard(indices.len())];
        for micro in mine.chunks(self.opts.batch) {
            let seqs: Vec<Sequence> = micro.iter().map(|&i| sequence(&examples[i])).collect();
            let scores = score_tokens_for_training(model, &seqs, self.pad, 1.0)?;
            let mut loss = (scores.logprobs.sum_all()?.neg()? / scored_total as f64)?;
            if (self.poison)(step) {
                loss = (loss * f64::NAN)?;
            }
            loss_sum += loss.to_scalar::<f32>()? as f64;
            hits += scores.argmax_hits;
            acc.add(&scores.backward(&loss)?, optimizer.vars().map(|(_, v)| v), 1.0)?;
        }
        acc.all_reduce(self.world)?;
        let mut totals = [loss_sum, hits as f64];
        self.world.all_reduce_f64("sft: the loss and hits of the step", &mut totals)?;
        let (loss_sum, hits) = (totals[0], totals[1] as usize);
        let (grads, norm) = acc.finish(self.opts.max_grad_norm)?;
        if state.guard.admit(step, loss_sum, norm)? {
            optimizer.step(&grads, lr)?;
        }
        let token_accuracy = hits as f64 / scored_total.max(1) as f64;
        self.curves.losses.push(loss_sum);
        self.curves.token_accuracy.push(token_accuracy);
        self.curves.grad_norms.push(norm);
        let metrics =
            [("loss", loss_sum), ("token_accuracy", token_accuracy), ("lr", lr), ("grad_norm", norm)];
        Ok(StepReport {
            loss: loss_sum,
            grad_norm: norm,
            metrics: metrics.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
            message: format!("loss {loss_sum:.4}"),
        })
    }
}

/// Every item as prompt + target ids with its completion mask, pixels on the model's device.
fn encode_task(vlm: &Vlm, task: &McqTask) -> Result<Vec<EncodedConversation>> {
    (0..task.len())
        .map(|i| {
            let item = task.item(i)?;
            let mut enc = vlm
                .processor
                .encode_conversation(item.image.as_ref(), &task.prompt(i)?, &task.target(i)?)
                .with_context(|| format!("task {}: item {}", task.name(), item.id))?;
            if let Some(px) = enc.pixel_values.take() {
                enc.pixel_values = Some(px.to_device(vlm.device())?.to_dtype(vlm.model.dtype())?);
            }
            Ok(enc)
        })
        .collect()
}

fn sequence(enc: &EncodedConversation) -> Sequence<'_> {
    Sequence {
        ids: &enc.input_ids,
        scored: &enc.completion_mask,
        pixel_values: enc.pixel_values.as_ref(),
        grid: enc.grid_thw,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::Image;
    use crate::run::{ProgressMode, RunDir};
    use crate::task::mcq::{AnswerFormat, McqItem};
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    /// Eight 4-option questions, each with its own seeded random 28 px image.
    pub(crate) fn synthetic_task() -> McqTask {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let items = (0..8)
            .map(|i| {
                let pixels: Vec<u8> = (0..28 * 28 * 3).map(|_| rng.random()).collect();
                McqItem {
                    id: format!("synthetic/{i}"),
                    image: Some(Image::new(28, 28, 3, pixels).unwrap()),
                    question: format!("Case {i}: which finding is shown?"),
                    options: ["cyst", "mass", "edema", "normal"].iter().map(|s| s.to_string()).collect(),
                    answer: (i * 3 + 1) % 4,
                    answer_text: None,
                    rationale: None,
                    class_id: None,
                    class_name: None,
                    task: "synthetic".into(),
                    modality: None,
                }
            })
            .collect();
        McqTask::new("synthetic", items, None, AnswerFormat::Letter).unwrap()
    }

    pub(crate) fn tiny_vlm() -> Vlm {
        Vlm::new_preset("qwen2_5_vl_tiny", 3, &Device::Cpu).unwrap()
    }

    pub(crate) fn greedy_accuracy(vlm: &Vlm, task: &McqTask) -> f64 {
        let correct: f64 = (0..task.len())
            .map(|i| {
                let item = task.item(i).unwrap();
                let text = vlm.generate_greedy(item.image.as_ref(), &task.prompt(i).unwrap(), 12).unwrap();
                task.reward_accuracy(i, &text).unwrap()
            })
            .sum();
        correct / task.len() as f64
    }

    fn fast(steps: u64) -> SftOptions {
        SftOptions {
            steps: Some(steps),
            lr: 5e-3,
            batch: 4,
            grad_accum: 2,
            lora: Some(LoraConfig { seed: 1, ..LoraConfig::new(8, 16.0) }),
            schedule: Schedule::Constant,
            ..SftOptions::default()
        }
    }

    #[test]
    fn lora_sft_learns_the_task_and_leaves_the_input_alone() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let before = vlm.logits(None, "hello").unwrap();
        let (trained, summary) = sft(&vlm, &task, &fast(60), &TrainContext::quiet()).unwrap();
        let acc = greedy_accuracy(&trained, &task);
        assert!(acc >= 0.95, "train accuracy {acc}, losses {:?}", summary.losses);
        // The loss falls window by window (means over 10 steps).
        let windows: Vec<f64> =
            summary.losses.chunks(10).map(|w| w.iter().sum::<f64>() / w.len() as f64).collect();
        assert!(windows.windows(2).all(|w| w[1] < w[0]), "{windows:?}");
        let after = vlm.logits(None, "hello").unwrap();
        assert_eq!(
            (before - after).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(),
            0.0
        );
        // Every adapter tensor moved away from its initialisation.
        let fresh = vlm.model.with_lora(fast(1).lora.as_ref().unwrap()).unwrap();
        assert_eq!(fresh.trainable().len(), trained.model.trainable().len());
        for ((name, a), (_, b)) in fresh.trainable().iter().zip(trained.model.trainable()) {
            let diff = (a.as_tensor() - b.as_tensor()).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() > 0.0, "{name} never received a gradient");
        }
    }

    #[test]
    fn resumed_run_repeats_the_uninterrupted_losses() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let opts = SftOptions { schedule: Schedule::Cosine, warmup: 1, ..fast(4) };
        let (_, whole) = sft(&vlm, &task, &opts, &TrainContext::quiet()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let ctx = TrainContext { out_dir: Some(tmp.path().to_path_buf()), ..TrainContext::quiet() };
        sft(&vlm, &task, &SftOptions { save_every: Some(2), ..opts.clone() }, &ctx).unwrap();
        let resume = Some(tmp.path().join("checkpoint-2"));
        let (_, resumed) = sft(&vlm, &task, &SftOptions { resume, ..opts }, &TrainContext::quiet()).unwrap();
        assert_eq!(resumed.first_step, 2);
        for (a, b) in whole.losses[2..].iter().zip(&resumed.losses) {
            assert!((a - b).abs() < 1e-6, "{:?} vs {:?}", whole.losses, resumed.losses);
        }
        assert_eq!(resumed.losses.len(), 2);
    }

    #[test]
    fn periodic_evaluation_records_the_support_curve_without_changing_training() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(Some(tmp.path()), "sft").unwrap();
        let ctx = TrainContext { run: Some(&run), ..TrainContext::quiet() };
        let mut eval = PeriodicEval::every(2);
        eval.options.sampler.n = 4;
        eval.options.sampler.max_new_tokens = 8;
        eval.options.limit = Some(4);
        eval.k = 4;
        let (_, plain) = sft(&vlm, &task, &fast(5), &TrainContext::quiet()).unwrap();
        let opts = SftOptions { eval: Some(eval.clone()), ..fast(5) };
        let (trained, summary) = sft(&vlm, &task, &opts, &ctx).unwrap();
        assert_eq!(summary.losses, plain.losses, "evaluation must not change the trajectory");
        assert_eq!(summary.eval.iter().map(|p| p.step).collect::<Vec<_>>(), vec![2, 4, 5]);
        // The last point is the returned model's own support.
        let last = summary.eval[2];
        let report =
            crate::eval::evaluate(&trained, &task, &eval.options, None, ProgressMode::Quiet).unwrap().report;
        assert_eq!((last.acc1, last.pass_at_k), (report.acc1().value, report.pass_at(4).unwrap().value));
        assert!((last.gap - (last.pass_at_k - last.acc1)).abs() < 1e-12);
        let metrics = std::fs::read_to_string(tmp.path().join("metrics.jsonl")).unwrap();
        let steps: Vec<u64> = metrics
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["name"] == "eval/pass@4")
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![2, 4, 5]);
    }

    #[test]
    fn a_nan_loss_is_skipped_and_logged_and_too_many_abort() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(Some(tmp.path()), "sft").unwrap();
        let ctx = TrainContext { run: Some(&run), ..TrainContext::quiet() };
        let (_, summary) = run_sft(&vlm, &task, &fast(3), &ctx, &|step| step == 1).unwrap();
        assert_eq!(summary.skipped_steps, vec![1]);
        assert!(summary.losses[2].is_finite());
        let metrics = std::fs::read_to_string(tmp.path().join("metrics.jsonl")).unwrap();
        assert!(metrics.contains("\"sft/skipped_nonfinite\""));
        assert_eq!(metrics.matches("\"sft/loss\"").count(), 3);
        let log = std::fs::read_to_string(tmp.path().join("output.log")).unwrap();
        assert!(log.contains("sft step 1") && log.contains("not finite"), "{log}");
        let opts = SftOptions { max_bad_steps: 1, ..fast(5) };
        let err = run_sft(&vlm, &task, &opts, &TrainContext::quiet(), &|_| true).unwrap_err().to_string();
        assert!(err.contains("max_bad_steps = 1"), "{err}");
    }

    #[test]
    fn cancellation_saves_a_checkpoint() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let tmp = tempfile::tempdir().unwrap();
        let ctx = TrainContext { out_dir: Some(tmp.path().to_path_buf()), ..TrainContext::quiet() };
        ctx.cancel.cancel();
        let err = sft(&vlm, &task, &fast(3), &ctx).unwrap_err();
        assert!(err.is_cancelled());
        assert!(tmp.path().join("checkpoint-0/optimizer.safetensors").is_file());
    }

    #[test]
    fn full_fine_tuning_trains_the_language_model_weights() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let before = vlm.logits(None, "hello").unwrap();
        let opts = SftOptions { lora: None, full: true, lr: 1e-3, ..fast(2) };
        let (trained, summary) = sft(&vlm, &task, &opts, &TrainContext::quiet()).unwrap();
        assert!(summary.losses.iter().all(|l| l.is_finite()));
        assert!(trained.model.trainable().iter().any(|(n, _)| n == "lm_head.weight"));
        let moved =
            (trained.logits(None, "hello").unwrap() - &before).unwrap().abs().unwrap().max_all().unwrap();
        assert!(moved.to_scalar::<f32>().unwrap() > 0.0);
        let unchanged =
            (vlm.logits(None, "hello").unwrap() - before).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(unchanged.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn bad_options_are_named() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let opts = SftOptions { full: true, ..fast(1) };
        assert!(sft(&vlm, &task, &opts, &TrainContext::quiet())
            .unwrap_err()
            .to_string()
            .contains("`full` and `lora`"));
        let opts = SftOptions { batch: 0, ..fast(1) };
        assert!(sft(&vlm, &task, &opts, &TrainContext::quiet())
            .unwrap_err()
            .to_string()
            .contains("batch (0)"));
        let bad = LoraConfig { targets: vec!["no_such_proj".into()], ..LoraConfig::new(4, 8.0) };
        let opts = SftOptions { lora: Some(bad), ..fast(1) };
        assert!(sft(&vlm, &task, &opts, &TrainContext::quiet())
            .unwrap_err()
            .to_string()
            .contains("no_such_proj"));
    }
}
