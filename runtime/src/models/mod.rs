//! Model families medbridge implements in candle.

pub mod qwen2_5_vl;
