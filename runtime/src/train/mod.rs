//! Training: the optimiser, schedules and gradient handling shared by SFT and GRPO, resumable
//! checkpoints, the one training loop both run, supervised fine-tuning, and GRPO's rewards,
//! advantages and loss.
//!
//! `train_loop` is the loop (resume, cancel-and-save, non-finite report, metrics, progress,
//! timing, periodic evaluation, checkpoints); `sft` and `grpo` each supply only its step.
//! `context` (where a call reports, its checkpoint folder), `trainable_copy` (the model a trainer
//! trains), `optim`, `schedule`, `grad`, `data_order`, `checkpoint`, `periodic_eval` and
//! `adapters` (what a model's adapters are) are the common parts. `rewards`, `advantages` and
//! `grpo_loss` are the pure pieces of GRPO that `grpo_step` assembles into an update over the
//! rollouts `rollouts` draws (on the task's training prompt, with dynamic sampling). GRPO-CARE
//! adds `care` (its consistency bonus and options), `answer_tokens` (which completion tokens are
//! the answer) and `ema_reference` (the EMA reference that scores them); `grpo_preset` holds the
//! paper's released settings and a run's resolved settings as JSON.

pub mod adapters;
pub mod advantages;
pub mod answer_tokens;
pub mod care;
pub mod checkpoint;
pub mod context;
pub mod data_order;
pub mod ema_reference;
pub mod grad;
pub mod grpo;
pub mod grpo_loss;
pub mod grpo_preset;
pub mod grpo_step;
pub mod memory_plan;
pub mod optim;
pub mod periodic_eval;
pub mod rewards;
mod rollouts;
pub mod schedule;
pub mod sft;
pub mod token_logprobs;
mod train_loop;
mod trainable_copy;

#[cfg(test)]
mod bf16_tests;
#[cfg(test)]
mod checkpointed_tests;

pub use advantages::{group_advantages, scaled_group_advantages, Advantages, GroupStd, ScaleRewards};
pub use answer_tokens::{answer_span, answer_span_of};
pub use care::{answer_confidence, CareBonus, CareOptions};
pub use context::TrainContext;
pub use ema_reference::EmaReference;
pub use grad::{global_norm, GradAccumulator, NonFiniteGuard};
pub use grpo::{grpo, grpo_with_rewards, GrpoOptions, GrpoSummary};
pub use grpo_loss::{grpo_loss, GrpoLoss, GrpoLossConfig, GrpoLossInputs, LossAggregation};
pub use grpo_preset::epoch_steps;
pub use grpo_step::{grpo_step, GrpoStepOptions, GrpoStepStats, RewardStats, Rollout};
pub use optim::{AdamW, AdamWConfig};
pub use periodic_eval::{EvalPoint, PeriodicEval};
pub use rewards::{CustomReward, RewardKind, RewardScores, Rewards};
pub use schedule::Schedule;
pub use sft::{sft, SftOptions, SftSummary};
