//! Percentile bootstrap over questions: confidence intervals for means of per-question statistics.
//!
//! Questions are the unit of resampling because they are the independent draws from the task; the
//! K samples of one question are not. Every statistic is resampled with the same question indices,
//! so intervals of derived quantities (the support gap) are consistent with their parts.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bail;
use crate::error::Result;

/// How intervals are computed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BootstrapOptions {
    /// Number of resamples of the question set (default 1000).
    pub resamples: usize,
    /// Seed of the resampling stream; the same seed and data give the same intervals.
    pub seed: u64,
    /// Coverage of the two-sided interval (default 0.95).
    pub confidence: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions { resamples: 1000, seed: 0, confidence: 0.95 }
    }
}

impl BootstrapOptions {
    pub fn validate(&self) -> Result<()> {
        if self.resamples < 2 {
            bail!("bootstrap: resamples = {} must be at least 2", self.resamples);
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            bail!("bootstrap: confidence = {} must be strictly between 0 and 1", self.confidence);
        }
        Ok(())
    }
}

/// A point estimate with its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// For each statistic (a column of per-question values, all of the same length), its mean over
/// questions and the percentile interval of that mean.
pub fn mean_intervals(columns: &[Vec<f64>], options: &BootstrapOptions) -> Result<Vec<Estimate>> {
    options.validate()?;
    let questions = columns.first().map_or(0, Vec::len);
    if questions == 0 || columns.iter().any(|c| c.len() != questions) {
        bail!("bootstrap: needs at least one question and equally long columns");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut weights = vec![0u32; questions];
    let mut means: Vec<Vec<f64>> = vec![Vec::with_capacity(options.resamples); columns.len()];
    for _ in 0..options.resamples {
        weights.fill(0);
        for _ in 0..questions {
            weights[rng.random_range(0..questions)] += 1;
        }
        for (column, out) in columns.iter().zip(means.iter_mut()) {
            let total: f64 = column.iter().zip(&weights).map(|(x, &w)| x * w as f64).sum();
            out.push(total / questions as f64);
        }
    }
    let alpha = 1.0 - options.confidence;
    let estimates = columns
        .iter()
        .zip(means.iter_mut())
        .map(|(column, resampled)| {
            resampled.sort_by(f64::total_cmp);
            Estimate {
                value: column.iter().sum::<f64>() / questions as f64,
                lo: quantile(resampled, alpha / 2.0),
                hi: quantile(resampled, 1.0 - alpha / 2.0),
            }
        })
        .collect();
    Ok(estimates)
}

/// The q-quantile of sorted values with linear interpolation between order statistics (numpy's
/// default), so intervals do not jump with the resample count.
pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let frac = position - below as f64;
    sorted[below] * (1.0 - frac) + sorted[above] * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.5) - 2.5).abs() < 1e-12);
        assert!((quantile(&v, 0.25) - 1.75).abs() < 1e-12);
    }

    #[test]
    fn same_seed_same_interval_and_constant_data_has_zero_width() {
        let col = vec![(0..50).map(|i| (i % 3) as f64).collect::<Vec<_>>(), vec![0.5; 50]];
        let opts = BootstrapOptions { resamples: 200, seed: 7, confidence: 0.95 };
        let a = mean_intervals(&col, &opts).unwrap();
        assert_eq!(a, mean_intervals(&col, &opts).unwrap());
        assert!(a[0].lo < a[0].value && a[0].value < a[0].hi);
        assert_eq!((a[1].lo, a[1].value, a[1].hi), (0.5, 0.5, 0.5));
    }

    #[test]
    fn bad_options_are_named() {
        let col = vec![vec![1.0]];
        let bad = BootstrapOptions { resamples: 1, ..Default::default() };
        assert!(mean_intervals(&col, &bad).unwrap_err().to_string().contains("resamples"));
        let bad = BootstrapOptions { confidence: 1.0, ..Default::default() };
        assert!(mean_intervals(&col, &bad).unwrap_err().to_string().contains("confidence"));
        assert!(mean_intervals(&[], &BootstrapOptions::default()).is_err());
    }
}
