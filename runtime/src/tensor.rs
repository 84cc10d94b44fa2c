//! Tensor helpers shared by every primitive: construction from flat data, seeded normal draws,
//! `.npy` / `.safetensors` files with the path in every error, and a readable one-screen summary.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Context, Result};

/// Refuse a row of logits holding NaN or +inf: decoding from it would pick a token by accident
/// and hand back text. `what` names the caller and `at` the place, e.g. `new token 3`.
pub fn check_logits_finite(values: &[f32], what: &str, at: impl FnOnce() -> String) -> Result<()> {
    let bad = if values.iter().any(|x| x.is_nan()) {
        "NaN"
    } else if values.contains(&f32::INFINITY) {
        "+inf"
    } else {
        return Ok(());
    };
    crate::bail!(
        "{what}: the model's logits are not finite at {} ({bad}); check the weights, the LoRA alpha or the dtype",
        at()
    )
}

/// The first index of the largest logit: greedy decoding's choice, the same for the model's own
/// `generate` and the sampler.
pub fn first_argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Build an f32 tensor from row-major values; `values.len()` must equal the shape's element count.
pub fn from_values(values: Vec<f64>, shape: &[usize], device: &Device) -> Result<Tensor> {
    let expected: usize = shape.iter().product();
    if values.len() != expected {
        crate::bail!("{} values cannot fill shape {shape:?} ({expected} elements)", values.len());
    }
    let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// Standard-normal f32 draws that depend only on `seed` and the shape, on every platform.
///
/// candle's own `randn` draws from an unseedable thread RNG on the CPU, so reproducibility needs
/// our own stream (ChaCha8 + Box–Muller).
pub fn randn(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        values.push((radius * angle.cos()) as f32);
        values.push((radius * angle.sin()) as f32);
    }
    values.truncate(n);
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// Read a `.npy` file.
pub fn load_npy(path: &Path, device: &Device) -> Result<Tensor> {
    let t = Tensor::read_npy(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(t.to_device(device)?)
}

/// Write a `.npy` file.
pub fn save_npy(tensor: &Tensor, path: &Path) -> Result<()> {
    tensor.write_npy(path).with_context(|| format!("writing {}", path.display()))
}

/// Read every tensor of a `.safetensors` file, by name.
pub fn load_safetensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let map = candle_core::safetensors::load(path, device)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(map.into_iter().collect())
}

/// Flatten to f64 values in row-major order, whatever the dtype and device.
pub fn to_f64_vec(tensor: &Tensor) -> Result<Vec<f64>> {
    Ok(tensor.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Numbers shown by [`summary`] before eliding.
const SHOWN: usize = 8;

/// `Tensor[2, 3] f32 cpu [0.1, 0.2, …]`: shape, dtype, device and the first values.
pub fn summary(tensor: &Tensor) -> String {
    let dims = tensor.dims().iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
    let head = tensor
        .flatten_all()
        .and_then(|t| t.narrow(0, 0, t.elem_count().min(SHOWN)))
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>());
    let values = match head {
        Ok(v) => {
            let mut shown: Vec<String> = v.iter().map(|x| format_number(*x)).collect();
            if tensor.elem_count() > SHOWN {
                shown.push("…".into());
            }
            shown.join(", ")
        }
        Err(e) => format!("<unreadable: {e}>"),
    };
    format!(
        "Tensor[{dims}] {} {} [{values}]",
        tensor.dtype().as_str(),
        crate::device::device_name(tensor.device())
    )
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn randn_is_reproducible_and_standard() {
        let a = to_f64_vec(&randn(&[4000], 7, &Device::Cpu).unwrap()).unwrap();
        let b = to_f64_vec(&randn(&[4000], 7, &Device::Cpu).unwrap()).unwrap();
        assert_eq!(a, b);
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.06 && (var - 1.0).abs() < 0.08, "mean {mean} var {var}");
        assert_ne!(a, to_f64_vec(&randn(&[4000], 8, &Device::Cpu).unwrap()).unwrap());
    }

    #[test]
    fn npy_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let t = from_values(vec![1.0, 2.5, -3.0, 4.0], &[2, 2], &Device::Cpu).unwrap();
        save_npy(&t, &path).unwrap();
        assert_eq!(to_f64_vec(&load_npy(&path, &Device::Cpu).unwrap()).unwrap(), vec![1.0, 2.5, -3.0, 4.0]);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load_npy(Path::new("/nonexistent/x.npy"), &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/x.npy"), "{err}");
    }

    #[test]
    fn summary_shows_shape_dtype_and_head() {
        let t = from_values((0..10).map(f64::from).collect(), &[2, 5], &Device::Cpu).unwrap();
        assert_eq!(summary(&t), "Tensor[2, 5] f32 cpu [0, 1, 2, 3, 4, 5, 6, 7, …]");
    }
}
