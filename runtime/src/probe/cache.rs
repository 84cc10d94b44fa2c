//! On-disk cache of probe features, so a probe over many L2 values, seeds or baselines extracts
//! each (model, dataset) pair once.
//!
//! A key names the feature source (weights hash and pooling, in `source_id`), the flags, split,
//! image size and item count, plus a fingerprint of the items (their flag, split and row, and a
//! strided sample of their pixels). The fingerprint keeps two different subsets of the same size,
//! or two synthetic files written with different seeds, from sharing an entry; sampling the pixels
//! keeps it cheap on 224 px datasets. Entries are `.safetensors` files holding one `features`
//! tensor, written to a temporary name and renamed, so an interrupted run leaves no half file.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use crate::data::dataset::Dataset;
use crate::error::{Context, Error, Result};

/// Every how many pixel bytes one is hashed into the fingerprint.
const PIXEL_STRIDE: usize = 61;

/// What a cached feature matrix was computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey {
    /// Identifies the weights and how features are taken from them (e.g. `<sha256>/merger-mean`).
    pub source_id: String,
    /// The flags of the items, joined by `+`.
    pub dataset: String,
    /// The splits of the items, joined by `+`.
    pub split: String,
    /// Width of the first image, in pixels.
    pub size: u32,
    pub count: usize,
    pub fingerprint: String,
}

impl CacheKey {
    pub fn for_dataset(source_id: &str, ds: &Dataset) -> CacheKey {
        let mut splits: Vec<&str> = ds.iter().map(|i| i.split.as_str()).collect();
        splits.dedup();
        splits.sort_unstable();
        splits.dedup();
        let mut hash = Sha256::new();
        for item in ds.iter() {
            hash.update(item.flag.as_bytes());
            hash.update(item.split.as_str().as_bytes());
            hash.update((item.index as u64).to_le_bytes());
            hash.update([item.image.width(), item.image.height()].map(u32::to_le_bytes).concat());
            hash.update(item.image.pixels().iter().step_by(PIXEL_STRIDE).copied().collect::<Vec<u8>>());
        }
        CacheKey {
            source_id: source_id.to_string(),
            dataset: ds.flags().join("+"),
            split: splits.join("+"),
            size: ds.get(0).map_or(0, |i| i.image.width()),
            count: ds.len(),
            fingerprint: hex(&hash.finalize()[..16]),
        }
    }

    /// The file name: readable fields first, then a hash of every field.
    pub fn file_name(&self) -> String {
        let mut hash = Sha256::new();
        for field in [&self.source_id, &self.dataset, &self.split, &self.fingerprint] {
            hash.update((field.len() as u64).to_le_bytes());
            hash.update(field.as_bytes());
        }
        hash.update(self.size.to_le_bytes());
        hash.update((self.count as u64).to_le_bytes());
        let readable: String = format!("{}-{}-{}px-{}", self.dataset, self.split, self.size, self.count)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "+-_".contains(c) { c } else { '_' })
            .take(80)
            .collect();
        format!("{readable}-{}.safetensors", hex(&hash.finalize()[..8]))
    }
}

/// A directory of cached feature matrices.
#[derive(Clone, Debug)]
pub struct FeatureCache {
    dir: PathBuf,
}

impl FeatureCache {
    pub fn new(dir: impl Into<PathBuf>) -> FeatureCache {
        FeatureCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(key.file_name())
    }

    /// The cached features for `key` (moved to `device`), or `compute()`'s result, stored first.
    /// The flag is true on a cache hit.
    pub fn get_or_compute(
        &self,
        key: &CacheKey,
        device: &Device,
        compute: impl FnOnce() -> Result<Tensor>,
    ) -> Result<(Tensor, bool)> {
        let path = self.path(key);
        if path.is_file() {
            let mut tensors = candle_core::safetensors::load(&path, device)
                .with_context(|| format!("reading cached features {}", path.display()))?;
            let features = tensors.remove("features").with_context(|| {
                format!("cached features {} hold no `features` tensor; delete the file", path.display())
            })?;
            if features.dim(0)? == key.count {
                return Ok((features, true));
            }
        }
        let features = compute()?;
        if features.rank() != 2 || features.dim(0)? != key.count {
            crate::bail!(
                "feature source {} returned shape {:?} for {} images, expected [{}, D]",
                key.source_id,
                features.dims(),
                key.count,
                key.count
            );
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let partial = path.with_extension("partial");
        features
            .save_safetensors("features", &partial)
            .with_context(|| format!("writing cached features {}", partial.display()))?;
        std::fs::rename(&partial, &path).map_err(|e| Error::io(&path, e))?;
        Ok((features, false))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
