//! Device selection: `cpu`, `cuda`, `cuda:N` or `auto`.
//!
//! CUDA exists only in builds with the `cuda` feature; asking for it elsewhere is an error that
//! says how to get such a build, rather than a silent fall-back to the CPU. A GPU index the
//! driver does not have, bf16 on a GPU without bf16 arithmetic, and the driver's own failures
//! (out of memory, no driver, kernels built for another GPU: [`explain_cuda_error`]) are errors
//! naming the cause and what to do. The messages are pure functions of what the driver reports,
//! so the CPU tests check them; the code that asks the driver is compiled by CI's CUDA clippy.
//!
//! [`on_cpu_pool`] runs CPU-heavy work on rayon's pool instead of beside it.

use candle_core::{DType, Device};

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
    Device::new_cuda(ordinal).map_err(|e| open_error(ordinal, &e.to_string(), gpu_count()))
}

/// How many GPUs the driver sees, when it can say.
#[cfg(feature = "cuda")]
fn gpu_count() -> Option<usize> {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    CudaContext::device_count().ok().and_then(|n| usize::try_from(n).ok())
}

#[cfg(not(feature = "cuda"))]
fn gpu_count() -> Option<usize> {
    None
}

/// Why `cuda:ordinal` did not open, from the driver's message `cause` and the GPUs it sees.
pub fn open_error(ordinal: usize, cause: &str, gpus: Option<usize>) -> Error {
    let cause = cause.lines().next().unwrap_or_default().trim();
    match gpus {
        Some(0) => Error::msg(format!(
            "device cuda:{ordinal}: the NVIDIA driver sees no GPU (check `nvidia-smi` and \
             CUDA_VISIBLE_DEVICES), or run with --device cpu"
        )),
        Some(n) if ordinal >= n => Error::msg(format!(
            "device cuda:{ordinal} does not exist: the driver sees {n} GPU{} (cuda:0 to cuda:{}; \
             CUDA_VISIBLE_DEVICES renumbers them from 0); pick one of those",
            if n == 1 { "" } else { "s" },
            n - 1
        )),
        _ => match explain_cuda_error(cause) {
            Some(hint) => Error::msg(format!("cannot open cuda:{ordinal}: {hint} ({cause})")),
            None => Error::msg(format!("cannot open cuda:{ordinal}: {cause}")),
        },
    }
}

/// What to do about a CUDA driver failure, for a message (cudarc's, inside candle's) naming its
/// error code; `None` when it names none of these.
pub fn explain_cuda_error(message: &str) -> Option<&'static str> {
    const HINTS: &[(&[&str], &str)] = &[
        (
            &["CUDA_ERROR_OUT_OF_MEMORY"],
            "the GPU ran out of memory: lower the batch, group, completion or max_new_tokens, keep \
             checkpointing on and use dtype bf16, or take a GPU with more memory; \
             memory_plan(...) shows a training step's bytes by part before it runs",
        ),
        (
            &["CUDA_ERROR_STUB_LIBRARY"],
            "libcuda.so.1 is NVIDIA's link stub, not a driver: run on a machine with the NVIDIA \
             driver and put its library folder before the stub's on LD_LIBRARY_PATH",
        ),
        (
            &["CUDA_ERROR_NO_DEVICE"],
            "the NVIDIA driver sees no GPU (check `nvidia-smi` and CUDA_VISIBLE_DEVICES), or run \
             with --device cpu",
        ),
        (
            &["CUDA_ERROR_INVALID_DEVICE"],
            "no GPU has that index (CUDA_VISIBLE_DEVICES renumbers them from 0)",
        ),
        (
            &["CUDA_ERROR_INSUFFICIENT_DRIVER", "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE"],
            "the NVIDIA driver is older than the CUDA this medbridge was built with: update the \
             driver, or build with a toolkit no newer than `nvidia-smi` reports",
        ),
        (
            &["CUDA_ERROR_NO_BINARY_FOR_GPU", "CUDA_ERROR_INVALID_PTX", "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"],
            "candle's kernels were built for another GPU or by a newer nvcc than the driver \
             knows: rebuild with CUDA_COMPUTE_CAP set to this GPU's (`nvidia-smi \
             --query-gpu=compute_cap --format=csv`) and a toolkit no newer than the driver",
        ),
    ];
    HINTS.iter().find(|(codes, _)| codes.iter().any(|c| message.contains(c))).map(|(_, hint)| *hint)
}

/// Refuse `dtype` where the device cannot compute in it: bf16 needs a GPU of compute
/// capability 8.0 or newer (Ampere). The CPU computes every dtype.
pub fn check_dtype(device: &Device, dtype: DType) -> Result<()> {
    match compute_capability(device) {
        Some(cc) => match bf16_unsupported(&device_name(device), cc, dtype) {
            Some(e) => Err(e),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// The error for `dtype` on a GPU of compute capability `(major, minor)`, if it has no bf16.
pub fn bf16_unsupported(device: &str, (major, minor): (i32, i32), dtype: DType) -> Option<Error> {
    (dtype == DType::BF16 && major < 8).then(|| {
        Error::msg(format!(
            "dtype bf16 on {device}: this GPU (compute capability {major}.{minor}) has no bf16 \
             arithmetic, which needs 8.0 or newer (A100, H100, L4, RTX 30xx); use dtype \"f32\" \
             (or \"f16\") on it"
        ))
    })
}

#[cfg(feature = "cuda")]
fn compute_capability(device: &Device) -> Option<(i32, i32)> {
    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute as Attr;
    let Device::Cuda(gpu) = device else { return None };
    let stream = gpu.cuda_stream();
    let context = stream.context();
    let major = context.attribute(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).ok()?;
    let minor = context.attribute(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).ok()?;
    Some((major, minor))
}

#[cfg(not(feature = "cuda"))]
fn compute_capability(_device: &Device) -> Option<(i32, i32)> {
    None
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

    #[test]
    fn a_missing_gpu_index_names_the_ones_there() {
        let cause = "DriverError(CUDA_ERROR_INVALID_DEVICE, \"invalid device ordinal\")";
        let err = open_error(3, cause, Some(1)).to_string();
        assert!(err.contains("cuda:3 does not exist") && err.contains("1 GPU (cuda:0 to cuda:0"), "{err}");
        let err = open_error(0, cause, Some(0)).to_string();
        assert!(err.contains("sees no GPU") && err.contains("--device cpu"), "{err}");
        // When the driver cannot count, the code's hint still says what went wrong.
        let err = open_error(3, cause, None).to_string();
        assert!(err.contains("no GPU has that index") && err.contains("CUDA_ERROR_INVALID_DEVICE"), "{err}");
    }

    #[test]
    fn driver_failures_say_what_to_do() {
        let cases = [
            ("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")", "memory_plan"),
            (
                "DriverError(CUDA_ERROR_STUB_LIBRARY, \"<Failure when calling cuGetErrorString()>\")",
                "LD_LIBRARY_PATH",
            ),
            ("DriverError(CUDA_ERROR_INSUFFICIENT_DRIVER, \"\")", "update the driver"),
            ("DriverError(CUDA_ERROR_NO_BINARY_FOR_GPU, \"\")", "CUDA_COMPUTE_CAP"),
        ];
        for (cause, hint) in cases {
            assert!(explain_cuda_error(cause).is_some_and(|h| h.contains(hint)), "{cause}");
            let err = open_error(0, cause, None).to_string();
            assert!(err.contains(hint) && err.contains(cause), "{err}");
        }
        assert_eq!(explain_cuda_error("shape mismatch in matmul"), None);
    }

    #[test]
    fn bf16_needs_ampere() {
        let err = bf16_unsupported("cuda:0", (7, 5), DType::BF16).unwrap().to_string();
        assert!(err.contains("compute capability 7.5") && err.contains("dtype \"f32\""), "{err}");
        assert!(bf16_unsupported("cuda:0", (9, 0), DType::BF16).is_none());
        assert!(bf16_unsupported("cuda:0", (7, 5), DType::F32).is_none());
        assert!(check_dtype(&Device::Cpu, DType::BF16).is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build() {
        let err = parse_device("cuda:1").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
