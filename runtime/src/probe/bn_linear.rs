//! The paper's linear probe (`linprobe.py` in its released code): a `BatchNorm1d(affine=False,
//! eps=1e-6)` then a `Linear` layer on frozen, mean-pooled vision features, trained with SGD
//! (lr 0.1, momentum 0.9, no weight decay) for 20 epochs of shuffled mini-batches of 1,024, the
//! learning rate following a cosine from 0.1 towards 0 stepped once per epoch, no warmup.
//!
//! The BatchNorm behaves as torch's does, because that decides the numbers: in training it
//! normalises each batch with that batch's mean and biased variance and moves its running
//! estimates 10% towards them (unbiased variance); at test time it uses the running estimates.
//! With few batches per epoch those have not converged after 20 epochs (one batch per epoch
//! leaves 12% of the initial mean 0 and variance 1 in them), and that is part of the recipe.
//! The released script scores the test set after the last epoch, with no model selection; so
//! does this one.
//!
//! The BatchNorm has no parameters and the features are frozen, so the normalised batch is a
//! constant to the optimiser: autograd runs through the linear layer and the loss only.
//! Multi-label tasks, which the released script does not handle, get one sigmoid per finding
//! (`head.rs`). The initial weights and the batch order come from a seeded ChaCha8 stream with
//! torch's distributions (nn.Linear's U(±1/sqrt(D)), a uniform permutation per epoch), not
//! torch's generator; the parity test passes the reference's own.

use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::medmnist_eval::{medmnist_evaluate, medmnist_hits};
use crate::data::medmnist_info::TaskType;
use crate::error::{Context, Result};
use crate::probe::head::{check_features, loss, scores, targets, top5_accuracy, Targets};
use crate::probe::report::ProbeReport;
use crate::run::CancelFlag;

/// How the BatchNorm + linear probe is trained; the defaults are `linprobe.py`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct BnLinearOptions {
    pub epochs: usize,
    /// Rows per SGD step; the last batch of an epoch holds the remainder.
    pub batch: usize,
    /// Initial learning rate of the per-epoch cosine schedule.
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub bn_eps: f64,
    /// How far each training batch moves the BatchNorm's running statistics.
    pub bn_momentum: f64,
    pub seed: u64,
}

impl Default for BnLinearOptions {
    fn default() -> Self {
        BnLinearOptions {
            epochs: 20,
            batch: 1024,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            bn_eps: 1e-6,
            bn_momentum: 0.1,
            seed: 0,
        }
    }
}

/// Train on `train` (`[N, D]` features with their raw label rows) and evaluate on `test`, as
/// `logistic::linear_probe` does; `cancel` is polled at every SGD step.
#[allow(clippy::too_many_arguments)]
pub fn bn_linear_probe(
    train: &Tensor,
    train_labels: &[Vec<i64>],
    test: &Tensor,
    test_labels: &[Vec<i64>],
    task: TaskType,
    n_classes: usize,
    opts: &BnLinearOptions,
    cancel: Option<&CancelFlag>,
) -> Result<ProbeReport> {
    let dim = check_features("bn_linear", train, train_labels, test, test_labels, n_classes)?;
    check_options(opts, train_labels.len())?;
    let train = train.to_dtype(DType::F32)?;
    let test = test.to_dtype(DType::F32)?;
    let y = targets(task, train_labels, n_classes, train.device())?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let (weight, bias) = torch_linear_init(dim, n_classes, &mut rng, train.device())?;
    // Each epoch's order is drawn when the epoch starts, from the stream the weights came from,
    // so the epoch count costs no memory up front.
    let order = |_epoch: usize| {
        let mut order: Vec<usize> = (0..train_labels.len()).collect();
        order.shuffle(&mut rng);
        order
    };
    let head = BnLinearHead::fit(&train, &y, weight, bias, order, opts, cancel)?;
    let test_scores = scores(task, &head.logits(&test)?)?;
    let score = medmnist_evaluate(task, test_labels, &test_scores).context("bn_linear: test metrics")?;
    Ok(ProbeReport {
        method: "bn_linear",
        task,
        acc: score.acc,
        auc: score.auc,
        top5: top5_accuracy(task, test_labels, &test_scores),
        l2_chosen: opts.weight_decay,
        val_scores: Vec::new(),
        train_loss: head.epoch_loss,
        n_train: train_labels.len(),
        n_test: test_labels.len(),
        dim,
        hits: medmnist_hits(task, test_labels, &test_scores)?,
    })
}

/// nn.Linear's default initialisation: weight `[C, D]` and bias `[C]` uniform in ±1/sqrt(D).
fn torch_linear_init(
    dim: usize,
    n_classes: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let bound = 1.0 / (dim as f32).sqrt();
    let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
    let weight = Tensor::from_vec(draw(n_classes * dim), (n_classes, dim), device)?;
    let bias = Tensor::from_vec(draw(n_classes), n_classes, device)?;
    Ok((weight, bias))
}

/// The released learning rate of each epoch: CosineAnnealingLR(T_max = epochs, eta_min = 0).
fn cosine_lr(base: f64, epoch: usize, epochs: usize) -> f64 {
    base * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs as f64).cos()) / 2.0
}

/// A trained probe: the BatchNorm's running statistics and the linear layer.
pub(crate) struct BnLinearHead {
    running_mean: Tensor,
    running_var: Tensor,
    /// `[C, D]`, torch's layout.
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    /// Mean training loss of each epoch, over the rows it saw.
    epoch_loss: Vec<f64>,
}

impl BnLinearHead {
    /// Train from the given initial layer for `opts.epochs` epochs, epoch `e` visiting the rows
    /// of `x` in the permutation `order(e)`, cut into batches of `opts.batch`.
    pub(crate) fn fit(
        x: &Tensor,
        y: &Targets,
        weight: Tensor,
        bias: Tensor,
        mut order: impl FnMut(usize) -> Vec<usize>,
        opts: &BnLinearOptions,
        cancel: Option<&CancelFlag>,
    ) -> Result<BnLinearHead> {
        let (n, dim) = x.dims2()?;
        let device = x.device();
        let weight = Var::from_tensor(&weight)?;
        let bias = Var::from_tensor(&bias)?;
        let mut velocity = [weight.zeros_like()?, bias.zeros_like()?];
        let mut running_mean = Tensor::zeros(dim, DType::F32, device)?;
        let mut running_var = Tensor::ones(dim, DType::F32, device)?;
        let m = opts.bn_momentum;
        let mut epoch_loss = Vec::new();
        for epoch in 0..opts.epochs {
            let order = order(epoch);
            if order.len() != n {
                crate::bail!("bn_linear: epoch {epoch}'s order has {} rows, the features {n}", order.len());
            }
            let lr = cosine_lr(opts.lr, epoch, opts.epochs);
            let mut loss_sum = 0.0;
            for (batch, rows) in order.chunks(opts.batch).enumerate() {
                if let Some(flag) = cancel {
                    flag.check(|| {
                        format!("linear_probe (bn_linear) at epoch {epoch} of {}, batch {batch}", opts.epochs)
                    })?;
                }
                let b = rows.len();
                let index = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect(), b, device)?;
                let xb = x.index_select(&index, 0)?;
                let mean = xb.mean_keepdim(0)?;
                let centred = xb.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(0)?;
                let z = centred.broadcast_div(&(var.clone() + opts.bn_eps)?.sqrt()?)?;
                running_mean = ((running_mean * (1.0 - m))? + (mean.squeeze(0)? * m)?)?;
                let unbiased = (var.squeeze(0)? * (b as f64 / (b as f64 - 1.0)))?;
                running_var = ((running_var * (1.0 - m))? + (unbiased * m)?)?;

                let logits = z.matmul(&weight.as_tensor().t()?)?.broadcast_add(bias.as_tensor())?;
                let batch_loss = loss(&logits, &y.rows(&index)?)?;
                loss_sum += batch_loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * b as f64;
                let grads = batch_loss.backward()?;
                for (param, v) in [&weight, &bias].into_iter().zip(velocity.iter_mut()) {
                    let grad = grads.get(param).context("bn_linear: no gradient for the linear layer")?;
                    let grad = (grad + (param.as_tensor() * opts.weight_decay)?)?;
                    // torch's SGD: v = momentum * v + g (v starts at 0), p -= lr * v.
                    *v = ((&*v * opts.momentum)? + grad)?;
                    param.set(&(param.as_tensor() - (&*v * lr)?)?)?;
                }
            }
            epoch_loss.push(loss_sum / n as f64);
        }
        Ok(BnLinearHead {
            running_mean,
            running_var,
            weight: weight.as_tensor().detach(),
            bias: bias.as_tensor().detach(),
            eps: opts.bn_eps,
            epoch_loss,
        })
    }

    /// Test-time logits: BatchNorm with the running statistics, then the linear layer.
    pub(crate) fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let z = x
            .broadcast_sub(&self.running_mean)?
            .broadcast_div(&(self.running_var.clone() + self.eps)?.sqrt()?)?;
        Ok(z.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }
}

fn check_options(opts: &BnLinearOptions, n_train: usize) -> Result<()> {
    if opts.epochs == 0 {
        crate::bail!("bn_linear: epochs must be at least 1");
    }
    if opts.batch == 0 {
        crate::bail!("bn_linear: batch must be at least 1");
    }
    // torch's BatchNorm refuses a training batch of one row; so does this probe, before training.
    if n_train % opts.batch == 1 || n_train == 1 {
        crate::bail!(
            "bn_linear: {n_train} training rows in batches of {} leave a last batch of 1 row, and \
             BatchNorm needs at least 2 to train; pick another batch",
            opts.batch
        );
    }
    for (name, v) in [("lr", opts.lr), ("bn_eps", opts.bn_eps)] {
        if !(v > 0.0 && v.is_finite()) {
            crate::bail!("bn_linear: {name} must be > 0, got {v}");
        }
    }
    for (name, v) in [("momentum", opts.momentum), ("bn_momentum", opts.bn_momentum)] {
        if !(0.0..=1.0).contains(&v) {
            crate::bail!("bn_linear: {name} must be in [0, 1], got {v}");
        }
    }
    if !(opts.weight_decay >= 0.0 && opts.weight_decay.is_finite()) {
        crate::bail!("bn_linear: weight_decay must be >= 0, got {}", opts.weight_decay);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::probe::reference_fixture::{self, Reference};

    fn assert_close(what: &str, got: &Tensor, want: &[f64], tol: f64) {
        let got = got.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(got.len(), want.len(), "{what}: length");
        let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
        assert!(worst < tol, "{what}: largest difference {worst} (tolerance {tol})");
    }

    /// The released recipe, restated in float64 numpy from the reference's initial layer and
    /// batch order, against ours in f32: the same weights, running statistics and test logits.
    fn matches_the_released_recipe(dev: &Device) {
        let r: Reference = reference_fixture::load();
        let b = &r.bn_linear;
        let opts = BnLinearOptions {
            epochs: b.epochs,
            batch: b.batch,
            lr: b.lr,
            momentum: b.momentum,
            weight_decay: b.weight_decay,
            bn_eps: b.bn_eps,
            bn_momentum: b.bn_momentum,
            seed: 0,
        };
        let (train, test) = (r.train.features(r.dim, dev), r.test.features(r.dim, dev));
        let y = targets(TaskType::MultiClass, &r.train.label_rows(), r.classes, dev).unwrap();
        let weight = reference_fixture::tensor(&b.init_weight, (r.classes, r.dim), dev);
        let bias = reference_fixture::tensor(&b.init_bias, r.classes, dev);
        let head = BnLinearHead::fit(&train, &y, weight, bias, |e| b.orders[e].clone(), &opts, None).unwrap();
        let lrs: Vec<f64> = (0..b.epochs).map(|e| cosine_lr(b.lr, e, b.epochs)).collect();
        assert!(lrs.iter().zip(&b.lrs).all(|(a, w)| (a - w).abs() < 1e-12), "{lrs:?} vs {:?}", b.lrs);
        // f32 against float64 after 9 SGD steps: the largest difference measured is 6e-7 (the
        // running variance), so 1e-5 leaves room for other CPUs' summation orders.
        let tol = 1e-5;
        assert_close("weight", &head.weight, &b.weight, tol);
        assert_close("bias", &head.bias, &b.bias, tol);
        assert_close("running mean", &head.running_mean, &b.running_mean, tol);
        assert_close("running var", &head.running_var, &b.running_var, tol);
        assert_close("test logits", &head.logits(&test).unwrap(), &b.test_logits, tol);
        let losses = Tensor::new(head.epoch_loss.as_slice(), dev).unwrap();
        assert_close("epoch loss", &losses, &b.epoch_loss, tol);
        let test_scores = scores(TaskType::MultiClass, &head.logits(&test).unwrap()).unwrap();
        let acc =
            crate::data::medmnist_acc(TaskType::MultiClass, &r.test.label_rows(), &test_scores).unwrap();
        assert_eq!(acc, b.top1);
        assert_eq!(top5_accuracy(TaskType::MultiClass, &r.test.label_rows(), &test_scores), Some(b.top5));
    }

    #[test]
    fn matches_the_released_recipe_cpu() {
        matches_the_released_recipe(&Device::Cpu);
    }

    #[test]
    fn a_seed_fixes_the_report_and_reports_look_like_the_logistic_probe() {
        let r = reference_fixture::load();
        let dev = Device::Cpu;
        let (train, test) = (r.train.features(r.dim, &dev), r.test.features(r.dim, &dev));
        let opts = BnLinearOptions { batch: 16, epochs: 5, ..Default::default() };
        let run = |seed| {
            let opts = BnLinearOptions { seed, ..opts.clone() };
            let labels = (r.train.label_rows(), r.test.label_rows());
            bn_linear_probe(&train, &labels.0, &test, &labels.1, TaskType::MultiClass, r.classes, &opts, None)
                .unwrap()
        };
        let report = run(3);
        assert_eq!(report, run(3));
        assert_ne!(report.train_loss, run(4).train_loss);
        assert_eq!((report.method, report.n_train, report.n_test, report.dim), ("bn_linear", 64, 32, 16));
        assert_eq!(report.train_loss.len(), 5);
        assert!(report.train_loss[4] < report.train_loss[0], "{:?}", report.train_loss);
        assert!(report.acc > 1.0 / 6.0 && report.auc > 0.5 && report.top5.is_some(), "{report:?}");
    }

    #[test]
    fn bad_inputs_are_named() {
        let r = reference_fixture::load();
        let dev = Device::Cpu;
        let (train, test) = (r.train.features(r.dim, &dev), r.test.features(r.dim, &dev));
        let (y, ty) = (r.train.label_rows(), r.test.label_rows());
        let probe = |train: &Tensor, test: &Tensor, opts: &BnLinearOptions| {
            bn_linear_probe(train, &y, test, &ty, TaskType::MultiClass, r.classes, opts, None)
                .unwrap_err()
                .to_string()
        };
        let opts = BnLinearOptions::default();
        let err = probe(&train, &test.narrow(1, 0, 8).unwrap(), &opts);
        assert!(err.contains("train features have 16 columns but test features 8"), "{err}");
        let err = probe(&train.narrow(0, 0, 10).unwrap(), &test, &opts);
        assert!(err.contains("train features have shape [10, 16], expected [64, D]"), "{err}");
        let err = probe(&train, &test, &BnLinearOptions { batch: 63, ..Default::default() });
        assert!(err.contains("64 training rows in batches of 63 leave a last batch of 1 row"), "{err}");
        let err = probe(&train, &test, &BnLinearOptions { lr: 0.0, ..Default::default() });
        assert!(err.contains("lr must be > 0, got 0"), "{err}");
        let empty = Tensor::zeros((0, 16), DType::F32, &dev).unwrap();
        let err = bn_linear_probe(&empty, &[], &test, &ty, TaskType::MultiClass, 6, &opts, None).unwrap_err();
        assert!(err.to_string().contains("train features have shape [0, 16]"), "{err}");
    }

    /// A billion epochs cost nothing up front (each order is drawn when its epoch starts), and
    /// a cancelled flag stops the first SGD step.
    #[test]
    fn epochs_are_drawn_lazily_and_cancellation_stops_the_first_step() {
        let r = reference_fixture::load();
        let dev = Device::Cpu;
        let (train, test) = (r.train.features(r.dim, &dev), r.test.features(r.dim, &dev));
        let flag = CancelFlag::new();
        flag.cancel();
        let opts = BnLinearOptions { batch: 16, epochs: 1_000_000_000, ..Default::default() };
        let (y, ty) = (r.train.label_rows(), r.test.label_rows());
        let err =
            bn_linear_probe(&train, &y, &test, &ty, TaskType::MultiClass, r.classes, &opts, Some(&flag))
                .unwrap_err();
        assert!(err.is_cancelled(), "{err}");
        assert!(err.to_string().contains("at epoch 0 of 1000000000, batch 0"), "{err}");
    }
}
