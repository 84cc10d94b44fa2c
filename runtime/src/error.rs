//! The runtime's one error type, with a `Context` trait and a `bail!` macro in the shape of
//! candle's `error.rs`.
//!
//! Every user-facing failure names what it was working on (a file, a key, an option), so
//! messages read as a chain: `loading model ./ckpt: model.safetensors: tensor lm_head.weight:
//! shape [8, 16], expected [32, 16]`.

use std::fmt;
use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug)]
pub enum Error {
    /// A plain message: bad option, bad value, unsupported case.
    Msg(String),
    /// A filesystem failure on a named path.
    Io { path: PathBuf, source: std::io::Error },
    /// A tensor operation failed (shape, dtype, device).
    Tensor(candle_core::Error),
    /// JSON that did not parse or did not have the expected shape.
    Json(serde_json::Error),
    /// The user pressed Ctrl-C; the primitive stopped after saving what it could.
    Cancelled(String),
    /// An inner error with a description of what was being done.
    Context { context: String, source: Box<Error> },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Msg(m) => f.write_str(m),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Tensor(e) => write!(f, "{}", tensor_message(e)),
            Error::Json(e) => write!(f, "{e}"),
            Error::Cancelled(what) => write!(f, "cancelled by the user: {what}"),
            Error::Context { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

/// candle appends a backtrace to some errors; users need only the first line of the message,
/// and for a CUDA driver failure (out of memory on the GPU, say) what to do about it.
fn tensor_message(e: &candle_core::Error) -> String {
    let full = e.to_string();
    let first = full.lines().next().unwrap_or_default().trim();
    match crate::device::explain_cuda_error(&full) {
        Some(hint) => format!("{hint} ({first})"),
        None => first.to_string(),
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Tensor(e) => Some(e),
            Error::Json(e) => Some(e),
            Error::Context { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl Error {
    pub fn msg(m: impl Into<String>) -> Self {
        Error::Msg(m.into())
    }

    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    /// True when this error, or any error it wraps, is a cancellation.
    pub fn is_cancelled(&self) -> bool {
        match self {
            Error::Cancelled(_) => true,
            Error::Context { source, .. } => source.is_cancelled(),
            _ => false,
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Tensor(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e)
    }
}

/// Attach a description of the work in progress to an error, as `anyhow::Context` does.
pub trait Context<T> {
    fn context(self, context: impl fmt::Display) -> Result<T>;
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::Context { context: context.to_string(), source: Box::new(e.into()) })
    }

    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::Context { context: f().to_string(), source: Box::new(e.into()) })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::Msg(context.to_string()))
    }

    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error::Msg(f().to_string()))
    }
}

/// Return early with a formatted [`Error::Msg`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Msg(format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chains_read_outside_in() {
        let inner: Result<()> = Err(Error::msg("tensor lm_head.weight missing"));
        let err = inner.context("model.safetensors").context("loading model ./ckpt").unwrap_err();
        assert_eq!(err.to_string(), "loading model ./ckpt: model.safetensors: tensor lm_head.weight missing");
    }

    #[test]
    fn an_out_of_memory_gpu_says_what_to_do() {
        // As candle wraps cudarc's allocation failure.
        let oom = candle_core::Error::Cuda(Box::new(std::io::Error::other(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
        )));
        let err = Err::<(), _>(oom).context("grpo step 3").unwrap_err().to_string();
        assert!(err.starts_with("grpo step 3: the GPU ran out of memory"), "{err}");
        assert!(err.contains("memory_plan") && err.contains("CUDA_ERROR_OUT_OF_MEMORY"), "{err}");
    }

    #[test]
    fn cancellation_is_seen_through_context() {
        let err = Err::<(), _>(Error::Cancelled("sft step 3".into())).context("sft").unwrap_err();
        assert!(err.is_cancelled());
    }
}
