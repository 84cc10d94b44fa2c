//! Gradients between backward passes and the optimiser: accumulation over micro-batches, the sum
//! over MPI ranks, global-norm clipping (as `torch.nn.utils.clip_grad_norm_`) and the guard that
//! skips updates whose loss or gradient is not finite.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::dist::World;
use crate::error::Result;

/// Sums of f32 gradients over micro-batches, one per parameter (zeros where none flowed).
#[derive(Debug)]
pub struct GradAccumulator {
    sums: Vec<Tensor>,
}

impl GradAccumulator {
    pub fn new<'a>(vars: impl Iterator<Item = &'a Var>) -> Result<Self> {
        let sums =
            vars.map(|v| Ok(v.as_tensor().zeros_like()?.to_dtype(DType::F32)?)).collect::<Result<_>>()?;
        Ok(Self { sums })
    }

    /// Add `scale` times the gradients of `vars` (same order as at construction).
    pub fn add<'a>(
        &mut self,
        grads: &GradStore,
        vars: impl Iterator<Item = &'a Var>,
        scale: f64,
    ) -> Result<()> {
        for (sum, var) in self.sums.iter_mut().zip(vars) {
            if let Some(g) = grads.get(var.as_tensor()) {
                *sum = (&*sum + (g.to_dtype(DType::F32)? * scale)?)?;
            }
        }
        Ok(())
    }

    /// Replace each sum by its sum over the ranks of `world` (through host memory, as f32), so
    /// every rank holds the whole batch's gradient before clipping and the update.
    pub fn all_reduce(&mut self, world: &World) -> Result<()> {
        if !world.is_distributed() {
            return Ok(());
        }
        let mut flat = Vec::with_capacity(self.sums.iter().map(Tensor::elem_count).sum());
        for sum in &self.sums {
            flat.extend(sum.flatten_all()?.to_vec1::<f32>()?);
        }
        world.all_reduce_f32("the all-reduce of gradients", &mut flat)?;
        let mut at = 0;
        for sum in self.sums.iter_mut() {
            let n = sum.elem_count();
            *sum = Tensor::from_slice(&flat[at..at + n], sum.shape(), sum.device())?;
            at += n;
        }
        Ok(())
    }

    pub fn grads(&self) -> &[Tensor] {
        &self.sums
    }

    /// The accumulated gradients, clipped to `max_norm` when given, and their norm before clipping.
    pub fn finish(self, max_norm: Option<f64>) -> Result<(Vec<Tensor>, f64)> {
        let norm = global_norm(&self.sums)?;
        let grads = match max_norm {
            Some(max) if norm.is_finite() && norm > max => {
                let factor = max / (norm + 1e-6);
                self.sums.iter().map(|g| Ok((g * factor)?)).collect::<Result<_>>()?
            }
            _ => self.sums,
        };
        Ok((grads, norm))
    }
}

/// The L2 norm of all gradients taken together (NaN or inf when any entry is).
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut total = 0.0f64;
    for g in grads {
        total += g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

/// Skips updates with a non-finite loss or gradient norm, and fails after too many in a row,
/// since by then the run has diverged rather than hit one bad batch.
#[derive(Debug, Clone, Default)]
pub struct NonFiniteGuard {
    max_consecutive: usize,
    consecutive: usize,
    pub skipped: Vec<u64>,
}

impl NonFiniteGuard {
    pub fn new(max_consecutive: usize) -> Self {
        Self { max_consecutive, consecutive: 0, skipped: Vec::new() }
    }

    /// `Ok(true)` to apply the update of `step`, `Ok(false)` to skip it, an error to abort.
    pub fn admit(&mut self, step: u64, loss: f64, grad_norm: f64) -> Result<bool> {
        if loss.is_finite() && grad_norm.is_finite() {
            self.consecutive = 0;
            return Ok(true);
        }
        self.consecutive += 1;
        self.skipped.push(step);
        if self.consecutive > self.max_consecutive {
            crate::bail!(
                "step {step}: loss {loss} / grad norm {grad_norm} not finite for {} steps in a row \
                 (max_bad_steps = {}); lower the learning rate or check the data",
                self.consecutive,
                self.max_consecutive
            );
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn clipping_scales_to_the_global_norm() {
        let dev = &Device::Cpu;
        let a = Var::new(&[0.0f32, 0.0], dev).unwrap();
        let b = Var::new(&[0.0f32], dev).unwrap();
        let mut acc = GradAccumulator::new([&a, &b].into_iter()).unwrap();
        for _ in 0..2 {
            let loss =
                ((a.as_tensor() * &Tensor::new(&[3.0f32, 0.0], dev).unwrap()).unwrap().sum_all().unwrap()
                    + (b.as_tensor() * 4.0).unwrap().sum_all().unwrap())
                .unwrap();
            acc.add(&loss.backward().unwrap(), [&a, &b].into_iter(), 0.5).unwrap();
        }
        let (grads, norm) = acc.finish(Some(1.0)).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        assert!((global_norm(&grads).unwrap() - 1.0).abs() < 1e-5);
        assert!((grads[1].to_vec1::<f32>().unwrap()[0] - 0.8).abs() < 1e-5);
    }

    #[test]
    fn guard_skips_then_aborts() {
        let mut guard = NonFiniteGuard::new(2);
        assert!(guard.admit(0, 1.0, 1.0).unwrap());
        assert!(!guard.admit(1, f64::NAN, 1.0).unwrap());
        assert!(!guard.admit(2, 1.0, f64::INFINITY).unwrap());
        let err = guard.admit(3, f64::NAN, f64::NAN).unwrap_err().to_string();
        assert!(err.contains("max_bad_steps = 2"), "{err}");
        assert_eq!(guard.skipped, vec![1, 2, 3]);
    }
}
