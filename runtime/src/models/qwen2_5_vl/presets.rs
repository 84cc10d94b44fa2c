//! Named configurations: `qwen2_5_vl_tiny`, the full architecture at sizes that train in
//! minutes on two CPU cores.
//!
//! Everything the 7B model does happens here too: GQA (4 query heads over 2 kv heads), M-RoPE
//! with a 2:3:3 section split (the 7B's 16:24:24), a windowed vision tower with one full-
//! attention block, and a 2x2 patch merger. Patches are 7 px and windows 28 px, so a 28 px
//! image is one window of 2x2 merged units (4 image tokens) and a 56 px image spans four.

use super::config::{Config, TextConfig, TokenIds, VisionConfig};
use crate::error::Result;

/// The preset names [`preset`] knows.
pub const PRESETS: &[&str] = &["qwen2_5_vl_tiny"];

/// The configuration called `name`, with the tokenizer's vocabulary size and special ids.
pub fn preset(name: &str, vocab_size: usize, tokens: TokenIds) -> Result<Config> {
    match name {
        "qwen2_5_vl_tiny" => tiny(vocab_size, tokens),
        other => crate::bail!("unknown model preset `{other}`: known presets are {}", PRESETS.join(", ")),
    }
}

/// The tiny preset. `vocab_size` must cover every id in `tokens`.
pub fn tiny(vocab_size: usize, tokens: TokenIds) -> Result<Config> {
    let text = TextConfig {
        vocab_size,
        hidden_size: 64,
        intermediate_size: 176,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        mrope_section: vec![2, 3, 3],
        max_position_embeddings: 4096,
        hidden_act: "silu".to_string(),
        tie_word_embeddings: false,
    };
    let vision = VisionConfig {
        depth: 3,
        hidden_size: 32,
        intermediate_size: 88,
        num_heads: 2,
        in_chans: 3,
        out_hidden_size: 64,
        patch_size: 7,
        spatial_merge_size: 2,
        temporal_patch_size: 2,
        window_size: 28,
        fullatt_block_indexes: vec![2],
        hidden_act: "silu".to_string(),
    };
    let config = Config { text, vision, tokens };
    let ids = [
        Some(config.tokens.image_token_id),
        Some(config.tokens.video_token_id),
        Some(config.tokens.vision_start_token_id),
        Some(config.tokens.vision_end_token_id),
        config.tokens.bos_token_id,
        config.tokens.eos_token_id,
    ];
    if let Some(bad) = ids.into_iter().flatten().find(|&id| id as usize >= vocab_size) {
        crate::bail!("special token id {bad} does not fit a vocabulary of {vocab_size}");
    }
    config.validate()?;
    Ok(config)
}

impl TokenIds {
    /// Qwen's special tokens placed at the top of a `vocab_size` vocabulary, in Qwen's order
    /// (`<|im_end|>` = eos, then vision start/end, image pad, video pad); for tests and for
    /// tokenizers built that way.
    pub fn at_top(vocab_size: usize) -> Self {
        let top = vocab_size.max(5) as u32;
        Self {
            eos_token_id: Some(top - 5),
            vision_start_token_id: top - 4,
            vision_end_token_id: top - 3,
            image_token_id: top - 2,
            video_token_id: top - 1,
            bos_token_id: None,
        }
    }
}

impl Config {
    /// The tiny preset over a 512-token vocabulary with [`TokenIds::at_top`]; used by tests.
    pub fn tiny() -> Self {
        tiny(512, TokenIds::at_top(512)).unwrap_or_else(|e| unreachable!("the tiny preset is valid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_is_valid_and_checks_its_tokens() {
        let c = Config::tiny();
        assert_eq!(c.text.head_dim(), 16);
        assert_eq!(c.vision.window_size / c.vision.patch_size / c.vision.spatial_merge_size, 2);
        assert!(tiny(100, TokenIds::at_top(512)).unwrap_err().to_string().contains("does not fit"));
        assert!(preset("huge", 512, TokenIds::at_top(512)).is_err());
    }
}
