//! The one training loop `sft` and `grpo` share, kept in one place so the two cannot drift:
//! resume, the step loop with cancel-and-save, the learning-rate schedule, the report of skipped
//! non-finite steps, metrics, the progress bar, per-step timing, periodic evaluation and
//! checkpoints. A trainer supplies only its step ([`Trainer::step`]): what one optimiser step
//! does and what it records.
//!
//! The order of work is fixed and is part of the numbers: a step never sees evaluation or saving,
//! and both trainers build their optimiser, data order and guard here, from the run seed, so a
//! resumed run repeats the uninterrupted one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::checkpoint;
use super::context::TrainContext;
use super::data_order::DataOrder;
use super::grad::NonFiniteGuard;
use super::optim::{AdamW, AdamWConfig};
use super::periodic_eval::{EvalPoint, PeriodicEval};
use super::schedule::Schedule;
use crate::error::{Error, Result};
use crate::models::Vlm;
use crate::task::McqTask;

/// What a step advances and a checkpoint holds (beside the trainable tensors and the step).
pub(crate) struct TrainState {
    pub optimizer: AdamW,
    pub order: DataOrder,
    /// A step calls [`NonFiniteGuard::admit`] before applying an update; the loop reports what
    /// it skipped.
    pub guard: NonFiniteGuard,
}

/// What one step hands back to the loop.
pub(crate) struct StepReport {
    /// Named in the non-finite warning when the step skipped an update.
    pub loss: f64,
    pub grad_norm: f64,
    /// Logged in this order as `{trainer}/{name}` at the step.
    pub metrics: Vec<(String, f64)>,
    /// The progress bar's message.
    pub message: String,
}

/// One trainer's step; the loop does everything around it.
pub(crate) trait Trainer {
    /// `sft` or `grpo`: the metrics' prefix, the checkpoint folder and the trainer a checkpoint
    /// resumes.
    const NAME: &'static str;

    /// Optimiser step `step` (from 0) at learning rate `lr`.
    fn step(&mut self, state: &mut TrainState, step: u64, lr: f64) -> Result<StepReport>;
}

/// The options every trainer has, as the loop needs them.
pub(crate) struct LoopSettings<'a> {
    /// The step the run ends at (a resumed run continues up to it).
    pub total: u64,
    pub lr: f64,
    pub schedule: Schedule,
    pub warmup: u64,
    pub adamw: AdamWConfig,
    /// Seeds the data order.
    pub seed: u64,
    pub max_bad_steps: usize,
    pub save_every: Option<u64>,
    pub resume: Option<&'a Path>,
    pub eval: Option<&'a PeriodicEval>,
}

/// What the loop records for any trainer; each trainer's summary carries these fields.
#[derive(Debug, Default)]
pub(crate) struct LoopSummary {
    /// 0, or the checkpoint's step when resuming.
    pub first_step: u64,
    /// Steps of this call whose update was skipped for a non-finite loss or gradient.
    pub skipped_steps: Vec<u64>,
    pub eval: Vec<EvalPoint>,
    pub last_checkpoint: Option<PathBuf>,
    /// Wall time of the steps over their number, evaluation excluded.
    pub seconds_per_step: f64,
    /// Wall time of each step (no evaluation or saving).
    pub step_seconds: Vec<f64>,
}

/// Train `policy` (whose model's trainable tensors the optimiser holds) with `trainer` on `task`
/// from step 0, or from the checkpoint `settings.resume` names, up to `settings.total`.
pub(crate) fn run<T: Trainer>(
    trainer: &mut T,
    policy: &Vlm,
    task: &McqTask,
    settings: &LoopSettings,
    ctx: &TrainContext,
) -> Result<LoopSummary> {
    let (name, total, model) = (T::NAME, settings.total, &policy.model);
    let mut state = TrainState {
        optimizer: AdamW::new(model.trainable(), settings.adamw)?,
        order: DataOrder::new(task.len(), settings.seed)?,
        guard: NonFiniteGuard::new(settings.max_bad_steps),
    };
    let mut step = 0;
    if let Some(path) = settings.resume {
        let saved = checkpoint::load(path, name, &mut state.optimizer, model.device())?;
        state.order = DataOrder::restore(&saved.data_order, task.len())?;
        state.guard.skipped = saved.skipped_steps;
        step = saved.step;
    }
    let out = ctx.claim_checkpoint_dir(name)?;
    let save = |step: u64, s: &TrainState| {
        checkpoint::save_progress(
            out.as_deref(),
            name,
            model.trainable(),
            step,
            &s.order,
            &s.optimizer,
            &s.guard,
        )
    };

    let mut summary = LoopSummary { first_step: step, ..LoopSummary::default() };
    let bar = ctx.progress.bar(total, name);
    bar.set_position(step);
    let started = Instant::now();
    let mut eval_seconds = 0.0;
    while step < total {
        if ctx.cancel.is_cancelled() {
            model.set_training(false);
            let saved = save(step, &state)?;
            let where_ = saved.map_or("no output directory, nothing saved".to_string(), |p| {
                format!("checkpoint saved to {}", p.display())
            });
            return Err(Error::Cancelled(format!("{name} at step {step} of {total}; {where_}")));
        }
        let step_started = Instant::now();
        let lr = settings.schedule.lr_at(settings.lr, step, total, settings.warmup);
        let skipped_before = state.guard.skipped.len();
        let report = trainer.step(&mut state, step, lr)?;
        if state.guard.skipped.len() > skipped_before {
            let (loss, norm) = (report.loss, report.grad_norm);
            ctx.warn(&format!(
                "{name} step {step}: loss {loss} / grad norm {norm} not finite, update skipped"
            ))?;
            ctx.metric(&format!("{name}/skipped_nonfinite"), 1.0, step)?;
            summary.skipped_steps.push(step);
        }
        for (metric, value) in &report.metrics {
            ctx.metric(&format!("{name}/{metric}"), *value, step)?;
        }
        summary.step_seconds.push(step_started.elapsed().as_secs_f64());
        step += 1;
        bar.inc(1);
        bar.set_message(report.message);
        if let Some(eval) = settings.eval.filter(|e| e.due(step, total)) {
            let timer = Instant::now();
            summary.eval.push(eval.run(policy, task, step, ctx)?);
            eval_seconds += timer.elapsed().as_secs_f64();
        }
        // The last step's checkpoint is the final save below.
        if settings.save_every.is_some_and(|n| n > 0 && step % n == 0) && step < total {
            summary.last_checkpoint = save(step, &state)?;
        }
    }
    bar.finish_and_clear();
    model.set_training(false);
    let done = (step - summary.first_step).max(1);
    summary.seconds_per_step = (started.elapsed().as_secs_f64() - eval_seconds) / done as f64;
    if let Some(p) = save(step, &state)? {
        summary.last_checkpoint = Some(p);
    }
    Ok(summary)
}
