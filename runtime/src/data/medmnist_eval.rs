//! ACC and AUC exactly as MedMNIST's `medmnist/evaluator.py` (`getACC`, `getAUC`) computes them,
//! so probe and baseline numbers are comparable with published tables.
//!
//! - multi-class and ordinal regression: mean one-vs-rest AUC over the score columns, and the
//!   accuracy of the argmax (first maximum on ties, as `np.argmax`);
//! - binary: AUC of the last (positive) column, accuracy of `score > 0.5`;
//! - multi-label: mean per-label AUC, and the mean over labels of the accuracy of `score > 0.5`
//!   (the strict `>` of medmnist v3; v2.0 used `>=` for this case only).
//!
//! AUC is scikit-learn's `roc_auc_score` for binary targets: the area under the ROC curve whose
//! points are the distinct score values, so tied scores count half. Like scikit-learn 1.9, a
//! target with a single class present gives NaN rather than an error. The committed fixtures in
//! `fixtures/medmnist_eval.json` come from `fixtures/make_medmnist_eval.py` (run by hand).

use crate::data::medmnist_info::TaskType;
use crate::error::Result;

/// Threshold of `getACC` for binary and multi-label tasks.
pub const MEDMNIST_THRESHOLD: f64 = 0.5;

/// Both official metrics of one set of predictions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MedmnistScore {
    pub acc: f64,
    pub auc: f64,
}

/// `labels` are the raw label rows of the items (as `Item::labels`), `scores` one row of class
/// (or finding) scores per item.
pub fn medmnist_evaluate(task: TaskType, labels: &[Vec<i64>], scores: &[Vec<f64>]) -> Result<MedmnistScore> {
    Ok(MedmnistScore { acc: medmnist_acc(task, labels, scores)?, auc: medmnist_auc(task, labels, scores)? })
}

pub fn medmnist_acc(task: TaskType, labels: &[Vec<i64>], scores: &[Vec<f64>]) -> Result<f64> {
    let hits = medmnist_hits(task, labels, scores)?;
    Ok(hits.iter().sum::<f64>() / hits.len() as f64)
}

/// Each item's share of `getACC`: 1 or 0 for single-label tasks, the fraction of findings right
/// for multi-label ones. Their mean is the ACC; a paired comparison of two probes on the same
/// test items resamples these.
pub fn medmnist_hits(task: TaskType, labels: &[Vec<i64>], scores: &[Vec<f64>]) -> Result<Vec<f64>> {
    let width = check(task, labels, scores)?;
    let hit = |right: bool| f64::from(u8::from(right));
    Ok(labels
        .iter()
        .zip(scores)
        .map(|(l, s)| match task {
            TaskType::MultiLabel => {
                (0..width).filter(|&j| (s[j] > MEDMNIST_THRESHOLD) == (l[j] == 1)).count() as f64
                    / width as f64
            }
            TaskType::BinaryClass => hit((s[width - 1] > MEDMNIST_THRESHOLD) == (l[0] == 1)),
            TaskType::MultiClass | TaskType::OrdinalRegression => hit(argmax(s) as i64 == l[0]),
        })
        .collect())
}

pub fn medmnist_auc(task: TaskType, labels: &[Vec<i64>], scores: &[Vec<f64>]) -> Result<f64> {
    let width = check(task, labels, scores)?;
    let column = |j: usize| -> Vec<f64> { scores.iter().map(|s| s[j]).collect() };
    Ok(match task {
        TaskType::MultiLabel => {
            (0..width)
                .map(|j| roc_auc(&labels.iter().map(|l| l[j] == 1).collect::<Vec<_>>(), &column(j)))
                .sum::<f64>()
                / width as f64
        }
        TaskType::BinaryClass => {
            roc_auc(&labels.iter().map(|l| l[0] == 1).collect::<Vec<_>>(), &column(width - 1))
        }
        TaskType::MultiClass | TaskType::OrdinalRegression => {
            (0..width)
                .map(|j| roc_auc(&labels.iter().map(|l| l[0] == j as i64).collect::<Vec<_>>(), &column(j)))
                .sum::<f64>()
                / width as f64
        }
    })
}

/// Validate shapes; returns the score width.
fn check(task: TaskType, labels: &[Vec<i64>], scores: &[Vec<f64>]) -> Result<usize> {
    if labels.is_empty() || labels.len() != scores.len() {
        crate::bail!(
            "medmnist metrics: {} label rows but {} score rows (need the same, > 0)",
            labels.len(),
            scores.len()
        );
    }
    let width = scores[0].len();
    if width == 0 || scores.iter().any(|s| s.len() != width) {
        crate::bail!("medmnist metrics: every score row needs the same number (> 0) of columns");
    }
    if scores.iter().flatten().any(|v| v.is_nan()) {
        crate::bail!("medmnist metrics: scores contain NaN");
    }
    let label_width = if task == TaskType::MultiLabel { width } else { 1 };
    if let Some(bad) = labels.iter().position(|l| l.len() != label_width) {
        crate::bail!(
            "medmnist metrics: label row {bad} has {} values, {task} needs {label_width}",
            labels[bad].len()
        );
    }
    if task != TaskType::MultiLabel && task != TaskType::BinaryClass {
        if let Some(bad) = labels.iter().position(|l| l[0] < 0 || l[0] >= width as i64) {
            crate::bail!(
                "medmnist metrics: label {} of row {bad} has no score column ({width} columns)",
                labels[bad][0]
            );
        }
    }
    Ok(width)
}

/// Index of the first maximum, as `np.argmax`.
fn argmax(row: &[f64]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Area under the ROC curve of binary `truth` ranked by `scores`, ties counted half (identical to
/// scikit-learn's `roc_auc_score`). NaN when only one class is present.
pub fn roc_auc(truth: &[bool], scores: &[f64]) -> f64 {
    let positives = truth.iter().filter(|&&t| t).count() as f64;
    let negatives = truth.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    // Walk thresholds from high to low; each block of tied scores moves the curve diagonally, and
    // the trapezoid under that step is what counts a tie as half a win.
    let (mut tp, mut fp, mut area) = (0.0f64, 0.0f64, 0.0f64);
    let mut i = 0;
    while i < order.len() {
        let (tp0, fp0) = (tp, fp);
        let value = scores[order[i]];
        while i < order.len() && scores[order[i]] == value {
            if truth[order[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        area += (fp - fp0) * (tp + tp0) / 2.0;
    }
    area / (positives * negatives)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Case {
        name: String,
        task: String,
        labels: Vec<Vec<i64>>,
        scores: Vec<Vec<f64>>,
        acc: f64,
        auc: f64,
    }

    #[derive(Deserialize)]
    struct RocCase {
        truth: Vec<u8>,
        scores: Vec<f64>,
        auc: f64,
    }

    #[derive(Deserialize)]
    struct Fixtures {
        cases: Vec<Case>,
        roc_auc: Vec<RocCase>,
    }

    fn task(name: &str) -> TaskType {
        match name {
            "multi-class" => TaskType::MultiClass,
            "binary-class" => TaskType::BinaryClass,
            "multi-label, binary-class" => TaskType::MultiLabel,
            "ordinal-regression" => TaskType::OrdinalRegression,
            other => panic!("fixture task {other}"),
        }
    }

    #[test]
    fn equals_scikit_learn_on_the_committed_fixtures() {
        let fixtures: Fixtures = serde_json::from_str(include_str!("fixtures/medmnist_eval.json")).unwrap();
        assert!(fixtures.cases.len() >= 4 && fixtures.roc_auc.len() >= 5);
        for case in &fixtures.cases {
            let got = medmnist_evaluate(task(&case.task), &case.labels, &case.scores).unwrap();
            assert!(
                (got.acc - case.acc).abs() < 1e-9,
                "{} acc {} vs sklearn {}",
                case.name,
                got.acc,
                case.acc
            );
            assert!(
                (got.auc - case.auc).abs() < 1e-9,
                "{} auc {} vs sklearn {}",
                case.name,
                got.auc,
                case.auc
            );
        }
        for (i, case) in fixtures.roc_auc.iter().enumerate() {
            let truth: Vec<bool> = case.truth.iter().map(|&t| t == 1).collect();
            let got = roc_auc(&truth, &case.scores);
            assert!((got - case.auc).abs() < 1e-9, "roc case {i}: {got} vs sklearn {}", case.auc);
        }
    }

    #[test]
    fn ties_count_half_and_one_class_is_nan() {
        assert_eq!(roc_auc(&[true, false], &[0.3, 0.3]), 0.5);
        assert_eq!(roc_auc(&[true, false, true], &[0.9, 0.1, 0.5]), 1.0);
        assert!(roc_auc(&[true, true], &[0.1, 0.2]).is_nan());
    }

    #[test]
    fn thresholds_are_strict_and_shapes_are_checked() {
        let labels = vec![vec![1], vec![0]];
        let acc = medmnist_acc(TaskType::BinaryClass, &labels, &[vec![0.5, 0.5], vec![0.6, 0.4]]).unwrap();
        assert_eq!(acc, 0.5, "a score of exactly 0.5 is negative");
        let hits =
            medmnist_hits(TaskType::MultiLabel, &[vec![1, 0], vec![0, 0]], &[vec![0.9, 0.9], vec![0.1, 0.2]]);
        assert_eq!(hits.unwrap(), [0.5, 1.0], "a multi-label item counts the share of its findings right");
        let err = medmnist_acc(TaskType::MultiClass, &[vec![3]], &[vec![0.2, 0.8]]).unwrap_err();
        assert!(err.to_string().contains("no score column"), "{err}");
        assert!(medmnist_auc(TaskType::MultiClass, &labels, &[vec![0.5]]).is_err());
    }
}
