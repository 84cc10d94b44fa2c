//! What every probe method reports, so a script can put a logistic probe, the released
//! BatchNorm + linear probe and the kNN probe side by side: MedMNIST's ACC and AUC first, then
//! what only some methods have.

use crate::data::medmnist_info::TaskType;

/// Validation result of one L2 value (logistic probe only).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct L2Score {
    pub l2: f64,
    pub val_loss: f64,
    pub val_acc: f64,
}

/// What a probe reports.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeReport {
    /// `"logistic"`, `"bn_linear"` or `"knn"`.
    pub method: &'static str,
    pub task: TaskType,
    /// Test ACC and AUC as MedMNIST's evaluator computes them.
    pub acc: f64,
    pub auc: f64,
    /// Top-5 test accuracy as the released scripts count it; `None` unless the task is
    /// single-label with more than 5 classes (with 5 or fewer it is always 1, and `linprobe.py`'s
    /// `topk(5)` fails below 5).
    pub top5: Option<f64>,
    /// The L2 strength (logistic) or SGD weight decay (bn_linear) used; 0 for kNN.
    pub l2_chosen: f64,
    /// One entry per L2 tried by the logistic probe (empty otherwise).
    pub val_scores: Vec<L2Score>,
    /// Mean training loss per epoch, as `linprobe.py` prints it (bn_linear only; empty otherwise).
    pub train_loss: Vec<f64>,
    pub n_train: usize,
    pub n_test: usize,
    pub dim: usize,
    /// Each test item's share of ACC, in test order (`data::medmnist_hits`): what a paired
    /// comparison of two probes on the same test items resamples.
    pub hits: Vec<f64>,
}
