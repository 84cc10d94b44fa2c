//! Vision probing: how much a frozen vision tower's features say about MedMNIST labels, against
//! vision-only models trained from scratch.
//!
//! | file | job |
//! | --- | --- |
//! | `head.rs` | label targets, loss, input checks, top-5 and MedMNIST score columns shared by probes and baselines |
//! | `report.rs` | `ProbeReport`: ACC/AUC and method-specific extras, one type for every probe method |
//! | `logistic.rs` | `linear_probe`: logistic regression on `[N, D]` features, L2 chosen on a val split |
//! | `features.rs` | `FeatureSource`, dataset features (cached), `probe_datasets` |
//! | `cache.rs` | the on-disk feature cache (`.safetensors` per source × dataset) |
//! | `baseline.rs` | `vision_baseline`: a classifier trained from scratch on the pixels |
//! | `nets.rs` | the baseline networks: `small_cnn` and MedMNIST's 28 px ResNet-18 |
//! | `vlm_features.rs` | a VLM's frozen vision tower as a feature source (merger or pre-merger mean) |
//! | `seeded_init.rs` | seeded weight initialisation (candle's CPU generator cannot be seeded) |

pub mod baseline;
pub mod cache;
pub mod features;
mod head;
pub mod logistic;
mod nets;
pub mod report;
mod seeded_init;
pub mod vlm_features;

pub use baseline::{vision_baseline, Arch, BaselineOptions, BaselineReport};
pub use cache::{CacheKey, FeatureCache};
pub use features::{dataset_features, probe_datasets, DatasetProbeOptions, FeatureSource, FnFeatures};
pub use logistic::{linear_probe, ProbeOptions};
pub use report::{L2Score, ProbeReport};
pub use vlm_features::{Pool, VlmFeatures};
