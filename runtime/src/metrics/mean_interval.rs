//! The interval of a mean over a few independent repeats (one effect per seed): Student's t,
//! `mean ± t(1 − α/2, n − 1) · sd / √n` with the sample standard deviation.
//!
//! A percentile bootstrap over five seeds has only a handful of distinct resamples and its
//! intervals come out too narrow; the t interval is the textbook answer for a few roughly normal
//! values, and it widens honestly as the seeds get fewer (t is 12.7 for two seeds, 2.78 for five).

use crate::bail;
use crate::error::Result;

/// A mean with its t interval, the sample standard deviation and the number of values.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeanInterval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub sd: f64,
    pub n: usize,
}

/// The two-sided `confidence` t interval of the mean of `values` (at least two, all finite).
pub fn mean_interval(values: &[f64], confidence: f64) -> Result<MeanInterval> {
    if values.len() < 2 {
        bail!("mean_interval: {} value(s); an interval of a mean needs at least two", values.len());
    }
    if values.iter().any(|v| !v.is_finite()) {
        bail!("mean_interval: every value must be a finite number");
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        bail!("mean_interval: confidence = {confidence} must be strictly between 0 and 1");
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let half = student_t_quantile(0.5 + confidence / 2.0, n - 1.0) * sd / n.sqrt();
    Ok(MeanInterval { mean, lo: mean - half, hi: mean + half, sd, n: values.len() })
}

/// The `p` quantile (p in [0.5, 1)) of Student's t with `df` degrees of freedom, by bisection on
/// its distribution function.
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    // P(T <= t) = 1 - I_x(df/2, 1/2) / 2 with x = df / (df + t²), for t >= 0.
    let cdf = |t: f64| 1.0 - 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t));
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while cdf(hi) < p {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The regularised incomplete beta function I_x(a, b), from its continued fraction (Numerical
/// Recipes' `betai`, evaluated with the modified Lentz method).
fn regularized_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut h = d;
    for m in 1..500 {
        let m = f64::from(m);
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + numerator / c;
            c = if c.abs() < TINY { TINY } else { c };
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine coefficients; ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + 7.5;
    let series = C[1..].iter().enumerate().fold(C[0], |s, (i, c)| s + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against printed t tables (scipy.stats.t.ppf), to the eight digits they give.
    #[test]
    fn t_quantiles_match_the_tables() {
        for (p, df, want) in [
            (0.975, 1.0, 12.706_204_7),
            (0.975, 2.0, 4.302_652_7),
            (0.975, 4.0, 2.776_445_1),
            (0.975, 9.0, 2.262_157_2),
            (0.975, 30.0, 2.042_272_5),
            (0.95, 4.0, 2.131_846_8),
        ] {
            let got = student_t_quantile(p, df);
            assert!((got - want).abs() < 1e-7 * want, "t({p}, {df}) = {got}, want {want}");
        }
    }

    #[test]
    fn the_interval_is_the_textbook_one() {
        let v = [0.10, 0.14, 0.08, 0.12, 0.11];
        let m = mean_interval(&v, 0.95).unwrap();
        let sd = (v.iter().map(|x| (x - 0.11f64).powi(2)).sum::<f64>() / 4.0).sqrt();
        assert!((m.mean - 0.11).abs() < 1e-12 && (m.sd - sd).abs() < 1e-12 && m.n == 5);
        let half = student_t_quantile(0.975, 4.0) * sd / 5f64.sqrt();
        assert!((m.lo - (0.11 - half)).abs() < 1e-9 && (m.hi - (0.11 + half)).abs() < 1e-9, "{m:?}");
        let same = mean_interval(&[0.25, 0.25, 0.25], 0.95).unwrap();
        assert_eq!((same.lo, same.hi), (0.25, 0.25));
    }

    #[test]
    fn too_few_or_bad_values_are_named() {
        assert!(mean_interval(&[0.1], 0.95).unwrap_err().to_string().contains("at least two"));
        assert!(mean_interval(&[0.1, f64::NAN], 0.95).is_err());
        assert!(mean_interval(&[0.1, 0.2], 1.0).unwrap_err().to_string().contains("confidence"));
    }
}
