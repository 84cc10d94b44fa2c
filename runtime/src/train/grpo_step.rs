//! One GRPO update over pre-sampled rollouts: rewards to group advantages, optional
//! zero-variance filtering, reference log-probs (the same model with adapters off), then `mu`
//! optimisation passes of the clipped surrogate. The sampler that produces the rollouts sits in
//! front of this; everything after sampling is here.
//!
//! With `mu = 1` the sampling policy is the current one, so (as TRL does) the old log-probs are
//! the current ones detached and the ratio is exactly 1; with `mu > 1` the sampler's log-probs
//! are the old policy's.
//!
//! `micro_batch` splits this rank's kept completions into micro-batches of that many, each
//! scored and back-propagated on its own (reference and old log-probs too), so a backward holds
//! one micro-batch's activations. Every micro-batch's loss is taken over the whole batch's token
//! and completion counts, so their losses and gradients sum to the whole batch's; the gradients
//! accumulate and each pass still takes one optimiser step.
//!
//! Under MPI each rank holds whole groups of the batch; the loss's denominators are the batch's
//! (summed over ranks first), the gradients and the logged statistics are summed over the ranks,
//! and every decision (nothing left to train on, a non-finite step) is taken on the sums, so the
//! ranks' identical optimisers take one process's update.

use candle_core::{Device, Tensor};

use super::advantages::{group_advantages, Advantages, ScaleRewards};
use super::grad::{GradAccumulator, NonFiniteGuard};
use super::grpo_loss::{grpo_loss, GrpoLossConfig, GrpoLossInputs, LossTotals};
use super::optim::AdamW;
use super::token_logprobs::{score_tokens, score_tokens_for_training, Sequence, TokenScores};
use crate::dist::World;
use crate::error::Result;
use crate::models::qwen2_5_vl::{Grid, Qwen25VL};

/// One sampled completion of one prompt. Rollouts of the same prompt are consecutive, `group`
/// of them.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// The task item it answers.
    pub example: usize,
    pub prompt_ids: Vec<u32>,
    pub completion_ids: Vec<u32>,
    /// The sampler's log-prob of each completion id (at the sampling temperature).
    pub old_logprobs: Vec<f32>,
    pub pixel_values: Option<Tensor>,
    pub grid: Option<Grid>,
    /// Each reward function's score, in the reward set's order.
    pub reward_components: Vec<f64>,
    /// Their weighted sum.
    pub reward: f64,
    /// The completion hit `max_new_tokens` without an end token.
    pub truncated: bool,
}

/// `grpo(...)`'s per-step options; defaults as TRL's `GRPOConfig`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoStepOptions {
    pub group: usize,
    pub mu: usize,
    pub loss: GrpoLossConfig,
    pub scale_rewards: ScaleRewards,
    /// Give truncated completions no loss (DAPO's overlong filtering).
    pub mask_truncated: bool,
    /// Drop groups whose rewards are all equal before the update.
    pub filter_zero_variance: bool,
    pub temperature: f64,
    pub max_grad_norm: Option<f64>,
    /// Completions per backward pass; `None`: all of this rank's at once.
    pub micro_batch: Option<usize>,
}

impl GrpoStepOptions {
    /// The same options with KL weight `beta`.
    pub fn with_beta(mut self, beta: f64) -> Self {
        self.loss.beta = beta;
        self
    }
}

impl Default for GrpoStepOptions {
    fn default() -> Self {
        Self {
            group: 8,
            mu: 1,
            loss: GrpoLossConfig::default(),
            scale_rewards: ScaleRewards::Group,
            mask_truncated: false,
            filter_zero_variance: false,
            temperature: 1.0,
            max_grad_norm: Some(1.0),
            micro_batch: None,
        }
    }
}

/// What one step logs (means over passes where it applies).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrpoStepStats {
    pub loss: f64,
    pub reward_mean: f64,
    pub reward_std: f64,
    /// Mean and std of each reward component.
    pub component_means: Vec<f64>,
    pub component_stds: Vec<f64>,
    pub kl: f64,
    pub clip_low: f64,
    pub clip_high: f64,
    pub entropy: f64,
    pub grad_norm: f64,
    pub completion_length: f64,
    pub zero_variance_fraction: f64,
    /// Optimiser updates applied (fewer than `mu` when steps were skipped or nothing was left).
    pub updates: usize,
}

/// What the rewards of a set of rollouts (consecutive groups of `group`) look like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RewardStats {
    pub reward_mean: f64,
    pub reward_std: f64,
    pub component_means: Vec<f64>,
    pub component_stds: Vec<f64>,
    pub completion_length: f64,
    /// Fraction of groups whose rewards are all equal.
    pub zero_variance_fraction: f64,
}

/// What [`RewardStats`] reads of one rollout; small, so ranks gather them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RolloutScore {
    pub reward: f64,
    pub reward_components: Vec<f64>,
    pub completion_length: usize,
}

impl RolloutScore {
    pub fn of(r: &Rollout) -> Self {
        RolloutScore {
            reward: r.reward,
            reward_components: r.reward_components.clone(),
            completion_length: r.completion_ids.len(),
        }
    }
}

impl RewardStats {
    pub fn of(rollouts: &[Rollout], group: usize) -> Self {
        Self::of_scores(&rollouts.iter().map(RolloutScore::of).collect::<Vec<_>>(), group)
    }

    /// As [`Self::of`], from the rollouts' scores (gathered from every rank under MPI).
    pub fn of_scores(rollouts: &[RolloutScore], group: usize) -> Self {
        let rewards: Vec<f64> = rollouts.iter().map(|r| r.reward).collect();
        let (reward_mean, reward_std) = mean_std(&rewards);
        let components = rollouts.first().map_or(0, |r| r.reward_components.len());
        let (component_means, component_stds) = (0..components)
            .map(|c| {
                mean_std(
                    &rollouts
                        .iter()
                        .map(|r| r.reward_components.get(c).copied().unwrap_or(0.0))
                        .collect::<Vec<_>>(),
                )
            })
            .unzip();
        let lengths: Vec<f64> = rollouts.iter().map(|r| r.completion_length as f64).collect();
        let chunks = rewards.chunks(group.max(1));
        let groups = chunks.len();
        let flat = chunks.filter(|g| g.iter().all(|&r| r == g[0])).count();
        Self {
            reward_mean,
            reward_std,
            component_means,
            component_stds,
            completion_length: mean_std(&lengths).0,
            zero_variance_fraction: flat as f64 / groups.max(1) as f64,
        }
    }

    /// Report these in `stats` (replacing the reward fields).
    pub fn apply(self, stats: &mut GrpoStepStats) {
        stats.reward_mean = self.reward_mean;
        stats.reward_std = self.reward_std;
        stats.component_means = self.component_means;
        stats.component_stds = self.component_stds;
        stats.completion_length = self.completion_length;
        stats.zero_variance_fraction = self.zero_variance_fraction;
    }
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    (mean, (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt())
}

/// Update `model`'s trainable weights (those `optimizer` holds) from `rollouts` at learning
/// rate `lr`; `pad_id` pads the batch. `guard` skips non-finite passes. Under MPI `rollouts` are
/// this rank's whole groups and every rank calls this together.
#[allow(clippy::too_many_arguments)]
pub fn grpo_step(
    model: &Qwen25VL,
    rollouts: &[Rollout],
    opts: &GrpoStepOptions,
    optimizer: &mut AdamW,
    guard: &mut NonFiniteGuard,
    lr: f64,
    pad_id: u32,
    world: &World,
) -> Result<GrpoStepStats> {
    if opts.mu == 0 {
        crate::bail!("grpo: mu must be at least 1");
    }
    if opts.micro_batch == Some(0) {
        crate::bail!("grpo: micro_batch must be at least 1 (completions per backward pass)");
    }
    let rewards: Vec<f64> = rollouts.iter().map(|r| r.reward).collect();
    let adv = batch_advantages(&rewards, opts, world)?;
    let mut stats = GrpoStepStats::default();
    RewardStats::of(rollouts, opts.group).apply(&mut stats);
    let keep: Vec<usize> = (0..rollouts.len())
        .filter(|&k| !(opts.filter_zero_variance && adv.zero_variance_groups.contains(&(k / opts.group))))
        .filter(|&k| !rollouts[k].completion_ids.is_empty())
        .collect();
    let size = opts.micro_batch.unwrap_or(keep.len()).max(1);
    let batches = keep
        .chunks(size)
        .map(|c| Batch::new(rollouts, c, opts.mask_truncated, model.device()))
        .collect::<Result<Vec<_>>>()?;
    let mut totals = [0.0, 0.0];
    for batch in &batches {
        let t = LossTotals::of(&batch.mask)?;
        totals = [totals[0] + t.tokens, totals[1] + t.completions];
    }
    world.all_reduce_f64("grpo: the batch's token and completion counts", &mut totals)?;
    if totals[1] == 0.0 {
        return Ok(stats);
    }
    if opts.loss.beta != 0.0 && model.lora.is_none() {
        crate::bail!(
            "grpo: beta = {} needs LoRA adapters (the reference is the model with them off)",
            opts.loss.beta
        );
    }
    let totals = LossTotals { tokens: totals[0], completions: totals[1] };
    let micro: Vec<(Batch, Prepared)> = batches
        .into_iter()
        .zip(keep.chunks(size))
        .map(|(batch, kept)| {
            let prep = Prepared::new(model, &batch, kept, &adv.values, opts, pad_id)?;
            Ok((batch, prep))
        })
        .collect::<Result<_>>()?;
    model.set_training(true);
    let passes = (0..opts.mu).try_for_each(|_| -> Result<()> {
        let mut acc = GradAccumulator::new(optimizer.vars().map(|(_, v)| v))?;
        // loss, then sums over counted tokens of kl, clip_low, clip_high; entropy sum and count.
        let mut sums = [0.0f64; 6];
        for (batch, prep) in &micro {
            let part = micro_batch_backward(model, batch, prep, opts, totals, pad_id, &mut acc, optimizer)?;
            sums.iter_mut().zip(part).for_each(|(sum, x)| *sum += x);
        }
        acc.all_reduce(world)?;
        world.all_reduce_f64("grpo: the step's loss and statistics", &mut sums)?;
        let [loss, kl, clip_low, clip_high, entropy, entropy_count] = sums;
        let (grads, norm) = acc.finish(opts.max_grad_norm)?;
        if guard.admit(optimizer.steps(), loss, norm)? {
            optimizer.step(&grads, lr)?;
            stats.updates += 1;
        }
        let (mu, tokens) = (opts.mu as f64, totals.tokens.max(1.0));
        stats.loss += loss / mu;
        stats.kl += kl / tokens / mu;
        stats.clip_low += clip_low / tokens / mu;
        stats.clip_high += clip_high / tokens / mu;
        stats.grad_norm += norm / mu;
        stats.entropy += entropy / entropy_count.max(1.0) / mu;
        Ok(())
    });
    model.set_training(false);
    passes?;
    Ok(stats)
}

/// Score one micro-batch, add its loss's gradients (over the whole batch's `totals`) to `acc`,
/// and return its loss and its sums of kl, clip_low and clip_high over counted tokens, and of
/// entropy with the entropy's count.
#[allow(clippy::too_many_arguments)]
fn micro_batch_backward(
    model: &Qwen25VL,
    batch: &Batch,
    prep: &Prepared,
    opts: &GrpoStepOptions,
    totals: LossTotals,
    pad_id: u32,
    acc: &mut GradAccumulator,
    optimizer: &AdamW,
) -> Result<[f64; 6]> {
    let scores = score_tokens_for_training(model, &batch.sequences(), pad_id, opts.temperature)?;
    let logprobs = batch.padded(&scores, false)?;
    let old = if opts.mu == 1 { logprobs.detach() } else { prep.old_from_sampler.clone() };
    let inputs = GrpoLossInputs {
        logprobs: &logprobs,
        old_logprobs: &old,
        ref_logprobs: prep.reference.as_ref(),
        advantages: &prep.advantages,
        mask: &batch.mask,
        totals: Some(totals),
    };
    let out = grpo_loss(&opts.loss, &inputs)?;
    acc.add(&scores.backward(&out.loss)?, optimizer.vars().map(|(_, v)| v), 1.0)?;
    let tokens = LossTotals::of(&batch.mask)?.tokens;
    Ok([
        out.loss.to_scalar::<f32>()? as f64,
        out.kl * tokens,
        out.clip_low * tokens,
        out.clip_high * tokens,
        scores.entropy.sum_all()?.to_scalar::<f32>()? as f64,
        scores.entropy.elem_count() as f64,
    ])
}

/// The advantages of this rank's `rewards` (whole groups), computed over the whole batch's rewards
/// gathered from every rank, so `scale_rewards = batch` divides by the batch's deviation as in one
/// process; zero-variance groups are numbered locally.
fn batch_advantages(rewards: &[f64], opts: &GrpoStepOptions, world: &World) -> Result<Advantages> {
    if !world.is_distributed() {
        return group_advantages(rewards, opts.group, opts.scale_rewards);
    }
    let by_rank = world.gather_items("grpo: the batch's rewards", vec![rewards.to_vec()])?;
    let offset: usize = by_rank[..world.rank()].iter().map(Vec::len).sum();
    let all: Vec<f64> = by_rank.concat();
    if all.is_empty() {
        return Ok(Advantages { values: Vec::new(), zero_variance_groups: Vec::new() });
    }
    let whole = group_advantages(&all, opts.group, opts.scale_rewards)?;
    let first_group = offset / opts.group.max(1);
    let groups = first_group..first_group + rewards.len() / opts.group.max(1);
    Ok(Advantages {
        values: whole.values[offset..offset + rewards.len()].to_vec(),
        zero_variance_groups: whole
            .zero_variance_groups
            .into_iter()
            .filter(|g| groups.contains(g))
            .map(|g| g - first_group)
            .collect(),
    })
}

/// What the passes of a step share, per micro-batch: its rollouts' advantages, the reference
/// log-probs (with `beta`) and the sampler's log-probs.
struct Prepared {
    advantages: Tensor,
    reference: Option<Tensor>,
    old_from_sampler: Tensor,
}

impl Prepared {
    fn new(
        model: &Qwen25VL,
        batch: &Batch,
        keep: &[usize],
        advantages: &[f64],
        opts: &GrpoStepOptions,
        pad_id: u32,
    ) -> Result<Self> {
        let values: Vec<f32> = keep.iter().map(|&k| advantages[k] as f32).collect();
        let advantages = Tensor::new(values, model.device())?;
        let reference = if opts.loss.beta != 0.0 {
            model.set_adapters_enabled(false);
            let scored = score_tokens(model, &batch.sequences(), pad_id, opts.temperature);
            model.set_adapters_enabled(true);
            Some(batch.padded(&scored?, true)?)
        } else {
            None
        };
        Ok(Prepared { advantages, reference, old_from_sampler: batch.old_logprobs(model.device())? })
    }
}

/// Kept rollouts (one micro-batch) as scoring sequences, with the completion mask, padded to
/// the micro-batch's longest completion.
struct Batch<'a> {
    rollouts: Vec<&'a Rollout>,
    ids: Vec<Vec<u32>>,
    scored: Vec<Vec<bool>>,
    width: usize,
    mask: Tensor,
}

impl<'a> Batch<'a> {
    fn new(all: &'a [Rollout], keep: &[usize], mask_truncated: bool, device: &Device) -> Result<Self> {
        let rollouts: Vec<&Rollout> = keep.iter().map(|&k| &all[k]).collect();
        let width = rollouts.iter().map(|r| r.completion_ids.len()).max().unwrap_or(0);
        let mut mask = vec![0f32; rollouts.len() * width];
        let (mut ids, mut scored) = (Vec::new(), Vec::new());
        for (row, r) in rollouts.iter().enumerate() {
            if r.old_logprobs.len() != r.completion_ids.len() {
                crate::bail!(
                    "rollout of example {}: {} old log-probs for {} completion ids",
                    r.example,
                    r.old_logprobs.len(),
                    r.completion_ids.len()
                );
            }
            if r.prompt_ids.is_empty() {
                crate::bail!("rollout of example {}: empty prompt", r.example);
            }
            let counted = !(mask_truncated && r.truncated);
            mask[row * width..row * width + r.completion_ids.len()].fill(if counted { 1.0 } else { 0.0 });
            let mut seq = r.prompt_ids.clone();
            seq.extend(&r.completion_ids);
            let mut flags = vec![false; r.prompt_ids.len()];
            flags.resize(seq.len(), true);
            ids.push(seq);
            scored.push(flags);
        }
        let mask = Tensor::from_vec(mask, (rollouts.len(), width), device)?;
        Ok(Self { rollouts, ids, scored, width, mask })
    }

    fn sequences(&self) -> Vec<Sequence<'_>> {
        self.rollouts
            .iter()
            .enumerate()
            .map(|(k, r)| Sequence {
                ids: &self.ids[k],
                scored: &self.scored[k],
                pixel_values: r.pixel_values.as_ref(),
                grid: r.grid,
            })
            .collect()
    }

    /// `[rows, width]` log-probs, detached when `detach`.
    fn padded(&self, scores: &TokenScores, detach: bool) -> Result<Tensor> {
        let values = if detach { scores.logprobs.detach() } else { scores.logprobs.clone() };
        scores.to_padded(&values, self.rollouts.len(), self.width)
    }

    fn old_logprobs(&self, device: &Device) -> Result<Tensor> {
        let mut flat = vec![0f32; self.rollouts.len() * self.width];
        for (row, r) in self.rollouts.iter().enumerate() {
            flat[row * self.width..row * self.width + r.old_logprobs.len()].copy_from_slice(&r.old_logprobs);
        }
        Ok(Tensor::from_vec(flat, (self.rollouts.len(), self.width), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::qwen2_5_vl::{LoraConfig, LoraInit};
    use crate::train::grpo_loss::LossAggregation;
    use crate::train::optim::AdamWConfig;
    use crate::train::sft::tests::{synthetic_task, tiny_vlm};

    /// Two prompts, four completions each: in group 0 one completion is rewarded, group 1 is
    /// all zeros. Old log-probs are the model's own, as the sampler would report them.
    fn rollouts(model: &Qwen25VL, vlm: &crate::models::vlm::Vlm) -> Vec<Rollout> {
        let task = synthetic_task();
        let mut out = Vec::new();
        for (g, example) in [0usize, 1].into_iter().enumerate() {
            let item = task.item(example).unwrap();
            let enc = vlm.encode(item.image.as_ref(), &task.training_prompt(example).unwrap()).unwrap();
            for k in 0..4u32 {
                let completion = vec![100 + k, 200 + k, 300 + k];
                let mut ids = enc.input_ids.clone();
                ids.extend(&completion);
                let mut scored = vec![false; enc.input_ids.len()];
                scored.resize(ids.len(), true);
                let seq = Sequence {
                    ids: &ids,
                    scored: &scored,
                    pixel_values: enc.pixel_values.as_ref(),
                    grid: enc.grid_thw,
                };
                let old = score_tokens(model, &[seq], 0, 1.0).unwrap().logprobs.to_vec1::<f32>().unwrap();
                let reward = if g == 0 && k == 2 { 1.0 } else { 0.0 };
                out.push(Rollout {
                    example,
                    prompt_ids: enc.input_ids.clone(),
                    completion_ids: completion,
                    old_logprobs: old,
                    pixel_values: enc.pixel_values.clone(),
                    grid: enc.grid_thw,
                    reward_components: vec![reward],
                    reward,
                    truncated: k == 3,
                });
            }
        }
        out
    }

    fn lora_model() -> (crate::models::vlm::Vlm, Qwen25VL) {
        let vlm = tiny_vlm();
        let cfg = LoraConfig { init: LoraInit::Random, seed: 5, ..LoraConfig::new(4, 8.0) };
        let model = vlm.model.with_lora(&cfg).unwrap();
        (vlm, model)
    }

    fn sum_logprob(model: &Qwen25VL, r: &Rollout) -> f32 {
        let mut ids = r.prompt_ids.clone();
        ids.extend(&r.completion_ids);
        let mut scored = vec![false; r.prompt_ids.len()];
        scored.resize(ids.len(), true);
        let seq =
            Sequence { ids: &ids, scored: &scored, pixel_values: r.pixel_values.as_ref(), grid: r.grid };
        score_tokens(model, &[seq], 0, 1.0).unwrap().logprobs.sum_all().unwrap().to_scalar().unwrap()
    }

    #[test]
    fn a_step_raises_the_rewarded_completion_and_reaches_every_adapter() {
        let (vlm, model) = lora_model();
        let rs = rollouts(&model, &vlm);
        let before = sum_logprob(&model, &rs[2]);
        let initial: Vec<Tensor> =
            model.trainable().iter().map(|(_, v)| v.as_tensor().copy().unwrap()).collect();
        let mut opt = AdamW::new(model.trainable(), AdamWConfig::default()).unwrap();
        let mut guard = NonFiniteGuard::new(3);
        let opts = GrpoStepOptions { group: 4, ..Default::default() }.with_beta(0.04);
        let stats = grpo_step(&model, &rs, &opts, &mut opt, &mut guard, 1e-3, 0, &World::single()).unwrap();
        assert_eq!(stats.updates, 1);
        assert_eq!(stats.zero_variance_fraction, 0.5);
        assert!((stats.reward_mean - 0.125).abs() < 1e-12);
        assert!(stats.kl > 0.0 && stats.entropy > 0.0);
        assert_eq!((stats.clip_low, stats.clip_high), (0.0, 0.0));
        assert!(sum_logprob(&model, &rs[2]) > before);
        for ((name, v), init) in model.trainable().iter().zip(&initial) {
            let moved =
                (v.as_tensor() - init).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(moved > 0.0, "{name} got no gradient");
        }
    }

    #[test]
    fn truncated_completions_can_be_masked() {
        let (vlm, model) = lora_model();
        let rs = rollouts(&model, &vlm);
        let keep: Vec<usize> = (0..4).collect();
        let mask = |on| {
            Batch::new(&rs, &keep, on, model.device()).unwrap().mask.sum(1).unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(mask(false), vec![3.0; 4]);
        assert_eq!(mask(true), vec![3.0, 3.0, 3.0, 0.0]);
    }

    #[test]
    fn zero_variance_groups_are_filtered_and_reported() {
        let (vlm, model) = lora_model();
        let mut rs = rollouts(&model, &vlm);
        rs.iter_mut().for_each(|r| r.reward = 0.0);
        let mut opt = AdamW::new(model.trainable(), AdamWConfig::default()).unwrap();
        let mut guard = NonFiniteGuard::new(3);
        let opts = GrpoStepOptions { group: 4, filter_zero_variance: true, mu: 2, ..Default::default() };
        let stats = grpo_step(&model, &rs, &opts, &mut opt, &mut guard, 1e-3, 0, &World::single()).unwrap();
        assert_eq!((stats.updates, stats.zero_variance_fraction), (0, 1.0));
        assert_eq!(opt.steps(), 0);
        let full = vlm.model.full_finetune().unwrap();
        let mut opt = AdamW::new(full.trainable(), AdamWConfig::default()).unwrap();
        let err = grpo_step(
            &full,
            &rollouts(&full, &vlm),
            &GrpoStepOptions { group: 4, ..Default::default() }.with_beta(0.1),
            &mut opt,
            &mut guard,
            1e-3,
            0,
            &World::single(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("needs LoRA adapters"), "{err}");
    }

    /// Final adapter weights and per-step stats after two steps of `opts` from the same start.
    fn train(opts: &GrpoStepOptions) -> (Vec<Vec<f32>>, Vec<GrpoStepStats>) {
        let (vlm, model) = lora_model();
        let mut rs = rollouts(&model, &vlm);
        // Uneven lengths, so micro-batches pad differently, and signal in both groups.
        for (k, r) in rs.iter_mut().enumerate() {
            r.completion_ids.truncate(1 + k % 3);
            r.old_logprobs.truncate(1 + k % 3);
            r.reward = [0.0, 1.0, 0.5, 0.0, 0.25, 0.0, 1.0, 0.75][k];
        }
        let cfg = AdamWConfig { eps: 1e-3, ..AdamWConfig::default() };
        let mut opt = AdamW::new(model.trainable(), cfg).unwrap();
        let mut guard = NonFiniteGuard::new(3);
        let stats = (0..2)
            .map(|_| grpo_step(&model, &rs, opts, &mut opt, &mut guard, 1e-2, 0, &World::single()).unwrap())
            .collect();
        let weights = model
            .trainable()
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect();
        (weights, stats)
    }

    #[test]
    fn micro_batches_give_the_whole_batch_update() {
        for loss in ["token_mean", "seq_mean", "dr_grpo"] {
            let mut base = GrpoStepOptions { group: 4, mu: 2, mask_truncated: true, ..Default::default() };
            base.loss.aggregation = LossAggregation::parse(loss).unwrap();
            base.loss.max_completion_length = 3;
            let base = base.with_beta(0.1);
            let (whole_w, whole_s) = train(&base);
            assert_eq!(whole_s.iter().map(|s| s.updates).sum::<usize>(), 4);
            assert!(whole_s[1].kl > 0.0 && whole_s[1].clip_high + whole_s[1].clip_low >= 0.0);
            for size in [1, 3] {
                let (w, s) = train(&GrpoStepOptions { micro_batch: Some(size), ..base });
                for (a, b) in whole_s.iter().zip(&s) {
                    for (name, x, y) in [
                        ("loss", a.loss, b.loss),
                        ("kl", a.kl, b.kl),
                        ("clip_low", a.clip_low, b.clip_low),
                        ("clip_high", a.clip_high, b.clip_high),
                        ("entropy", a.entropy, b.entropy),
                        ("grad_norm", a.grad_norm, b.grad_norm),
                    ] {
                        assert!((x - y).abs() < 1e-5, "{loss}, micro_batch {size}: {name} {x} vs {y}");
                    }
                }
                let moved = whole_w.iter().flatten().zip(w.iter().flatten()).map(|(x, y)| (x - y).abs());
                let worst = moved.fold(0.0f32, f32::max);
                assert!(worst < 1e-5, "{loss}, micro_batch {size}: weights differ by {worst}");
            }
        }
        let (vlm, model) = lora_model();
        let mut opt = AdamW::new(model.trainable(), AdamWConfig::default()).unwrap();
        let opts = GrpoStepOptions { group: 4, micro_batch: Some(0), ..Default::default() };
        let err = grpo_step(
            &model,
            &rollouts(&model, &vlm),
            &opts,
            &mut opt,
            &mut NonFiniteGuard::new(3),
            1e-3,
            0,
            &World::single(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("micro_batch must be at least 1"), "{err}");
    }
}
