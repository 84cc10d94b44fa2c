//! Drawing a GRPO step's rollouts: `group` completions of each prompt from the shared sampler
//! (whose log-probs are the old policy's) on the task's training prompt ([`McqTask::training_prompt`]:
//! GRPO-CARE's template under `medbridgerl`, the evaluation prompt otherwise), each scored by the
//! reward set.
//!
//! With dynamic sampling (DAPO) a group whose rewards are all equal is dropped, since its
//! advantages are all zero, and more prompts are drawn, continuing the data order, until the
//! batch holds `batch` groups with reward variance or `max_draws` prompts have been drawn in the
//! step; the step then trains on what it has. Reward statistics always describe every group
//! drawn, so the logged reward is the sampling policy's, not the filtered batch's.
//!
//! Under MPI every rank draws the same prompt indices from its copy of the data order and samples
//! a contiguous share of them (whole groups; each sample's random stream is keyed by question and
//! sample index, not by batch position, so a rank draws exactly what one process would). The
//! groups' scores are gathered, so every rank counts the same varied groups, makes the same
//! dynamic-sampling decisions and logs the same statistics; each keeps only its own rollouts.

use crate::error::Result;
use crate::models::Vlm;
use crate::run::{splitmix64, CancelFlag, ProgressMode};
use crate::sample::{sample, FinishReason, SampleRequest, SamplerOptions};
use crate::task::McqTask;

use super::data_order::DataOrder;
use super::grpo_step::{RewardStats, Rollout, RolloutScore};
use super::rewards::Rewards;
use crate::dist::World;

/// Everything that turns prompt indices into scored rollouts.
pub(crate) struct RolloutSource<'a> {
    pub policy: &'a Vlm,
    pub task: &'a McqTask,
    pub rewards: &'a Rewards<'a>,
    /// `n` is the group size; the seed is set per draw.
    pub sampler: SamplerOptions,
    pub cancel: &'a CancelFlag,
    pub world: &'a World,
}

/// One step's rollouts and how they were drawn.
#[derive(Debug)]
pub(crate) struct StepRollouts {
    /// The groups to train on, `group` consecutive rollouts each (this rank's share under MPI).
    pub rollouts: Vec<Rollout>,
    /// Over every group drawn this step, dropped ones included.
    pub stats: RewardStats,
    /// Prompts drawn from the data order this step.
    pub prompts: usize,
    /// The batch holds `batch` groups with reward variance.
    pub filled: bool,
}

impl RolloutSource<'_> {
    /// Draw `batch` prompts from `order` (more, up to `max_draws` in all, when `dynamic`),
    /// sampling the first round with `seed`.
    pub fn step(
        &self,
        order: &mut DataOrder,
        batch: usize,
        dynamic: Option<usize>,
        seed: u64,
    ) -> Result<StepRollouts> {
        let group = self.sampler.n;
        let (mut mine, mut scores, mut prompts, mut varied) = (Vec::new(), Vec::new(), 0usize, 0usize);
        for round in 0u64.. {
            let want = match dynamic {
                None if round > 0 => break,
                None => batch,
                Some(cap) => (batch - varied).min(cap.saturating_sub(prompts)),
            };
            if want == 0 {
                break;
            }
            let round_seed =
                if round == 0 { seed } else { splitmix64(seed ^ round.wrapping_mul(0xD1B5_4A32)) };
            let indices = order.next_batch(want);
            let drawn = self.draw(&indices[self.world.shard(indices.len())], round_seed)?;
            let local: Vec<Vec<RolloutScore>> =
                drawn.iter().map(|g| g.iter().map(RolloutScore::of).collect()).collect();
            for group_scores in self.world.gather_items("grpo: the rollouts' rewards", local)? {
                let flat = group_scores.iter().all(|r| r.reward == group_scores[0].reward);
                varied += usize::from(!flat);
                scores.extend(group_scores);
            }
            for rollouts in drawn {
                let flat = rollouts.iter().all(|r| r.reward == rollouts[0].reward);
                if dynamic.is_none() || !flat {
                    mine.extend(rollouts);
                }
            }
            prompts += want;
        }
        let stats = RewardStats::of_scores(&scores, group);
        let rollouts = mine;
        let filled = varied == batch;
        Ok(StepRollouts { rollouts, stats, prompts, filled })
    }

    /// `group` scored completions of each prompt in `indices`, one group per prompt.
    fn draw(&self, indices: &[usize], seed: u64) -> Result<Vec<Vec<Rollout>>> {
        let (policy, task) = (self.policy, self.task);
        let requests = indices
            .iter()
            .map(|&i| {
                let item = task.item(i)?;
                Ok(SampleRequest {
                    question_id: item.id.clone(),
                    image: item.image.clone(),
                    prompt: task.training_prompt(i)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let sampler = SamplerOptions { seed, ..self.sampler.clone() };
        let drawn = sample(policy, &requests, &sampler, Some(self.cancel), ProgressMode::Quiet)?;
        let pad = policy.processor.endoftext_id();
        let special = policy.processor.special_tokens();
        let vision_ids = [special.image_pad, special.video_pad, special.vision_start, special.vision_end];
        let mut groups = Vec::with_capacity(indices.len());
        for ((&i, request), samples) in indices.iter().zip(&requests).zip(drawn) {
            let enc = policy.encode(request.image.as_ref(), &request.prompt)?;
            let mut rollouts = Vec::with_capacity(samples.len());
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
                let scores = self.rewards.score(task, i, &s.text)?;
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
            groups.push(rollouts);
        }
        Ok(groups)
    }
}
