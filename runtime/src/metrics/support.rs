//! The support report: default behaviour (Acc@1, greedy) against support (Pass@k over K samples)
//! for a set of evaluated questions, with seeded bootstrap intervals and per-group breakdowns.
//!
//! Definitions, all means over questions:
//! - Acc@1: the greedy answer is correct.
//! - Pass@k: Chen et al.'s unbiased estimator from the question's n samples and c correct ones.
//! - mean@n: c / n, the accuracy of one random sample.
//! - maj@k: the majority vote of the *first* k samples is correct (not the average over all
//!   k-subsets: first-k is what a user drawing k samples gets); ties go to the answer seen first.
//! - gap(k): Pass@k - Acc@1, what sampling reaches that the default answer misses.
//! - format failures: the share of greedy answers, and of samples, with no extractable answer;
//!   and the share of questions none of whose samples follows the format (the released
//!   `inference.py`'s `format_failure_rate`, "no usable <answer> tag in any of K samples" under
//!   the `medbridgerl` preset, whose format flag is the tag).
//! - unique answers: the distinct answers among a question's samples, failures excluded,
//!   averaged over all questions (`inference.py`'s `avg_unique_answers@K`).
//! - The release's `pass@K` (any of the K samples right) is Pass@n here: the estimator at k = n
//!   is exactly that.
//! - entropy: of each question's sampled-answer distribution (failures excluded), in nats and
//!   divided by ln(n_options) so 1 means uniform over the options; averaged over the questions that
//!   have at least one answer.
//!
//! Questions may carry different sample counts; the report's `n` is the smallest, and every k up
//! to it uses each question's own count in the estimator.

use std::collections::{BTreeMap, HashSet};

use super::bootstrap::{mean_intervals, BootstrapOptions, Estimate};
use super::pass_at_k::pass_at_k_curve;
use super::record::QuestionRecord;
use crate::bail;
use crate::error::{Context, Result};

/// The keys `SupportReport::by` accepts.
pub const GROUP_KEYS: [&str; 3] = ["class", "task", "modality"];

/// One point of the Pass@k curve.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CurvePoint {
    pub k: usize,
    pub pass: Estimate,
    /// Pass@k - Acc@1.
    pub gap: Estimate,
    /// maj@k (first k samples), without interval.
    pub maj: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FormatFailures {
    /// Share of questions whose greedy answer could not be extracted.
    pub greedy: f64,
    /// Share of all samples whose answer could not be extracted.
    pub samples: f64,
    /// Share of questions with samples none of which follows the format.
    pub questions: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnswerEntropy {
    /// Mean per-question entropy in nats.
    pub nats: f64,
    /// Mean per-question entropy divided by ln(n_options); 0 = always the same answer, 1 = uniform.
    pub normalised: f64,
    /// Questions with at least one extracted sample, the ones averaged.
    pub questions: usize,
    /// Mean over all questions of the number of distinct extracted answers among the samples.
    pub unique_answers: f64,
}

/// Metrics of a set of questions; build with [`SupportReport::new`].
#[derive(Debug, Clone)]
pub struct SupportReport {
    records: Vec<QuestionRecord>,
    bootstrap: BootstrapOptions,
    n: usize,
    acc1: Estimate,
    mean_at_n: Estimate,
    curve: Vec<CurvePoint>,
    format_failures: FormatFailures,
    entropy: AnswerEntropy,
}

impl SupportReport {
    /// Scores the records. Fails on an empty list, a duplicate (task, id), or an answer index that
    /// is not an option.
    pub fn new(records: Vec<QuestionRecord>, bootstrap: BootstrapOptions) -> Result<Self> {
        bootstrap.validate()?;
        if records.is_empty() {
            bail!("support report: no question records");
        }
        let mut seen = HashSet::new();
        for r in &records {
            r.validate()?;
            if !seen.insert((r.task.as_str(), r.id.as_str())) {
                bail!("support report: question {} of task {} appears twice", r.id, r.task);
            }
        }
        let q = records.len() as f64;
        let n = records.iter().map(|r| r.samples.len()).min().unwrap_or(0);

        // Columns of per-question statistics: greedy, mean@n, then pass@k and gap@k for k = 1..=n.
        let greedy: Vec<f64> = records.iter().map(|r| f64::from(u8::from(r.greedy_correct()))).collect();
        let mean: Vec<f64> =
            records
                .iter()
                .map(|r| {
                    if r.samples.is_empty() {
                        0.0
                    } else {
                        r.correct_count() as f64 / r.samples.len() as f64
                    }
                })
                .collect();
        let mut pass = vec![Vec::with_capacity(records.len()); n];
        let mut maj = vec![0.0; n];
        for r in &records {
            let curve = pass_at_k_curve(r.samples.len(), r.correct_count())
                .with_context(|| format!("question {}", r.id))?;
            for (column, value) in pass.iter_mut().zip(curve) {
                column.push(value);
            }
            for (total, correct) in maj.iter_mut().zip(r.majority_correct(n)) {
                *total += f64::from(u8::from(correct));
            }
        }
        let gap: Vec<Vec<f64>> =
            pass.iter().map(|column| column.iter().zip(&greedy).map(|(p, g)| p - g).collect()).collect();
        let mut columns = vec![greedy, mean];
        columns.extend(pass);
        columns.extend(gap);
        let estimates = mean_intervals(&columns, &bootstrap)?;
        let curve = (0..n)
            .map(|i| CurvePoint {
                k: i + 1,
                pass: estimates[2 + i],
                gap: estimates[2 + n + i],
                maj: maj[i] / q,
            })
            .collect();

        let samples_total: usize = records.iter().map(|r| r.samples.len()).sum();
        let sample_failures: usize = records.iter().map(QuestionRecord::sample_failures).sum();
        let format_failures = FormatFailures {
            greedy: records.iter().filter(|r| r.greedy.is_none()).count() as f64 / q,
            samples: if samples_total == 0 { 0.0 } else { sample_failures as f64 / samples_total as f64 },
            questions: records.iter().filter(|r| !r.samples.is_empty() && r.formatted_samples() == 0).count()
                as f64
                / q,
        };
        let entropy = mean_entropy(&records);
        Ok(SupportReport {
            acc1: estimates[0],
            mean_at_n: estimates[1],
            records,
            bootstrap,
            n,
            curve,
            format_failures,
            entropy,
        })
    }

    /// Number of questions.
    pub fn questions(&self) -> usize {
        self.records.len()
    }

    /// Samples per question (the smallest count if they differ); Pass@k is defined for k ≤ n.
    pub fn n(&self) -> usize {
        self.n
    }

    pub fn records(&self) -> &[QuestionRecord] {
        &self.records
    }

    pub fn bootstrap(&self) -> &BootstrapOptions {
        &self.bootstrap
    }

    /// Greedy accuracy with its interval.
    pub fn acc1(&self) -> Estimate {
        self.acc1
    }

    /// Mean accuracy of single samples with its interval.
    pub fn mean_at_n(&self) -> Estimate {
        self.mean_at_n
    }

    /// Pass@k for k = 1..=n, with intervals, gaps and maj@k.
    pub fn curve(&self) -> &[CurvePoint] {
        &self.curve
    }

    pub fn pass_at(&self, k: usize) -> Result<Estimate> {
        Ok(self.point(k, "pass_at")?.pass)
    }

    /// The support gap Pass@k - Acc@1.
    pub fn gap(&self, k: usize) -> Result<Estimate> {
        Ok(self.point(k, "gap")?.gap)
    }

    pub fn maj_at(&self, k: usize) -> Result<f64> {
        Ok(self.point(k, "maj_at")?.maj)
    }

    pub fn format_failures(&self) -> FormatFailures {
        self.format_failures
    }

    pub fn entropy(&self) -> AnswerEntropy {
        self.entropy
    }

    /// The released `format_failure_rate`: share of questions none of whose samples follows the
    /// format.
    pub fn format_failure_rate(&self) -> f64 {
        self.format_failures.questions
    }

    /// The released `avg_unique_answers@K`: mean number of distinct answers among a question's
    /// samples, failures excluded.
    pub fn avg_unique_answers(&self) -> f64 {
        self.entropy.unique_answers
    }

    /// One report per value of `key` ("class", "task" or "modality"), scored with the same bootstrap
    /// options.
    pub fn by(&self, key: &str) -> Result<BTreeMap<String, SupportReport>> {
        let mut groups: BTreeMap<String, Vec<QuestionRecord>> = BTreeMap::new();
        for r in &self.records {
            let value = match key {
                "class" => &r.class,
                "task" => &r.task,
                "modality" => &r.modality,
                other => bail!("by: unknown key {other:?}; expected one of {}", GROUP_KEYS.join(", ")),
            };
            groups.entry(value.clone()).or_default().push(r.clone());
        }
        groups
            .into_iter()
            .map(|(name, records)| {
                let report =
                    SupportReport::new(records, self.bootstrap).with_context(|| format!("{key} {name}"))?;
                Ok((name, report))
            })
            .collect()
    }

    fn point(&self, k: usize, what: &str) -> Result<&CurvePoint> {
        match k.checked_sub(1).and_then(|i| self.curve.get(i)) {
            Some(point) => Ok(point),
            None => bail!(
                "{what}: k = {k} must be between 1 and the report's samples per question n = {}",
                self.n
            ),
        }
    }
}

fn mean_entropy(records: &[QuestionRecord]) -> AnswerEntropy {
    let (mut nats, mut normalised, mut questions) = (0.0, 0.0, 0usize);
    for r in records {
        if let Some(h) = r.answer_entropy() {
            nats += h;
            // With one option there is no uncertainty to normalise by; its entropy is 0 anyway.
            normalised += if r.n_options > 1 { h / (r.n_options as f64).ln() } else { 0.0 };
            questions += 1;
        }
    }
    let div = questions.max(1) as f64;
    let unique =
        records.iter().map(|r| r.unique_answers()).sum::<usize>() as f64 / records.len().max(1) as f64;
    AnswerEntropy { nats: nats / div, normalised: normalised / div, questions, unique_answers: unique }
}

#[cfg(test)]
pub(crate) mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    pub(crate) fn record(
        id: &str,
        task: &str,
        gold: usize,
        greedy: Option<usize>,
        samples: &[Option<usize>],
    ) -> QuestionRecord {
        QuestionRecord {
            id: id.into(),
            task: task.into(),
            modality: format!("{task}-modality"),
            class: format!("class{gold}"),
            gold,
            greedy,
            samples: samples.to_vec(),
            n_options: 4,
            format_ok: Vec::new(),
        }
    }

    fn small() -> SupportReport {
        let records = vec![
            record("1", "path", 0, Some(0), &[Some(0), Some(1), Some(0), Some(0)]),
            record("2", "path", 1, Some(2), &[Some(2), Some(1), None, Some(2)]),
            record("3", "derma", 2, None, &[Some(3), Some(3), Some(3), Some(3)]),
        ];
        SupportReport::new(records, BootstrapOptions { resamples: 200, ..Default::default() }).unwrap()
    }

    #[test]
    fn metrics_of_a_hand_checked_set() {
        let r = small();
        assert_eq!((r.questions(), r.n()), (3, 4));
        assert!((r.acc1().value - 1.0 / 3.0).abs() < 1e-12);
        // c = 3, 1, 0 of n = 4.
        assert!((r.mean_at_n().value - (0.75 + 0.25) / 3.0).abs() < 1e-12);
        assert!((r.pass_at(1).unwrap().value - (0.75 + 0.25) / 3.0).abs() < 1e-12);
        assert!((r.pass_at(2).unwrap().value - (1.0 + 0.5) / 3.0).abs() < 1e-12);
        assert!((r.pass_at(4).unwrap().value - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.gap(4).unwrap().value - 1.0 / 3.0).abs() < 1e-12);
        // maj@4: q1 A wins; q2 C wins; q3 D wins.
        assert!((r.maj_at(4).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        let ff = r.format_failures();
        assert!((ff.greedy - 1.0 / 3.0).abs() < 1e-12 && (ff.samples - 1.0 / 12.0).abs() < 1e-12);
        let e = r.entropy();
        assert_eq!(e.questions, 3);
        let h1 = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        let h2 = -(2.0 / 3.0 * (2.0f64 / 3.0).ln() + 1.0 / 3.0 * (1.0f64 / 3.0).ln());
        assert!((e.nats - (h1 + h2) / 3.0).abs() < 1e-12);
        assert!((e.normalised - e.nats / 4f64.ln()).abs() < 1e-12);
        for p in r.curve() {
            assert!(p.pass.lo <= p.pass.value && p.pass.value <= p.pass.hi, "{p:?}");
        }
    }

    /// `inference.py`'s three numbers on a hand-made set: q1 right in one sample; q2 never right,
    /// two distinct letters, no tag anywhere though it answered; q3 untagged and unanswered.
    #[test]
    fn released_metrics_of_a_hand_checked_set() {
        let mut q1 = record("1", "pmc", 0, Some(1), &[Some(1), Some(0), None, Some(1)]);
        q1.format_ok = vec![true, true, true, false];
        let mut q2 = record("2", "pmc", 2, Some(1), &[Some(1), Some(3), Some(1), Some(1)]);
        q2.format_ok = vec![false; 4];
        let mut q3 = record("3", "slake", 1, None, &[None, None, None, None]);
        q3.format_ok = vec![false; 4];
        let r =
            SupportReport::new(vec![q1, q2, q3], BootstrapOptions { resamples: 50, ..Default::default() })
                .unwrap();
        assert!((r.pass_at(4).unwrap().value - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.format_failure_rate() - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.avg_unique_answers() - 4.0 / 3.0).abs() < 1e-12);
        let by = r.by("task").unwrap();
        assert_eq!((by["pmc"].pass_at(4).unwrap().value, by["pmc"].format_failure_rate()), (0.5, 0.5));
        assert_eq!((by["slake"].avg_unique_answers(), by["slake"].format_failure_rate()), (0.0, 1.0));
        // Without recorded flags, a sample follows the format when it has an answer.
        assert!((small().format_failure_rate()).abs() < 1e-12);
        assert!((small().avg_unique_answers() - 5.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn k_outside_the_curve_is_an_error_naming_n() {
        let r = small();
        let err = r.pass_at(5).unwrap_err().to_string();
        assert!(err.contains("k = 5") && err.contains("n = 4"), "{err}");
        assert!(r.maj_at(0).is_err() && r.gap(9).is_err());
    }

    #[test]
    fn breakdowns_partition_the_questions() {
        let r = small();
        let tasks = r.by("task").unwrap();
        assert_eq!(tasks.keys().collect::<Vec<_>>(), ["derma", "path"]);
        assert_eq!(tasks["path"].questions(), 2);
        assert_eq!(tasks["derma"].acc1().value, 0.0);
        assert_eq!(r.by("class").unwrap().len(), 3);
        assert_eq!(r.by("modality").unwrap().len(), 2);
        assert!(r.by("organ").unwrap_err().to_string().contains("organ"));
    }

    #[test]
    fn rejects_empty_and_duplicate_records() {
        assert!(SupportReport::new(vec![], BootstrapOptions::default()).is_err());
        let dup = vec![record("1", "t", 0, Some(0), &[]), record("1", "t", 0, Some(0), &[])];
        let err = SupportReport::new(dup, BootstrapOptions::default()).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
    }

    /// Seeded simulation of 400 experiments: each draws 200 questions from a population whose
    /// greedy accuracy is 0.3 and whose per-question sample success rates are 0.1, 0.5 or 0.9;
    /// the 95% intervals must cover the population's Acc@1 and Pass@4 about 95% of the time.
    #[test]
    fn bootstrap_intervals_cover_the_true_rate() {
        let mut rng = ChaCha8Rng::seed_from_u64(2021);
        let rates = [0.1, 0.5, 0.9];
        let true_pass4 = rates.iter().map(|p: &f64| 1.0 - (1.0 - p).powi(4)).sum::<f64>() / 3.0;
        let (experiments, mut acc_hits, mut pass_hits) = (400, 0, 0);
        for e in 0..experiments {
            let records = (0..200)
                .map(|i| {
                    let rate = rates[rng.random_range(0..3)];
                    let samples: Vec<_> = (0..8).map(|_| Some(usize::from(!rng.random_bool(rate)))).collect();
                    let greedy = Some(usize::from(!rng.random_bool(0.3)));
                    record(&i.to_string(), "t", 0, greedy, &samples)
                })
                .collect();
            let opts = BootstrapOptions { resamples: 500, seed: e, confidence: 0.95 };
            let report = SupportReport::new(records, opts).unwrap();
            let (acc, pass) = (report.acc1(), report.pass_at(4).unwrap());
            acc_hits += usize::from(acc.lo <= 0.3 && 0.3 <= acc.hi);
            pass_hits += usize::from(pass.lo <= true_pass4 && true_pass4 <= pass.hi);
        }
        let acc_cov = acc_hits as f64 / experiments as f64;
        let pass_cov = pass_hits as f64 / experiments as f64;
        assert!((0.92..=0.98).contains(&acc_cov), "Acc@1 coverage {acc_cov}");
        assert!((0.92..=0.98).contains(&pass_cov), "Pass@4 coverage {pass_cov}");
    }
}
