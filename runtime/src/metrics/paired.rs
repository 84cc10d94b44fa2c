//! Paired bootstrap: the interval of a change measured on the same questions twice (a model
//! before and after training, a probe before and after), and of contrasts between such changes.
//!
//! Two independent intervals that do not overlap is a weak test of a change: the questions a
//! model finds hard stay hard after training, and resampling the two sides independently counts
//! that shared difficulty as noise twice. Pairing resamples questions, and each resampled
//! question brings its before *and* after value, so only the change varies.
//!
//! A contrast is `Σ wᵢ · mean(afterᵢ − beforeᵢ)` over terms measured on different question sets
//! (the in-domain task against the mean of two other tasks, say): each term's questions are
//! resampled on their own, pairs kept, which is the stratified bootstrap of the contrast.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::bootstrap::{quantile, BootstrapOptions, Estimate};
use super::statistic::Statistic;
use super::support::SupportReport;
use crate::bail;
use crate::error::Result;

/// One change inside a contrast: per-question values after and before (same questions, same
/// order) and the change's weight.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedTerm {
    pub after: Vec<f64>,
    pub before: Vec<f64>,
    pub weight: f64,
}

impl PairedTerm {
    /// `stat` of every question of `after` beside the same question of `before`, matched by
    /// (task, id): both reports must hold exactly the same questions.
    pub fn from_reports(
        after: &SupportReport,
        before: &SupportReport,
        stat: Statistic,
        weight: f64,
    ) -> Result<Self> {
        if after.questions() != before.questions() {
            bail!(
                "paired {stat}: the reports hold {} and {} questions; pairing needs the same questions in both",
                after.questions(),
                before.questions()
            );
        }
        let index: std::collections::HashMap<(&str, &str), usize> =
            before.records().iter().enumerate().map(|(i, r)| ((r.task.as_str(), r.id.as_str()), i)).collect();
        let before_values = before.per_question(stat)?;
        let after_values = after.per_question(stat)?;
        let mut paired = Vec::with_capacity(after_values.len());
        for r in after.records() {
            match index.get(&(r.task.as_str(), r.id.as_str())) {
                Some(&i) => paired.push(before_values[i]),
                None => {
                    bail!("paired {stat}: question {} of task {} is not in the earlier report", r.id, r.task)
                }
            }
        }
        Ok(PairedTerm { after: after_values, before: paired, weight })
    }

    fn differences(&self) -> Vec<f64> {
        self.after.iter().zip(&self.before).map(|(a, b)| a - b).collect()
    }
}

/// The contrast `Σ wᵢ · mean(afterᵢ − beforeᵢ)` with its paired (per term, stratified) percentile
/// interval.
pub fn paired_contrast(terms: &[PairedTerm], options: &BootstrapOptions) -> Result<Estimate> {
    options.validate()?;
    if terms.is_empty() {
        bail!("paired bootstrap: no terms");
    }
    for (i, t) in terms.iter().enumerate() {
        if t.after.is_empty() || t.after.len() != t.before.len() {
            bail!(
                "paired bootstrap: term {i} has {} values after and {} before; pairing needs the same questions, at least one",
                t.after.len(),
                t.before.len()
            );
        }
        if !t.weight.is_finite() || t.after.iter().chain(&t.before).any(|v| !v.is_finite()) {
            bail!("paired bootstrap: term {i} has a weight or a value that is not a finite number");
        }
    }
    let diffs: Vec<Vec<f64>> = terms.iter().map(PairedTerm::differences).collect();
    let mean = |d: &[f64]| d.iter().sum::<f64>() / d.len() as f64;
    let value = terms.iter().zip(&diffs).map(|(t, d)| t.weight * mean(d)).sum();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut resampled: Vec<f64> = (0..options.resamples)
        .map(|_| {
            terms
                .iter()
                .zip(&diffs)
                .map(|(t, d)| {
                    let total: f64 = (0..d.len()).map(|_| d[rng.random_range(0..d.len())]).sum();
                    t.weight * total / d.len() as f64
                })
                .sum()
        })
        .collect();
    resampled.sort_by(f64::total_cmp);
    let alpha = 1.0 - options.confidence;
    Ok(Estimate { value, lo: quantile(&resampled, alpha / 2.0), hi: quantile(&resampled, 1.0 - alpha / 2.0) })
}

/// The change `mean(after − before)` over the same questions, with its paired interval.
pub fn paired_difference(after: &[f64], before: &[f64], options: &BootstrapOptions) -> Result<Estimate> {
    paired_contrast(&[PairedTerm { after: after.to_vec(), before: before.to_vec(), weight: 1.0 }], options)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::metrics::support::tests::record;

    fn opts(seed: u64) -> BootstrapOptions {
        BootstrapOptions { resamples: 2000, seed, confidence: 0.95 }
    }

    #[test]
    fn no_change_is_exactly_zero_and_a_constant_change_has_no_width() {
        let before: Vec<f64> = (0..40).map(|i| f64::from(i % 2)).collect();
        let same = paired_difference(&before, &before, &opts(1)).unwrap();
        assert_eq!((same.value, same.lo, same.hi), (0.0, 0.0, 0.0));
        let after: Vec<f64> = before.iter().map(|b| b + 0.25).collect();
        let shifted = paired_difference(&after, &before, &opts(1)).unwrap();
        assert!((shifted.value - 0.25).abs() < 1e-12 && (shifted.hi - shifted.lo).abs() < 1e-12);
    }

    /// Hard questions stay hard: 300 questions whose difficulty varies a lot, after = before plus
    /// a small lift on 10% of them. Independent intervals overlap; the paired one excludes zero.
    #[test]
    fn pairing_finds_a_change_that_overlapping_intervals_miss() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let before: Vec<f64> = (0..300).map(|_| f64::from(u8::from(rng.random_bool(0.5)))).collect();
        let after: Vec<f64> =
            before.iter().enumerate().map(|(i, &b)| if i % 10 == 0 { 1.0 } else { b }).collect();
        let d = paired_difference(&after, &before, &opts(3)).unwrap();
        assert!(d.lo > 0.0, "{d:?}");
        let solo = super::super::bootstrap::mean_intervals(&[after, before], &opts(3)).unwrap();
        assert!(solo[0].lo < solo[1].hi, "the independent intervals overlap: {solo:?}");
    }

    #[test]
    fn a_contrast_weighs_each_terms_change_and_resamples_them_apart() {
        let term = |change: f64, weight: f64| PairedTerm {
            after: (0..30).map(|i| f64::from(i % 3) + change).collect(),
            before: (0..30).map(|i| f64::from(i % 3)).collect(),
            weight,
        };
        let c = paired_contrast(&[term(0.5, 1.0), term(0.1, -0.5), term(0.3, -0.5)], &opts(0)).unwrap();
        assert!((c.value - 0.3).abs() < 1e-12 && (c.hi - c.lo).abs() < 1e-12, "{c:?}");
        let noisy = PairedTerm { after: vec![1.0, 0.0, 1.0, 1.0], before: vec![0.0; 4], weight: 1.0 };
        let a = paired_contrast(&[noisy.clone(), term(0.0, 1.0)], &opts(5)).unwrap();
        assert_eq!(
            a,
            paired_contrast(&[noisy, term(0.0, 1.0)], &opts(5)).unwrap(),
            "same seed, same interval"
        );
        assert!(a.lo < 0.75 && 0.75 < a.hi);
    }

    #[test]
    fn reports_pair_by_question_whatever_their_order() {
        let early = vec![
            record("1", "t", 0, Some(1), &[Some(1), Some(0)]),
            record("2", "t", 1, Some(1), &[Some(1), Some(1)]),
        ];
        let late = vec![
            record("2", "t", 1, Some(1), &[Some(1), Some(1)]),
            record("1", "t", 0, Some(0), &[Some(0), Some(0)]),
        ];
        let o = BootstrapOptions { resamples: 50, ..Default::default() };
        let (before, after) = (SupportReport::new(early, o).unwrap(), SupportReport::new(late, o).unwrap());
        let t = PairedTerm::from_reports(&after, &before, Statistic::Acc1, 1.0).unwrap();
        assert_eq!((t.after, t.before), (vec![1.0, 1.0], vec![1.0, 0.0]));
        let pass = PairedTerm::from_reports(&after, &before, Statistic::Pass(2), 1.0).unwrap();
        assert_eq!(pass.differences(), [0.0, 0.0]);
        let other = SupportReport::new(
            vec![record("3", "t", 0, Some(0), &[Some(0)]), record("1", "t", 0, None, &[None])],
            o,
        )
        .unwrap();
        let e = PairedTerm::from_reports(&other, &before, Statistic::Acc1, 1.0).unwrap_err().to_string();
        assert!(e.contains("question 3 of task t is not in the earlier report"), "{e}");
    }

    #[test]
    fn mismatched_or_empty_terms_are_refused() {
        assert!(paired_contrast(&[], &opts(0)).unwrap_err().to_string().contains("no terms"));
        let e = paired_difference(&[1.0, 0.0], &[1.0], &opts(0)).unwrap_err().to_string();
        assert!(e.contains("2 values after and 1 before"), "{e}");
        assert!(paired_difference(&[f64::NAN], &[1.0], &opts(0)).is_err());
    }
}
