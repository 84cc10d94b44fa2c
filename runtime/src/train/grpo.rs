//! GRPO's step, run by the shared [`super::train_loop`]: each step draws `batch` prompts with
//! `group` completions each (see [`super::rollouts`], which also does dynamic sampling), scores
//! them with the task's rewards and any script closures, and hands the rollouts to
//! [`grpo_step`]. Defaults are TRL's `GRPOConfig` (lr 1e-6, beta 0, epsilon 0.2, G = 8,
//! temperature 1, token-level loss); tiny CPU models need larger learning rates, which their
//! scripts state.
//!
//! With `care` set (GRPO-CARE, [`super::care`]), an EMA reference ([`super::ema_reference`])
//! scores each rollout's answer tokens and the consistency bonus is added to its reward, per
//! prompt group, before the advantages; the first reward function is the accuracy the bonus
//! reads, as the released `rewards_per_func[:, 0]`. Dynamic sampling judges a group's variance
//! before the bonus, and `reward_mean` logs the rewards without it (`care_bonus_mean` apart).
//! With `beta > 0` the KL's reference stays the adapters-off model (the released trainer with
//! CARE takes the KL against the EMA reference too; its run has `beta = 0`).
//! [`GrpoOptions::preset`] gives the paper's released settings (`grpo_preset.rs`).
//!
//! Checkpoints hold the adapters, the optimiser, the data order and the step (and CARE's
//! reference); every step's
//! sampling seed derives from the run seed and the step, so a resumed run draws the same
//! completions and repeats the uninterrupted run's losses and rewards.
//!
//! Under MPI (`ctx.world`) each rank samples and trains on whole groups of a step's prompts
//! (`rollouts.rs`, `grpo_step.rs`); CARE's bonus and confidence means are summed over the ranks.

use std::path::PathBuf;

use crate::dist::World;
use crate::error::Result;
use crate::models::qwen2_5_vl::LoraConfig;
use crate::models::Vlm;
use crate::run::splitmix64;
use crate::sample::SamplerOptions;
use crate::task::McqTask;

use std::collections::HashMap;

use candle_core::Tensor;

use super::care::{CareBonus, CareOptions};
use super::context::TrainContext;
use super::ema_reference::EmaReference;
use super::grpo_step::{grpo_step, GrpoStepOptions, GrpoStepStats, Rollout};
use super::optim::AdamWConfig;
use super::periodic_eval::{EvalPoint, PeriodicEval};
use super::rewards::Rewards;
use super::rollouts::RolloutSource;
use super::schedule::Schedule;
use super::train_loop::{self, LoopSettings, StepReport, TrainState, Trainer};
use super::trainable_copy::{frozen_base, trainable_on, Trainable};

#[derive(Debug, Clone)]
pub struct GrpoOptions {
    pub steps: u64,
    /// Prompts per step; each gets `step.group` completions.
    pub batch: usize,
    pub step: GrpoStepOptions,
    pub lr: f64,
    pub schedule: Schedule,
    pub warmup: u64,
    pub lora: Option<LoraConfig>,
    pub full: bool,
    /// With `full`, train the vision tower's weights too.
    pub train_vision: bool,
    /// Built-in reward names (`accuracy`, `format`, `consistency`) and weights; script closures
    /// come through [`grpo_with_rewards`].
    pub rewards: Vec<(String, f64)>,
    /// Drop zero-variance groups and draw more prompts until `batch` groups have reward
    /// variance or `max_draws` prompts were drawn in the step.
    pub dynamic_sampling: bool,
    /// Prompts one step may draw with dynamic sampling; `None` = 3 × `batch`.
    pub max_draws: Option<usize>,
    pub max_new_tokens: usize,
    pub top_p: f64,
    /// The rollout engine's budget: KV positions held at once and samples decoded at once (the
    /// sampler's options of the same names; a GPU wants far more than the CPU default).
    pub max_batch_tokens: usize,
    pub max_seqs: usize,
    pub save_every: Option<u64>,
    /// A checkpoint directory, or an output directory whose latest checkpoint to continue.
    pub resume: Option<PathBuf>,
    pub eval: Option<PeriodicEval>,
    pub seed: u64,
    pub max_bad_steps: usize,
    /// GRPO-CARE's consistency bonus with its EMA reference; off by default.
    pub care: Option<CareOptions>,
}

impl Default for GrpoOptions {
    fn default() -> Self {
        Self {
            steps: 100,
            batch: 4,
            step: GrpoStepOptions::default(),
            lr: 1e-6,
            schedule: Schedule::Constant,
            warmup: 0,
            lora: None,
            full: false,
            train_vision: false,
            rewards: vec![("accuracy".into(), 1.0)],
            dynamic_sampling: false,
            max_draws: None,
            max_new_tokens: 32,
            top_p: 1.0,
            max_batch_tokens: crate::sample::DEFAULT_MAX_BATCH_TOKENS,
            max_seqs: crate::sample::DEFAULT_MAX_SEQS,
            save_every: None,
            resume: None,
            eval: None,
            seed: 0,
            max_bad_steps: 5,
            care: None,
        }
    }
}

/// Per-step curves of a run (the steps of this call, from `first_step`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrpoSummary {
    /// 0, or the checkpoint's step when resuming.
    pub first_step: u64,
    /// Mean reward over every group drawn in the step.
    pub rewards: Vec<f64>,
    /// Fraction of the step's drawn groups whose rewards were all equal.
    pub zero_variance: Vec<f64>,
    /// Prompts drawn per step (more than `batch` only with dynamic sampling).
    pub prompts_drawn: Vec<usize>,
    /// Whether the step's batch held `batch` groups with reward variance.
    pub batch_filled: Vec<bool>,
    pub losses: Vec<f64>,
    pub kl: Vec<f64>,
    pub updates: Vec<usize>,
    /// With `care`: the mean bonus and the mean (uncapped) answer confidence over the step's
    /// rollouts.
    pub care_bonus: Vec<f64>,
    pub confidence: Vec<f64>,
    /// Steps of this call whose update was skipped for a non-finite loss or gradient.
    pub skipped_steps: Vec<u64>,
    /// The periodic evaluations, when `eval` was set.
    pub eval: Vec<EvalPoint>,
    pub last_checkpoint: Option<PathBuf>,
    pub seconds_per_step: f64,
    /// Wall time of each step: sampling, rewards and the update (no evaluation or saving).
    pub step_seconds: Vec<f64>,
}

/// Train `vlm` with GRPO on `task` with the built-in rewards `opts.rewards`; returns a new model
/// sharing the frozen base.
pub fn grpo(vlm: &Vlm, task: &McqTask, opts: &GrpoOptions, ctx: &TrainContext) -> Result<(Vlm, GrpoSummary)> {
    grpo_with_rewards(vlm, task, opts, Rewards::default(), ctx)
}

/// Options that cannot work, named.
fn check(opts: &GrpoOptions) -> Result<()> {
    if opts.batch == 0 || opts.step.group < 2 {
        crate::bail!("grpo: batch must be ≥ 1 and group ≥ 2 (got {} and {})", opts.batch, opts.step.group);
    }
    if let Some(cap) = opts.max_draws.filter(|&c| c < opts.batch) {
        crate::bail!("grpo: max_draws ({cap}) must be at least batch ({})", opts.batch);
    }
    if let Some(eval) = &opts.eval {
        eval.check("grpo")?;
    }
    if let Some(care) = &opts.care {
        care.check()?;
    }
    Ok(())
}

/// [`grpo`] with `custom` rewards (script closures) scored after the built-in ones; every
/// reward's name must be unique.
pub fn grpo_with_rewards(
    vlm: &Vlm,
    task: &McqTask,
    opts: &GrpoOptions,
    custom: Rewards,
    ctx: &TrainContext,
) -> Result<(Vlm, GrpoSummary)> {
    check(opts)?;
    let described = format!("{opts:?}; rewards {:?}; task {} of {}", custom.names(), task.name(), task.len());
    crate::dist::check_call(&ctx.world, "grpo", &vlm.model, &described)?;
    let names: Vec<(&str, f64)> = opts.rewards.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    let mut rewards = Rewards::builtin(&names)?;
    for r in custom.rewards {
        rewards.push(&r.name, r.weight, r.kind)?;
    }
    if opts.care.is_some() && rewards.names().is_empty() {
        crate::bail!("grpo: care needs a reward function; the first one is the accuracy its bonus reads");
    }
    let base = frozen_base(&vlm.model)?;
    let what = Trainable {
        lora: opts.lora.as_ref(),
        full: opts.full,
        train_vision: opts.train_vision,
        seed: opts.seed,
    };
    let trainable = || trainable_on(&base, what);
    let policy = vlm.with_model(trainable()?);
    let care = match opts.care {
        Some(care) => Some(Care {
            reference: EmaReference::new(trainable()?, &policy.model, care.ema_decay, care.ema_every)?,
            options: care,
        }),
        None => None,
    };
    let mut sampler = SamplerOptions {
        n: opts.step.group,
        max_new_tokens: opts.max_new_tokens,
        max_batch_tokens: opts.max_batch_tokens,
        max_seqs: opts.max_seqs,
        ..SamplerOptions::default()
    };
    sampler.logits.temperature = opts.step.temperature as f32;
    sampler.memory = ctx.memory;
    sampler.logits.top_p = opts.top_p as f32;
    let settings = LoopSettings {
        total: opts.steps,
        lr: opts.lr,
        schedule: opts.schedule,
        warmup: opts.warmup,
        adamw: AdamWConfig::default(),
        seed: opts.seed,
        max_bad_steps: opts.max_bad_steps,
        save_every: opts.save_every,
        resume: opts.resume.as_deref(),
        eval: opts.eval.as_ref(),
    };
    let mut trainer = GrpoStep {
        source: RolloutSource {
            policy: &policy,
            task,
            rewards: &rewards,
            sampler,
            cancel: &ctx.cancel,
            world: &ctx.world,
        },
        opts,
        dynamic: opts.dynamic_sampling.then(|| opts.max_draws.unwrap_or(3 * opts.batch)),
        pad: vlm.processor.endoftext_id(),
        care,
        curves: GrpoSummary::default(),
    };
    let run = train_loop::run(&mut trainer, &policy, task, &settings, ctx)?;
    let summary = GrpoSummary {
        first_step: run.first_step,
        skipped_steps: run.skipped_steps,
        eval: run.eval,
        last_checkpoint: run.last_checkpoint,
        seconds_per_step: run.seconds_per_step,
        step_seconds: run.step_seconds,
        ..trainer.curves
    };
    Ok((policy, summary))
}

/// One GRPO step: draw the step's rollouts with its own seed, then one [`grpo_step`] update.
struct GrpoStep<'a> {
    source: RolloutSource<'a>,
    opts: &'a GrpoOptions,
    /// The draw cap with dynamic sampling.
    dynamic: Option<usize>,
    pad: u32,
    care: Option<Care>,
    /// The per-step curves; the loop fills in the rest of the summary.
    curves: GrpoSummary,
}

/// CARE's state in a run: its settings and the EMA reference.
struct Care {
    options: CareOptions,
    reference: EmaReference,
}

impl Care {
    /// Add each rollout's bonus (per prompt group of `step.group`, the reference scoring
    /// `step.micro_batch` at a time) to its reward; returns the mean bonus and the mean confidence.
    fn reward(
        &self,
        rollouts: &mut [Rollout],
        step: &GrpoStepOptions,
        policy: &Vlm,
        pad: u32,
        world: &World,
    ) -> Result<(f64, f64)> {
        let mut sums = [0.0; 3];
        if !rollouts.is_empty() {
            let confidence =
                self.reference.confidences(rollouts, &policy.processor, pad, step.micro_batch)?;
            let bonus = add_care_bonus(rollouts, &confidence, &self.options.bonus, step.group)?;
            sums = [bonus.iter().sum(), confidence.iter().sum(), rollouts.len() as f64];
        }
        world.all_reduce_f64("grpo: CARE's bonus and confidence", &mut sums)?;
        if sums[2] == 0.0 {
            return Ok((0.0, 0.0));
        }
        Ok((sums[0] / sums[2], sums[1] / sums[2]))
    }
}

/// Add CARE's bonus to each rollout's reward, given its `confidence`: per prompt group of
/// `group`, reading the first reward component as the accuracy. Returns the bonuses.
pub(crate) fn add_care_bonus(
    rollouts: &mut [Rollout],
    confidence: &[f64],
    bonus: &CareBonus,
    group: usize,
) -> Result<Vec<f64>> {
    let accuracy = rollouts
        .iter()
        .map(|r| match r.reward_components.first() {
            Some(&a) => Ok(a),
            None => crate::bail!("care: rollout of example {} has no reward components", r.example),
        })
        .collect::<Result<Vec<f64>>>()?;
    let bonus = bonus.bonus_by_group(&accuracy, confidence, group)?;
    for (r, b) in rollouts.iter_mut().zip(&bonus) {
        r.reward += b;
    }
    Ok(bonus)
}

impl Trainer for GrpoStep<'_> {
    const NAME: &'static str = "grpo";

    fn step(&mut self, state: &mut TrainState, step: u64, lr: f64) -> Result<StepReport> {
        let opts = self.opts;
        let seed = splitmix64(opts.seed ^ step.wrapping_mul(0x9E37_79B9));
        let mut drawn = self.source.step(&mut state.order, opts.batch, self.dynamic, seed)?;
        let care = match &self.care {
            Some(care) => {
                let (policy, world) = (self.source.policy, self.source.world);
                Some(care.reward(&mut drawn.rollouts, &opts.step, policy, self.pad, world)?)
            }
            None => None,
        };
        let model = &self.source.policy.model;
        let world = self.source.world;
        let mut stats = if !world.any("grpo: whether any rollouts are left", !drawn.rollouts.is_empty())? {
            GrpoStepStats::default()
        } else {
            grpo_step(
                model,
                &drawn.rollouts,
                &opts.step,
                &mut state.optimizer,
                &mut state.guard,
                lr,
                self.pad,
                world,
            )?
        };
        if let Some(care) = &self.care {
            care.reference.after_step(model, step + 1)?;
        }
        drawn.stats.apply(&mut stats);
        let mut metrics: Vec<(String, f64)> = [
            ("reward_mean", stats.reward_mean),
            ("reward_std", stats.reward_std),
            ("loss", stats.loss),
            ("kl", stats.kl),
            ("clip_low", stats.clip_low),
            ("clip_high", stats.clip_high),
            ("entropy", stats.entropy),
            ("grad_norm", stats.grad_norm),
            ("completion_length", stats.completion_length),
            ("zero_variance_fraction", stats.zero_variance_fraction),
            ("prompts_drawn", drawn.prompts as f64),
            ("batch_filled", f64::from(u8::from(drawn.filled))),
            ("lr", lr),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        if let Some((bonus, confidence)) = care {
            metrics.push(("care_bonus_mean".into(), bonus));
            metrics.push(("confidence_mean".into(), confidence));
            self.curves.care_bonus.push(bonus);
            self.curves.confidence.push(confidence);
        }
        let components = stats.component_means.iter().zip(&stats.component_stds);
        for (name, (mean, std)) in self.source.rewards.names().into_iter().zip(components) {
            metrics.push((format!("rewards/{name}/mean"), *mean));
            metrics.push((format!("rewards/{name}/std"), *std));
        }
        let curves = &mut self.curves;
        curves.rewards.push(stats.reward_mean);
        curves.zero_variance.push(stats.zero_variance_fraction);
        curves.prompts_drawn.push(drawn.prompts);
        curves.batch_filled.push(drawn.filled);
        curves.losses.push(stats.loss);
        curves.kl.push(stats.kl);
        curves.updates.push(stats.updates);
        Ok(StepReport {
            loss: stats.loss,
            grad_norm: stats.grad_norm,
            metrics,
            message: format!("reward {:.3}", stats.reward_mean),
        })
    }

    fn checkpoint_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.care.as_ref().map_or(Ok(Vec::new()), |care| care.reference.tensors())
    }

    fn restore_tensors(&mut self, saved: Option<HashMap<String, Tensor>>) -> Result<()> {
        match (&self.care, saved) {
            (Some(care), Some(saved)) => care.reference.restore(&saved),
            (Some(_), None) => crate::bail!(
                "grpo: the checkpoint holds no CARE reference (it was written without care), so \
                 the run cannot resume with care exactly"
            ),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::run::RunDir;
    use crate::train::data_order::DataOrder;
    use crate::train::rewards::RewardKind;
    use crate::train::sft::tests::{synthetic_task, tiny_vlm};

    fn small(steps: u64) -> GrpoOptions {
        GrpoOptions {
            steps,
            batch: 2,
            step: GrpoStepOptions { group: 4, ..GrpoStepOptions::default() },
            lr: 1e-2,
            max_new_tokens: 6,
            ..GrpoOptions::default()
        }
    }

    /// A reward that varies with the completion's text, so groups have variance and training moves.
    fn text_reward() -> Rewards<'static> {
        let mut r = Rewards::default();
        let kind = RewardKind::Custom(Box::new(|text: &str, _| {
            Ok((text.bytes().map(u64::from).sum::<u64>() % 7) as f64)
        }));
        r.push("bytes", 1.0, kind).unwrap();
        r
    }

    #[test]
    fn from_a_random_start_rewards_stay_at_zero_and_every_group_has_zero_variance() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let opts = GrpoOptions { lr: 1e-3, ..small(2) };
        let (_, summary) = grpo(&vlm, &task, &opts, &TrainContext::quiet()).unwrap();
        assert_eq!(summary.rewards, vec![0.0, 0.0], "a random model never answers in format");
        assert_eq!(summary.zero_variance, vec![1.0, 1.0]);
        assert_eq!(summary.batch_filled, vec![false, false]);
        // Dynamic sampling draws up to its cap looking for signal, and reports that it found none.
        let opts = GrpoOptions { dynamic_sampling: true, max_draws: Some(5), ..opts };
        let (_, summary) = grpo(&vlm, &task, &opts, &TrainContext::quiet()).unwrap();
        assert_eq!(summary.prompts_drawn, vec![5, 5]);
        assert_eq!((summary.zero_variance, summary.updates), (vec![1.0, 1.0], vec![0, 0]));
    }

    #[test]
    fn dynamic_sampling_replaces_zero_variance_groups_up_to_the_cap() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(Some(tmp.path()), "grpo").unwrap();
        let ctx = TrainContext { run: Some(&run), ..TrainContext::quiet() };
        // Even examples get distinct rewards (a running count); odd ones a constant.
        let calls = Cell::new(0u32);
        let mut rewards = Rewards::default();
        let counting = |_: &str, example: usize| {
            calls.set(calls.get() + 1);
            Ok(if example % 2 == 0 { f64::from(calls.get()) } else { 0.5 })
        };
        rewards.push("even", 1.0, RewardKind::Custom(Box::new(counting))).unwrap();
        let (batch, cap, steps) = (2, 3, 4);
        let opts =
            GrpoOptions { dynamic_sampling: true, max_draws: Some(cap), rewards: vec![], ..small(steps) };
        let (_, summary) = grpo_with_rewards(&vlm, &task, &opts, rewards, &ctx).unwrap();

        // Replay the data order: each round draws the prompts still missing, within the cap.
        let mut order = DataOrder::new(task.len(), opts.seed).unwrap();
        for step in 0..steps as usize {
            let (mut drawn, mut varied) = (0, 0);
            while varied < batch && drawn < cap {
                let want = (batch - varied).min(cap - drawn);
                varied += order.next_batch(want).iter().filter(|&&i| i % 2 == 0).count();
                drawn += want;
            }
            assert_eq!(summary.prompts_drawn[step], drawn, "step {step}");
            assert_eq!(summary.batch_filled[step], varied == batch, "step {step}");
            let zero = (drawn - varied) as f64 / drawn as f64;
            assert!((summary.zero_variance[step] - zero).abs() < 1e-12, "step {step}");
            assert_eq!(summary.updates[step], usize::from(varied > 0), "step {step}");
        }
        assert!(summary.prompts_drawn.iter().any(|&n| n > batch), "{:?}", summary.prompts_drawn);
        let metrics = std::fs::read_to_string(tmp.path().join("metrics.jsonl")).unwrap();
        for name in [
            "grpo/prompts_drawn",
            "grpo/batch_filled",
            "grpo/zero_variance_fraction",
            "grpo/rewards/even/mean",
        ] {
            assert_eq!(metrics.matches(&format!("\"{name}\"")).count(), steps as usize, "{name}");
        }
    }

    #[test]
    fn resumed_run_repeats_the_uninterrupted_losses_and_rewards() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let opts = GrpoOptions { rewards: vec![], ..small(4) };
        let (_, whole) =
            grpo_with_rewards(&vlm, &task, &opts, text_reward(), &TrainContext::quiet()).unwrap();
        assert!(whole.rewards.iter().any(|&r| r > 0.0) && whole.updates.iter().all(|&u| u == 1));
        let tmp = tempfile::tempdir().unwrap();
        let ctx = TrainContext { out_dir: Some(tmp.path().to_path_buf()), ..TrainContext::quiet() };
        let first = GrpoOptions { steps: 2, ..opts.clone() };
        let (_, half) = grpo_with_rewards(&vlm, &task, &first, text_reward(), &ctx).unwrap();
        let resume = Some(tmp.path().join("checkpoint-2"));
        let (_, rest) = grpo_with_rewards(
            &vlm,
            &task,
            &GrpoOptions { resume, ..opts },
            text_reward(),
            &TrainContext::quiet(),
        )
        .unwrap();
        assert_eq!((half.first_step, rest.first_step, rest.losses.len()), (0, 2, 2));
        let joined = |a: &[f64], b: &[f64]| [a, b].concat();
        for (name, w, r) in [
            ("loss", &whole.losses, joined(&half.losses, &rest.losses)),
            ("reward", &whole.rewards, joined(&half.rewards, &rest.rewards)),
        ] {
            for (a, b) in w.iter().zip(&r) {
                assert!((a - b).abs() < 1e-6, "{name}: {w:?} vs {r:?}");
            }
        }
    }

    #[test]
    fn a_care_run_resumes_bit_exactly_with_its_ema_reference() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        // Blend every step with a low decay, so the reference moves between the halves.
        let care = CareOptions { ema_decay: 0.5, ema_every: 1, ..CareOptions::default() };
        let opts = GrpoOptions { rewards: vec![], care: Some(care), ..small(4) };
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(Some(&tmp.path().join("whole")), "grpo").unwrap();
        let ctx = TrainContext { run: Some(&run), ..TrainContext::quiet() };
        let (_, whole) = grpo_with_rewards(&vlm, &task, &opts, text_reward(), &ctx).unwrap();
        assert!(whole.care_bonus.iter().any(|&b| b > 0.0), "{:?}", whole.care_bonus);
        assert_eq!(whole.confidence.len(), 4);
        let metrics = std::fs::read_to_string(tmp.path().join("whole/metrics.jsonl")).unwrap();
        for name in ["grpo/care_bonus_mean", "grpo/confidence_mean"] {
            assert_eq!(metrics.matches(&format!("\"{name}\"")).count(), 4, "{name}");
        }

        let half_dir = tmp.path().join("half");
        let ctx = TrainContext { out_dir: Some(half_dir.clone()), ..TrainContext::quiet() };
        let first = GrpoOptions { steps: 2, ..opts.clone() };
        let (_, half) = grpo_with_rewards(&vlm, &task, &first, text_reward(), &ctx).unwrap();
        let ctx = TrainContext { out_dir: Some(tmp.path().join("rest")), ..TrainContext::quiet() };
        let resume = GrpoOptions { resume: Some(half_dir.join("checkpoint-2")), ..opts.clone() };
        let (_, rest) = grpo_with_rewards(&vlm, &task, &resume, text_reward(), &ctx).unwrap();
        let joined = |a: &[f64], b: &[f64]| [a, b].concat();
        assert_eq!(joined(&half.losses, &rest.losses), whole.losses);
        assert_eq!(joined(&half.rewards, &rest.rewards), whole.rewards);
        assert_eq!(joined(&half.care_bonus, &rest.care_bonus), whole.care_bonus);
        assert_eq!(joined(&half.confidence, &rest.confidence), whole.confidence);
        // The final policy and reference are the same bits.
        let end = |dir: &str| tmp.path().join(dir).join("checkpoint-4");
        for file in ["trainable.safetensors", "trainer_tensors.safetensors"] {
            let read = |dir: &std::path::Path| std::fs::read(dir.join(file)).unwrap();
            assert!(read(&end("whole/checkpoints/grpo")) == read(&end("rest")), "{file} differs");
        }
        let reference = std::fs::read(end("rest").join("trainer_tensors.safetensors")).unwrap();
        assert!(reference != std::fs::read(end("rest").join("trainable.safetensors")).unwrap());

        // A checkpoint written without care cannot resume a care run exactly, and says so.
        let plain_dir = tmp.path().join("plain");
        let ctx = TrainContext { out_dir: Some(plain_dir.clone()), ..TrainContext::quiet() };
        let plain = GrpoOptions { care: None, steps: 1, ..opts.clone() };
        grpo_with_rewards(&vlm, &task, &plain, text_reward(), &ctx).unwrap();
        let resume = GrpoOptions { resume: Some(plain_dir), ..opts };
        let err = grpo_with_rewards(&vlm, &task, &resume, text_reward(), &TrainContext::quiet())
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no CARE reference"), "{err}");
    }

    #[test]
    fn periodic_evaluation_logs_a_support_curve_without_changing_training() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(Some(tmp.path()), "grpo").unwrap();
        let ctx = TrainContext { run: Some(&run), ..TrainContext::quiet() };
        let mut eval = PeriodicEval::every(2);
        eval.options.sampler.n = 3;
        eval.options.sampler.max_new_tokens = 4;
        eval.options.limit = Some(2);
        eval.k = 2;
        let opts = GrpoOptions { rewards: vec![], ..small(3) };
        let (_, plain) =
            grpo_with_rewards(&vlm, &task, &opts, text_reward(), &TrainContext::quiet()).unwrap();
        let with = GrpoOptions { eval: Some(eval), ..opts };
        let (_, summary) = grpo_with_rewards(&vlm, &task, &with, text_reward(), &ctx).unwrap();
        assert_eq!(summary.losses, plain.losses);
        assert_eq!(summary.eval.iter().map(|p| p.step).collect::<Vec<_>>(), vec![2, 3]);
        for p in &summary.eval {
            assert!((0.0..=1.0).contains(&p.acc1) && (0.0..=1.0).contains(&p.pass_at_k));
            assert!((p.gap - (p.pass_at_k - p.acc1)).abs() < 1e-12);
        }
        let metrics = std::fs::read_to_string(tmp.path().join("metrics.jsonl")).unwrap();
        for name in ["eval/acc1", "eval/pass@2", "eval/gap"] {
            assert_eq!(metrics.matches(&format!("\"{name}\"")).count(), 2, "{name}");
        }
    }

    #[test]
    fn bad_options_are_named() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let one = GrpoOptions {
            step: GrpoStepOptions { group: 1, ..GrpoStepOptions::default() },
            ..GrpoOptions::default()
        };
        assert!(grpo(&vlm, &task, &one, &TrainContext::quiet()).unwrap_err().to_string().contains("group"));
        let bad = GrpoOptions { rewards: vec![("brevity".into(), 1.0)], ..GrpoOptions::default() };
        assert!(grpo(&vlm, &task, &bad, &TrainContext::quiet()).unwrap_err().to_string().contains("brevity"));
        let cap = GrpoOptions { dynamic_sampling: true, max_draws: Some(1), ..small(1) };
        assert!(grpo(&vlm, &task, &cap, &TrainContext::quiet())
            .unwrap_err()
            .to_string()
            .contains("max_draws (1)"));
        let eval = GrpoOptions { eval: Some(PeriodicEval { k: 99, ..PeriodicEval::every(1) }), ..small(1) };
        let err = grpo(&vlm, &task, &eval, &TrainContext::quiet()).unwrap_err().to_string();
        assert!(err.contains("eval k = 99"), "{err}");
        let mut failing = Rewards::default();
        failing
            .push("mine", 1.0, RewardKind::Custom(Box::new(|_, _| crate::bail!("no answer tag"))))
            .unwrap();
        let err = grpo_with_rewards(&vlm, &task, &small(1), failing, &TrainContext::quiet())
            .unwrap_err()
            .to_string();
        assert!(err.contains("reward `mine`: no answer tag"), "{err}");
    }
}
