//! The released probes' reference outputs (`tests/fixtures/medbridgerl/probe_reference.json`,
//! written by `make_probe_reference.py` beside it), loaded for the parity tests.

use candle_core::{Device, Shape, Tensor};
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct Reference {
    pub classes: usize,
    pub dim: usize,
    pub train: Split,
    pub test: Split,
    pub bn_linear: BnLinear,
    pub knn: Vec<Knn>,
    pub knn_released_view: KnnReleasedView,
}

#[derive(Deserialize)]
pub(crate) struct Split {
    pub x: Vec<f64>,
    pub y: Vec<i64>,
}

impl Split {
    pub(crate) fn features(&self, dim: usize, dev: &Device) -> Tensor {
        tensor(&self.x, (self.y.len(), dim), dev)
    }

    pub(crate) fn label_rows(&self) -> Vec<Vec<i64>> {
        self.y.iter().map(|&l| vec![l]).collect()
    }
}

#[derive(Deserialize)]
pub(crate) struct BnLinear {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub bn_eps: f64,
    pub bn_momentum: f64,
    pub init_weight: Vec<f64>,
    pub init_bias: Vec<f64>,
    pub orders: Vec<Vec<usize>>,
    pub lrs: Vec<f64>,
    pub epoch_loss: Vec<f64>,
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
    pub running_mean: Vec<f64>,
    pub running_var: Vec<f64>,
    pub test_logits: Vec<f64>,
    pub top1: f64,
    pub top5: f64,
}

#[derive(Deserialize)]
pub(crate) struct Knn {
    pub k: usize,
    pub pred: Vec<usize>,
    pub top5_hit: Vec<bool>,
    pub top1: f64,
    pub top5: f64,
}

#[derive(Deserialize)]
pub(crate) struct KnnReleasedView {
    #[serde(flatten)]
    pub knn: Knn,
    pub folded_test_x: Vec<f64>,
}

pub(crate) fn load() -> Reference {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/medbridgerl/probe_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An f32 tensor of the fixture's values.
pub(crate) fn tensor(values: &[f64], shape: impl Into<Shape>, dev: &Device) -> Tensor {
    let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_vec(values, shape, dev).unwrap()
}
