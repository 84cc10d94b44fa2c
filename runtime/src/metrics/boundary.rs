//! The boundary rule: reads a support report, per task and per modality, as the post-training
//! regime it calls for.
//!
//! - `bridge`: Pass@k < support threshold. The right answer is rarely among k samples, so GRPO's
//!   groups are mostly all-wrong and carry no advantage signal; supervised fine-tuning has to
//!   bring the answer into support first.
//! - `sharpen`: support present and Pass@k - Acc@1 ≥ gap threshold. The model can reach the answer
//!   but does not give it by default: the case RL (GRPO) is made for.
//! - `saturated`: support present and a small gap; greedy already gets most of what sampling
//!   reaches, so neither stage has much to add.
//!
//! Defaults: k = the report's n; support threshold 0.5, the point where at least half the
//! questions' rollout groups are expected to contain a correct answer (a GRPO group with no
//! correct answer has zero advantage); gap threshold 0.1, ten points of accuracy, wider than the
//! 95% interval of a few hundred questions, so a "sharpen" verdict is not noise.
//!
//! Thresholds compare with a 1e-9 tolerance so a gap of exactly 0.1 computed as 0.7 - 0.6 counts
//! as reaching 0.1. With few options and large k, Pass@k is inflated by guessing; every row
//! reports the chance level `1 - (1 - 1/options)^k` beside it so the reader can judge.

use serde::{Deserialize, Serialize};

use super::bootstrap::Estimate;
use super::support::SupportReport;
use crate::bail;
use crate::error::{Context, Result};

const TOLERANCE: f64 = 1e-9;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundaryOptions {
    /// The k of Pass@k; `None` uses the report's n.
    pub k: Option<usize>,
    pub support_threshold: f64,
    pub gap_threshold: f64,
}

impl Default for BoundaryOptions {
    fn default() -> Self {
        BoundaryOptions { k: None, support_threshold: 0.5, gap_threshold: 0.1 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Regime {
    Bridge,
    Sharpen,
    Saturated,
}

impl Regime {
    pub fn as_str(&self) -> &'static str {
        match self {
            Regime::Bridge => "bridge",
            Regime::Sharpen => "sharpen",
            Regime::Saturated => "saturated",
        }
    }
}

impl std::fmt::Display for Regime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict for one task or one modality, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoundaryRow {
    /// "task" or "modality".
    pub scope: String,
    /// The task or modality name.
    pub group: String,
    pub regime: Regime,
    pub questions: usize,
    pub k: usize,
    pub acc1: Estimate,
    pub pass_at_k: Estimate,
    pub gap: Estimate,
    /// Expected Pass@k of uniform guessing over each question's options.
    pub chance_pass_at_k: f64,
    pub reason: String,
}

/// The rule alone, on point estimates.
pub fn classify(pass_at_k: f64, gap: f64, options: &BoundaryOptions) -> Regime {
    if pass_at_k < options.support_threshold - TOLERANCE {
        Regime::Bridge
    } else if gap >= options.gap_threshold - TOLERANCE {
        Regime::Sharpen
    } else {
        Regime::Saturated
    }
}

/// One row per task, then one per modality, each sorted by name.
pub fn boundary(report: &SupportReport, options: &BoundaryOptions) -> Result<Vec<BoundaryRow>> {
    for (name, value) in
        [("support_threshold", options.support_threshold), ("gap_threshold", options.gap_threshold)]
    {
        if !(0.0..=1.0).contains(&value) {
            bail!("boundary: {name} = {value} must be between 0 and 1");
        }
    }
    let k = options.k.unwrap_or(report.n());
    if k == 0 || k > report.n() {
        bail!("boundary: k = {k} must be between 1 and the report's samples per question n = {}", report.n());
    }
    let mut rows = Vec::new();
    for scope in ["task", "modality"] {
        for (group, sub) in report.by(scope)? {
            let pass_at_k = sub.pass_at(k).with_context(|| format!("boundary: {scope} {group}"))?;
            let gap = sub.gap(k)?;
            let regime = classify(pass_at_k.value, gap.value, options);
            let chance_pass_at_k = chance_pass_at_k(&sub, k);
            let reason = reason(regime, k, pass_at_k.value, gap.value, chance_pass_at_k, options);
            rows.push(BoundaryRow {
                scope: scope.to_string(),
                group,
                regime,
                questions: sub.questions(),
                k,
                acc1: sub.acc1(),
                pass_at_k,
                gap,
                chance_pass_at_k,
                reason,
            });
        }
    }
    Ok(rows)
}

fn chance_pass_at_k(report: &SupportReport, k: usize) -> f64 {
    let records = report.records();
    let total: f64 = records.iter().map(|r| 1.0 - (1.0 - 1.0 / r.n_options as f64).powi(k as i32)).sum();
    total / records.len() as f64
}

fn reason(regime: Regime, k: usize, pass: f64, gap: f64, chance: f64, o: &BoundaryOptions) -> String {
    let (support, gap_min) = (o.support_threshold, o.gap_threshold);
    let why = match regime {
        Regime::Bridge => format!(
            "Pass@{k} {pass:.3} < support {support:.2}: the answer is rarely sampled, so RL has little to reinforce; SFT first"
        ),
        Regime::Sharpen => format!(
            "Pass@{k} {pass:.3} ≥ support {support:.2} and gap {gap:.3} ≥ {gap_min:.2}: reachable but not the default; RL can sharpen"
        ),
        Regime::Saturated => format!(
            "Pass@{k} {pass:.3} ≥ support {support:.2} but gap {gap:.3} < {gap_min:.2}: greedy already gets what sampling reaches"
        ),
    };
    format!("{why} (chance Pass@{k} {chance:.3})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::bootstrap::BootstrapOptions;
    use crate::metrics::support::tests::record;

    /// A task whose 10 questions have `c_per_question` correct of 4 samples and `greedy_right`
    /// greedy hits.
    fn task(
        name: &str,
        c_per_question: &[usize],
        greedy_right: usize,
    ) -> Vec<crate::metrics::QuestionRecord> {
        c_per_question
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let samples: Vec<_> = (0..4).map(|s| Some(usize::from(s >= c))).collect();
                let greedy = Some(usize::from(i >= greedy_right));
                record(&i.to_string(), name, 0, greedy, &samples)
            })
            .collect()
    }

    #[test]
    fn each_regime_is_reached_with_its_reason() {
        let mut records = task("rare", &[0, 0, 0, 0, 0, 0, 0, 1, 1, 1], 0);
        records.extend(task("latent", &[2; 10], 3));
        records.extend(task("solved", &[4; 10], 10));
        let report =
            SupportReport::new(records, BootstrapOptions { resamples: 50, ..Default::default() }).unwrap();
        let rows = boundary(&report, &BoundaryOptions::default()).unwrap();
        let tasks: Vec<_> =
            rows.iter().filter(|r| r.scope == "task").map(|r| (r.group.as_str(), r.regime)).collect();
        assert_eq!(
            tasks,
            [("latent", Regime::Sharpen), ("rare", Regime::Bridge), ("solved", Regime::Saturated)]
        );
        assert_eq!(rows.iter().filter(|r| r.scope == "modality").count(), 3);
        let rare = &rows[1];
        assert_eq!((rare.k, rare.questions), (4, 10));
        assert!((rare.pass_at_k.value - 0.3).abs() < 1e-12);
        assert!(rare.reason.starts_with("Pass@4 0.300 < support 0.50"), "{}", rare.reason);
        assert!((rare.chance_pass_at_k - (1.0 - 0.75f64.powi(4))).abs() < 1e-12);
        assert!(rows[0].reason.contains("RL can sharpen"));
    }

    #[test]
    fn thresholds_are_inclusive() {
        let o = BoundaryOptions::default();
        assert_eq!(classify(0.5, 0.3, &o), Regime::Sharpen);
        assert_eq!(classify(0.4999, 0.3, &o), Regime::Bridge);
        assert_eq!(classify(0.7, 0.7 - 0.6, &o), Regime::Sharpen);
        assert_eq!(classify(0.7, 0.0999, &o), Regime::Saturated);
        // Support below threshold wins even with a large gap.
        assert_eq!(classify(0.45, 0.45, &o), Regime::Bridge);
        let lenient = BoundaryOptions { support_threshold: 0.0, gap_threshold: 0.0, k: None };
        assert_eq!(classify(0.0, 0.0, &lenient), Regime::Sharpen);
    }

    #[test]
    fn smaller_k_can_change_the_verdict() {
        let report = SupportReport::new(
            task("t", &[1; 10], 0),
            BootstrapOptions { resamples: 50, ..Default::default() },
        )
        .unwrap();
        let at =
            |k| boundary(&report, &BoundaryOptions { k: Some(k), ..Default::default() }).unwrap()[0].regime;
        // One correct in four: Pass@1 = 0.25 (bridge), Pass@4 = 1 (sharpen).
        assert_eq!((at(1), at(4)), (Regime::Bridge, Regime::Sharpen));
    }

    #[test]
    fn bad_options_are_named() {
        let report = SupportReport::new(task("t", &[1; 10], 0), BootstrapOptions::default()).unwrap();
        let err = boundary(&report, &BoundaryOptions { k: Some(5), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("k = 5"), "{err}");
        let err =
            boundary(&report, &BoundaryOptions { gap_threshold: 1.5, ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("gap_threshold"), "{err}");
    }
}
