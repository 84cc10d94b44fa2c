//! Vision-only baselines: a classifier trained from scratch on the pixels of one MedMNIST flag,
//! scored with MedMNIST's own ACC/AUC, to set beside the probes of a VLM's vision tower and the
//! published ResNet numbers (`data::published_results`).
//!
//! Training follows MedMNIST's recipe in shape: pixels scaled to [-1, 1], Adam at 1e-3,
//! cross-entropy (binary cross-entropy per finding for chestmnist), seeded shuffling. The epoch
//! count is the caller's: MedMNIST trains for 100 with step decay, which is a GPU job; the
//! default here is a quick comparison.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::dataset::{Dataset, Item};
use crate::data::medmnist_eval::medmnist_evaluate;
use crate::data::medmnist_info::flag_info;
use crate::error::{Context, Result};
use crate::probe::features::single_flag;
use crate::probe::head::{loss, scores, targets};
use crate::probe::nets::{Net, ResNet18, SmallCnn};
use crate::probe::seeded_init::seeded_var_builder;
use crate::run::CancelFlag;

/// Which network to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    SmallCnn,
    ResNet18,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::SmallCnn => "small_cnn",
            Arch::ResNet18 => "resnet18",
        }
    }

    pub fn parse(name: &str) -> Result<Arch> {
        match name.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "small_cnn" | "smallcnn" | "cnn" => Ok(Arch::SmallCnn),
            "resnet18" | "resnet_18" => Ok(Arch::ResNet18),
            _ => crate::bail!("unknown arch {name:?}: expected \"small_cnn\" or \"resnet18\""),
        }
    }
}

#[derive(Clone, Debug)]
pub struct BaselineOptions {
    pub arch: Arch,
    pub epochs: usize,
    pub lr: f64,
    pub batch: usize,
    /// Seeds the initial weights and the shuffling.
    pub seed: u64,
    pub device: Device,
}

impl Default for BaselineOptions {
    fn default() -> Self {
        BaselineOptions {
            arch: Arch::SmallCnn,
            epochs: 10,
            lr: 1e-3,
            batch: 128,
            seed: 0,
            device: Device::Cpu,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BaselineReport {
    pub arch: Arch,
    pub flag: String,
    /// Test ACC and AUC as MedMNIST's evaluator computes them.
    pub acc: f64,
    pub auc: f64,
    pub epochs: usize,
    /// Mean training loss of each epoch.
    pub train_loss: Vec<f64>,
    pub n_params: usize,
    pub seconds: f64,
}

/// Train `opts.arch` from scratch on `train` and report on `test` (both one MedMNIST flag),
/// polling `cancel` at every training batch.
pub fn vision_baseline(
    train: &Dataset,
    test: &Dataset,
    opts: &BaselineOptions,
    cancel: Option<&CancelFlag>,
) -> Result<BaselineReport> {
    let started = Instant::now();
    let flag = single_flag(train, "train")?;
    if single_flag(test, "test")? != flag {
        crate::bail!("vision_baseline: train is {flag} but test is {}", single_flag(test, "test")?);
    }
    if opts.epochs == 0 || opts.batch < 2 || !(opts.lr.is_finite() && opts.lr > 0.0) {
        crate::bail!(
            "vision_baseline: epochs must be >= 1, batch >= 2 (batch-norm needs two images) and lr > 0; got {}, {}, {}",
            opts.epochs,
            opts.batch,
            opts.lr
        );
    }
    let info = flag_info(&flag)?;
    let shape = input_shape(train).context("vision_baseline: train")?;
    if input_shape(test).context("vision_baseline: test")? != shape {
        crate::bail!("vision_baseline: train and test images differ in size or channels");
    }
    let (vb, vars) = seeded_var_builder(opts.seed, &opts.device);
    let outputs = info.n_classes();
    let net: Box<dyn Net> = match opts.arch {
        Arch::SmallCnn => Box::new(SmallCnn::new(shape.0, outputs, vb)?),
        Arch::ResNet18 => Box::new(ResNet18::new(shape.0, outputs, vb)?),
    };
    let n_params = {
        let data = vars.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        data.iter().filter(|(name, _)| !name.contains("running_")).map(|(_, v)| v.elem_count()).sum()
    };
    let params = ParamsAdamW { lr: opts.lr, weight_decay: 0.0, ..Default::default() };
    let mut adam = AdamW::new(vars.all_vars(), params)?;

    // Grown per epoch: a huge `epochs` must not reserve memory before the first one runs.
    let mut train_loss = Vec::new();
    let mut order: Vec<usize> = (0..train.len()).collect();
    for epoch in 0..opts.epochs {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            opts.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        let (mut total, mut batches) = (0.0, 0);
        // A last batch of one image is dropped: batch-norm statistics of one image are undefined.
        for (batch, rows) in order.chunks(opts.batch).filter(|rows| rows.len() > 1).enumerate() {
            if let Some(flag) = cancel {
                flag.check(|| format!("vision_baseline at epoch {epoch} of {}, batch {batch}", opts.epochs))?;
            }
            let items: Vec<&Item> = rows.iter().map(|&r| &train.items()[r]).collect();
            let x = pixels(&items, shape, &opts.device)?;
            let labels: Vec<Vec<i64>> = items.iter().map(|i| i.labels.clone()).collect();
            let y = targets(info.task, &labels, outputs, &opts.device)
                .context("vision_baseline: train labels")?;
            let batch_loss = loss(&net.forward_t(&x, true)?, &y)?;
            adam.backward_step(&batch_loss)?;
            total += batch_loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            batches += 1;
        }
        train_loss.push(total / batches.max(1) as f64);
    }

    let test_items: Vec<&Item> = test.iter().collect();
    let mut test_scores = Vec::with_capacity(test.len());
    for chunk in test_items.chunks(opts.batch) {
        let logits = net.forward_t(&pixels(chunk, shape, &opts.device)?, false)?;
        test_scores.extend(scores(info.task, &logits)?);
    }
    let labels: Vec<Vec<i64>> = test.iter().map(|i| i.labels.clone()).collect();
    let score =
        medmnist_evaluate(info.task, &labels, &test_scores).context("vision_baseline: test metrics")?;
    Ok(BaselineReport {
        arch: opts.arch,
        flag,
        acc: score.acc,
        auc: score.auc,
        epochs: opts.epochs,
        train_loss,
        n_params,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// (channels, height, width) shared by every image: 3 channels if any image is RGB.
fn input_shape(ds: &Dataset) -> Result<(usize, usize, usize)> {
    let first = ds.get(0).context("the dataset is empty")?;
    let (w, h) = (first.image.width(), first.image.height());
    if let Some(odd) = ds.iter().position(|i| i.image.width() != w || i.image.height() != h) {
        crate::bail!(
            "image {odd} is {}x{}, image 0 is {w}x{h}; all images must share one size",
            ds.items()[odd].image.width(),
            ds.items()[odd].image.height()
        );
    }
    let channels = if ds.iter().any(|i| i.image.channels() == 3) { 3 } else { 1 };
    Ok((channels, h as usize, w as usize))
}

/// `[B, C, H, W]` pixels scaled to [-1, 1], as MedMNIST's `Normalize(mean=[.5], std=[.5])`.
fn pixels(items: &[&Item], (channels, h, w): (usize, usize, usize), device: &Device) -> Result<Tensor> {
    let mut bytes = Vec::with_capacity(items.len() * channels * h * w);
    for item in items {
        if channels == 3 && item.image.channels() == 1 {
            bytes.extend_from_slice(item.image.to_rgb().pixels());
        } else {
            bytes.extend_from_slice(item.image.pixels());
        }
    }
    let x = Tensor::from_vec(bytes, (items.len(), h, w, channels), device)?.permute((0, 3, 1, 2))?;
    Ok(((x.to_dtype(DType::F32)? / 127.5)? - 1.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::synthetic_splits;

    fn synthetic(dir: &std::path::Path, flag: &str, n_train: usize, n_test: usize) -> (Dataset, Dataset) {
        synthetic_splits(dir, flag, (n_train, n_test), 0.0, 5)
    }

    #[test]
    fn small_cnn_learns_an_easy_synthetic_task_in_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let (train, test) = synthetic(dir.path(), "bloodmnist", 320, 300);
        let opts = BaselineOptions { epochs: 3, batch: 32, lr: 3e-3, ..Default::default() };
        let report = vision_baseline(&train, &test, &opts, None).unwrap();
        let majority = (0..8).map(|c| test.iter().filter(|i| i.label == Some(c)).count()).max().unwrap()
            as f64
            / test.len() as f64;
        // Lower end of the 95% normal-approximation interval of the test accuracy.
        let low = report.acc - 1.96 * (report.acc * (1.0 - report.acc) / test.len() as f64).sqrt();
        assert!(low > majority, "{report:?} vs majority-class rate {majority}");
        assert!(report.train_loss.last() < report.train_loss.first(), "{:?}", report.train_loss);
        assert!(report.seconds < 60.0, "took {}s", report.seconds);
    }

    #[test]
    fn the_same_seed_trains_the_same_model() {
        let dir = tempfile::tempdir().unwrap();
        let (train, test) = synthetic(dir.path(), "dermamnist", 48, 16);
        let opts = BaselineOptions { epochs: 2, batch: 16, seed: 3, ..Default::default() };
        let first = vision_baseline(&train, &test, &opts, None).unwrap();
        let again = vision_baseline(&train, &test, &opts, None).unwrap();
        assert_eq!((&first.train_loss, first.acc), (&again.train_loss, again.acc));
        let other = vision_baseline(&train, &test, &BaselineOptions { seed: 4, ..opts }, None).unwrap();
        assert_ne!(other.train_loss, again.train_loss);
    }

    #[test]
    fn resnet18_trains_on_28px_grey_images() {
        let dir = tempfile::tempdir().unwrap();
        let (train, test) = synthetic(dir.path(), "chestmnist", 8, 6);
        let opts = BaselineOptions { arch: Arch::ResNet18, epochs: 1, batch: 4, ..Default::default() };
        let report = vision_baseline(&train, &test, &opts, None).unwrap();
        assert!(report.acc.is_finite() && report.train_loss[0].is_finite());
        // 11.17M weights: torchvision's resnet18 (11.69M) less its 7x7 stem, plus the 3x3 one.
        assert!((11_000_000..11_300_000).contains(&report.n_params), "{}", report.n_params);
    }

    #[test]
    fn options_and_mixed_inputs_are_checked() {
        assert_eq!(Arch::parse("ResNet-18").unwrap(), Arch::ResNet18);
        assert!(Arch::parse("vit").unwrap_err().to_string().contains("small_cnn"));
        let dir = tempfile::tempdir().unwrap();
        let (train, test) = synthetic(dir.path(), "pneumoniamnist", 4, 4);
        let bad = BaselineOptions { batch: 1, ..Default::default() };
        assert!(vision_baseline(&train, &test, &bad, None).unwrap_err().to_string().contains("batch >= 2"));
    }
}
