//! The GRPO loop: each step takes `batch` prompts, draws `group` completions of each with the
//! shared sampler (its log-probs are the old policy's), scores them with the task's rewards, and
//! hands the rollouts to [`grpo_step`]. Defaults are TRL's `GRPOConfig` (lr 1e-6, beta 0,
//! epsilon 0.2, G = 8, temperature 1, token-level loss); tiny CPU models need larger learning
//! rates, which their scripts state.
//!
//! Not yet here: dynamic sampling (drawing more prompts to refill zero-variance groups) and the
//! periodic Pass@K evaluation during training; zero-variance filtering is available.

use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::models::qwen2_5_vl::LoraConfig;
use crate::models::Vlm;
use crate::run::splitmix64;
use crate::sample::{sample, FinishReason, SampleRequest, SamplerOptions};
use crate::task::McqTask;

use super::checkpoint;
use super::data_order::DataOrder;
use super::grpo_step::{grpo_step, GrpoStepOptions, Rollout};
use super::optim::{AdamW, AdamWConfig};
use super::rewards::Rewards;
use super::schedule::Schedule;
use super::sft::{trainable_copy, SftOptions, TrainContext};
use super::NonFiniteGuard;

#[derive(Debug, Clone, PartialEq)]
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
    /// Reward names (`accuracy`, `format`, `consistency`) and weights.
    pub rewards: Vec<(String, f64)>,
    pub max_new_tokens: usize,
    pub top_p: f64,
    pub save_every: Option<u64>,
    pub seed: u64,
    pub max_bad_steps: usize,
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
            rewards: vec![("accuracy".into(), 1.0)],
            max_new_tokens: 32,
            top_p: 1.0,
            save_every: None,
            seed: 0,
            max_bad_steps: 5,
        }
    }
}

/// Per-step curves of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrpoSummary {
    pub rewards: Vec<f64>,
    pub zero_variance: Vec<f64>,
    pub losses: Vec<f64>,
    pub kl: Vec<f64>,
    pub updates: Vec<usize>,
    pub last_checkpoint: Option<PathBuf>,
    pub seconds_per_step: f64,
}

/// Train `vlm` with GRPO on `task`; returns a new model sharing the frozen base.
pub fn grpo(vlm: &Vlm, task: &McqTask, opts: &GrpoOptions, ctx: &TrainContext) -> Result<(Vlm, GrpoSummary)> {
    if opts.batch == 0 || opts.step.group < 2 {
        crate::bail!("grpo: batch must be ≥ 1 and group ≥ 2 (got {} and {})", opts.batch, opts.step.group);
    }
    let names: Vec<(&str, f64)> = opts.rewards.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    let rewards = Rewards::builtin(&names)?;
    let shape =
        SftOptions { lora: opts.lora.clone(), full: opts.full, seed: opts.seed, ..SftOptions::default() };
    let model = trainable_copy(&vlm.model, &shape)?;
    let policy = vlm.with_model(model.clone());
    let mut optimizer = AdamW::new(model.trainable(), AdamWConfig::default())?;
    let mut order = DataOrder::new(task.len(), opts.seed)?;
    let mut guard = NonFiniteGuard::new(opts.max_bad_steps);
    let pad = vlm.processor.endoftext_id();
    let special = vlm.processor.special_tokens();
    let vision_ids = [special.image_pad, special.video_pad, special.vision_start, special.vision_end];
    let out = ctx.checkpoint_dir();
    let save = |step: u64, order: &DataOrder, optimizer: &AdamW, guard: &NonFiniteGuard| {
        checkpoint::save_progress(out.as_deref(), "grpo", model.trainable(), step, order, optimizer, guard)
    };
    let mut summary = GrpoSummary::default();
    let bar = ctx.progress.bar(opts.steps, "grpo");
    let started = Instant::now();
    for step in 0..opts.steps {
        if ctx.cancel.is_cancelled() {
            let saved = save(step, &order, &optimizer, &guard)?;
            let where_ =
                saved.map_or("nothing saved".to_string(), |p| format!("checkpoint saved to {}", p.display()));
            return Err(Error::Cancelled(format!("grpo at step {step} of {}; {where_}", opts.steps)));
        }
        let indices = order.next_batch(opts.batch);
        let requests = indices
            .iter()
            .map(|&i| {
                let item = task.item(i)?;
                Ok(SampleRequest {
                    question_id: item.id.clone(),
                    image: item.image.clone(),
                    prompt: task.prompt(i)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut sampler = SamplerOptions {
            n: opts.step.group,
            max_new_tokens: opts.max_new_tokens,
            seed: splitmix64(opts.seed ^ step.wrapping_mul(0x9E37_79B9)),
            ..SamplerOptions::default()
        };
        sampler.logits.temperature = opts.step.temperature as f32;
        sampler.logits.top_p = opts.top_p as f32;
        let drawn = sample(&policy, &requests, &sampler, Some(&ctx.cancel), crate::run::ProgressMode::Quiet)?;
        let mut rollouts = Vec::with_capacity(opts.batch * opts.step.group);
        for ((&i, request), samples) in indices.iter().zip(&requests).zip(drawn) {
            let enc = policy.encode(request.image.as_ref(), &request.prompt)?;
            for mut s in samples {
                // An image placeholder sampled into a completion would be read as an image slot
                // when the rollout is scored, so the completion ends before it, as if truncated
                // (an empty one becomes a lone end token, keeping the group whole). Real models
                // all but never emit these; random ones do.
                if let Some(cut) = s.token_ids.iter().position(|id| vision_ids.contains(id)) {
                    s.token_ids.truncate(cut);
                    s.logprobs.truncate(cut);
                    s.finish_reason = FinishReason::Length;
                    if cut == 0 {
                        s.token_ids.push(pad);
                        s.logprobs.push(0.0);
                    }
                }
                let scores = rewards.score(task, i, &s.text)?;
                rollouts.push(Rollout {
                    example: i,
                    prompt_ids: enc.input_ids.clone(),
                    completion_ids: s.token_ids,
                    old_logprobs: s.logprobs,
                    pixel_values: enc.pixel_values.clone(),
                    grid: enc.grid_thw,
                    reward_components: scores.components,
                    reward: scores.total,
                    truncated: s.finish_reason == FinishReason::Length,
                });
            }
        }
        let lr = opts.schedule.lr_at(opts.lr, step, opts.steps, opts.warmup);
        let stats = grpo_step(&model, &rollouts, &opts.step, &mut optimizer, &mut guard, lr, pad)?;
        for (name, value) in [
            ("grpo/reward_mean", stats.reward_mean),
            ("grpo/reward_std", stats.reward_std),
            ("grpo/loss", stats.loss),
            ("grpo/kl", stats.kl),
            ("grpo/clip_low", stats.clip_low),
            ("grpo/clip_high", stats.clip_high),
            ("grpo/entropy", stats.entropy),
            ("grpo/grad_norm", stats.grad_norm),
            ("grpo/completion_length", stats.completion_length),
            ("grpo/zero_variance_fraction", stats.zero_variance_fraction),
            ("grpo/lr", lr),
        ] {
            ctx.metric(name, value, step)?;
        }
        for ((name, _), (mean, std)) in
            opts.rewards.iter().zip(stats.component_means.iter().zip(&stats.component_stds))
        {
            ctx.metric(&format!("grpo/rewards/{name}/mean"), *mean, step)?;
            ctx.metric(&format!("grpo/rewards/{name}/std"), *std, step)?;
        }
        summary.rewards.push(stats.reward_mean);
        summary.zero_variance.push(stats.zero_variance_fraction);
        summary.losses.push(stats.loss);
        summary.kl.push(stats.kl);
        summary.updates.push(stats.updates);
        if opts.save_every.is_some_and(|n| n > 0 && (step + 1) % n == 0) {
            summary.last_checkpoint = save(step + 1, &order, &optimizer, &guard)?;
        }
        bar.inc(1);
        bar.set_message(format!("reward {:.3}", stats.reward_mean));
    }
    bar.finish_and_clear();
    summary.seconds_per_step = started.elapsed().as_secs_f64() / opts.steps.max(1) as f64;
    summary.last_checkpoint = save(opts.steps, &order, &optimizer, &guard)?.or(summary.last_checkpoint);
    Ok((vlm.with_model(model), summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{CancelFlag, ProgressMode};
    use crate::train::sft::tests::{synthetic_task, tiny_vlm};

    #[test]
    fn from_a_random_start_rewards_stay_at_zero_and_every_group_has_zero_variance() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let ctx = TrainContext {
            run: None,
            cancel: CancelFlag::new(),
            progress: ProgressMode::Quiet,
            out_dir: None,
        };
        let opts = GrpoOptions {
            steps: 2,
            batch: 2,
            step: GrpoStepOptions { group: 4, ..GrpoStepOptions::default() },
            lr: 1e-3,
            max_new_tokens: 6,
            ..GrpoOptions::default()
        };
        let (_, summary) = grpo(&vlm, &task, &opts, &ctx).unwrap();
        assert_eq!(summary.rewards, vec![0.0, 0.0], "a random model never answers in format");
        assert_eq!(summary.zero_variance, vec![1.0, 1.0]);
    }

    #[test]
    fn bad_options_are_named() {
        let (vlm, task) = (tiny_vlm(), synthetic_task());
        let ctx = TrainContext {
            run: None,
            cancel: CancelFlag::new(),
            progress: ProgressMode::Quiet,
            out_dir: None,
        };
        let one = GrpoOptions {
            step: GrpoStepOptions { group: 1, ..GrpoStepOptions::default() },
            ..GrpoOptions::default()
        };
        assert!(grpo(&vlm, &task, &one, &ctx).unwrap_err().to_string().contains("group"));
        let bad = GrpoOptions { rewards: vec![("brevity".into(), 1.0)], ..GrpoOptions::default() };
        assert!(grpo(&vlm, &task, &bad, &ctx).unwrap_err().to_string().contains("brevity"));
    }
}
