//! AdamW with decoupled weight decay (Loshchilov & Hutter), as `torch.optim.AdamW` computes it.
//!
//! The optimiser keeps an f32 master copy of every parameter with its first and second
//! moments, so a bf16 base trained in full still accumulates small updates exactly; after each
//! step the master is written back to the `Var` in the `Var`'s own dtype. LoRA adapters are
//! already f32, where the master is simply a copy. The state is public through
//! [`AdamW::state_tensors`] / [`AdamW::load_state`] so checkpoints can resume bit-exactly.

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};

use crate::error::{Context, Result};

/// Hyper-parameters; the defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// One parameter's optimiser state.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    var: Var,
    master: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW over a fixed list of named `Var`s.
#[derive(Debug, Clone)]
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    /// Updates taken so far (the `t` of the bias corrections).
    steps: u64,
}

impl AdamW {
    pub fn new(params: &[(String, Var)], cfg: AdamWConfig) -> Result<Self> {
        if params.is_empty() {
            crate::bail!("the optimiser was given no trainable parameters");
        }
        let slots = params
            .iter()
            .map(|(name, var)| {
                let master = var.as_tensor().detach().to_dtype(DType::F32)?.copy()?;
                Ok(Slot {
                    name: name.clone(),
                    var: var.clone(),
                    exp_avg: master.zeros_like()?,
                    exp_avg_sq: master.zeros_like()?,
                    master,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { cfg, slots, steps: 0 })
    }

    pub fn config(&self) -> AdamWConfig {
        self.cfg
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The parameters in the order `step` expects their gradients.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.var))
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to the i-th parameter.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.slots.len() {
            crate::bail!("{} gradients for {} parameters", grads.len(), self.slots.len());
        }
        self.steps += 1;
        let t = self.steps as i32;
        let AdamWConfig { beta1, beta2, eps, weight_decay } = self.cfg;
        let bias1 = 1.0 - beta1.powi(t);
        let bias2 = 1.0 - beta2.powi(t);
        for (slot, g) in self.slots.iter_mut().zip(grads) {
            let g = g.to_dtype(DType::F32)?;
            // Decoupled decay shrinks the weight itself, before and apart from the Adam update.
            let decayed = (&slot.master * (1.0 - lr * weight_decay))?;
            slot.exp_avg = ((&slot.exp_avg * beta1)? + (&g * (1.0 - beta1))?)?;
            slot.exp_avg_sq = ((&slot.exp_avg_sq * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let denom = ((&slot.exp_avg_sq / bias2)?.sqrt()? + eps)?;
            let update = ((&slot.exp_avg / bias1)? / denom)?;
            slot.master = (decayed - (update * lr)?)?;
            slot.var.set(&slot.master.to_dtype(slot.var.dtype())?).with_context(|| slot.name.clone())?;
        }
        Ok(())
    }

    /// `{name}.master`, `{name}.exp_avg` and `{name}.exp_avg_sq` for every parameter.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("{}.master", s.name), s.master.clone()),
                    (format!("{}.exp_avg", s.name), s.exp_avg.clone()),
                    (format!("{}.exp_avg_sq", s.name), s.exp_avg_sq.clone()),
                ]
            })
            .collect()
    }

    /// Restore what [`AdamW::state_tensors`] gave (and the step count), writing the masters
    /// back into the parameters.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for slot in &mut self.slots {
            let (name, dims, device) =
                (&slot.name, slot.master.dims().to_vec(), slot.master.device().clone());
            let get = |suffix: &str| -> Result<Tensor> {
                let key = format!("{name}.{suffix}");
                let t = tensors.get(&key).with_context(|| format!("optimizer state has no tensor {key}"))?;
                if t.dims() != dims.as_slice() {
                    crate::bail!("optimizer state {key} has shape {:?}, expected {dims:?}", t.dims());
                }
                Ok(t.to_dtype(DType::F32)?.to_device(&device)?)
            };
            let (master, exp_avg, exp_avg_sq) = (get("master")?, get("exp_avg")?, get("exp_avg_sq")?);
            slot.master = master;
            slot.exp_avg = exp_avg;
            slot.exp_avg_sq = exp_avg_sq;
            slot.var.set(&slot.master.to_dtype(slot.var.dtype())?).with_context(|| slot.name.clone())?;
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(t: &Tensor) -> Vec<f32> {
        t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn two_hand_computed_steps(dev: &Device) {
        let var = Var::new(&[1.0f32, -2.0], dev).unwrap();
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1 };
        let mut opt = AdamW::new(&[("w".into(), var.clone())], cfg).unwrap();
        // Step 1, g = [0.5, -1]: m = 0.1 g, v = 0.01 g², m̂ = g, v̂ = g², so the update is sign(g).
        opt.step(&[Tensor::new(&[0.5f32, -1.0], dev).unwrap()], 0.1).unwrap();
        let p1: [f64; 2] = [1.0 * (1.0 - 0.01) - 0.1, -2.0 * (1.0 - 0.01) + 0.1];
        for (got, want) in values(var.as_tensor()).iter().zip(p1) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        // Step 2, g = [0.25, 1] at lr 0.05.
        let g2: [f64; 2] = [0.25, 1.0];
        opt.step(&[Tensor::new(&[0.25f32, 1.0], dev).unwrap()], 0.05).unwrap();
        let g1: [f64; 2] = [0.5, -1.0];
        for i in 0..2 {
            let m = 0.9 * 0.1 * g1[i] + 0.1 * g2[i];
            let v = 0.99 * 0.01 * g1[i] * g1[i] + 0.01 * g2[i] * g2[i];
            let (mh, vh) = (m / (1.0 - 0.81), v / (1.0 - 0.9801));
            let want = p1[i] * (1.0 - 0.05 * 0.1) - 0.05 * mh / (vh.sqrt() + 1e-8);
            let got = values(var.as_tensor())[i] as f64;
            assert!((got - want).abs() < 1e-6, "param {i}: {got} vs {want}");
        }
    }

    #[test]
    fn two_hand_computed_steps_cpu() {
        two_hand_computed_steps(&Device::Cpu);
    }

    #[test]
    fn bf16_parameters_keep_an_f32_master() {
        let dev = &Device::Cpu;
        let var =
            Var::from_tensor(&Tensor::new(&[1.0f32], dev).unwrap().to_dtype(DType::BF16).unwrap()).unwrap();
        let mut opt = AdamW::new(&[("w".into(), var.clone())], AdamWConfig::default()).unwrap();
        // Each step moves the weight by 1e-4, below bf16's resolution at 1.0 (2^-7).
        for _ in 0..100 {
            opt.step(&[Tensor::new(&[1.0f32], dev).unwrap().to_dtype(DType::BF16).unwrap()], 1e-4).unwrap();
        }
        let master = &opt.state_tensors()[0].1;
        assert!((values(master)[0] - 0.99).abs() < 1e-5);
        assert!((values(var.as_tensor())[0] - 0.99).abs() < 4e-3);
    }

    #[test]
    fn state_round_trips() {
        let dev = &Device::Cpu;
        let var = Var::new(&[0.3f32, 0.7], dev).unwrap();
        let mut a = AdamW::new(&[("w".into(), var.clone())], AdamWConfig::default()).unwrap();
        a.step(&[Tensor::new(&[0.1f32, -0.2], dev).unwrap()], 0.01).unwrap();
        let saved: HashMap<String, Tensor> = a.state_tensors().into_iter().collect();
        let other = Var::new(&[9.0f32, 9.0], dev).unwrap();
        let mut b = AdamW::new(&[("w".into(), other.clone())], AdamWConfig::default()).unwrap();
        b.load_state(&saved, a.steps()).unwrap();
        let g = Tensor::new(&[0.5f32, 0.5], dev).unwrap();
        a.step(std::slice::from_ref(&g), 0.01).unwrap();
        b.step(&[g], 0.01).unwrap();
        assert_eq!(values(var.as_tensor()), values(other.as_tensor()));
        assert!(b.load_state(&HashMap::new(), 0).unwrap_err().to_string().contains("w.master"));
    }
}
