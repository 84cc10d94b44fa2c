//! The sampler's options: token choice, how many samples, when to stop, the seed, and how much
//! the rollout engine decodes at once (`max_batch_tokens`, `max_seqs`, `batch`).
//!
//! One `SamplerOptions` value serves `sample`, `evaluate` and GRPO rollouts, so a script that
//! builds it once with `sampler(#{...})` gets the same policy everywhere.

use super::logits::LogitsOptions;
use super::memory::kept_samples_bytes;
use crate::bail;
use crate::error::Result;
use crate::run::MemoryBudget;

/// KV positions the engine's running set may hold (every row reserved at its full length, a
/// prompt shared by its samples counted once), which sizes its paged cache. Small enough for a
/// CPU: about 0.6 GB of f32 keys and values for Qwen2.5-VL-3B.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 8192;

/// Rows the engine decodes at once at most. Past a few hundred rows a CPU decode step gains
/// little; `max_batch_tokens` usually binds first.
pub const DEFAULT_MAX_SEQS: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplerOptions {
    pub logits: LogitsOptions,
    /// Samples per prompt.
    pub n: usize,
    pub max_new_tokens: usize,
    /// Ids that end a sample (kept as its last token); `None` = the processor's eos ids.
    pub stop_token_ids: Option<Vec<u32>>,
    /// Texts that end a sample; the text is cut before the first one found.
    pub stop_strings: Vec<String>,
    pub seed: u64,
    /// Requests (prompts) decoded at once at most; `None` = as many as `max_batch_tokens` and
    /// `max_seqs` allow.
    pub batch: Option<usize>,
    /// KV positions the running set may hold (see [`DEFAULT_MAX_BATCH_TOKENS`]).
    pub max_batch_tokens: usize,
    /// Rows (samples) decoded at once at most.
    pub max_seqs: usize,
    /// What the whole call may hold (KV cache, logits, kept samples), checked before it starts:
    /// the run's `--max-memory`, else the machine's default.
    pub memory: MemoryBudget,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            logits: LogitsOptions::default(),
            n: 1,
            max_new_tokens: 256,
            stop_token_ids: None,
            stop_strings: Vec::new(),
            seed: 0,
            batch: None,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            max_seqs: DEFAULT_MAX_SEQS,
            memory: MemoryBudget::machine_default(),
        }
    }
}

impl SamplerOptions {
    pub fn validate(&self) -> Result<()> {
        self.logits.validate()?;
        if self.n == 0 {
            bail!("sampler option n = 0: at least one sample per prompt is needed");
        }
        if self.max_new_tokens == 0 {
            bail!("sampler option max_new_tokens = 0: at least one new token is needed");
        }
        if self.batch == Some(0) {
            bail!("sampler option batch = 0: at least one prompt decoded at once is needed");
        }
        if self.max_batch_tokens == 0 {
            bail!("sampler option max_batch_tokens = 0 must be positive");
        }
        if self.max_seqs == 0 {
            bail!("sampler option max_seqs = 0: at least one row decoded at once is needed");
        }
        if let Some(i) = self.stop_strings.iter().position(String::is_empty) {
            bail!("sampler option stop_strings[{i}] is empty: it would stop every sample at once");
        }
        // The samples of even one prompt, one token each, must fit before their rows are laid
        // out; the whole call, at full length, is checked once its prompts are known
        // (`generate`), after the context length.
        self.memory.check(
            "sampling",
            kept_samples_bytes(self.n as u64, 1),
            &format!("at least, for the {} samples of one prompt", self.n),
            &format!("lower n = {}", self.n),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(opts: SamplerOptions) -> String {
        opts.validate().unwrap_err().to_string()
    }

    #[test]
    fn bad_options_are_named() {
        let base = SamplerOptions::default();
        assert!(base.validate().is_ok());
        assert!(error(SamplerOptions { n: 0, ..base.clone() }).contains("n = 0"));
        assert!(error(SamplerOptions { max_new_tokens: 0, ..base.clone() }).contains("max_new_tokens"));
        assert!(error(SamplerOptions { batch: Some(0), ..base.clone() }).contains("batch = 0"));
        assert!(error(SamplerOptions { max_batch_tokens: 0, ..base.clone() }).contains("max_batch_tokens"));
        assert!(error(SamplerOptions { max_seqs: 0, ..base.clone() }).contains("max_seqs = 0"));
        let empty_stop =
            SamplerOptions { stop_strings: vec!["</answer>".into(), String::new()], ..base.clone() };
        assert!(error(empty_stop).contains("stop_strings[1]"));
        let hot = SamplerOptions { logits: LogitsOptions { temperature: -1.0, ..base.logits }, ..base };
        assert!(error(hot).contains("temperature"));
    }
}
