//! One evaluated multiple-choice question, as plain data: what was asked (task, modality, class),
//! the gold option, the greedy answer and the K sampled answers after answer extraction.
//!
//! Everything the support metrics need is computed from these records alone, so the evaluator,
//! GRPO logs and saved CSVs can all be re-scored without a model.

use serde::{Deserialize, Serialize};

use crate::bail;
use crate::error::Result;

/// One question's outcome. Answers are option indices (0 = "A"); `None` is a format failure: the
/// extractor found no answer, which counts as wrong and is also counted separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecord {
    pub id: String,
    pub task: String,
    pub modality: String,
    /// The gold label's class name, for per-class breakdowns.
    pub class: String,
    /// Index of the correct option.
    pub gold: usize,
    /// The greedy (temperature 0) answer.
    pub greedy: Option<usize>,
    /// The sampled answers, in sample-index order.
    pub samples: Vec<Option<usize>>,
    pub n_options: usize,
    /// Each sample's format flag from the task (under the `medbridgerl` preset: an `<answer>` tag
    /// was found, whatever it held). Empty in records written before it was kept: then a sample
    /// follows the format when it has an answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub format_ok: Vec<bool>,
}

/// The letter of option `index`: 0 -> "A", 25 -> "Z", 26 -> "AA".
pub fn option_letter(index: usize) -> String {
    let mut letters = Vec::new();
    let mut rest = index + 1;
    while rest > 0 {
        rest -= 1;
        letters.push(b'A' + (rest % 26) as u8);
        rest /= 26;
    }
    letters.iter().rev().map(|&b| b as char).collect()
}

impl QuestionRecord {
    /// How many samples chose the gold option.
    pub fn correct_count(&self) -> usize {
        self.samples.iter().filter(|s| **s == Some(self.gold)).count()
    }

    /// How many samples chose each option (index = option), format failures excluded.
    pub fn answer_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.n_options];
        for answer in self.samples.iter().flatten() {
            if let Some(slot) = counts.get_mut(*answer) {
                *slot += 1;
            }
        }
        counts
    }

    /// How many distinct answers the samples gave, format failures excluded (`inference.py`'s
    /// per-question `len(set(non-empty preds))`).
    pub fn unique_answers(&self) -> usize {
        let mut seen: Vec<usize> = self.samples.iter().flatten().copied().collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    /// How many samples followed the format (see `format_ok`).
    pub fn formatted_samples(&self) -> usize {
        if self.format_ok.is_empty() {
            self.samples.iter().filter(|s| s.is_some()).count()
        } else {
            self.format_ok.iter().filter(|&&ok| ok).count()
        }
    }

    /// How many samples had no extractable answer.
    pub fn sample_failures(&self) -> usize {
        self.samples.iter().filter(|s| s.is_none()).count()
    }

    pub fn greedy_correct(&self) -> bool {
        self.greedy == Some(self.gold)
    }

    /// Majority-vote correctness over the first k samples, for every k in 1..=k_max (element k-1).
    ///
    /// Ties go to the answer that appeared first among the tied ones, so the vote is a
    /// deterministic function of the recorded samples; format failures do not vote, and a prefix
    /// without any vote is wrong.
    pub fn majority_correct(&self, k_max: usize) -> Vec<bool> {
        let mut counts = vec![0usize; self.n_options];
        let mut first_seen = vec![usize::MAX; self.n_options];
        let mut leader: Option<usize> = None;
        let mut out = Vec::with_capacity(k_max);
        for (i, answer) in self.samples.iter().take(k_max).enumerate() {
            if let Some(a) = *answer {
                counts[a] += 1;
                first_seen[a] = first_seen[a].min(i);
                leader = match leader {
                    Some(l)
                        if counts[l] > counts[a]
                            || (counts[l] == counts[a] && first_seen[l] < first_seen[a]) =>
                    {
                        Some(l)
                    }
                    _ => Some(a),
                };
            }
            out.push(leader == Some(self.gold));
        }
        out
    }

    /// Entropy of the sampled answer distribution in nats, format failures excluded; `None` when
    /// no sample gave an answer.
    pub fn answer_entropy(&self) -> Option<f64> {
        let counts = self.answer_counts();
        let total: usize = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let h = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / total as f64;
                -p * p.ln()
            })
            .sum();
        Some(h)
    }

    /// Rejects records whose indices cannot be options, naming the question.
    pub(crate) fn validate(&self) -> Result<()> {
        let id = &self.id;
        if self.n_options == 0 {
            bail!("question {id}: n_options is 0");
        }
        if self.gold >= self.n_options {
            bail!("question {id}: gold option {} but only {} options", self.gold, self.n_options);
        }
        if !self.format_ok.is_empty() && self.format_ok.len() != self.samples.len() {
            bail!("question {id}: {} format flags for {} samples", self.format_ok.len(), self.samples.len());
        }
        let answers = self.greedy.iter().chain(self.samples.iter().flatten());
        if let Some(bad) = answers.into_iter().find(|&&a| a >= self.n_options) {
            bail!("question {id}: answer option {bad} but only {} options", self.n_options);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(gold: usize, samples: &[Option<usize>]) -> QuestionRecord {
        QuestionRecord {
            id: "q".into(),
            task: "t".into(),
            modality: "m".into(),
            class: "c".into(),
            gold,
            greedy: Some(gold),
            samples: samples.to_vec(),
            n_options: 4,
            format_ok: Vec::new(),
        }
    }

    #[test]
    fn letters_follow_spreadsheet_columns() {
        let got: Vec<_> = [0, 1, 25, 26, 27].iter().map(|&i| option_letter(i)).collect();
        assert_eq!(got, ["A", "B", "Z", "AA", "AB"]);
    }

    #[test]
    fn majority_breaks_ties_by_first_appearance() {
        // Samples B A A B with gold A: A leads after 3 votes; at 4 the 2-2 tie goes to B, seen first.
        let r = record(0, &[Some(1), Some(0), Some(0), Some(1)]);
        assert_eq!(r.majority_correct(4), [false, false, true, false]);
        // Failures do not vote; a prefix of failures is wrong.
        let r = record(2, &[None, None, Some(2)]);
        assert_eq!(r.majority_correct(3), [false, false, true]);
    }

    #[test]
    fn counts_entropy_and_failures() {
        let r = record(0, &[Some(0), Some(1), None, Some(0)]);
        assert_eq!(r.correct_count(), 2);
        assert_eq!(r.answer_counts(), [2, 1, 0, 0]);
        assert_eq!(r.sample_failures(), 1);
        let p: [f64; 2] = [2.0 / 3.0, 1.0 / 3.0];
        let want = -(p[0] * p[0].ln() + p[1] * p[1].ln());
        assert!((r.answer_entropy().unwrap() - want).abs() < 1e-12);
        assert_eq!(record(0, &[None]).answer_entropy(), None);
        assert_eq!(record(0, &[Some(3), Some(3)]).answer_entropy(), Some(0.0));
        assert_eq!((r.unique_answers(), r.formatted_samples()), (2, 3));
        let tagged = QuestionRecord { format_ok: vec![true, false, true, false], ..r };
        assert_eq!(tagged.formatted_samples(), 2);
        let short = QuestionRecord { format_ok: vec![true], ..tagged };
        assert!(short.validate().unwrap_err().to_string().contains("1 format flags for 4 samples"));
    }

    #[test]
    fn out_of_range_options_name_the_question() {
        let mut r = record(0, &[Some(4)]);
        r.id = "pathmnist/17".into();
        let err = r.validate().unwrap_err().to_string();
        assert!(err.contains("pathmnist/17") && err.contains("option 4"), "{err}");
        r.samples = vec![Some(1)];
        r.gold = 9;
        assert!(r.validate().is_err());
    }
}
