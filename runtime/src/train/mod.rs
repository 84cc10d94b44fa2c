//! Training: the optimiser, schedules and gradient handling shared by SFT and GRPO, resumable
//! checkpoints, the one training loop both run, supervised fine-tuning, and GRPO's rewards,
//! advantages and loss.
//!
//! `train_loop` is the loop (resume, cancel-and-save, non-finite report, metrics, progress,
//! timing, periodic evaluation, checkpoints); `sft` and `grpo` each supply only its step.
//! `context` (where a call reports, its checkpoint folder), `trainable_copy` (the model a trainer
//! trains), `optim`, `schedule`, `grad`, `data_order`, `checkpoint`, `periodic_eval` and
//! `adapters` (what a model's adapters are) are the common parts; `rewards`, `advantages`, `care`
//! (GRPO-CARE's consistency bonus) and `grpo_loss` are the pure pieces of GRPO that `grpo_step` assembles into an update over
//! rollouts that `rollouts` draws (with dynamic sampling).

pub mod adapters;
pub mod advantages;
pub mod care;
pub mod checkpoint;
pub mod context;
pub mod data_order;
pub mod grad;
pub mod grpo;
pub mod grpo_loss;
pub mod grpo_step;
pub mod optim;
pub mod periodic_eval;
pub mod rewards;
mod rollouts;
pub mod schedule;
pub mod sft;
pub mod token_logprobs;
mod train_loop;
mod trainable_copy;

pub use advantages::{group_advantages, Advantages, ScaleRewards};
pub use care::{answer_confidence, CareBonus};
pub use context::TrainContext;
pub use grad::{global_norm, GradAccumulator, NonFiniteGuard};
pub use grpo::{grpo, grpo_with_rewards, GrpoOptions, GrpoSummary};
pub use grpo_loss::{grpo_loss, GrpoLoss, GrpoLossConfig, GrpoLossInputs, LossAggregation};
pub use grpo_step::{grpo_step, GrpoStepOptions, GrpoStepStats, RewardStats, Rollout};
pub use optim::{AdamW, AdamWConfig};
pub use periodic_eval::{EvalPoint, PeriodicEval};
pub use rewards::{CustomReward, RewardKind, RewardScores, Rewards};
pub use schedule::Schedule;
pub use sft::{sft, SftOptions, SftSummary};
