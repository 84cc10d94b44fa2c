//! GRPO-CARE's reference model: an exponential moving average of the policy's trainable
//! weights, and the answer-token confidence it gives each rollout.
//!
//! As released (`trainer/grpo_trainer_ref_ema.py` builds the reference from the policy's own
//! checkpoint; `trainer/ema_trainer.py`'s `moving_average`, called after the optimiser step):
//! the reference starts equal to the policy and, after every optimiser step whose number (HF's
//! `global_step`, counted from 1 and advanced whether or not the update was skipped) is a
//! multiple of `every`, becomes `lerp(policy, reference, decay) = decay · reference +
//! (1 − decay) · policy`, computed in f32 and stored in the weights' dtype. A rollout's
//! confidence is `exp(mean log-prob)` of its answer tokens ([`super::answer_tokens`]) under the
//! reference, from raw logits (no temperature), without gradients.
//!
//! Difference: the released run fine-tunes every weight, so its EMA covers the whole model. Here
//! the EMA covers what the policy trains: every language-model weight under full fine-tuning,
//! which is the same thing (the frozen vision tower never moves), or the LoRA adapter tensors,
//! over the shared frozen base. (The released trainer given a PEFT config would instead use the
//! adapters-off base as a fixed reference; that is not what the paper ran.) The EMA of the
//! adapters is not the EMA of their product; it is the cheap analogue, and with `decay` near 1
//! and small steps the two agree to first order.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use super::answer_tokens::answer_span_of;
use super::care::answer_confidence;
use super::grpo_step::Rollout;
use super::token_logprobs::{score_tokens, Sequence};
use crate::error::Result;
use crate::models::qwen2_5_vl::{Processor, Qwen25VL};

/// The reference and its schedule.
pub struct EmaReference {
    model: Qwen25VL,
    decay: f64,
    every: u64,
}

impl EmaReference {
    /// The reference `model` — a second trainable copy of the policy's base with the policy's
    /// trainable tensor names — set equal to `policy` now.
    pub fn new(model: Qwen25VL, policy: &Qwen25VL, decay: f64, every: u64) -> Result<Self> {
        let reference = EmaReference { model, decay, every };
        reference.blend(policy, 0.0)?;
        Ok(reference)
    }

    pub fn model(&self) -> &Qwen25VL {
        &self.model
    }

    /// Call after optimiser step `completed` (counted from 1): blend `policy` in when it is due.
    /// Returns whether it was.
    pub fn after_step(&self, policy: &Qwen25VL, completed: u64) -> Result<bool> {
        let due = completed % self.every == 0;
        if due {
            self.blend(policy, self.decay)?;
        }
        Ok(due)
    }

    /// `reference ← decay · reference + (1 − decay) · policy`, tensor by tensor.
    fn blend(&self, policy: &Qwen25VL, decay: f64) -> Result<()> {
        let (ours, theirs) = (self.model.trainable(), policy.trainable());
        if ours.len() != theirs.len() {
            crate::bail!("care reference: {} trainable tensors, the policy {}", ours.len(), theirs.len());
        }
        for ((name, r), (policy_name, p)) in ours.iter().zip(theirs) {
            if name != policy_name {
                crate::bail!("care reference: tensor {name} faces the policy's {policy_name}");
            }
            let p = p.as_tensor().to_dtype(DType::F32)?;
            let mixed = if decay == 0.0 {
                p
            } else {
                ((r.as_tensor().to_dtype(DType::F32)? * decay)? + (p * (1.0 - decay))?)?
            };
            r.set(&mixed.to_dtype(r.dtype())?)?;
        }
        Ok(())
    }

    /// The reference's tensors, in f32, for a checkpoint.
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.model
            .trainable()
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().to_dtype(DType::F32)?)))
            .collect()
    }

    /// Load what [`Self::tensors`] saved.
    pub fn restore(&self, saved: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in self.model.trainable() {
            let Some(t) = saved.get(name) else {
                crate::bail!("care reference: the checkpoint has no tensor {name}");
            };
            var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// Each rollout's confidence (uncapped): `exp(mean log-prob)` of its answer tokens under the
    /// reference, scored `micro_batch` rollouts at a time (`None`: all in one batch) padded with
    /// `pad_id`.
    pub fn confidences(
        &self,
        rollouts: &[Rollout],
        processor: &Processor,
        pad_id: u32,
        micro_batch: Option<usize>,
    ) -> Result<Vec<f64>> {
        let scored: Vec<usize> =
            (0..rollouts.len()).filter(|&k| !rollouts[k].completion_ids.is_empty()).collect();
        let mut per_row: Vec<Vec<f64>> = vec![Vec::new(); rollouts.len()];
        for part in scored.chunks(micro_batch.unwrap_or(scored.len()).max(1)) {
            let (ids, flags): (Vec<Vec<u32>>, Vec<Vec<bool>>) = part
                .iter()
                .map(|&k| {
                    let r = &rollouts[k];
                    let ids: Vec<u32> = r.prompt_ids.iter().chain(&r.completion_ids).copied().collect();
                    let mut flags = vec![false; r.prompt_ids.len()];
                    flags.resize(ids.len(), true);
                    (ids, flags)
                })
                .unzip();
            let seqs: Vec<Sequence> = part
                .iter()
                .enumerate()
                .map(|(row, &k)| Sequence {
                    ids: &ids[row],
                    scored: &flags[row],
                    pixel_values: rollouts[k].pixel_values.as_ref(),
                    grid: rollouts[k].grid,
                })
                .collect();
            let scores = score_tokens(&self.model, &seqs, pad_id, 1.0)?;
            let logprobs = scores.logprobs.detach().to_dtype(DType::F32)?.to_vec1::<f32>()?;
            for (&row, &lp) in scores.rows.iter().zip(&logprobs) {
                per_row[part[row]].push(f64::from(lp));
            }
        }
        Ok(rollouts
            .iter()
            .zip(&per_row)
            .map(|(r, logprobs)| {
                let span = answer_span_of(&r.completion_ids, processor);
                answer_confidence(logprobs.get(span).unwrap_or(&[]))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::qwen2_5_vl::LoraConfig;
    use crate::train::sft::tests::tiny_vlm;
    use crate::train::trainable_copy::{frozen_base, trainable_on, Trainable};

    fn values(model: &Qwen25VL) -> Vec<Vec<f32>> {
        model
            .trainable()
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn a_rollouts_confidence_averages_its_answer_tokens_under_the_reference() {
        let vlm = tiny_vlm();
        let base = frozen_base(&vlm.model).unwrap();
        let policy = trainable_on(&base, Trainable::adapters(None, 1)).unwrap();
        let ema =
            EmaReference::new(trainable_on(&base, Trainable::adapters(None, 1)).unwrap(), &policy, 0.9, 1)
                .unwrap();
        let p = &vlm.processor;
        let enc = vlm.encode(None, "Which letter?").unwrap();
        let mut tagged = p.tokenize("<think>hm</think><answer>B</answer>", false).unwrap();
        tagged.push(p.special_tokens().im_end);
        let untagged = p.tokenize("B", false).unwrap();
        let rollout = |completion_ids: Vec<u32>| Rollout {
            example: 0,
            prompt_ids: enc.input_ids.clone(),
            old_logprobs: vec![0.0; completion_ids.len()],
            completion_ids,
            pixel_values: None,
            grid: None,
            reward_components: vec![1.0],
            reward: 1.0,
            truncated: false,
        };
        let rs = [rollout(tagged.clone()), rollout(untagged), rollout(Vec::new())];
        let got = ema.confidences(&rs, p, p.endoftext_id(), None).unwrap();
        let by_one = ema.confidences(&rs, p, p.endoftext_id(), Some(1)).unwrap();
        // By hand: score the tagged completion alone and average the span's log-probs.
        let ids: Vec<u32> = enc.input_ids.iter().chain(&tagged).copied().collect();
        let mut scored = vec![false; enc.input_ids.len()];
        scored.resize(ids.len(), true);
        let seq = Sequence { ids: &ids, scored: &scored, pixel_values: None, grid: None };
        let all = score_tokens(&policy, &[seq], 0, 1.0).unwrap().logprobs.to_vec1::<f32>().unwrap();
        let span = answer_span_of(&tagged, p);
        // Byte-level BPE merges the tag's `>` with the answer here: one token, `>B`.
        assert_eq!(p.decode(&tagged[span.clone()], false).unwrap(), ">B");
        let n = span.len() as f64;
        let want = (all[span].iter().map(|&x| f64::from(x)).sum::<f64>() / (n + 1e-6)).exp();
        assert!((got[0] - want).abs() < 1e-5, "{} vs {want}", got[0]);
        assert!(got[0] < 1.0);
        // No tag or no completion: no answer tokens, confidence exp(0).
        assert_eq!(&got[1..], &[1.0, 1.0]);
        let most = got.iter().zip(&by_one).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(most < 1e-6, "one at a time: {by_one:?} vs {got:?}");
    }

    #[test]
    fn after_k_updates_the_reference_is_the_closed_form_average() {
        let vlm = tiny_vlm();
        let base = frozen_base(&vlm.model).unwrap();
        let lora = LoraConfig { seed: 3, ..LoraConfig::new(4, 8.0) };
        let policy = trainable_on(&base, Trainable::adapters(Some(&lora), 0)).unwrap();
        // A differently seeded copy: `new` must still start it equal to the policy.
        let other = LoraConfig { seed: 4, ..lora.clone() };
        let (decay, every) = (0.9, 2);
        let ema = EmaReference::new(
            trainable_on(&base, Trainable::adapters(Some(&other), 0)).unwrap(),
            &policy,
            decay,
            every,
        )
        .unwrap();
        let start = values(&policy);
        assert_eq!(values(ema.model()), start);
        // Step s sets every policy tensor to start + s; the EMA blends at steps 2, 4 and 6.
        let mut blended = Vec::new();
        for step in 1..=7u64 {
            for (_, v) in policy.trainable() {
                v.set(&(v.as_tensor() + 1.0).unwrap()).unwrap();
            }
            if ema.after_step(&policy, step).unwrap() {
                blended.push(step);
            }
        }
        assert_eq!(blended, vec![2, 4, 6]);
        // r_k = decay^k r_0 + Σ_j (1 − decay) decay^(k−j) p_j with p_j = r_0 + 2j, so
        // r_3 = r_0 + (1 − decay) Σ_j decay^(3−j) 2j.
        let shift: f64 = (1..=3).map(|j| (1.0 - decay) * decay.powi(3 - j) * 2.0 * f64::from(j)).sum();
        for (got, init) in values(ema.model()).iter().zip(&start) {
            for (g, s) in got.iter().zip(init) {
                assert!((f64::from(*g) - (f64::from(*s) + shift)).abs() < 1e-5, "{g} vs {s} + {shift}");
            }
        }
        // What a checkpoint holds restores the same reference.
        let saved: HashMap<String, Tensor> = ema.tensors().unwrap().into_iter().collect();
        let fresh = EmaReference::new(
            trainable_on(&base, Trainable::adapters(Some(&lora), 0)).unwrap(),
            &policy,
            decay,
            every,
        )
        .unwrap();
        fresh.restore(&saved).unwrap();
        assert_eq!(values(fresh.model()), values(ema.model()));
    }
}
