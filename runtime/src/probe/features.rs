//! Probing datasets: frozen features from any `FeatureSource` (a vision tower, a random
//! projection, ...), cached on disk, then a probe (`method.rs`) on MedMNIST labels.
//!
//! The probe depends on no model: a model becomes a `FeatureSource` by naming itself (weights hash
//! and pooling) and mapping images to a `[N, D]` tensor, so the same code probes Qwen2.5-VL's
//! vision tower, a random-init control and a pixel baseline.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::data::dataset::Dataset;
use crate::data::medmnist_info::{flag_info, TaskType};
use crate::error::{Context, Result};
use crate::image::Image;
use crate::probe::cache::{CacheKey, FeatureCache};
use crate::probe::logistic::ProbeOptions;
use crate::probe::method::ProbeMethod;
use crate::probe::report::ProbeReport;
use crate::run::CancelFlag;

/// Something that turns images into one feature row each.
pub trait FeatureSource {
    /// Identifies the weights and the pooling, for the cache key (e.g. `<sha256>/merger-mean`).
    fn source_id(&self) -> String;
    /// `[images.len(), D]` features.
    fn extract(&self, images: &[Image]) -> Result<Tensor>;
}

/// A closure with a name, as a `FeatureSource`.
pub struct FnFeatures<F> {
    id: String,
    f: F,
}

impl<F: Fn(&[Image]) -> Result<Tensor>> FnFeatures<F> {
    pub fn new(id: impl Into<String>, f: F) -> Self {
        FnFeatures { id: id.into(), f }
    }
}

impl<F: Fn(&[Image]) -> Result<Tensor>> FeatureSource for FnFeatures<F> {
    fn source_id(&self) -> String {
        self.id.clone()
    }

    fn extract(&self, images: &[Image]) -> Result<Tensor> {
        (self.f)(images)
    }
}

/// How features are extracted and probed.
#[derive(Clone, Debug)]
pub struct DatasetProbeOptions {
    pub probe: ProbeOptions,
    /// Images per `extract` call.
    pub batch: usize,
    /// Where features are cached; `None` extracts every time.
    pub cache_dir: Option<PathBuf>,
    /// Device the probe trains on (features are moved there).
    pub device: Device,
}

impl Default for DatasetProbeOptions {
    fn default() -> Self {
        DatasetProbeOptions {
            probe: ProbeOptions::default(),
            batch: 32,
            cache_dir: None,
            device: Device::Cpu,
        }
    }
}

/// Features of every item of `ds`, in order, from the cache when it holds them. The flag is true
/// when they came from the cache. `cancel` is polled before each batch is extracted.
pub fn dataset_features(
    source: &dyn FeatureSource,
    ds: &Dataset,
    batch: usize,
    cache: Option<&FeatureCache>,
    device: &Device,
    cancel: Option<&CancelFlag>,
) -> Result<(Tensor, bool)> {
    if ds.is_empty() {
        crate::bail!("probe features: the dataset is empty");
    }
    if batch == 0 {
        crate::bail!("probe features: batch must be at least 1");
    }
    let compute = || -> Result<Tensor> {
        let images: Vec<Image> = ds.iter().map(|i| i.image.clone()).collect();
        let mut parts = Vec::with_capacity(images.len().div_ceil(batch));
        for (b, chunk) in images.chunks(batch).enumerate() {
            if let Some(flag) = cancel {
                flag.check(|| {
                    format!("extracting probe features, batch {b} of {}", images.len().div_ceil(batch))
                })?;
            }
            let part = source
                .extract(chunk)
                .with_context(|| format!("feature source {}: batch {b}", source.source_id()))?;
            if part.rank() != 2 || part.dim(0)? != chunk.len() {
                crate::bail!(
                    "feature source {} returned shape {:?} for {} images, expected [{}, D]",
                    source.source_id(),
                    part.dims(),
                    chunk.len(),
                    chunk.len()
                );
            }
            parts.push(part.to_device(device)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    };
    match cache {
        Some(cache) => cache.get_or_compute(&CacheKey::for_dataset(&source.source_id(), ds), device, compute),
        None => Ok((compute()?, false)),
    }
}

/// What every probe method fits and scores: one MedMNIST flag's train and test features with
/// their raw label rows.
#[derive(Clone, Debug)]
pub struct ProbeInputs {
    pub flag: String,
    pub task: TaskType,
    /// Classes, or findings for multi-label tasks; binary tasks have 2.
    pub n_classes: usize,
    pub train: Tensor,
    pub train_labels: Vec<Vec<i64>>,
    pub test: Tensor,
    pub test_labels: Vec<Vec<i64>>,
}

/// `source`'s features of `train` and `test` (one flag), extracted `batch` images at a time and
/// cached under `cache_dir`, on `device`.
pub fn probe_inputs(
    source: &dyn FeatureSource,
    train: &Dataset,
    test: &Dataset,
    batch: usize,
    cache_dir: Option<&Path>,
    device: &Device,
    cancel: Option<&CancelFlag>,
) -> Result<ProbeInputs> {
    let flag = single_flag(train, "train")?;
    if single_flag(test, "test")? != flag {
        crate::bail!("linear_probe: train is {flag} but test is {}", single_flag(test, "test")?);
    }
    let info = flag_info(&flag)?;
    let cache = cache_dir.map(FeatureCache::new);
    let (train_x, _) = dataset_features(source, train, batch, cache.as_ref(), device, cancel)?;
    let (test_x, _) = dataset_features(source, test, batch, cache.as_ref(), device, cancel)?;
    let labels = |ds: &Dataset| -> Vec<Vec<i64>> { ds.iter().map(|i| i.labels.clone()).collect() };
    Ok(ProbeInputs {
        task: info.task,
        n_classes: info.n_classes(),
        train: train_x,
        train_labels: labels(train),
        test: test_x,
        test_labels: labels(test),
        flag,
    })
}

/// The logistic probe of `source`'s features on one MedMNIST flag: fit on `train`, report on `test`.
pub fn probe_datasets(
    source: &dyn FeatureSource,
    train: &Dataset,
    test: &Dataset,
    opts: &DatasetProbeOptions,
) -> Result<ProbeReport> {
    let inputs =
        probe_inputs(source, train, test, opts.batch, opts.cache_dir.as_deref(), &opts.device, None)?;
    ProbeMethod::Logistic(opts.probe.clone()).run(&inputs, None)
}

pub(crate) fn single_flag(ds: &Dataset, which: &str) -> Result<String> {
    match ds.flags().as_slice() {
        [flag] => Ok(flag.to_string()),
        [] => crate::bail!("linear_probe: the {which} dataset is empty"),
        flags => crate::bail!(
            "linear_probe: the {which} dataset mixes flags {}; probe one flag at a time",
            flags.iter().map(|f| f.as_ref()).collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::data::synth::synthetic_splits;

    /// A fixed random projection of the pixels followed by a ReLU: a random-init one-layer
    /// "vision tower" whose features carry only what the pixels carry.
    fn random_projection(dim_in: usize, dim_out: usize) -> impl Fn(&[Image]) -> Result<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let scale = (3.0 / dim_in as f32).sqrt();
        let w: Vec<f32> = (0..dim_in * dim_out).map(|_| rng.random_range(-scale..scale)).collect();
        let w = Tensor::from_vec(w, (dim_in, dim_out), &Device::Cpu).unwrap();
        move |images: &[Image]| {
            let pixels: Vec<f32> = images
                .iter()
                .flat_map(|i| i.to_rgb().pixels().iter().map(|&p| p as f32 / 255.0).collect::<Vec<_>>())
                .collect();
            let x = Tensor::from_vec(pixels, (images.len(), dim_in), &Device::Cpu)?;
            Ok(x.matmul(&w)?.relu()?)
        }
    }

    fn synthetic(dir: &std::path::Path, flag: &str, difficulty: f64) -> (Dataset, Dataset) {
        synthetic_splits(dir, flag, (400, 300), difficulty, 11)
    }

    /// Wilson 95% interval of a proportion.
    fn wilson(p: f64, n: usize) -> (f64, f64) {
        let (z, n) = (1.96f64, n as f64);
        let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
        let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
        (centre - half, centre + half)
    }

    #[test]
    fn random_features_probe_easy_tasks_well_above_chance_and_hard_ones_less() {
        let dir = tempfile::tempdir().unwrap();
        let source = FnFeatures::new("random-projection/seed7", random_projection(28 * 28 * 3, 256));
        let opts = DatasetProbeOptions {
            probe: ProbeOptions { l2: vec![1e-2, 1.0], epochs: 150, ..Default::default() },
            ..Default::default()
        };
        let mut accs = Vec::new();
        for (sub, difficulty) in [("easy", 0.0), ("hard", 1.0)] {
            let (train, test) = synthetic(&dir.path().join(sub), "bloodmnist", difficulty);
            let report = probe_datasets(&source, &train, &test, &opts).unwrap();
            let majority = (0..8).map(|c| test.iter().filter(|i| i.label == Some(c)).count()).max().unwrap()
                as f64
                / test.len() as f64;
            accs.push((wilson(report.acc, test.len()), majority, report.acc));
        }
        let ((easy_lo, _), chance, easy) = accs[0];
        let ((_, hard_hi), _, hard) = accs[1];
        assert!(easy_lo > chance, "easy acc {easy} (95% low {easy_lo}) vs chance {chance}");
        assert!(easy_lo > hard_hi, "easy {easy} vs hard {hard}: intervals overlap");
    }

    #[test]
    fn features_are_computed_once_and_reused_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (train, _) = synthetic(&dir.path().join("data"), "pneumoniamnist", 0.2);
        let calls = Cell::new(0);
        let project = random_projection(28 * 28 * 3, 16);
        let source = FnFeatures::new("counting", |images: &[Image]| {
            calls.set(calls.get() + 1);
            project(images)
        });
        let cache = FeatureCache::new(dir.path().join("cache"));
        let (first, hit) = dataset_features(&source, &train, 100, Some(&cache), &Device::Cpu, None).unwrap();
        assert!(!hit);
        assert_eq!(calls.get(), 4, "400 images in batches of 100");
        let (second, hit) = dataset_features(&source, &train, 100, Some(&cache), &Device::Cpu, None).unwrap();
        assert!(hit);
        assert_eq!(calls.get(), 4, "the second call must not extract again");
        let diff = (first - second).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0);
        // A different subset of the same data is a different entry.
        let (sub, _) = train.split(0.5, 1).unwrap();
        let (_, hit) = dataset_features(&source, &sub, 100, Some(&cache), &Device::Cpu, None).unwrap();
        assert!(!hit);
    }

    #[test]
    fn mixed_flags_and_wrong_shapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = synthetic(&dir.path().join("a"), "pneumoniamnist", 0.2);
        let (b, _) = synthetic(&dir.path().join("b"), "breastmnist", 0.2);
        let source = FnFeatures::new("p", random_projection(28 * 28 * 3, 8));
        let err = probe_datasets(&source, &a.concat(&b), &a, &DatasetProbeOptions::default()).unwrap_err();
        assert!(err.to_string().contains("mixes flags pneumoniamnist, breastmnist"), "{err}");
        let short = FnFeatures::new("short", |_: &[Image]| {
            Ok(Tensor::zeros((1, 4), candle_core::DType::F32, &Device::Cpu)?)
        });
        let err = dataset_features(&short, &a, 10, None, &Device::Cpu, None).unwrap_err();
        assert!(err.to_string().contains("returned shape [1, 4] for 10 images"), "{err}");
    }
}
