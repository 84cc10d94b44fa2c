//! CARE's consistency bonus (GRPO-CARE, as the paper's released trainer computes it in
//! `trainer/grpo_trainer_ref_ema.py`, the `if self.use_care:` block of `compute_loss`).
//!
//! A reference model, kept as an exponential moving average of the policy, scores each sampled
//! completion's answer tokens; the confidence of a sample is the exponential of their mean
//! log-probability, capped. Among the batch's accurate samples (accuracy reward above 0.1 and
//! not below the batch's mean accuracy reward), those whose confidence is at least the accurate
//! samples' mean confidence less a margin earn `coefficient × accuracy reward` on top of their
//! reward, before the group advantages are taken. The batch is what one process sees in one
//! step: in the released 4-GPU run, one prompt's G = 8 completions.

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

impl CareBonus {
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
    }
}
