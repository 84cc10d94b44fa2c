//! The unbiased Pass@k estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on
//! Code", eq. 1): from `n` samples of which `c` are correct, the probability that at least one of
//! `k` samples drawn without replacement is correct, `1 - C(n-c, k) / C(n, k)`.
//!
//! The binomial coefficients overflow long before n = 1024, so both functions here evaluate the
//! ratio as a product of factors in [0, 1], which neither overflows nor loses precision.

use crate::bail;
use crate::error::Result;

/// Pass@k for one question with `c` correct answers among `n` samples.
///
/// Uses the paper's product form `1 - prod_{i=n-c+1}^{n} (1 - k/i)`, O(c).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Result<f64> {
    check(n, c)?;
    if k == 0 || k > n {
        bail!("pass_at_k: k = {k} must be between 1 and the number of samples n = {n}");
    }
    if n - c < k {
        // Every k-subset contains a correct sample.
        return Ok(1.0);
    }
    let miss: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    Ok(1.0 - miss)
}

/// Pass@k for every k in 1..=n; element `k - 1` holds Pass@k.
///
/// Walks k upwards with `C(n-c, k)/C(n, k) = C(n-c, k-1)/C(n, k-1) * (n-c-k+1)/(n-k+1)`, so the whole
/// curve costs O(n) instead of O(n c).
pub fn pass_at_k_curve(n: usize, c: usize) -> Result<Vec<f64>> {
    check(n, c)?;
    let mut miss = 1.0_f64;
    let mut curve = Vec::with_capacity(n);
    for k in 1..=n {
        miss *= if k > n - c { 0.0 } else { (n - c - k + 1) as f64 / (n - k + 1) as f64 };
        curve.push(1.0 - miss);
    }
    Ok(curve)
}

fn check(n: usize, c: usize) -> Result<()> {
    if c > n {
        bail!("pass_at_k: the correct count c = {c} exceeds the number of samples n = {n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fraction of k-subsets of `n` samples (the first `c` correct) that contain a correct one.
    fn brute_force(n: usize, c: usize, k: usize) -> f64 {
        let (mut hit, mut total) = (0u64, 0u64);
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize == k {
                total += 1;
                if mask & ((1u32 << c) - 1) != 0 {
                    hit += 1;
                }
            }
        }
        hit as f64 / total as f64
    }

    #[test]
    fn equals_enumeration_of_all_k_subsets() {
        for n in 1..=10 {
            let mut failures = Vec::new();
            for c in 0..=n {
                let curve = pass_at_k_curve(n, c).unwrap();
                for k in 1..=n {
                    let want = brute_force(n, c, k);
                    let got = pass_at_k(n, c, k).unwrap();
                    if (got - want).abs() > 1e-12 || (curve[k - 1] - want).abs() > 1e-12 {
                        failures.push((n, c, k, got, curve[k - 1], want));
                    }
                }
            }
            assert!(failures.is_empty(), "{failures:?}");
        }
    }

    #[test]
    fn stable_and_monotone_at_n_1024() {
        let n = 1024;
        for c in [0, 1, 2, 7, 100, 512, 1000, 1023, 1024] {
            let curve = pass_at_k_curve(n, c).unwrap();
            assert_eq!(curve.len(), n);
            for k in 1..=n {
                let single = pass_at_k(n, c, k).unwrap();
                assert!(single.is_finite() && (0.0..=1.0).contains(&single), "c={c} k={k}: {single}");
                assert!((single - curve[k - 1]).abs() < 1e-9, "c={c} k={k}: {single} vs {}", curve[k - 1]);
            }
            assert!(curve.windows(2).all(|w| w[1] >= w[0]), "c={c}: curve not monotone");
            assert!((curve[0] - c as f64 / n as f64).abs() < 1e-12, "pass@1 must be c/n");
            let top = if c == 0 { 0.0 } else { 1.0 };
            assert_eq!(curve[n - 1], top, "c={c}: pass@n");
        }
        // One correct in 1024: pass@k = k/n exactly.
        assert!((pass_at_k(1024, 1, 300).unwrap() - 300.0 / 1024.0).abs() < 1e-12);
    }

    #[test]
    fn bad_arguments_name_the_problem() {
        let err = pass_at_k(4, 5, 1).unwrap_err().to_string();
        assert!(err.contains("c = 5") && err.contains("n = 4"), "{err}");
        let err = pass_at_k(4, 1, 5).unwrap_err().to_string();
        assert!(err.contains("k = 5") && err.contains("n = 4"), "{err}");
        assert!(pass_at_k(4, 1, 0).is_err());
        assert!(pass_at_k_curve(2, 3).is_err());
    }
}
