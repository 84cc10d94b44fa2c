//! Qwen2.5-VL (vision tower + Qwen2 decoder with M-RoPE), faithful to transformers' implementation.

pub mod config;

pub use config::{Config, TextConfig, VisionConfig};
