//! The per-question statistics a support report averages, by the names scripts use for them:
//! `"acc1"` (the greedy answer is right), `"mean"` (c / n), `"pass@k"` (the unbiased estimator
//! from the question's own samples) and `"gap@k"` (pass@k minus acc1). One parser serves the
//! report's intervals (`ci`) and the paired comparisons (`paired`), so both read a name the same
//! way.

use super::bootstrap::Estimate;
use super::pass_at_k::pass_at_k;
use super::support::SupportReport;
use crate::bail;
use crate::error::{Context, Result};

/// A per-question statistic whose mean over questions is one of the report's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statistic {
    Acc1,
    Mean,
    Pass(usize),
    Gap(usize),
}

impl Statistic {
    /// `"acc1"`, `"mean"`, `"pass@k"` or `"gap@k"`.
    pub fn parse(name: &str) -> Result<Statistic> {
        let k = |rest: &str| -> Result<usize> {
            match rest.parse::<usize>() {
                Ok(k) if k >= 1 => Ok(k),
                _ => bail!("bad k in {name:?}: expected a whole number >= 1 after the @"),
            }
        };
        Ok(match name {
            "acc1" => Statistic::Acc1,
            "mean" => Statistic::Mean,
            other => match (other.strip_prefix("pass@"), other.strip_prefix("gap@")) {
                (Some(rest), _) => Statistic::Pass(k(rest)?),
                (_, Some(rest)) => Statistic::Gap(k(rest)?),
                _ => bail!("unknown statistic {other:?}; use acc1, mean, pass@k or gap@k"),
            },
        })
    }
}

impl std::fmt::Display for Statistic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Statistic::Acc1 => f.write_str("acc1"),
            Statistic::Mean => f.write_str("mean"),
            Statistic::Pass(k) => write!(f, "pass@{k}"),
            Statistic::Gap(k) => write!(f, "gap@{k}"),
        }
    }
}

impl SupportReport {
    /// The statistic's mean over questions with its bootstrap interval.
    pub fn estimate(&self, stat: Statistic) -> Result<Estimate> {
        match stat {
            Statistic::Acc1 => Ok(self.acc1()),
            Statistic::Mean => Ok(self.mean_at_n()),
            Statistic::Pass(k) => self.pass_at(k),
            Statistic::Gap(k) => self.gap(k),
        }
    }

    /// The statistic of every question, in record order; its mean is [`Self::estimate`]'s value.
    pub fn per_question(&self, stat: Statistic) -> Result<Vec<f64>> {
        if let Statistic::Pass(k) | Statistic::Gap(k) = stat {
            if k > self.n() {
                bail!("{stat}: k = {k} must be at most the report's samples per question n = {}", self.n());
            }
        }
        let greedy = |r: &super::QuestionRecord| f64::from(u8::from(r.greedy_correct()));
        self.records()
            .iter()
            .map(|r| {
                let pass = |k| {
                    pass_at_k(r.samples.len(), r.correct_count(), k)
                        .with_context(|| format!("question {}", r.id))
                };
                Ok(match stat {
                    Statistic::Acc1 => greedy(r),
                    Statistic::Mean if r.samples.is_empty() => 0.0,
                    Statistic::Mean => r.correct_count() as f64 / r.samples.len() as f64,
                    Statistic::Pass(k) => pass(k)?,
                    Statistic::Gap(k) => pass(k)? - greedy(r),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::bootstrap::BootstrapOptions;
    use crate::metrics::support::tests::record;

    #[test]
    fn names_round_trip_and_bad_ones_are_named() {
        for name in ["acc1", "mean", "pass@8", "gap@1"] {
            assert_eq!(Statistic::parse(name).unwrap().to_string(), name);
        }
        assert!(Statistic::parse("pass@0").unwrap_err().to_string().contains("bad k"));
        assert!(Statistic::parse("gap@x").unwrap_err().to_string().contains("bad k"));
        assert!(Statistic::parse("auc").unwrap_err().to_string().contains("acc1, mean, pass@k or gap@k"));
    }

    #[test]
    fn per_question_values_average_to_the_report() {
        let records = vec![
            record("1", "t", 0, Some(0), &[Some(0), Some(1), Some(0), Some(0)]),
            record("2", "t", 1, Some(2), &[Some(2), Some(1), None, Some(2)]),
            record("3", "t", 2, None, &[Some(3), Some(3), Some(3), Some(3)]),
        ];
        let r =
            SupportReport::new(records, BootstrapOptions { resamples: 20, ..Default::default() }).unwrap();
        for name in ["acc1", "mean", "pass@1", "pass@3", "gap@4"] {
            let stat = Statistic::parse(name).unwrap();
            let values = r.per_question(stat).unwrap();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            assert!((mean - r.estimate(stat).unwrap().value).abs() < 1e-12, "{name}");
        }
        assert_eq!(r.per_question(Statistic::Gap(4)).unwrap(), [0.0, 1.0, 0.0]);
        assert!(r.per_question(Statistic::Pass(5)).unwrap_err().to_string().contains("n = 4"));
    }
}
