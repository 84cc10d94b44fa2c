//! Deterministic weight initialisation for models trained from scratch.
//!
//! candle draws `VarMap` initial values from the device's generator, which cannot be seeded on the
//! CPU, so two baseline runs with the same seed would differ. This `VarBuilder` backend draws
//! every initial value from one ChaCha8 stream instead, in the order the model asks for its
//! weights, and records the variables in a `VarMap` for the optimiser.

use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct SeededBackend {
    vars: VarMap,
    rng: Mutex<ChaCha8Rng>,
}

/// A `VarBuilder` whose fresh variables are a pure function of `seed`, and the map that collects
/// them.
pub(crate) fn seeded_var_builder(seed: u64, device: &Device) -> (VarBuilder<'static>, VarMap) {
    let vars = VarMap::new();
    let backend = SeededBackend { vars: vars.clone(), rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)) };
    let backend: Box<dyn candle_nn::var_builder::SimpleBackend> = Box::new(backend);
    (VarBuilder::from_backend(backend, DType::F32, device.clone()), vars)
}

impl SeededBackend {
    fn draw(&self, shape: &Shape, init: Init) -> Vec<f32> {
        let n = shape.elem_count();
        let mut rng = self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut normal = |mean: f64, std: f64| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    // Box-Muller: two uniforms give one standard normal.
                    let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
                    (mean + std * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
                })
                .collect()
        };
        match init {
            Init::Const(v) => vec![v as f32; n],
            Init::Randn { mean, stdev } => normal(mean, stdev),
            Init::Uniform { lo, up } => {
                (0..n).map(|_| rng.random_range(lo..up.max(lo + f64::EPSILON)) as f32).collect()
            }
            Init::Kaiming { dist, fan, non_linearity } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    NormalOrUniform::Normal => normal(0.0, std),
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        (0..n).map(|_| rng.random_range(-bound..bound) as f32).collect()
                    }
                }
            }
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for SeededBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self.vars.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(var) = data.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "variable {name} exists with shape {:?}, asked for {shape:?}",
                    var.shape()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let values = Tensor::from_vec(self.draw(&shape, init), shape, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&values)?;
        data.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        let data = self.vars.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match data.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("no variable {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars.data().lock().map(|d| d.contains_key(name)).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_weights() {
        let weights = |seed| {
            let (vb, vars) = seeded_var_builder(seed, &Device::Cpu);
            let layer = candle_nn::linear(8, 4, vb.pp("fc")).unwrap();
            assert_eq!(vars.all_vars().len(), 2);
            let bias = layer.bias().unwrap().to_vec1::<f32>().unwrap();
            (layer.weight().flatten_all().unwrap().to_vec1::<f32>().unwrap(), bias)
        };
        assert_eq!(weights(3), weights(3));
        assert_ne!(weights(3), weights(4));
        let (_, bias) = weights(5);
        assert!(bias.iter().all(|v| v.abs() <= (1.0 / 8f32).sqrt()), "nn.Linear's uniform bias bound");
    }
}
