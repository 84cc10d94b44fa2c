//! The one training loop `sft` and `grpo` share, kept in one place so the two cannot drift:
//! resume, the step loop with cancel-and-save, the learning-rate schedule, the report of skipped
//! non-finite steps, metrics, the progress bar, per-step timing, periodic evaluation and
//! checkpoints. A trainer supplies only its step ([`Trainer::step`]): what one optimiser step
//! does and what it records.
//!
//! The order of work is fixed and is part of the numbers: a step never sees evaluation or saving,
//! and both trainers build their optimiser, data order and guard here, from the run seed, so a
//! resumed run repeats the uninterrupted one.
//!
//! Under MPI every rank runs this loop in step: each draws the same data order and shards the
//! step's examples inside [`Trainer::step`]; the ranks decide together whether to stop for a
//! cancel request; after the first step they check that their weights still agree; and rank 0
//! alone writes checkpoints, which the others wait for before going on, so any rank can resume
//! from one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;

use super::checkpoint;
use super::context::TrainContext;
use super::data_order::DataOrder;
use super::grad::NonFiniteGuard;
use super::optim::{AdamW, AdamWConfig};
use super::periodic_eval::{EvalPoint, PeriodicEval};
use super::schedule::Schedule;
use crate::dist::check_agreement;
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

    /// Tensors of the trainer's own that a checkpoint must hold for an exact resume (GRPO-CARE's
    /// EMA reference); none by default.
    fn checkpoint_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }

    /// Take back what [`Self::checkpoint_tensors`] saved (`None`: the checkpoint holds none).
    fn restore_tensors(&mut self, _saved: Option<HashMap<String, Tensor>>) -> Result<()> {
        Ok(())
    }
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
        trainer.restore_tensors(checkpoint::load_trainer_tensors(path, name, model.device())?)?;
        if step >= total {
            ctx.warn(&format!(
                "{name}: the checkpoint {} is at step {step}, at or past the requested {total} steps; \
                 no step is trained (ask for more steps to continue it)",
                path.display()
            ))?;
        }
    }
    let out = ctx.claim_checkpoint_dir(name)?;
    let world = &ctx.world;
    let save = |step: u64, s: &TrainState, trainer: &T| {
        let saved = if world.is_root() {
            checkpoint::save_progress(
                out.as_deref(),
                name,
                model.trainable(),
                step,
                &s.order,
                &s.optimizer,
                &s.guard,
                &trainer.checkpoint_tensors()?,
            )?
        } else {
            out.as_ref().map(|o| checkpoint::checkpoint_dir(o, step))
        };
        // The others wait here until rank 0 has written it, so any rank may read it next.
        world.any(&format!("{name}: checkpoint at step {step}"), false)?;
        Ok::<_, Error>(saved)
    };

    let mut summary = LoopSummary { first_step: step, ..LoopSummary::default() };
    let bar = ctx.progress.bar(total, name);
    bar.set_position(step);
    let started = Instant::now();
    let mut eval_seconds = 0.0;
    while step < total {
        if world.any(&format!("{name}: cancel check at step {step}"), ctx.cancel.is_cancelled())? {
            model.set_training(false);
            let saved = save(step, &state, trainer)?;
            let where_ = saved.map_or("no output directory, nothing saved".to_string(), |p| {
                format!("checkpoint saved to {}", p.display())
            });
            return Err(Error::Cancelled(format!("{name} at step {step} of {total}; {where_}")));
        }
        let step_started = Instant::now();
        let lr = settings.schedule.lr_at(settings.lr, step, total, settings.warmup);
        let skipped_before = state.guard.skipped.len();
        let report = trainer.step(&mut state, step, lr)?;
        if step == summary.first_step && world.is_distributed() {
            check_agreement(
                world,
                &format!("the trained weights after {name} step {step}"),
                &weights_hash(model.trainable())?,
            )?;
        }
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
            summary.last_checkpoint = save(step, &state, trainer)?;
        }
    }
    bar.finish_and_clear();
    model.set_training(false);
    let done = (step - summary.first_step).max(1);
    summary.seconds_per_step = (started.elapsed().as_secs_f64() - eval_seconds) / done as f64;
    if let Some(p) = save(step, &state, trainer)? {
        summary.last_checkpoint = Some(p);
    }
    Ok(summary)
}

/// A cheap hash of the trainable weights (each one's f32 sum and sum of squares), to check the
/// ranks' identical optimisers stayed identical.
fn weights_hash(trainable: &[(String, candle_core::Var)]) -> Result<Vec<u8>> {
    let mut sums = Vec::with_capacity(2 * trainable.len());
    for (_, v) in trainable {
        let f = v.as_tensor().to_dtype(candle_core::DType::F32)?;
        sums.push(f.sum_all()?.to_scalar::<f32>()?);
        sums.push(f.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    let text: Vec<String> = sums.iter().map(|x| x.to_bits().to_string()).collect();
    Ok(crate::dist::text_fingerprint(&text.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunDir;
    use crate::train::sft::tests::{synthetic_task, tiny_vlm};
    use crate::train::trainable_copy::{trainable_copy, Trainable};

    /// A step that records what it was called with, draws one example and reports a NaN loss at
    /// `bad`.
    struct Recording {
        calls: Vec<(u64, f64)>,
        bad: Option<u64>,
    }

    impl Trainer for Recording {
        const NAME: &'static str = "sft";

        fn step(&mut self, state: &mut TrainState, step: u64, lr: f64) -> Result<StepReport> {
            self.calls.push((step, lr));
            state.order.next_batch(1);
            let loss = if self.bad == Some(step) { f64::NAN } else { 1.0 };
            state.guard.admit(step, loss, 1.0)?;
            Ok(StepReport {
                loss,
                grad_norm: 1.0,
                metrics: vec![("loss".into(), loss)],
                message: String::new(),
            })
        }
    }

    fn settings(total: u64) -> LoopSettings<'static> {
        LoopSettings {
            total,
            lr: 0.5,
            schedule: Schedule::Constant,
            warmup: 0,
            adamw: AdamWConfig::default(),
            seed: 0,
            max_bad_steps: 5,
            save_every: Some(2),
            resume: None,
            eval: None,
        }
    }

    #[test]
    fn calls_in_one_run_keep_their_checkpoints_apart_and_resume_continues_the_last() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let policy = vlm.with_model(trainable_copy(&vlm.model, Trainable::adapters(None, 0)).unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = RunDir::create(Some(tmp.path()), "loop").unwrap();
        let ctx = TrainContext { run: Some(&run_dir), ..TrainContext::quiet() };
        let checkpoints = tmp.path().join("checkpoints");

        let mut first = Recording { calls: vec![], bad: Some(1) };
        let done = run(&mut first, &policy, &task, &settings(3), &ctx).unwrap();
        assert_eq!(first.calls, [(0, 0.5), (1, 0.5), (2, 0.5)]);
        assert_eq!((done.first_step, done.skipped_steps, done.step_seconds.len()), (0, vec![1], 3));
        assert_eq!(done.last_checkpoint, Some(checkpoints.join("sft/checkpoint-3")));
        assert!(checkpoints.join("sft/checkpoint-2").is_dir());
        let log = std::fs::read_to_string(tmp.path().join("output.log")).unwrap();
        assert!(log.contains("sft step 1: loss NaN / grad norm 1 not finite"), "{log}");

        // A second call writes beside the first, resuming its latest checkpoint through the
        // run's `checkpoints/` folder.
        let mut second = Recording { calls: vec![], bad: None };
        let resume = LoopSettings { resume: Some(&checkpoints), ..settings(5) };
        let done = run(&mut second, &policy, &task, &resume, &ctx).unwrap();
        assert_eq!((done.first_step, second.calls.len()), (3, 2));
        assert_eq!(done.last_checkpoint, Some(checkpoints.join("sft-2/checkpoint-5")));
        assert!(checkpoints.join("sft/checkpoint-3").is_dir());

        // Resuming a checkpoint already past the requested steps trains nothing, and says so.
        let mut none = Recording { calls: vec![], bad: None };
        let past = checkpoints.join("sft-2/checkpoint-5");
        let behind = LoopSettings { resume: Some(&past), ..settings(4) };
        let done = run(&mut none, &policy, &task, &behind, &ctx).unwrap();
        assert_eq!((done.first_step, none.calls.len()), (5, 0));
        let log = std::fs::read_to_string(tmp.path().join("output.log")).unwrap();
        let said = format!(
            "warning: sft: the checkpoint {} is at step 5, at or past the requested 4 steps",
            past.display()
        );
        assert!(log.contains(&said), "{log}");

        // Cancelled before its first step, a third call saves step 0 in its own folder and says so.
        ctx.cancel.cancel();
        let err =
            run(&mut Recording { calls: vec![], bad: None }, &policy, &task, &settings(2), &ctx).unwrap_err();
        let saved = checkpoints.join("sft-4/checkpoint-0");
        assert!(err.is_cancelled() && saved.join("optimizer.safetensors").is_file());
        assert!(err
            .to_string()
            .contains(&format!("sft at step 0 of 2; checkpoint saved to {}", saved.display())));
    }
}
