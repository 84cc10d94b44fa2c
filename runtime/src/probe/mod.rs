//! Vision probing: how much a frozen vision tower's features say about MedMNIST labels, against
//! vision-only models trained from scratch.
//!
//! | file | job |
//! | --- | --- |
//! | `head.rs` | label targets, loss, input checks, top-5 and MedMNIST score columns shared by probes and baselines |
//! | `report.rs` | `ProbeReport`: ACC/AUC and method-specific extras, one type for every probe method |
//! | `method.rs` | `ProbeMethod`: logistic, bn_linear or knn, run on one set of extracted features |
//! | `logistic.rs` | `linear_probe`: logistic regression on `[N, D]` features, L2 chosen on a val split |
//! | `bn_linear.rs` | `bn_linear_probe`: the paper's `linprobe.py`, BatchNorm + linear, SGD with a cosine schedule |
//! | `knn.rs` | `knn_probe`: the paper's `knn.py`, cosine k-nearest neighbours, majority vote |
//! | `features.rs` | `FeatureSource`, dataset features (cached), `probe_inputs`, `probe_datasets` |
//! | `cache.rs` | the on-disk feature cache (`.safetensors` per source × dataset) |
//! | `baseline.rs` | `vision_baseline`: a classifier trained from scratch on the pixels |
//! | `nets.rs` | the baseline networks: `small_cnn` and MedMNIST's 28 px ResNet-18 |
//! | `vlm_features.rs` | a VLM's frozen vision tower as a feature source (merger or pre-merger mean) |
//! | `seeded_init.rs` | seeded weight initialisation (candle's CPU generator cannot be seeded) |
//! | `reference_fixture.rs` | (tests) the released probes' reference outputs, for the parity tests |

pub mod baseline;
pub mod bn_linear;
pub mod cache;
pub mod features;
mod head;
pub mod knn;
pub mod logistic;
pub mod method;
mod nets;
#[cfg(test)]
mod reference_fixture;
pub mod report;
mod seeded_init;
pub mod vlm_features;

pub use baseline::{vision_baseline, Arch, BaselineOptions, BaselineReport};
pub use bn_linear::{bn_linear_probe, BnLinearOptions};
pub use cache::{CacheKey, FeatureCache};
pub use features::{
    dataset_features, probe_datasets, probe_inputs, DatasetProbeOptions, FeatureSource, FnFeatures,
    ProbeInputs,
};
pub use knn::{knn_probe, KnnMetric, KnnOptions};
pub use logistic::{linear_probe, ProbeOptions};
pub use method::ProbeMethod;
pub use report::{L2Score, ProbeReport};
pub use vlm_features::{Pool, VlmFeatures};
