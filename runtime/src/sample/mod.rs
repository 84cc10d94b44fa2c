//! Sampling: the per-token choice from logits, the per-sample random streams that make every
//! sample reproducible from (seed, question id, sample index), and the rollout engine that
//! decodes every request's K samples from one shared prefill with continuous batching.
//!
//! | file | job |
//! | --- | --- |
//! | `logits.rs` | temperature, top-k, top-p, min-p and the categorical draw |
//! | `rng.rs` | one ChaCha20 stream per (seed, question id, sample index) |
//! | `options.rs` | `SamplerOptions`, shared by `sample`, `evaluate` and GRPO |
//! | `generate.rs` | the API every path calls (`sample`, `generate`): requests, rows, samples; context, KV-budget and memory checks before any work |
//! | `engine/` | the rollout engine: paged, prefix-shared KV cache, continuous batching, paged attention (its own map in `engine/mod.rs`) |
//! | `memory.rs` | the memory a sampling call needs (KV pool, activations, kept samples), estimated from its shape |
//! | `bench.rs` | the sampling benchmarks of `medbridge bench`: shared vs separate prefills, continuous vs fixed batching |
//! | `golden_tests.rs` | the engine against `tests/fixtures/sampler_golden.json`, recorded from the sampler it replaced |

pub mod bench;
pub mod engine;
pub mod generate;
#[cfg(test)]
mod golden_tests;
pub mod logits;
pub mod memory;
pub mod options;
pub mod rng;

pub use bench::{bench_sampling, bench_variable_lengths, BenchReport, VariableLengthReport};
pub use engine::{kv_cache_bytes, EngineOptions, EngineStats, BLOCK_SIZE};
pub use generate::{
    engine_options, generate, generate_with, sample, FinishReason, Job, RowSpec, Sample, SampleRequest,
};
pub use logits::{choose, choose_batch, sampling_distribution, LogitsOptions, TokenChoice};
pub use memory::{sampling_memory, EngineShape, SamplingMemory};
pub use options::{SamplerOptions, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_SEQS};
pub use rng::SampleRng;
