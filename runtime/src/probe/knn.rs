//! The paper's kNN probe (`knn.py` in its released code): L2-normalised frozen features, each
//! test row's k = 20 most cosine-similar training rows, and an unweighted majority vote among
//! their labels (no similarity weighting, no temperature; the lowest label wins a tie).
//!
//! The report has MedMNIST's ACC and AUC like every probe: the scores are the vote fractions
//! (count / k), whose argmax is the released vote, so ACC equals the released top-1; AUC ranks
//! test rows by those fractions, which take only k + 1 values. Top-5 follows the released rule,
//! which ranks the labels `0..=largest neighbour label` by votes, so labels with no vote can fill
//! the five places. Multi-label tasks, which the released script does not handle, score each
//! finding by the fraction of neighbours that have it. Equal similarities keep the lower training
//! row first, where torch's `topk` leaves the order open.
//!
//! `released_view` reproduces how `knn.py` pools as released: it counts the patches before the
//! 2x2 merge as tokens (`grid_thw.prod()`, four times the merged tokens), so its `view` cuts
//! every merged token into four quarters and its mean averages the quarters too. That feature is
//! the mean of the four quarters of the mean-pooled one, so it is computed from the same cached
//! features.

use candle_core::{DType, Tensor, D};

use crate::data::medmnist_eval::{medmnist_evaluate, medmnist_hits};
use crate::data::medmnist_info::TaskType;
use crate::error::{Context, Result};
use crate::probe::head::{check_features, has_top5, targets, Targets};
use crate::probe::report::ProbeReport;
use crate::run::CancelFlag;

/// Test rows compared with the whole training set at once: bounds the similarity block's memory.
const CHUNK: usize = 256;

/// How neighbours are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnnMetric {
    /// Dot product of L2-normalised features (`knn.py`'s only metric).
    Cosine,
}

impl KnnMetric {
    pub fn parse(name: &str) -> Result<KnnMetric> {
        match name {
            "cosine" => Ok(KnnMetric::Cosine),
            other => crate::bail!("unknown kNN metric `{other}`: the released knn.py has only \"cosine\""),
        }
    }
}

/// How the kNN probe votes; the defaults are `knn.py`'s, except `released_view`.
#[derive(Clone, Debug, PartialEq)]
pub struct KnnOptions {
    /// Neighbours per test row.
    pub k: usize,
    pub metric: KnnMetric,
    /// Fold each feature into the mean of its four quarters, as `knn.py`'s pooling does as
    /// released (see the module header). Off by default: the mean-pooled feature is what
    /// `linprobe.py` probes and what the released code means to pool.
    pub released_view: bool,
}

impl Default for KnnOptions {
    fn default() -> Self {
        KnnOptions { k: 20, metric: KnnMetric::Cosine, released_view: false }
    }
}

/// Vote on `test` rows with the labels of their nearest `train` rows; arguments as
/// `logistic::linear_probe`'s (`cancel` is polled per block of test rows).
#[allow(clippy::too_many_arguments)]
pub fn knn_probe(
    train: &Tensor,
    train_labels: &[Vec<i64>],
    test: &Tensor,
    test_labels: &[Vec<i64>],
    task: TaskType,
    n_classes: usize,
    opts: &KnnOptions,
    cancel: Option<&CancelFlag>,
) -> Result<ProbeReport> {
    let dim = check_features("knn", train, train_labels, test, test_labels, n_classes)?;
    if opts.k == 0 || opts.k > train_labels.len() {
        crate::bail!("knn: k = {} must be between 1 and the {} training rows", opts.k, train_labels.len());
    }
    let (train, test) = if opts.released_view {
        (quarter_fold(train)?, quarter_fold(test)?)
    } else {
        (train.to_dtype(DType::F32)?, test.to_dtype(DType::F32)?)
    };
    let neighbours = nearest(&train, &test, opts.k, opts.metric, cancel)?;
    let cpu = candle_core::Device::Cpu;
    let scores = match targets(task, train_labels, n_classes, &cpu)? {
        Targets::Classes(ids) => {
            let ids = ids.to_vec1::<u32>()?;
            neighbours.iter().map(|row| votes(row, &ids, n_classes)).collect::<Vec<_>>()
        }
        Targets::MultiHot(y) => {
            let y = y.to_vec2::<f32>()?;
            let k = opts.k as f64;
            neighbours
                .iter()
                .map(|row| {
                    (0..n_classes).map(|j| row.iter().map(|&r| f64::from(y[r][j])).sum::<f64>() / k).collect()
                })
                .collect()
        }
    };
    let score = medmnist_evaluate(task, test_labels, &scores).context("knn: test metrics")?;
    let top5 = has_top5(task, n_classes).then(|| {
        let hits = scores.iter().zip(test_labels).filter(|(s, l)| released_top5_hit(s, l[0] as usize));
        hits.count() as f64 / test_labels.len() as f64
    });
    Ok(ProbeReport {
        method: "knn",
        task,
        acc: score.acc,
        auc: score.auc,
        top5,
        l2_chosen: 0.0,
        val_scores: Vec::new(),
        train_loss: Vec::new(),
        n_train: train_labels.len(),
        n_test: test_labels.len(),
        dim: if opts.released_view { dim / 4 } else { dim },
        hits: medmnist_hits(task, test_labels, &scores)?,
    })
}

/// `[N, D]` → `[N, D / 4]`: the mean of each row's four consecutive quarters.
pub(crate) fn quarter_fold(x: &Tensor) -> Result<Tensor> {
    let (n, dim) = x.dims2()?;
    if dim % 4 != 0 {
        crate::bail!("knn: released_view folds features into quarters, but they have {dim} columns, not a multiple of 4");
    }
    Ok(x.to_dtype(DType::F32)?.reshape((n, 4, dim / 4))?.mean(1)?)
}

/// For each test row, the indices of its `k` most similar training rows, most similar first.
fn nearest(
    train: &Tensor,
    test: &Tensor,
    k: usize,
    metric: KnnMetric,
    cancel: Option<&CancelFlag>,
) -> Result<Vec<Vec<usize>>> {
    let KnnMetric::Cosine = metric;
    let unit = |x: &Tensor| -> Result<Tensor> {
        // F.normalize: divide by the norm, floored at 1e-12 so a zero row stays zero.
        let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
        Ok(x.broadcast_div(&norm)?)
    };
    let train_t = unit(train)?.t()?.contiguous()?;
    let test = unit(test)?;
    let n_test = test.dim(0)?;
    let mut out = Vec::with_capacity(n_test);
    for start in (0..n_test).step_by(CHUNK) {
        if let Some(flag) = cancel {
            flag.check(|| format!("knn_probe at test row {start} of {n_test}"))?;
        }
        let rows = CHUNK.min(n_test - start);
        let sims = test.narrow(0, start, rows)?.matmul(&train_t)?.to_vec2::<f32>()?;
        for s in sims {
            let by_similarity = |a: &usize, b: &usize| s[*b].total_cmp(&s[*a]).then(a.cmp(b));
            let mut order: Vec<usize> = (0..s.len()).collect();
            if k < order.len() {
                order.select_nth_unstable_by(k - 1, by_similarity);
                order.truncate(k);
            }
            order.sort_by(by_similarity);
            out.push(order);
        }
    }
    Ok(out)
}

/// Vote fractions per class among the neighbours `rows`.
fn votes(rows: &[usize], ids: &[u32], n_classes: usize) -> Vec<f64> {
    let mut counts = vec![0.0; n_classes];
    for &r in rows {
        counts[ids[r] as usize] += 1.0;
    }
    counts.iter().map(|c| c / rows.len() as f64).collect()
}

/// `knn.py`'s top-5: `label` is among the five most voted of the labels `0..=largest neighbour
/// label` (fewer if there are fewer), lowest label first on ties.
fn released_top5_hit(votes: &[f64], label: usize) -> bool {
    let present = votes.iter().rposition(|&v| v > 0.0).map_or(0, |last| last + 1);
    let mut order: Vec<usize> = (0..present).collect();
    order.sort_by(|&a, &b| votes[b].total_cmp(&votes[a]).then(a.cmp(&b)));
    order.iter().take(5).any(|&c| c == label)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::probe::reference_fixture::{self, Knn, Reference};

    fn assert_matches(r: &Reference, train: &Tensor, test: &Tensor, want: &Knn) {
        let ids: Vec<u32> = r.train.y.iter().map(|&l| l as u32).collect();
        let neighbours = nearest(train, test, want.k, KnnMetric::Cosine, None).unwrap();
        let scores: Vec<Vec<f64>> = neighbours.iter().map(|row| votes(row, &ids, r.classes)).collect();
        let pred: Vec<usize> = scores
            .iter()
            .map(|s| s.iter().enumerate().fold(0, |best, (c, v)| if *v > s[best] { c } else { best }))
            .collect();
        assert_eq!(pred, want.pred, "k = {}: majority votes", want.k);
        let hits: Vec<bool> =
            scores.iter().zip(&r.test.y).map(|(s, &l)| released_top5_hit(s, l as usize)).collect();
        assert_eq!(hits, want.top5_hit, "k = {}: top-5", want.k);

        let opts = KnnOptions { k: want.k, ..Default::default() };
        let (y, ty) = (r.train.label_rows(), r.test.label_rows());
        let report = knn_probe(train, &y, test, &ty, TaskType::MultiClass, r.classes, &opts, None).unwrap();
        assert_eq!((report.acc, report.top5), (want.top1, Some(want.top5)), "k = {}", want.k);
    }

    /// `knn.py`'s votes and top-5, restated in numpy, on the reference features for each k.
    fn matches_the_released_votes(dev: &Device) {
        let r = reference_fixture::load();
        let (train, test) = (r.train.features(r.dim, dev), r.test.features(r.dim, dev));
        for want in &r.knn {
            assert_matches(&r, &train, &test, want);
        }
    }

    #[test]
    fn matches_the_released_votes_cpu() {
        matches_the_released_votes(&Device::Cpu);
    }

    /// The reference pools its tokens with `knn.py`'s own `view`; folding our mean-pooled
    /// features gives the same features and the same votes.
    #[test]
    fn released_view_is_the_quarter_fold_of_the_mean_pooled_features() {
        let r = reference_fixture::load();
        let dev = Device::Cpu;
        let folded = quarter_fold(&r.test.features(r.dim, &dev)).unwrap();
        let want =
            reference_fixture::tensor(&r.knn_released_view.folded_test_x, (r.test.y.len(), r.dim / 4), &dev);
        let diff =
            (folded.clone() - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "folded features differ by {diff}");
        let train = quarter_fold(&r.train.features(r.dim, &dev)).unwrap();
        assert_matches(&r, &train, &folded, &r.knn_released_view.knn);
        let opts = KnnOptions { released_view: true, ..Default::default() };
        let (x, tx) = (r.train.features(r.dim, &dev), r.test.features(r.dim, &dev));
        let report = knn_probe(
            &x,
            &r.train.label_rows(),
            &tx,
            &r.test.label_rows(),
            TaskType::MultiClass,
            r.classes,
            &opts,
            None,
        )
        .unwrap();
        assert_eq!((report.acc, report.dim), (r.knn_released_view.knn.top1, 4));
    }

    #[test]
    fn vote_fractions_score_binary_and_multi_label_tasks() {
        let dev = Device::Cpu;
        // Two tight clusters on opposite axes; each test row sits on one.
        let x = Tensor::new(&[[1f32, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], &dev).unwrap();
        let t = Tensor::new(&[[1f32, 0.05], [0.05, 1.0]], &dev).unwrap();
        let opts = KnnOptions { k: 2, ..Default::default() };
        let y = [vec![0], vec![0], vec![1], vec![1]];
        let report =
            knn_probe(&x, &y, &t, &[vec![0], vec![1]], TaskType::BinaryClass, 2, &opts, None).unwrap();
        assert_eq!((report.acc, report.auc, report.top5), (1.0, 1.0, None));
        let y = [vec![1, 0], vec![1, 1], vec![0, 1], vec![0, 1]];
        let report =
            knn_probe(&x, &y, &t, &[vec![1, 0], vec![0, 1]], TaskType::MultiLabel, 2, &opts, None).unwrap();
        assert_eq!((report.acc, report.auc), (1.0, 1.0), "finding 1 at 0.5 is below MedMNIST's threshold");
    }

    #[test]
    fn bad_inputs_are_named() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((3, 6), DType::F32, &dev).unwrap();
        let y = [vec![0], vec![1], vec![1]];
        let probe = |train: &Tensor, test: &Tensor, opts: &KnnOptions| {
            knn_probe(train, &y, test, &y, TaskType::BinaryClass, 2, opts, None).unwrap_err().to_string()
        };
        let err = probe(&x, &x, &KnnOptions::default());
        assert!(err.contains("k = 20 must be between 1 and the 3 training rows"), "{err}");
        let err = probe(&x, &x, &KnnOptions { k: 0, ..Default::default() });
        assert!(err.contains("k = 0 must be between 1"), "{err}");
        let err = probe(&x, &x.narrow(1, 0, 4).unwrap(), &KnnOptions { k: 2, ..Default::default() });
        assert!(err.contains("train features have 6 columns but test features 4"), "{err}");
        let err = probe(&x, &x, &KnnOptions { k: 2, released_view: true, ..Default::default() });
        assert!(err.contains("they have 6 columns, not a multiple of 4"), "{err}");
        let empty = Tensor::zeros((0, 6), DType::F32, &dev).unwrap();
        let err = knn_probe(&empty, &[], &x, &y, TaskType::BinaryClass, 2, &KnnOptions::default(), None)
            .unwrap_err();
        assert!(err.to_string().contains("knn: train features have shape [0, 6]"), "{err}");
        let err = KnnMetric::parse("euclidean").unwrap_err().to_string();
        assert!(err.contains("unknown kNN metric `euclidean`"), "{err}");
    }
}
