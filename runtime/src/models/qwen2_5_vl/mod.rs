//! Qwen2.5-VL (vision tower + Qwen2 decoder with M-RoPE), faithful to transformers' implementation.

pub mod chat_template;
pub mod config;
pub mod processor;
pub mod processor_image;
mod processor_resize;

pub use chat_template::{ChatMessage, ChatTemplate, ContentPart};
pub use config::{Config, TextConfig, VisionConfig};
pub use processor::{Encoded, EncodedConversation, Processor, SpecialTokens};
pub use processor_image::{smart_resize, PreprocessorConfig, ProcessedImage};
