//! Linear layers that can carry LoRA adapters, and the LoRA configuration.
//!
//! An adapter adds `scale * B(A(dropout(x)))` to a frozen `W x + b`, with `A: rank×in`,
//! `B: out×rank` and `scale = alpha / rank`, as PEFT does. Adapters are f32 [`Var`]s (master
//! weights, even over a bf16 base) and all adapters of one model share a [`LoraState`], which
//! switches them off for a reference forward pass and turns dropout on for training.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::weights::{normal, Init, Weights};
use crate::error::{Error, Result};

/// transformers' `initializer_range` for Qwen2.5-VL.
pub const INIT_STD: f64 = 0.02;

/// How fresh adapters are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraInit {
    /// PEFT's default: A Kaiming-uniform (a = sqrt(5)), B zero, so the model starts unchanged.
    Peft,
    /// Both A and B random, so adapters change the output from the first step (for tests).
    Random,
}

/// Which modules get adapters, and their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Module-name suffixes, as PEFT's `target_modules` (`q_proj` matches `*.q_proj`).
    pub targets: Vec<String>,
    pub dropout: f64,
    pub init: LoraInit,
    pub seed: u64,
    /// Also adapt vision-tower modules whose names match; off by default because the vision
    /// MLP reuses the names `gate_proj`, `up_proj` and `down_proj`.
    pub vision: bool,
}

impl LoraConfig {
    /// The seven projections of every decoder layer.
    pub const ALL_LM_PROJECTIONS: [&'static str; 7] =
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    pub fn new(rank: usize, alpha: f64) -> Self {
        Self {
            rank,
            alpha,
            targets: Self::ALL_LM_PROJECTIONS.iter().map(|s| s.to_string()).collect(),
            dropout: 0.0,
            init: LoraInit::Peft,
            seed: 0,
            vision: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            crate::bail!("lora rank must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            crate::bail!("lora dropout {} must be in [0, 1)", self.dropout);
        }
        if self.targets.is_empty() {
            crate::bail!("lora targets are empty: name modules such as q_proj, v_proj");
        }
        Ok(())
    }

    /// Whether the module called `name` (hub layout, e.g. `model.layers.0.mlp.up_proj`) is a target.
    pub fn matches(&self, name: &str) -> bool {
        if name.starts_with("visual.") && !self.vision {
            return false;
        }
        self.targets.iter().any(|t| name == t || name.ends_with(&format!(".{t}")))
    }
}

/// Switches shared by every adapter of one model.
#[derive(Debug)]
pub struct LoraState {
    enabled: AtomicBool,
    training: AtomicBool,
    dropout_rng: Mutex<ChaCha8Rng>,
}

impl LoraState {
    pub fn new(seed: u64) -> Self {
        Self {
            enabled: AtomicBool::new(true),
            training: AtomicBool::new(false),
            dropout_rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed)
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Dropout is applied only while training.
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed)
    }

    /// The dropout generator's state, to replay the same masks when a layer is recomputed.
    pub(crate) fn dropout_state(&self) -> Result<ChaCha8Rng> {
        Ok(self.dropout_rng.lock().map_err(|_| Error::msg("lora dropout generator poisoned"))?.clone())
    }

    pub(crate) fn set_dropout_state(&self, state: ChaCha8Rng) -> Result<()> {
        *self.dropout_rng.lock().map_err(|_| Error::msg("lora dropout generator poisoned"))? = state;
        Ok(())
    }

    pub(crate) fn dropout_mask(&self, x: &Tensor, p: f64) -> Result<Option<Tensor>> {
        if p == 0.0 || !self.training.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut rng = self.dropout_rng.lock().map_err(|_| Error::msg("lora dropout generator poisoned"))?;
        let keep = (1.0 / (1.0 - p)) as f32;
        let values: Vec<f32> =
            (0..x.elem_count()).map(|_| if rng.random::<f64>() < p { 0.0 } else { keep }).collect();
        Ok(Some(Tensor::from_vec(values, x.shape(), x.device())?.to_dtype(x.dtype())?))
    }
}

/// One adapter pair.
#[derive(Debug)]
pub struct LoraAdapter {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    pub dropout: f64,
    state: Arc<LoraState>,
}

impl LoraAdapter {
    /// Whether the adapter takes part in the forward pass (off for a reference pass).
    pub fn enabled(&self) -> bool {
        self.state.enabled()
    }

    /// The dropout multiplier for input `x` (`None` when not training or `dropout` is 0).
    pub(crate) fn dropout_mask(&self, x: &Tensor) -> Result<Option<Tensor>> {
        self.state.dropout_mask(x, self.dropout)
    }
}

/// `y = x Wᵀ + b`, plus an optional LoRA update.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
    pub(crate) lora: Option<Arc<LoraAdapter>>,
}

impl Linear {
    /// Read `weight` (`[out, in]`) and, if `bias`, `bias` (`[out]`) under `w`.
    pub fn new(w: &Weights, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&[out_dim, in_dim], "weight", Init::Normal(INIT_STD))?;
        let bias = if bias { Some(w.get(&[out_dim], "bias", Init::Zeros)?) } else { None };
        Ok(Self { weight, bias, lora: None })
    }

    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn adapter(&self) -> Option<&LoraAdapter> {
        self.lora.as_deref()
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = x.reshape((rows, in_dim))?;
        let mut y = x2.matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(lora) = &self.lora {
            if lora.enabled() {
                let mut xl = x2.to_dtype(lora.a.dtype())?;
                if let Some(mask) = lora.dropout_mask(&xl)? {
                    xl = (xl * mask)?;
                }
                let delta =
                    (xl.matmul(&lora.a.as_tensor().t()?)?.matmul(&lora.b.as_tensor().t()?)? * lora.scale)?;
                let delta = delta.to_dtype(y.dtype())?;
                y = (y + delta)?;
            }
        }
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = self.out_dim();
        }
        Ok(y.reshape(out_dims)?)
    }

    /// A copy of this layer with a fresh adapter; `name` seeds its initialisation.
    pub fn with_adapter(&self, name: &str, cfg: &LoraConfig, state: &Arc<LoraState>) -> Result<Self> {
        let (rank, in_dim, out_dim) = (cfg.rank, self.in_dim(), self.out_dim());
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ name_seed(name));
        // Kaiming-uniform with a = sqrt(5) on a [rank, in] matrix has bound 1/sqrt(in).
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a: Vec<f32> = (0..rank * in_dim).map(|_| rng.random_range(-bound..bound) as f32).collect();
        let b: Vec<f32> = match cfg.init {
            LoraInit::Peft => vec![0.0; out_dim * rank],
            LoraInit::Random => {
                (0..out_dim * rank).map(|_| (normal(&mut rng) * INIT_STD * 10.0) as f32).collect()
            }
        };
        let device = self.weight.device();
        let dtype = adapter_dtype(self.weight.dtype());
        let adapter = LoraAdapter {
            a: Var::from_tensor(&Tensor::from_vec(a, (rank, in_dim), device)?.to_dtype(dtype)?)?,
            b: Var::from_tensor(&Tensor::from_vec(b, (out_dim, rank), device)?.to_dtype(dtype)?)?,
            scale: cfg.alpha / rank as f64,
            dropout: cfg.dropout,
            state: state.clone(),
        };
        Ok(Self { weight: self.weight.clone(), bias: self.bias.clone(), lora: Some(Arc::new(adapter)) })
    }

    /// This layer with its adapter folded into the weight: `W + scale * B A`.
    pub fn merged(&self) -> Result<Self> {
        let weight = match &self.lora {
            None => self.weight.clone(),
            Some(l) => {
                let delta = (l.b.as_tensor().matmul(l.a.as_tensor())? * l.scale)?;
                (self.weight.to_dtype(delta.dtype())? + delta)?.to_dtype(self.weight.dtype())?
            }
        };
        Ok(Self { weight, bias: self.bias.clone(), lora: None })
    }
}

/// Adapters are f32 master weights, or f64 over an f64 base (used for exact gradient checks).
fn adapter_dtype(base: DType) -> DType {
    if base == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn layer(dev: &Device) -> Linear {
        let w = Tensor::arange(0f32, 12.0, dev).unwrap().reshape((3, 4)).unwrap();
        let b = Tensor::new(&[1f32, 2.0, 3.0], dev).unwrap();
        Linear { weight: (w / 10.0).unwrap(), bias: Some(b), lora: None }
    }

    #[test]
    fn targets_match_suffixes_and_skip_vision_unless_asked() {
        let mut cfg = LoraConfig::new(4, 8.0);
        assert!(cfg.matches("model.layers.0.mlp.up_proj"));
        assert!(cfg.matches("model.layers.3.self_attn.q_proj"));
        assert!(!cfg.matches("model.layers.3.self_attn.q_proj_extra"));
        assert!(!cfg.matches("visual.blocks.0.mlp.up_proj"));
        cfg.vision = true;
        assert!(cfg.matches("visual.blocks.0.mlp.up_proj"));
    }

    fn peft_init_leaves_output_unchanged_and_merge_is_exact(dev: &Device) {
        let base = layer(dev);
        let x = Tensor::new(&[[0.5f32, -1.0, 2.0, 0.25]], dev).unwrap();
        let state = Arc::new(LoraState::new(0));
        let peft = base.with_adapter("m.q_proj", &LoraConfig::new(2, 4.0), &state).unwrap();
        assert_eq!(
            peft.forward(&x).unwrap().to_vec2::<f32>().unwrap(),
            base.forward(&x).unwrap().to_vec2::<f32>().unwrap()
        );

        let cfg = LoraConfig { init: LoraInit::Random, ..LoraConfig::new(2, 4.0) };
        let adapted = base.with_adapter("m.q_proj", &cfg, &state).unwrap();
        let with = adapted.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_ne!(with, base.forward(&x).unwrap().to_vec2::<f32>().unwrap());
        let merged = adapted.merged().unwrap().forward(&x).unwrap().to_vec2::<f32>().unwrap();
        for (a, b) in with[0].iter().zip(&merged[0]) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        state.set_enabled(false);
        assert_eq!(
            adapted.forward(&x).unwrap().to_vec2::<f32>().unwrap(),
            base.forward(&x).unwrap().to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn peft_init_leaves_output_unchanged_and_merge_is_exact_cpu() {
        peft_init_leaves_output_unchanged_and_merge_is_exact(&Device::Cpu);
    }
}
