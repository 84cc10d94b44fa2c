//! GRPO's settings by task preset, and the resolved settings of a run as JSON (for `run.json`).
//!
//! `medbridgerl` is the paper's released GRPO-CARE run (`GRPO-CARE/scripts/octomed_7b_pmcvqa8k.sh`
//! on `src/open_r1/grpo.py` and `trainer/grpo_trainer_ref_ema.py`):
//! - G = 8 completions per prompt (`--num_generations 8`), sampled at temperature 1 and top-p 1
//!   (the trainer's fixed `temperature=1`, `customized_top_p` default), up to 2,048 tokens
//!   (`--max_completion_length 2048`).
//! - 4 prompts per optimiser step: 4 processes × `--per_device_train_batch_size 1`, no gradient
//!   accumulation; DDP averages the processes' losses, so the step's loss is the mean over its 32
//!   completions of each one's token mean — our `seq_mean`. Each process scored its 8
//!   completions in one backward; our `micro_batch` (completions per backward) only bounds
//!   memory — any value gives the same update — so the preset leaves it unset (all at once).
//! - One epoch (`--num_train_epochs 1`): `steps = ceil(examples / 4)`. GRPO draws its prompts from
//!   the run's seeded data order, reshuffled each epoch ([`super::data_order`]), so one epoch's
//!   steps visit every example once; the seed (42, `--data_seed 42`) seeds our shuffle, not
//!   PyTorch's, so the order differs from the released one.
//! - AdamW at lr 5e-7 (`--learning_rate 0.0000005`) with HF's defaults: linear decay to 0, no
//!   warm-up, betas (0.9, 0.999), eps 1e-8, no weight decay; gradients clipped to norm 5
//!   (`--max_grad_norm 5`).
//! - No KL (`--beta 0`), one pass per batch: the ratio is exactly 1, so the clipped surrogate is
//!   the released unclipped `−exp(logp − logp.detach()) · A` (clipping never binds).
//! - Advantages per group, `(r − mean) / (unbiased std + 1e-4)`; rewards `medbridgerl_accuracy`
//!   then `medbridgerl_format`, weight 1 each (`reward_funcs` default `["accuracy", "format"]`,
//!   `--len_control false`).
//! - CARE on (`--use_care true`): bonus coefficient 0.5, confidence cap 0.95, margin 0.01, EMA
//!   reference with decay 0.995 blended every 10 steps; the bonus per prompt group, as each
//!   released process saw one group.
//!
//! Deviations, all from running on one device: LoRA (rank 8, alpha 16 on the seven language-model
//! projections) instead of ZeRO-3 full fine-tuning on 4 GPUs (set `full` to train every
//! language-model weight; the vision tower stays frozen, where the released run also trained
//! it), and so an EMA of the adapters rather than of the whole model
//! ([`super::ema_reference`]); the model's dtype (bf16 on CUDA) without DeepSpeed's f32 master
//! copy (our AdamW keeps f32 masters too); images at the model's `max_pixels` (802,816 in the
//! released run, a processor setting).

use serde_json::{json, Value};

use super::advantages::ScaleRewards;
use super::care::CareOptions;
use super::grpo::GrpoOptions;
use super::grpo_loss::{GrpoLossConfig, LossAggregation};
use super::grpo_step::GrpoStepOptions;
use super::schedule::Schedule;
use crate::task::TaskPreset;

/// Optimiser steps for one epoch of `examples` prompts, `batch` per step.
pub fn epoch_steps(examples: usize, batch: usize) -> u64 {
    examples.div_ceil(batch.max(1)) as u64
}

impl GrpoOptions {
    /// The settings of `preset` for a task of `examples` items: the defaults for `default`, the
    /// paper's released run for `medbridgerl` (see the module header for each value's source).
    pub fn preset(preset: TaskPreset, examples: usize) -> GrpoOptions {
        match preset {
            TaskPreset::Default => GrpoOptions::default(),
            TaskPreset::MedbridgeRl => {
                let (batch, max_new_tokens) = (4, 2048);
                GrpoOptions {
                    steps: epoch_steps(examples, batch),
                    batch,
                    step: GrpoStepOptions {
                        group: 8,
                        mu: 1,
                        loss: GrpoLossConfig {
                            beta: 0.0,
                            aggregation: LossAggregation::SeqMean,
                            max_completion_length: max_new_tokens,
                            ..GrpoLossConfig::default()
                        },
                        scale_rewards: ScaleRewards::Group,
                        mask_truncated: false,
                        filter_zero_variance: false,
                        temperature: 1.0,
                        max_grad_norm: Some(5.0),
                        micro_batch: None,
                    },
                    lr: 5e-7,
                    schedule: Schedule::Linear,
                    warmup: 0,
                    rewards: vec![("medbridgerl_accuracy".into(), 1.0), ("medbridgerl_format".into(), 1.0)],
                    dynamic_sampling: false,
                    max_new_tokens,
                    top_p: 1.0,
                    seed: 42,
                    care: Some(CareOptions::default()),
                    ..GrpoOptions::default()
                }
            }
        }
    }

    /// Every setting of the run as resolved, under the option names.
    pub fn describe(&self) -> Value {
        let step = &self.step;
        let lora = self.lora.as_ref().map(|l| {
            json!({
                "rank": l.rank, "alpha": l.alpha, "targets": l.targets, "dropout": l.dropout,
                "seed": l.seed, "vision": l.vision,
            })
        });
        let care = self.care.map(|c| {
            json!({
                "bonus_coefficient": c.bonus.coefficient,
                "confidence_upper_bound": c.bonus.upper_bound,
                "consistency_margin": c.bonus.margin,
                "ema_decay": c.ema_decay,
                "ema_every": c.ema_every,
                "bonus_scope": "group",
            })
        });
        json!({
            "steps": self.steps,
            "batch": self.batch,
            "group": step.group,
            "mu": step.mu,
            "lr": self.lr,
            "schedule": self.schedule.as_str(),
            "warmup": self.warmup,
            "lora": lora,
            "full": self.full,
            "train_vision": self.train_vision,
            "rewards": self.rewards.iter().map(|(n, w)| json!({"name": n, "weight": w})).collect::<Vec<_>>(),
            "dynamic_sampling": self.dynamic_sampling,
            "max_draws": self.max_draws,
            "max_new_tokens": self.max_new_tokens,
            "temperature": step.temperature,
            "top_p": self.top_p,
            "beta": step.loss.beta,
            "epsilon_low": step.loss.epsilon_low,
            "epsilon_high": step.loss.epsilon_high,
            "loss": step.loss.aggregation.as_str(),
            "max_completion_length": step.loss.max_completion_length,
            "scale_rewards": step.scale_rewards.as_str(),
            "mask_truncated": step.mask_truncated,
            "filter_zero_variance": step.filter_zero_variance,
            "max_grad_norm": step.max_grad_norm,
            "micro_batch": step.micro_batch,
            "seed": self.seed,
            "max_bad_steps": self.max_bad_steps,
            "save_every": self.save_every,
            "resume": self.resume.as_ref().map(|p| p.display().to_string()),
            "eval_every": self.eval.as_ref().map(|e| e.every),
            "care": care,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::qwen2_5_vl::{LoraConfig, LoraInit};
    use crate::train::advantages::group_advantages;
    use crate::train::grad::NonFiniteGuard;
    use crate::train::grpo::add_care_bonus;
    use crate::train::grpo_step::{grpo_step, Rollout};
    use crate::train::optim::{AdamW, AdamWConfig};
    use crate::train::sft::tests::{synthetic_task, tiny_vlm};

    #[test]
    fn the_medbridgerl_preset_is_the_released_run() {
        let opts = GrpoOptions::preset(TaskPreset::MedbridgeRl, 8001);
        let d = opts.describe();
        assert_eq!(d["steps"], 2001, "one epoch at 4 prompts a step");
        for (key, want) in [
            ("batch", json!(4)),
            ("group", json!(8)),
            ("lr", json!(5e-7)),
            ("schedule", json!("linear")),
            ("beta", json!(0.0)),
            ("mu", json!(1)),
            ("loss", json!("seq_mean")),
            ("scale_rewards", json!("group")),
            ("max_grad_norm", json!(5.0)),
            ("max_new_tokens", json!(2048)),
            ("temperature", json!(1.0)),
            ("top_p", json!(1.0)),
            ("seed", json!(42)),
            ("lora", Value::Null),
            ("full", json!(false)),
        ] {
            assert_eq!(d[key], want, "{key}");
        }
        assert_eq!(d["rewards"][0], json!({"name": "medbridgerl_accuracy", "weight": 1.0}));
        assert_eq!(d["rewards"][1], json!({"name": "medbridgerl_format", "weight": 1.0}));
        let care = &d["care"];
        assert_eq!((care["bonus_coefficient"].clone(), care["ema_every"].clone()), (json!(0.5), json!(10)));
        assert_eq!((care["ema_decay"].clone(), care["bonus_scope"].clone()), (json!(0.995), json!("group")));
        assert_eq!(care["confidence_upper_bound"], json!(0.95));
        assert_eq!(care["consistency_margin"], json!(0.01));
        assert_eq!(
            GrpoOptions::preset(TaskPreset::Default, 10).describe(),
            GrpoOptions::default().describe()
        );
        assert_eq!(GrpoOptions::default().describe()["care"], Value::Null);
    }

    /// Two prompts of the medbridgerl task, 8 completions each, with the given reward components.
    fn rollouts(vlm: &crate::models::Vlm, components: &[[f64; 2]]) -> Vec<Rollout> {
        let task = synthetic_task().with_preset(TaskPreset::MedbridgeRl);
        components
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let example = k / 8;
                let item = task.item(example).unwrap();
                let enc = vlm.encode(item.image.as_ref(), &task.training_prompt(example).unwrap()).unwrap();
                let completion_ids: Vec<u32> =
                    (0..3 + k as u32 % 3).map(|t| 100 + 7 * k as u32 + t).collect();
                Rollout {
                    example,
                    prompt_ids: enc.input_ids,
                    old_logprobs: vec![0.0; completion_ids.len()],
                    completion_ids,
                    pixel_values: enc.pixel_values,
                    grid: enc.grid_thw,
                    reward_components: c.to_vec(),
                    reward: c[0] + c[1],
                    truncated: false,
                }
            })
            .collect()
    }

    #[test]
    fn a_preset_step_adds_the_bonus_then_takes_group_advantages_and_the_unit_ratio_loss() {
        let opts = GrpoOptions::preset(TaskPreset::MedbridgeRl, 8);
        let care = opts.care.unwrap();
        let vlm = tiny_vlm();
        // Group 0: accurate samples 0, 1, 2 and 5; group 1 all wrong but well formatted.
        let acc = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let fmt = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0];
        let mut components: Vec<[f64; 2]> = acc.iter().zip(&fmt).map(|(&a, &f)| [a, f]).collect();
        components.extend([[0.0, 1.0]; 8]);
        let mut rs = rollouts(&vlm, &components);
        let confidence = [0.99, 0.5, 0.9, 0.8, 0.7, 0.93, 0.2, 0.1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2];

        // By hand: group 0's mean accuracy is 0.5, so samples 0, 1, 2, 5 are accurate; their
        // capped confidences 0.95, 0.5, 0.9, 0.93 average 0.82, and all but sample 1 reach
        // 0.82 − 0.01. Each earns 0.5 × its accuracy; group 1 has no accurate sample.
        let bonus = add_care_bonus(&mut rs, &confidence, &care.bonus, opts.step.group).unwrap();
        let mut want_bonus = vec![0.5, 0.0, 0.5, 0.0, 0.0, 0.5, 0.0, 0.0];
        want_bonus.extend([0.0; 8]);
        assert_eq!(bonus, want_bonus);
        let rewards: Vec<f64> = rs.iter().map(|r| r.reward).collect();
        let mut want_rewards = vec![2.5, 2.0, 1.5, 1.0, 0.0, 2.5, 1.0, 1.0];
        want_rewards.extend([1.0; 8]);
        assert_eq!(rewards, want_rewards);

        // Group 0: mean 11.5 / 8, unbiased std, + 1e-4; group 1 has no spread, so zero advantages.
        let mean = 11.5 / 8.0;
        let std = (want_rewards[..8].iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / 7.0).sqrt();
        let mut want_adv: Vec<f64> = want_rewards[..8].iter().map(|r| (r - mean) / (std + 1e-4)).collect();
        want_adv.extend([0.0; 8]);
        let adv = group_advantages(&rewards, 8, opts.step.scale_rewards).unwrap();
        for (got, want) in adv.values.iter().zip(&want_adv) {
            assert!((got - want).abs() < 1e-12, "{:?} vs {want_adv:?}", adv.values);
        }

        // With ratio 1 each token's loss is −A; `seq_mean` averages over each completion's tokens
        // (all −A), then over completions.
        let cfg = LoraConfig { init: LoraInit::Random, seed: 5, ..LoraConfig::new(4, 8.0) };
        let model = vlm.model.with_lora(&cfg).unwrap();
        let mut opt = AdamW::new(model.trainable(), AdamWConfig::default()).unwrap();
        let mut guard = NonFiniteGuard::new(3);
        let pad = vlm.processor.endoftext_id();
        let stats = grpo_step(
            &model,
            &rs,
            &opts.step,
            &mut opt,
            &mut guard,
            opts.lr,
            pad,
            &crate::dist::World::single(),
        )
        .unwrap();
        let want_loss = -want_adv.iter().sum::<f64>() / want_adv.len() as f64;
        assert!((stats.loss - want_loss).abs() < 1e-6, "{} vs {want_loss}", stats.loss);
        assert_eq!((stats.updates, stats.clip_low, stats.clip_high, stats.kl), (1, 0.0, 0.0, 0.0));
        assert!((stats.reward_mean - want_rewards.iter().sum::<f64>() / 16.0).abs() < 1e-12);
        assert!(stats.grad_norm > 0.0);
    }
}
