//! Where a module's tensors come from: a checkpoint on disk or a seeded random initialisation.
//!
//! Modules ask a [`Weights`] path builder for each tensor by its hub name (`vb.pp("q_proj")`
//! style), so the layer constructors double as the map of the checkpoint, and the same
//! constructor serves `load` and `new_random`.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::Result;

/// How a tensor is initialised when it is not read from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal with mean 0 and this standard deviation (transformers' `initializer_range`).
    Normal(f64),
    Ones,
    Zeros,
}

/// A provider of tensors by full (hub-layout) name.
pub trait WeightSource {
    fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor>;
}

/// A cursor into a [`WeightSource`] at a name prefix.
#[derive(Clone)]
pub struct Weights<'a> {
    source: &'a dyn WeightSource,
    prefix: String,
    dtype: DType,
    device: Device,
}

impl<'a> Weights<'a> {
    pub fn new(source: &'a dyn WeightSource, dtype: DType, device: &Device) -> Self {
        Self { source, prefix: String::new(), dtype, device: device.clone() }
    }

    /// The cursor one level down: `pp("layers").pp(0)` reads `layers.0.*`.
    pub fn pp(&self, name: impl ToString) -> Self {
        let mut next = self.clone();
        next.prefix = self.join(&name.to_string());
        next
    }

    fn join(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn get(&self, shape: &[usize], name: &str, init: Init) -> Result<Tensor> {
        self.source.tensor(&self.join(name), shape, init, self.dtype, &self.device)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// Seeded random initialisation. Each tensor draws from its own stream derived from the seed
/// and its name, so the result does not depend on construction order. On the CPU the streams
/// are ChaCha's; on a GPU the device's generator's (the same seed gives other values there).
pub struct RandomSource {
    seed: u64,
}

impl RandomSource {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }
}

/// FNV-1a: a stable, dependency-free hash of a tensor name.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl WeightSource for RandomSource {
    fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let t = match init {
            Init::Ones => Tensor::ones(shape, DType::F32, device)?,
            Init::Zeros => Tensor::zeros(shape, DType::F32, device)?,
            // On a GPU the device's own generator (cuRAND) draws the values, seeded per tensor
            // from the seed and the name: the 7B preset's 8.3 billion draws take a fraction of
            // a second there, where the host's streams take tens of seconds and a copy. The
            // values differ from the CPU's (another generator) and are as reproducible.
            Init::Normal(std) if !device.is_cpu() => {
                device.set_seed(self.seed ^ name_hash(name))?;
                Tensor::randn(0f32, std as f32, shape, device)?
            }
            Init::Normal(std) => {
                let n: usize = shape.iter().product();
                Tensor::from_vec(normal_values(self.seed ^ name_hash(name), n, std), shape, device)?
            }
        };
        Ok(t.to_dtype(dtype)?)
    }
}

/// Elements drawn from one ChaCha stream. A larger tensor draws its chunk `i` from stream `i`,
/// chunks in parallel, so the 7B preset initialises in seconds rather than minutes; a tensor of
/// at most one chunk (every tensor of the tiny preset) is stream 0 alone, as it always was.
const INIT_CHUNK: usize = 1 << 22;

/// `n` seeded normal(0, std) values.
fn normal_values(seed: u64, n: usize, std: f64) -> Vec<f32> {
    let mut values = vec![0f32; n];
    values.par_chunks_mut(INIT_CHUNK).enumerate().for_each(|(i, chunk)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        if i > 0 {
            rng.set_stream(i as u64);
        }
        for v in chunk {
            *v = (normal(&mut rng) * std) as f32;
        }
    });
    values
}

/// One standard normal draw (Box-Muller).
pub fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A parameter as a model walk presents it: a whole linear layer (named without `.weight`,
/// so LoRA can match module names) or a lone tensor (named in full, e.g. `model.norm.weight`).
pub enum Param<'a> {
    Linear(&'a mut super::lora::Linear),
    Tensor(&'a mut Tensor),
}

/// The callback of a model walk; it receives each parameter with its hub-layout name.
pub type Visitor<'v> = dyn FnMut(&str, Param<'_>) -> Result<()> + 'v;

/// `prefix.name`, or `name` at the root.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequential(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| (normal(&mut rng) * 0.02) as f32).collect()
    }

    /// Small tensors keep the single-stream values every committed tiny-preset result was made
    /// with; a large one starts with the same values and its later chunks are distinct streams.
    #[test]
    fn chunked_init_keeps_the_single_stream_values() {
        assert_eq!(normal_values(7, 1000, 0.02), sequential(7, 1000));
        let big = normal_values(7, INIT_CHUNK + 1000, 0.02);
        assert_eq!(big[..INIT_CHUNK], sequential(7, INIT_CHUNK)[..]);
        assert_ne!(big[INIT_CHUNK..], big[..1000]);
        let var = big.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / big.len() as f64;
        assert!((var.sqrt() - 0.02).abs() < 1e-4, "std {}", var.sqrt());
    }
}
