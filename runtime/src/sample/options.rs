//! The sampler's options: token choice, how many samples, when to stop, the seed, and how many
//! prompts share one forward pass.
//!
//! One `SamplerOptions` value serves `sample`, `evaluate` and GRPO rollouts, so a script that
//! builds it once with `sampler(#{...})` gets the same policy everywhere.

use std::ops::Range;

use super::logits::LogitsOptions;
use super::memory::kept_samples_bytes;
use crate::bail;
use crate::error::Result;
use crate::run::MemoryBudget;

/// Cached positions (prompt plus new tokens, padding included, summed over rows) one forward pass
/// may hold when `batch` is not set. Small enough for a CPU: about 0.6 GB of f32 keys and values
/// for Qwen2.5-VL-3B.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 8192;

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
    /// Prompts per forward pass; `None` = as many as fit in `max_batch_tokens`.
    pub batch: Option<usize>,
    /// The memory budget used when `batch` is `None`.
    pub max_batch_tokens: usize,
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
            bail!("sampler option batch = 0: at least one prompt per forward pass is needed");
        }
        if self.max_batch_tokens == 0 {
            bail!("sampler option max_batch_tokens = 0 must be positive");
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

    /// Whether one more prompt of `prompt_len` tokens decoded in `rows` rows fits in a forward
    /// pass already holding `prompts` prompts in `held_rows` rows, the longest of `longest` tokens.
    pub(crate) fn fits(
        &self,
        prompts: usize,
        held_rows: usize,
        longest: usize,
        prompt_len: usize,
        rows: usize,
    ) -> bool {
        if prompts == 0 {
            return true;
        }
        match self.batch {
            Some(batch) => prompts < batch,
            None => {
                let positions = longest.max(prompt_len).saturating_add(self.max_new_tokens);
                held_rows.saturating_add(rows).saturating_mul(positions) <= self.max_batch_tokens
            }
        }
    }

    /// The forward passes `prompts` (each a prompt length and its rows) are decoded in: runs of
    /// consecutive prompts, each as long as [`Self::fits`] allows.
    pub(crate) fn passes(&self, prompts: &[(usize, usize)]) -> Vec<Range<usize>> {
        let mut passes = Vec::new();
        let (mut start, mut held_rows, mut longest) = (0, 0, 0);
        for (i, &(len, rows)) in prompts.iter().enumerate() {
            if !self.fits(i - start, held_rows, longest, len, rows) {
                passes.push(start..i);
                (start, held_rows, longest) = (i, 0, 0);
            }
            held_rows += rows;
            longest = longest.max(len);
        }
        if start < prompts.len() {
            passes.push(start..prompts.len());
        }
        passes
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
        let empty_stop =
            SamplerOptions { stop_strings: vec!["</answer>".into(), String::new()], ..base.clone() };
        assert!(error(empty_stop).contains("stop_strings[1]"));
        let hot = SamplerOptions { logits: LogitsOptions { temperature: -1.0, ..base.logits }, ..base };
        assert!(error(hot).contains("temperature"));
    }

    #[test]
    fn the_budget_bounds_prompts_per_forward() {
        let budget = SamplerOptions { max_batch_tokens: 1000, max_new_tokens: 10, ..Default::default() };
        // 4 rows of 40 + 10 positions = 200 per prompt: five fit, a sixth does not.
        assert!(budget.fits(4, 16, 40, 40, 4));
        assert!(!budget.fits(5, 20, 40, 40, 4));
        // A longer prompt pads all the others to its length.
        assert!(!budget.fits(2, 8, 40, 90, 4));
        // One prompt always fits, whatever its size.
        assert!(budget.fits(0, 0, 0, 5000, 16));
        let fixed = SamplerOptions { batch: Some(3), ..budget.clone() };
        assert!(fixed.fits(2, 32, 5000, 5000, 16));
        assert!(!fixed.fits(3, 3, 1, 1, 1));

        // Five prompts of 200 positions fit 1000; a long one goes alone; the rest start anew.
        let prompts = [(40, 4), (40, 4), (40, 4), (40, 4), (40, 4), (40, 4), (5000, 16), (10, 1)];
        assert_eq!(budget.passes(&prompts), [0..5, 5..6, 6..7, 7..8]);
        assert_eq!(fixed.passes(&prompts), [0..3, 3..6, 6..8]);
        assert!(budget.passes(&[]).is_empty());
    }
}
