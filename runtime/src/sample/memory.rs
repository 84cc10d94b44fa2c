//! How much memory a sampling call needs, estimated from its shape before it starts, so
//! `evaluate`, `sample`, `generate` and GRPO's rollouts can be refused with the option to lower
//! instead of growing until the process is killed.
//!
//! The estimate is an upper bound of what the sampler holds at its peak: the forward pass that
//! needs the most (its prefill, its KV cache and each decode step's logits and activations) plus
//! every sample kept until the call returns, each assumed to run to `max_new_tokens`. The model's
//! weights are not counted; nor are the vision tower's activations, which a prompt's text part
//! dwarfs at the sizes where memory matters.

use candle_core::DType;

use crate::models::qwen2_5_vl::TextConfig;

/// Positions a KV cache grows by while decoding (the cache's own growth step).
const KV_GROWTH: u64 = 64;

/// Bytes a kept sample holds per generated token: its id and log-probability (4 + 4) and its
/// text (a token decodes to a few bytes; 8 leaves room for long ones).
const RECORD_BYTES_PER_TOKEN: u64 = 16;

/// Bytes a kept sample holds besides its tokens: the sample, its text's and vectors' headers, the
/// row's random stream and the per-question record it is scored into.
const RECORD_BYTES_PER_SAMPLE: u64 = 256;

/// One forward pass of a sampling call: prompts prefilled together (left-padded to the longest)
/// and the rows decoded from them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassShape {
    pub prompts: usize,
    pub rows: usize,
    pub longest_prompt: usize,
}

/// The estimate, by what the bytes are for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplingMemory {
    /// The largest pass's keys and values at full length, twice: a cache is copied when its rows
    /// are selected or its buffers grow, with the old one still alive.
    pub kv_cache: u64,
    /// The largest pass's prefill (all-position logits, activations, attention scores) or decode
    /// step (logits on the device and the host, activations), whichever is larger.
    pub activations: u64,
    /// Every sample of the call, kept until it returns.
    pub records: u64,
    /// The pass the peak belongs to.
    pub peak_pass: PassShape,
    /// Positions each row of the peak pass holds: its prompt and `max_new_tokens`, rounded up to
    /// the cache's growth step.
    pub positions: u64,
    /// Samples the call keeps.
    pub samples: u64,
}

impl SamplingMemory {
    pub fn total(&self) -> u64 {
        self.kv_cache.saturating_add(self.activations).saturating_add(self.records)
    }
}

/// The memory of decoding `passes` one after another with `cfg`'s language model in `dtype`,
/// each row up to `max_new_tokens` new tokens. Saturates instead of overflowing.
pub fn sampling_memory(
    cfg: &TextConfig,
    dtype: DType,
    passes: &[PassShape],
    max_new_tokens: usize,
) -> SamplingMemory {
    let mut peak = SamplingMemory::default();
    let mut samples = 0u64;
    for &pass in passes {
        samples = samples.saturating_add(pass.rows as u64);
        let positions = (pass.longest_prompt as u64)
            .saturating_add(max_new_tokens as u64)
            .div_ceil(KV_GROWTH)
            .saturating_mul(KV_GROWTH);
        let kv_cache = mul(&[2, pass.rows as u64, positions, kv_bytes_per_position(cfg, dtype)])
            .saturating_add(mul(&[pass.rows as u64, positions])); // which keys are padding
        let activations = prefill_bytes(cfg, dtype, pass).max(decode_bytes(cfg, dtype, pass.rows, positions));
        if kv_cache.saturating_add(activations) > peak.kv_cache.saturating_add(peak.activations) {
            peak = SamplingMemory { kv_cache, activations, peak_pass: pass, positions, ..peak };
        }
    }
    SamplingMemory { records: kept_samples_bytes(samples, max_new_tokens), samples, ..peak }
}

/// What `samples` finished samples of up to `max_new_tokens` tokens hold.
pub fn kept_samples_bytes(samples: u64, max_new_tokens: usize) -> u64 {
    let per_sample =
        mul(&[max_new_tokens as u64, RECORD_BYTES_PER_TOKEN]).saturating_add(RECORD_BYTES_PER_SAMPLE);
    mul(&[samples, per_sample])
}

/// Keys and values of one position of one row, over every layer.
pub fn kv_bytes_per_position(cfg: &TextConfig, dtype: DType) -> u64 {
    let (layers, kv_heads, head_dim) =
        (cfg.num_hidden_layers as u64, cfg.num_key_value_heads as u64, cfg.head_dim() as u64);
    mul(&[layers, 2, kv_heads, head_dim, dtype.size_in_bytes() as u64])
}

/// A prefill over `pass.prompts` prompts of `pass.longest_prompt` positions: logits at every
/// position, one layer's activations (residual, norm, q/k/v, attention output, the MLP's three),
/// the attention scores in f32 and the prompts' own cache before it is spread over the rows.
fn prefill_bytes(cfg: &TextConfig, dtype: DType, pass: PassShape) -> u64 {
    let (p, l, d) = (pass.prompts as u64, pass.longest_prompt as u64, dtype.size_in_bytes() as u64);
    let per_position = (cfg.vocab_size as u64)
        .saturating_add(6 * cfg.hidden_size as u64)
        .saturating_add(3 * cfg.intermediate_size as u64);
    mul(&[p, l, per_position, d])
        .saturating_add(mul(&[p, cfg.num_attention_heads as u64, l, l, 4]))
        .saturating_add(mul(&[p, l, kv_bytes_per_position(cfg, dtype)]))
}

/// One decode step over `rows` rows holding `positions` cached positions: the logits on the
/// device, in f32 and on the host, one layer's activations and the attention scores.
fn decode_bytes(cfg: &TextConfig, dtype: DType, rows: usize, positions: u64) -> u64 {
    let (r, d) = (rows as u64, dtype.size_in_bytes() as u64);
    let logits = mul(&[r, cfg.vocab_size as u64, d.saturating_add(8)]);
    let layer = mul(&[r, (6 * cfg.hidden_size + 3 * cfg.intermediate_size) as u64, d]);
    logits.saturating_add(layer).saturating_add(mul(&[r, cfg.num_attention_heads as u64, positions, 4]))
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
    fn the_kv_cache_is_layers_heads_and_positions() {
        // 3 layers x (k, v) x 2 kv heads x 16 dims x 4 bytes.
        assert_eq!(kv_bytes_per_position(&tiny(), DType::F32), 768);
        assert_eq!(kv_bytes_per_position(&tiny(), DType::BF16), 384);
        let pass = PassShape { prompts: 1, rows: 10, longest_prompt: 50 };
        let m = sampling_memory(&tiny(), DType::F32, &[pass], 16);
        // 50 + 16 positions rounded up to 128; twice for the copy made when rows are selected.
        assert_eq!(m.positions, 128);
        assert_eq!(m.kv_cache, 2 * 10 * 128 * 768 + 10 * 128);
        assert_eq!((m.samples, m.records), (10, 10 * (16 * 16 + 256)));
        assert_eq!(m.total(), m.kv_cache + m.activations + m.records);
    }

    #[test]
    fn the_peak_is_the_largest_pass_and_records_add_up_over_all() {
        let small = PassShape { prompts: 4, rows: 8, longest_prompt: 20 };
        let large = PassShape { prompts: 1, rows: 100, longest_prompt: 60 };
        let m = sampling_memory(&tiny(), DType::F32, &[small, large, small], 8);
        assert_eq!(m.peak_pass, large);
        assert_eq!(m.samples, 116);
        let alone = sampling_memory(&tiny(), DType::F32, &[large], 8);
        assert_eq!((m.kv_cache, m.activations), (alone.kv_cache, alone.activations));
        assert!(m.records > alone.records);
    }

    /// The case: `evaluate(m, task, #{n: 100000})` decodes 100,001 rows of one question
    /// at once, about 20 GiB on the tiny model, which grew to 24 GB before it was killed.
    #[test]
    fn a_hundred_thousand_rows_at_once_need_tens_of_gigabytes() {
        let pass = PassShape { prompts: 1, rows: 100_001, longest_prompt: 60 };
        let m = sampling_memory(&tiny(), DType::F32, &[pass], 16);
        let gib = m.total() as f64 / (1u64 << 30) as f64;
        assert!((18.0..40.0).contains(&gib), "{gib} GiB");
    }

    #[test]
    fn huge_shapes_saturate_instead_of_overflowing() {
        let pass = PassShape { prompts: usize::MAX, rows: usize::MAX, longest_prompt: usize::MAX };
        assert_eq!(sampling_memory(&tiny(), DType::F32, &[pass, pass], usize::MAX).total(), u64::MAX);
        assert_eq!(sampling_memory(&tiny(), DType::F32, &[], 16), SamplingMemory::default());
    }
}
