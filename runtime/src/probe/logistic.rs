//! The linear probe: multinomial logistic regression on frozen features, trained full-batch with
//! Adam for a fixed number of steps, with the L2 strength chosen on a seeded validation split of
//! the training set and the final model refitted on all of it.
//!
//! Features are standardised with the statistics of the rows the model is fitted on, so one L2
//! grid means the same thing for every feature source. The objective is
//! `mean loss + l2 / 2 * ||W||^2` (the bias is not penalised). The L2 value with the lowest
//! validation loss wins: log-loss separates over- and under-regularised models more finely than
//! accuracy does on small validation sets. Test ACC and AUC come from `data::medmnist_eval`, so
//! they are comparable with MedMNIST's published numbers.

use candle_core::{DType, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::medmnist_eval::{medmnist_evaluate, medmnist_hits};
use crate::data::medmnist_info::TaskType;
use crate::error::{Context, Result};
use crate::probe::head::{check_features, loss, scores, targets, top5_accuracy};
use crate::probe::report::{L2Score, ProbeReport};
use crate::run::CancelFlag;

/// How the probe is trained.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeOptions {
    /// L2 strengths to try; a single value is used as is, without a validation split.
    pub l2: Vec<f64>,
    /// Full-batch optimisation steps per fit.
    pub epochs: usize,
    pub lr: f64,
    /// Fraction of the training rows held out to choose L2.
    pub val_fraction: f64,
    pub seed: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            l2: vec![1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0],
            epochs: 300,
            lr: 0.05,
            val_fraction: 0.2,
            seed: 0,
        }
    }
}

/// Train on `train` (`[N, D]` features with their raw label rows) and evaluate on `test`.
/// `n_classes` is the number of classes (findings for multi-label tasks); binary tasks have 2.
/// `cancel` is polled at every optimisation step.
#[allow(clippy::too_many_arguments)]
pub fn linear_probe(
    train: &Tensor,
    train_labels: &[Vec<i64>],
    test: &Tensor,
    test_labels: &[Vec<i64>],
    task: TaskType,
    n_classes: usize,
    opts: &ProbeOptions,
    cancel: Option<&CancelFlag>,
) -> Result<ProbeReport> {
    check_options(opts)?;
    let dim = check_features("linear_probe", train, train_labels, test, test_labels, n_classes)?;
    let train = train.to_dtype(DType::F32)?;
    let test = test.to_dtype(DType::F32)?;

    let mut val_scores = Vec::new();
    let l2_chosen = if let [only] = opts.l2.as_slice() {
        *only
    } else {
        let (fit_rows, val_rows) = holdout(train_labels.len(), opts.val_fraction, opts.seed)?;
        let pick = |rows: &[usize]| -> Result<(Tensor, Vec<Vec<i64>>)> {
            let index =
                Tensor::from_vec(rows.iter().map(|&r| r as u32).collect(), rows.len(), train.device())?;
            Ok((train.index_select(&index, 0)?, rows.iter().map(|&r| train_labels[r].clone()).collect()))
        };
        let (fit_x, fit_y) = pick(&fit_rows)?;
        let (val_x, val_y) = pick(&val_rows)?;
        for &l2 in &opts.l2 {
            let model = LogisticModel::fit(&fit_x, &fit_y, task, n_classes, l2, opts, cancel)?;
            let logits = model.logits(&val_x)?;
            let val_loss = loss(&logits, &targets(task, &val_y, n_classes, val_x.device())?)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            let val_acc = crate::data::medmnist_acc(task, &val_y, &scores(task, &logits)?)?;
            val_scores.push(L2Score { l2, val_loss, val_acc });
        }
        val_scores.iter().min_by(|a, b| a.val_loss.total_cmp(&b.val_loss)).map_or(opts.l2[0], |s| s.l2)
    };

    let model = LogisticModel::fit(&train, train_labels, task, n_classes, l2_chosen, opts, cancel)?;
    let test_scores = scores(task, &model.logits(&test)?)?;
    let score = medmnist_evaluate(task, test_labels, &test_scores).context("linear_probe: test metrics")?;
    Ok(ProbeReport {
        method: "logistic",
        task,
        acc: score.acc,
        auc: score.auc,
        top5: top5_accuracy(task, test_labels, &test_scores),
        l2_chosen,
        val_scores,
        train_loss: Vec::new(),
        n_train: train_labels.len(),
        n_test: test_labels.len(),
        dim,
        hits: medmnist_hits(task, test_labels, &test_scores)?,
    })
}

/// A fitted probe: standardisation statistics and the linear layer.
pub(crate) struct LogisticModel {
    mean: Tensor,
    std: Tensor,
    weight: Tensor,
    bias: Tensor,
}

impl LogisticModel {
    pub(crate) fn fit(
        x: &Tensor,
        labels: &[Vec<i64>],
        task: TaskType,
        n_classes: usize,
        l2: f64,
        opts: &ProbeOptions,
        cancel: Option<&CancelFlag>,
    ) -> Result<LogisticModel> {
        let device = x.device();
        let mean = x.mean_keepdim(0)?;
        let centred = x.broadcast_sub(&mean)?;
        // A constant feature has std 0; flooring it keeps it at 0 instead of dividing by zero.
        let std = centred.sqr()?.mean_keepdim(0)?.sqrt()?.maximum(1e-6)?;
        let z = centred.broadcast_div(&std)?;
        let y = targets(task, labels, n_classes, device)?;
        let dim = x.dim(1)?;
        let weight = Var::zeros((dim, n_classes), DType::F32, device)?;
        let bias = Var::zeros(n_classes, DType::F32, device)?;
        let params = ParamsAdamW { lr: opts.lr, weight_decay: 0.0, ..Default::default() };
        let mut adam = AdamW::new(vec![weight.clone(), bias.clone()], params)?;
        for epoch in 0..opts.epochs {
            if let Some(flag) = cancel {
                flag.check(|| format!("linear_probe at epoch {epoch} of {} (l2 = {l2})", opts.epochs))?;
            }
            let logits = z.matmul(weight.as_tensor())?.broadcast_add(bias.as_tensor())?;
            let penalty = (weight.as_tensor().sqr()?.sum_all()? * (l2 / 2.0))?;
            adam.backward_step(&(loss(&logits, &y)? + penalty)?)?;
        }
        Ok(LogisticModel { mean, std, weight: weight.as_tensor().detach(), bias: bias.as_tensor().detach() })
    }

    pub(crate) fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let z = x.broadcast_sub(&self.mean)?.broadcast_div(&self.std)?;
        Ok(z.matmul(&self.weight)?.broadcast_add(&self.bias)?)
    }
}

/// Seeded (fit, val) row split; both parts are non-empty and keep their original order.
fn holdout(n: usize, val_fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    let n_val = ((n as f64) * val_fraction).round() as usize;
    if n_val == 0 || n_val >= n {
        crate::bail!(
            "linear_probe: val {val_fraction} of {n} training rows leaves no validation or no fitting rows; \
             give more rows or a single l2 value"
        );
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let (mut val, mut fit) = (order[..n_val].to_vec(), order[n_val..].to_vec());
    val.sort_unstable();
    fit.sort_unstable();
    Ok((fit, val))
}

fn check_options(opts: &ProbeOptions) -> Result<()> {
    if opts.l2.is_empty() || opts.l2.iter().any(|&v| !(v >= 0.0 && v.is_finite())) {
        crate::bail!("linear_probe: l2 must be one or more finite values >= 0, got {:?}", opts.l2);
    }
    if opts.epochs == 0 {
        crate::bail!("linear_probe: epochs must be at least 1");
    }
    if !(opts.lr > 0.0 && opts.lr.is_finite()) {
        crate::bail!("linear_probe: lr must be > 0, got {}", opts.lr);
    }
    if !(opts.val_fraction > 0.0 && opts.val_fraction < 1.0) {
        crate::bail!("linear_probe: val must be a fraction in (0, 1), got {}", opts.val_fraction);
    }
    Ok(())
}

/// Argmax class per row, for tests and callers that want hard predictions.
#[cfg(test)]
fn predict(model: &LogisticModel, x: &Tensor) -> Result<Vec<u32>> {
    Ok(model.logits(x)?.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Two Gaussian blobs per class in `dim` dimensions, separated along the first axis by
    /// `gap`; `flip` is the fraction of labels replaced by random ones.
    fn blobs(
        n: usize,
        dim: usize,
        classes: usize,
        gap: f32,
        flip: f64,
        seed: u64,
    ) -> (Tensor, Vec<Vec<i64>>) {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(n * dim);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let class = i % classes;
            for d in 0..dim {
                let centre = if d == class % dim { gap } else { 0.0 };
                x.push(centre + rng.random_range(-1.0f32..1.0));
            }
            let label = if rng.random_bool(flip) { rng.random_range(0..classes) } else { class };
            y.push(vec![label as i64]);
        }
        (Tensor::from_vec(x, (n, dim), &Device::Cpu).unwrap(), y)
    }

    #[test]
    fn recovers_a_separable_problem() {
        let (x, y) = blobs(300, 5, 3, 4.0, 0.0, 1);
        let opts = ProbeOptions { l2: vec![1e-4], ..Default::default() };
        let model = LogisticModel::fit(&x, &y, TaskType::MultiClass, 3, 1e-4, &opts, None).unwrap();
        let predicted = predict(&model, &x).unwrap();
        assert!(predicted.iter().zip(&y).all(|(p, l)| *p as i64 == l[0]));
        let (tx, ty) = blobs(150, 5, 3, 4.0, 0.0, 2);
        let report = linear_probe(&x, &y, &tx, &ty, TaskType::MultiClass, 3, &opts, None).unwrap();
        assert_eq!(report.acc, 1.0);
        assert_eq!(report.auc, 1.0);
    }

    #[test]
    fn l2_selection_regularises_noisy_tiny_problems_more() {
        let opts = ProbeOptions::default();
        let (x, y) = blobs(40, 30, 2, 0.3, 0.5, 3);
        let noisy = linear_probe(&x, &y, &x, &y, TaskType::BinaryClass, 2, &opts, None).unwrap();
        let (x, y) = blobs(1000, 5, 2, 3.0, 0.0, 4);
        let clean = linear_probe(&x, &y, &x, &y, TaskType::BinaryClass, 2, &opts, None).unwrap();
        assert_eq!(noisy.val_scores.len(), opts.l2.len());
        assert!(noisy.l2_chosen > clean.l2_chosen, "noisy {} vs clean {}", noisy.l2_chosen, clean.l2_chosen);
    }

    #[test]
    fn multi_label_heads_are_independent_sigmoids() {
        let (x, classes) = blobs(200, 4, 4, 4.0, 0.0, 5);
        // Finding j is present when the class is j or j+1: two findings per row.
        let y: Vec<Vec<i64>> = classes
            .iter()
            .map(|c| (0..4).map(|j| i64::from(c[0] == j || c[0] == (j + 1) % 4)).collect())
            .collect();
        let opts = ProbeOptions { l2: vec![1e-3], ..Default::default() };
        let report = linear_probe(&x, &y, &x, &y, TaskType::MultiLabel, 4, &opts, None).unwrap();
        assert!(report.auc > 0.95 && report.acc > 0.9, "{report:?}");
    }

    #[test]
    fn bad_inputs_are_named() {
        let (x, y) = blobs(20, 3, 2, 1.0, 0.0, 6);
        let opts = ProbeOptions::default();
        let err = linear_probe(&x, &y[..10], &x, &y, TaskType::MultiClass, 2, &opts, None).unwrap_err();
        assert!(err.to_string().contains("train features have shape [20, 3]"), "{err}");
        let err = linear_probe(&x, &y, &x, &y, TaskType::MultiClass, 1, &opts, None).unwrap_err();
        assert!(err.to_string().contains("one class id in 0..1"), "{err}");
        let bad = ProbeOptions { l2: vec![], ..Default::default() };
        assert!(linear_probe(&x, &y, &x, &y, TaskType::MultiClass, 2, &bad, None)
            .unwrap_err()
            .to_string()
            .contains("l2"));
    }

    #[test]
    fn a_cancelled_flag_stops_the_fit_at_its_first_epoch() {
        let (x, y) = blobs(20, 3, 2, 1.0, 0.0, 6);
        let flag = CancelFlag::new();
        flag.cancel();
        let opts = ProbeOptions::default();
        let err = linear_probe(&x, &y, &x, &y, TaskType::MultiClass, 2, &opts, Some(&flag)).unwrap_err();
        assert!(err.is_cancelled() && err.to_string().contains("linear_probe at epoch 0 of 300"), "{err}");
    }
}
