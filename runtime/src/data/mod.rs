//! Datasets: the MedMNIST facts table, the `.npz` loader, synthetic MedMNIST files, the `Dataset`
//! type with its subset operations, and MedMNIST's official ACC/AUC evaluator.
//!
//! | file | job |
//! | --- | --- |
//! | `medmnist_info.rs` | the twelve 2D flags: labels, task types, sizes, modalities |
//! | `published_results.rs` | published test ACC/AUC (MedMNIST v2 Table 3, MedViT V2), each row with its source |
//! | `npz.rs` | streaming `.npz`/`.npy` reader and writer (integer arrays only) |
//! | `dataset.rs` | `Dataset`/`Item`, balanced samples, splits, filters, concatenation |
//! | `dataset_stratify.rs` | the stratified sampler behind every `balanced` (datasets and tasks) |
//! | `medmnist.rs` | loads the official files from `MEDMNIST_ROOT`, downloading them on request |
//! | `medmnist_md5.rs` | the 48 official MD5s of the 2D files, from the `medmnist` package's `info.py` |
//! | `synth.rs`, `synth_draw.rs` | writes synthetic files in the official format |
//! | `medmnist_eval.rs` | ACC and AUC exactly as `medmnist/evaluator.py` computes them |
//! | `vqa/` | medical VQA benchmarks in their published layouts, read into `McqTask`s |

pub mod dataset;
pub mod dataset_stratify;
pub mod medmnist;
pub mod medmnist_eval;
pub mod medmnist_info;
pub mod medmnist_md5;
pub mod npz;
pub mod published_results;
pub mod synth;
pub mod synth_draw;
pub mod vqa;

pub use dataset::{BalanceBy, Dataset, Item, Split};
pub use dataset_stratify::{stratified_sample, StratifiedSample, Stratum};
pub use medmnist::{load_medmnist, medmnist_file_name, medmnist_root, MedmnistOptions};
pub use medmnist_eval::{
    medmnist_acc, medmnist_auc, medmnist_evaluate, medmnist_hits, roc_auc, MedmnistScore,
};
pub use medmnist_info::{flag_info, FlagInfo, Modality, ModalityTable, TaskType, MEDMNIST_2D};
pub use published_results::{published_result, published_results, PublishedResult};
pub use synth::{synth_medmnist, SynthOptions};
pub use vqa::{load_vqa, VqaKind, VqaOptions};
