//! Model families medbridge implements in candle, and `Vlm`, a model paired with its processor.

pub mod qwen2_5_vl;
pub mod vlm;

pub use vlm::{RandomInit, Vlm};
