//! Support measured while training: every `every` steps (and after the last one) the model in
//! training is evaluated with [`crate::eval::evaluate_on`] (its questions split over the ranks
//! under MPI) — greedy Acc@1 and Pass@k from `n`
//! samples — so a run logs the paper's support curve as it goes. Each point is logged to
//! `metrics.jsonl` as `eval/acc1`, `eval/pass@{k}` and `eval/gap` (Pass@k − Acc@1) at the number of
//! steps completed.
//!
//! Evaluation draws from its own seeded sampler and switches adapter dropout off while it runs,
//! so it never changes the training trajectory: a run with evaluation trains exactly as one
//! without.

use crate::error::{Context, Result};
use crate::eval::{evaluate_on, EvalOptions};
use crate::models::Vlm;
use crate::task::McqTask;

use super::context::TrainContext;

/// When and how to evaluate during training.
#[derive(Debug, Clone)]
pub struct PeriodicEval {
    /// Evaluate after every this many steps (≥ 1), and after the last step.
    pub every: u64,
    /// The task to evaluate on; `None` = the training task.
    pub task: Option<McqTask>,
    /// Samples (`sampler.n`), temperature, budget, seed and `limit` of each evaluation.
    pub options: EvalOptions,
    /// Pass@k's k, at most `options.sampler.n`.
    pub k: usize,
}

/// One point of the support curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalPoint {
    /// Steps completed when it was measured.
    pub step: u64,
    pub acc1: f64,
    pub pass_at_k: f64,
    /// `pass_at_k - acc1`.
    pub gap: f64,
}

impl PeriodicEval {
    /// Every `every` steps with evaluation's defaults and k = n.
    pub fn every(every: u64) -> Self {
        let options = EvalOptions::default();
        let k = options.sampler.n;
        Self { every, task: None, options, k }
    }

    /// Options that cannot work, named.
    pub fn check(&self, trainer: &str) -> Result<()> {
        if self.every == 0 {
            crate::bail!("{trainer}: eval_every must be at least 1");
        }
        let n = self.options.sampler.n;
        if self.k == 0 || self.k > n {
            crate::bail!("{trainer}: eval k = {} must be between 1 and n = {n}", self.k);
        }
        self.options.sampler.validate().with_context(|| format!("{trainer}: eval options"))
    }

    /// Whether to evaluate once `done` of `total` steps are complete.
    pub fn due(&self, done: u64, total: u64) -> bool {
        done > 0 && (done % self.every == 0 || done == total)
    }

    /// Evaluate `policy` (on `train_task` unless another task was given), log the point at
    /// `step` and return it.
    pub(crate) fn run(
        &self,
        policy: &Vlm,
        train_task: &McqTask,
        step: u64,
        ctx: &TrainContext,
    ) -> Result<EvalPoint> {
        let task = self.task.as_ref().unwrap_or(train_task);
        policy.model.set_training(false);
        let done = evaluate_on(
            &ctx.world,
            policy,
            task,
            &self.options,
            Some(&ctx.cancel),
            crate::run::ProgressMode::Quiet,
        );
        let report = done.with_context(|| format!("evaluating at step {step}"))?.report;
        let acc1 = report.acc1().value;
        let pass_at_k = report.pass_at(self.k)?.value;
        let point = EvalPoint { step, acc1, pass_at_k, gap: pass_at_k - acc1 };
        ctx.metric("eval/acc1", acc1, step)?;
        ctx.metric(&format!("eval/pass@{}", self.k), pass_at_k, step)?;
        ctx.metric("eval/gap", point.gap, step)?;
        Ok(point)
    }
}
