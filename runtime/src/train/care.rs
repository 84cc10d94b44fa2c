//! CARE's consistency bonus (GRPO-CARE, as the paper's released trainer computes it in
//! `trainer/grpo_trainer_ref_ema.py`, the `if self.use_care:` block of `compute_loss`).
//!
//! A reference model, kept as an exponential moving average of the policy, scores each sampled
//! completion's answer tokens; the confidence of a sample is the exponential of their mean
//! log-probability, capped. Among the batch's accurate samples (accuracy reward above 0.1 and
//! not below the batch's mean accuracy reward), those whose confidence is at least the accurate
//! samples' mean confidence less a margin earn `coefficient × accuracy reward` on top of their
//! reward, before the group advantages are taken. The batch is what one process sees in one
//! step: in the released 4-GPU run (`per_device_train_batch_size 1`), one prompt's G = 8
//! completions. [`CareBonus::bonus_by_group`] therefore takes the bonus per prompt group, whatever
//! the number of prompts in our step; a released run with more prompts per device would pool them.
//!
//! [`CareOptions`] is the whole of CARE in a GRPO run: this bonus and the schedule of the EMA
//! reference ([`super::ema_reference`]) whose answer-token confidence it reads.

use crate::error::Result;

/// The bonus's settings; the defaults are the paper's run (`octomed_7b_pmcvqa8k.sh`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CareBonus {
    /// `bonus_coefficient`.
    pub coefficient: f64,
    /// `confidence_upper_bound`: confidences above it count as it.
    pub upper_bound: Option<f64>,
    /// `consistency_margin`: how far below the accurate samples' mean confidence still earns it.
    pub margin: Option<f64>,
}

impl Default for CareBonus {
    fn default() -> Self {
        CareBonus { coefficient: 0.5, upper_bound: Some(0.95), margin: Some(0.01) }
    }
}

/// A sample's confidence from its answer tokens' reference log-probabilities: `exp(Σ / (n + 1e-6))`,
/// as released. A completion with no answer tokens gets `exp(0) = 1` (then the cap), which is the
/// released behaviour too.
pub fn answer_confidence(answer_logprobs: &[f64]) -> f64 {
    (answer_logprobs.iter().sum::<f64>() / (answer_logprobs.len() as f64 + 1e-6)).exp()
}

/// GRPO-CARE in a GRPO run; the defaults are the paper's run (`--ref_ema_decay 0.995
/// --ref_ema_update_every 10` and the bonus's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CareOptions {
    pub bonus: CareBonus,
    /// `ref_ema_decay`: `reference ← decay · reference + (1 − decay) · policy`.
    pub ema_decay: f64,
    /// `ref_ema_update_every`: blend after every optimiser step whose number (from 1) it divides.
    pub ema_every: u64,
}

impl Default for CareOptions {
    fn default() -> Self {
        CareOptions { bonus: CareBonus::default(), ema_decay: 0.995, ema_every: 10 }
    }
}

impl CareOptions {
    /// Settings that cannot work, named.
    pub fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.ema_decay) {
            crate::bail!("care: ema_decay must be in [0, 1] (got {})", self.ema_decay);
        }
        if self.ema_every == 0 {
            crate::bail!("care: ema_every must be at least 1");
        }
        if !self.bonus.coefficient.is_finite() {
            crate::bail!("care: bonus coefficient {} is not finite", self.bonus.coefficient);
        }
        Ok(())
    }
}

impl CareBonus {
    /// [`Self::bonus`] over each run of `group` consecutive samples (one prompt's completions).
    pub fn bonus_by_group(&self, accuracy: &[f64], confidence: &[f64], group: usize) -> Result<Vec<f64>> {
        if group == 0 || accuracy.len() % group != 0 || confidence.len() != accuracy.len() {
            crate::bail!(
                "care bonus: {} accuracy rewards and {} confidences do not split into groups of {group}",
                accuracy.len(),
                confidence.len()
            );
        }
        let mut out = Vec::with_capacity(accuracy.len());
        for (a, c) in accuracy.chunks(group).zip(confidence.chunks(group)) {
            out.extend(self.bonus(a, c)?);
        }
        Ok(out)
    }

    /// The bonus of each sample, given its accuracy reward and its (uncapped) confidence.
    pub fn bonus(&self, accuracy: &[f64], confidence: &[f64]) -> Result<Vec<f64>> {
        if accuracy.len() != confidence.len() {
            crate::bail!(
                "care bonus: {} accuracy rewards but {} confidences; give one of each per sample",
                accuracy.len(),
                confidence.len()
            );
        }
        if let Some(bad) = accuracy.iter().chain(confidence).find(|x| !x.is_finite()) {
            crate::bail!("care bonus: {bad} is not a finite reward or confidence");
        }
        let capped: Vec<f64> = confidence.iter().map(|&c| self.upper_bound.map_or(c, |u| c.min(u))).collect();
        let mean_accuracy = accuracy.iter().sum::<f64>() / accuracy.len().max(1) as f64;
        let accurate: Vec<bool> = accuracy.iter().map(|&a| a > 0.1 && a >= mean_accuracy).collect();
        let selected: Vec<f64> = capped.iter().zip(&accurate).filter(|(_, &a)| a).map(|(&c, _)| c).collect();
        if selected.is_empty() {
            // The released mean of an empty selection is NaN, which no confidence reaches.
            return Ok(vec![0.0; accuracy.len()]);
        }
        let threshold = selected.iter().sum::<f64>() / selected.len() as f64 - self.margin.unwrap_or(0.0);
        Ok(accuracy
            .iter()
            .zip(&capped)
            .zip(&accurate)
            .map(
                |((&a, &c), &is_accurate)| {
                    if is_accurate && c >= threshold {
                        a * self.coefficient
                    } else {
                        0.0
                    }
                },
            )
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::advantages::{group_advantages, ScaleRewards};
    use serde_json::Value;

    fn corpus() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/medbridgerl/corpus.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn floats(v: &Value) -> Vec<f64> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    }

    /// The released code computes in float32; 1e-6 covers its rounding.
    fn close(got: &[f64], want: &[f64]) -> bool {
        got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1e-6 * w.abs().max(1.0))
    }

    #[test]
    fn bonus_matches_the_released_code_on_the_corpus() {
        let corpus = corpus();
        let cases = corpus["care"].as_array().unwrap();
        assert!(cases.len() >= 20);
        let mut rewarded = 0;
        for case in cases {
            let care = CareBonus {
                coefficient: case["coefficient"].as_f64().unwrap(),
                upper_bound: case["upper_bound"].as_f64(),
                margin: case["margin"].as_f64(),
            };
            let got = care.bonus(&floats(&case["accuracy"]), &floats(&case["confidence"])).unwrap();
            let want = floats(&case["bonus"]);
            assert!(close(&got, &want), "{case}: got {got:?}");
            rewarded += want.iter().filter(|&&b| b > 0.0).count();
        }
        assert!(rewarded > 10, "the corpus must exercise the bonus, not only its absence");
    }

    #[test]
    fn group_advantages_match_the_released_code_on_the_corpus() {
        let corpus = corpus();
        for case in corpus["advantages"].as_array().unwrap() {
            let group = case["group"].as_u64().unwrap() as usize;
            let got = group_advantages(&floats(&case["rewards"]), group, ScaleRewards::Group).unwrap();
            assert!(close(&got.values, &floats(&case["advantages"])), "{case}: got {:?}", got.values);
        }
    }

    #[test]
    fn confidence_and_bad_input() {
        assert!((answer_confidence(&[-0.1, -0.3]) - (-0.4f64 / (2.0 + 1e-6)).exp()).abs() < 1e-15);
        assert_eq!(answer_confidence(&[]), 1.0);
        let care = CareBonus::default();
        assert!(care
            .bonus(&[1.0], &[0.5, 0.5])
            .unwrap_err()
            .to_string()
            .contains("1 accuracy rewards but 2"));
        assert!(care.bonus(&[f64::NAN], &[0.5]).is_err());
        assert_eq!(care.bonus(&[0.0, 0.0], &[0.9, 0.1]).unwrap(), vec![0.0, 0.0]);
        assert!(care
            .bonus_by_group(&[1.0; 3], &[0.5; 3], 2)
            .unwrap_err()
            .to_string()
            .contains("groups of 2"));
        let bad = CareOptions { ema_every: 0, ..CareOptions::default() };
        assert!(bad.check().unwrap_err().to_string().contains("ema_every"));
    }

    #[test]
    fn each_group_pools_only_its_own_samples() {
        let care = CareBonus::default();
        // Pooled, group 1's lower accuracy would fall below the batch mean and earn nothing.
        let (acc, conf) = ([1.0, 1.0, 0.5, 0.0], [0.9, 0.5, 0.6, 0.6]);
        let by_group = care.bonus_by_group(&acc, &conf, 2).unwrap();
        assert_eq!(by_group, vec![0.5, 0.0, 0.25, 0.0]);
        assert_eq!(care.bonus(&acc, &conf).unwrap(), vec![0.5, 0.0, 0.0, 0.0]);
    }
}
