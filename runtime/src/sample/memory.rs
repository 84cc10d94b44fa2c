//! How much memory a sampling call needs, estimated from its shape before it starts, so
//! `evaluate`, `sample`, `generate` and GRPO's rollouts can be refused with the option to lower
//! instead of growing until the process is killed.
//!
//! The estimate is an upper bound of what the engine holds at its peak: its paged KV pool (sized
//! by `max_batch_tokens`, or less when the whole call needs less), the larger of a prefill and a
//! decode step's logits and activations, and every sample kept until the call returns, each
//! assumed to run to `max_new_tokens`. The model's weights are not counted; nor are the vision
//! tower's activations, which a prompt's text part dwarfs at the sizes where memory matters.

use candle_core::DType;

use super::engine::pool::{kv_bytes_per_position, pool_bytes};
use crate::models::qwen2_5_vl::TextConfig;

/// Bytes a kept sample holds per generated token: its id and log-probability (4 + 4) and its
/// text (a token decodes to a few bytes; 8 leaves room for long ones).
const RECORD_BYTES_PER_TOKEN: u64 = 16;

/// Bytes a kept sample holds besides its tokens: the sample, its text's and vectors' headers, the
/// row's random stream and the per-question record it is scored into.
const RECORD_BYTES_PER_SAMPLE: u64 = 256;

/// The engine's shape for one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineShape {
    pub pool_blocks: usize,
    pub block_size: usize,
    /// Rows decoded at once at most.
    pub rows: usize,
    pub longest_prompt: usize,
    /// Samples the call keeps.
    pub samples: usize,
}

/// The estimate, by what the bytes are for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplingMemory {
    /// The paged KV pool.
    pub kv_cache: u64,
    /// A prefill of the longest prompt (all-position activations, attention scores, its dense
    /// cache before it is paged) or a decode step (logits on the device and the host, one
    /// layer's activations, gathered keys and values, scores), whichever is larger.
    pub activations: u64,
    /// Every sample of the call, kept until it returns.
    pub records: u64,
    pub shape: EngineShape,
}

impl SamplingMemory {
    pub fn total(&self) -> u64 {
        self.kv_cache.saturating_add(self.activations).saturating_add(self.records)
    }
}

/// The memory of a sampling call of `shape` with `cfg`'s language model in `dtype`, each row up
/// to `max_new_tokens` new tokens. Saturates instead of overflowing.
pub fn sampling_memory(
    cfg: &TextConfig,
    dtype: DType,
    shape: &EngineShape,
    max_new_tokens: usize,
) -> SamplingMemory {
    let kv_cache = pool_bytes(cfg, dtype, shape.block_size, shape.pool_blocks as u64);
    let positions = (shape.longest_prompt as u64).saturating_add(max_new_tokens as u64);
    let activations = prefill_bytes(cfg, dtype, shape.longest_prompt as u64).max(decode_bytes(
        cfg,
        dtype,
        shape.rows as u64,
        positions,
    ));
    let records = kept_samples_bytes(shape.samples as u64, max_new_tokens);
    SamplingMemory { kv_cache, activations, records, shape: *shape }
}

/// What `samples` finished samples of up to `max_new_tokens` tokens hold.
pub fn kept_samples_bytes(samples: u64, max_new_tokens: usize) -> u64 {
    let per_sample =
        mul(&[max_new_tokens as u64, RECORD_BYTES_PER_TOKEN]).saturating_add(RECORD_BYTES_PER_SAMPLE);
    mul(&[samples, per_sample])
}

/// A prefill of one prompt of `len` positions: one layer's activations (residual, norm, q/k/v,
/// attention output, the MLP's three), the attention scores in f32 and its dense cache.
fn prefill_bytes(cfg: &TextConfig, dtype: DType, len: u64) -> u64 {
    let d = dtype.size_in_bytes() as u64;
    let per_position = (6 * cfg.hidden_size as u64).saturating_add(3 * cfg.intermediate_size as u64);
    mul(&[len, per_position, d])
        .saturating_add(mul(&[cfg.num_attention_heads as u64, len, len, 4]))
        .saturating_add(mul(&[len, kv_bytes_per_position(cfg, dtype)]))
        .saturating_add(mul(&[cfg.vocab_size as u64, d.saturating_add(8)]))
}

/// One decode step over `rows` rows of up to `positions` positions: the logits on the device, in
/// f32 and on the host, one layer's activations, its keys and values gathered from the pool (the
/// device-agnostic path) and the attention scores.
fn decode_bytes(cfg: &TextConfig, dtype: DType, rows: u64, positions: u64) -> u64 {
    let d = dtype.size_in_bytes() as u64;
    let logits = mul(&[rows, cfg.vocab_size as u64, d.saturating_add(8)]);
    let layer = mul(&[rows, (6 * cfg.hidden_size + 3 * cfg.intermediate_size) as u64, d]);
    let gathered = mul(&[rows, positions, 2 * cfg.num_attention_heads as u64, cfg.head_dim() as u64, d]);
    let scores = mul(&[rows, cfg.num_attention_heads as u64, positions, 4]);
    logits.saturating_add(layer).saturating_add(gathered).saturating_add(scores)
}

fn mul(factors: &[u64]) -> u64 {
    factors.iter().fold(1u64, |acc, &f| acc.saturating_mul(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::qwen2_5_vl::Config;

    fn tiny() -> TextConfig {
        Config::tiny().text
    }

    #[test]
    fn the_kv_cache_is_the_pool_and_records_count_every_sample() {
        let shape =
            EngineShape { pool_blocks: 40, block_size: 16, rows: 10, longest_prompt: 50, samples: 64 };
        let m = sampling_memory(&tiny(), DType::F32, &shape, 16);
        assert_eq!(m.kv_cache, 40 * 16 * 768);
        assert_eq!(m.records, 64 * (16 * 16 + 256));
        assert_eq!(m.total(), m.kv_cache + m.activations + m.records);
        // The pool, not the number of samples, bounds the cache.
        let more = sampling_memory(&tiny(), DType::F32, &EngineShape { samples: 6400, ..shape }, 16);
        assert_eq!((more.kv_cache, more.activations), (m.kv_cache, m.activations));
    }

    #[test]
    fn huge_shapes_saturate_instead_of_overflowing() {
        let shape = EngineShape {
            pool_blocks: usize::MAX,
            block_size: usize::MAX,
            rows: usize::MAX,
            longest_prompt: usize::MAX,
            samples: usize::MAX,
        };
        assert_eq!(sampling_memory(&tiny(), DType::F32, &shape, usize::MAX).total(), u64::MAX);
    }
}
