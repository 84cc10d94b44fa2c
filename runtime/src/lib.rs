//! medbridge-runtime: the Rust library behind medbridge's scripts.
//!
//! Tensors, devices, seeds, run directories and the sandbox live here, together with the models,
//! data, sampler, metrics, probe and training. Nothing in this crate knows about Rhai; the
//! `medbridge-bindings` crate registers it into a scripting engine. `src/README.md` maps the
//! modules.

pub mod bench;
pub mod data;
pub mod device;
pub mod dist;
pub mod error;
pub mod eval;
pub mod hub;
pub mod image;
pub mod metrics;
pub mod models;
pub mod probe;
pub mod report;
pub mod run;
pub mod sample;
pub mod sandbox;
pub mod sweep;
pub mod task;
pub mod tensor;
pub mod train;

pub use error::{Context, Error, Result};
