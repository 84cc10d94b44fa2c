//! What makes the model trainable and what training produces: [`trainable`] turns a model into
//! one with LoRA adapters or full fine-tuning `Var`s (and merges, saves, counts them),
//! [`adapter`] reads and writes PEFT adapters, and [`backprop`] is the hand-derived training
//! pass of the language model on f32 CPU, and [`checkpointed`] the per-layer activation
//! checkpointing of the autograd pass everywhere else. Which training path runs when is in this folder's
//! parent `README.md`.

pub mod adapter;
pub mod backprop;
pub mod checkpointed;
pub mod trainable;

#[cfg(test)]
mod adapter_interop_tests;
