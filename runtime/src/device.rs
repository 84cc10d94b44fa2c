//! Device selection: `cpu`, `cuda`, `cuda:N` or `auto`.
//!
//! CUDA exists only in builds with the `cuda` feature; asking for it elsewhere is an error that
//! says how to get such a build, rather than a silent fall-back to the CPU.
//!
//! [`on_cpu_pool`] runs CPU-heavy work on rayon's pool instead of beside it.

use candle_core::Device;

use crate::error::{Error, Result};

/// Parse a device name as given to `--device` or a script's `device` option.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(auto_device()),
        "cuda" | "gpu" => cuda(0),
        other => match other.strip_prefix("cuda:") {
            Some(ordinal) => {
                let n = ordinal.parse::<usize>().map_err(|_| {
                    Error::msg(format!("device `{name}`: expected cuda:N with N a GPU index"))
                })?;
                cuda(n)
            }
            None => Err(Error::msg(format!("unknown device `{name}`: use cpu, cuda, cuda:N or auto"))),
        },
    }
}

/// CUDA when compiled in and a GPU answers, else the CPU.
pub fn auto_device() -> Device {
    if cfg!(feature = "cuda") {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
    }
    Device::Cpu
}

fn cuda(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Err(Error::msg(format!(
            "device cuda:{ordinal} requested, but this medbridge was built without CUDA; \
             rebuild with `cargo build --release --features cuda` (needs the CUDA toolkit)"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| Error::msg(format!("cannot open cuda:{ordinal}: {e}")))
}

/// The name a user would type for this device.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Run `work` on a worker of rayon's global pool and wait for it. The CPU kernels of a forward
/// pass, a backward pass or a sampling loop are many and small; each one started from outside
/// the pool wakes a worker and waits for it (two context switches), while from inside the pool
/// it runs in place or is shared with the other workers. On the tiny models this is a fifth of
/// a training step.
pub fn on_cpu_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("auto").is_ok());
        assert!(parse_device("tpu").unwrap_err().to_string().contains("unknown device"));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build() {
        let err = parse_device("cuda:1").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
