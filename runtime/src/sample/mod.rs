//! Sampling: the per-token choice from logits, the per-sample random streams that make every
//! sample reproducible from (seed, question id, sample index), and batched generation that
//! decodes K samples of a prompt from one prefill.
//!
//! | file | job |
//! | --- | --- |
//! | `logits.rs` | temperature, top-k, top-p, min-p and the categorical draw |
//! | `rng.rs` | one ChaCha20 stream per (seed, question id, sample index) |
//! | `options.rs` | `SamplerOptions`, shared by `sample`, `evaluate` and GRPO |
//! | `generate.rs` | left-padded batches, shared prefills, live-row decoding, stops; the memory budget checked before the first prefill |
//! | `memory.rs` | the memory a sampling call needs (KV cache, logits, kept samples), estimated from its shape |
//! | `bench.rs` | shared-prefill against separate-prefill tokens/s (`medbridge bench`) |

pub mod bench;
pub mod generate;
#[cfg(test)]
mod golden_tests;
pub mod logits;
pub mod memory;
pub mod options;
pub mod rng;

pub use bench::{bench_sampling, BenchReport};
pub use generate::{generate, sample, FinishReason, Job, RowSpec, Sample, SampleRequest};
pub use logits::{choose, choose_batch, sampling_distribution, LogitsOptions, TokenChoice};
pub use memory::{sampling_memory, PassShape, SamplingMemory};
pub use options::{SamplerOptions, DEFAULT_MAX_BATCH_TOKENS};
pub use rng::SampleRng;
