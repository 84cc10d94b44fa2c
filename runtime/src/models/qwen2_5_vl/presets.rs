//! Named configurations: `qwen2_5_vl_tiny`, the full architecture at sizes that train in
//! minutes on two CPU cores, and `qwen2_5_vl_3b`/`qwen2_5_vl_7b`, the exact shapes of the hub's
//! Qwen2.5-VL-3B/7B-Instruct (their `config.json`, embedded), so speed and memory at the paper's
//! scale can be measured with random weights and no download.
//!
//! Everything the 7B model does happens here too: GQA (4 query heads over 2 kv heads), M-RoPE
//! with a 2:3:3 section split (the 7B's 16:24:24), a windowed vision tower with one full-
//! attention block, and a 2x2 patch merger. Patches are 7 px and windows 28 px, so a 28 px
//! image is one window of 2x2 merged units (4 image tokens) and a 56 px image spans four.

use super::config::{Config, TextConfig, TokenIds, VisionConfig};
use crate::error::{Context, Result};

/// The preset names [`preset`] knows.
pub const PRESETS: &[&str] = &["qwen2_5_vl_tiny", "qwen2_5_vl_3b", "qwen2_5_vl_7b"];

/// A hub checkpoint whose shapes a preset carries: (preset, hub id, its `config.json`).
const HUB_SHAPED: &[(&str, &str, &str)] = &[
    (
        "qwen2_5_vl_3b",
        "Qwen/Qwen2.5-VL-3B-Instruct",
        include_str!("../../../assets/qwen2_5_vl_3b/config.json"),
    ),
    (
        "qwen2_5_vl_7b",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        include_str!("../../../assets/qwen2_5_vl_7b/config.json"),
    ),
];

/// The hub checkpoints' `preprocessor_config.json` (the same for 3B and 7B): 14 px patches,
/// 2x2 merge, between 3,136 and 12,845,056 pixels.
pub const HUB_PREPROCESSOR_CONFIG: &str =
    include_str!("../../../assets/qwen2_5_vl_hub/preprocessor_config.json");

/// The configuration called `name`, with the tokenizer's vocabulary size and special ids.
///
/// The hub-shaped presets keep their checkpoint's vocabulary size (the embedding and LM-head
/// shapes) and take the tokenizer's special ids, which must lie inside it.
pub fn preset(name: &str, vocab_size: usize, tokens: TokenIds) -> Result<Config> {
    if name == "qwen2_5_vl_tiny" {
        return tiny(vocab_size, tokens);
    }
    let Some((_, hub_id, json)) = HUB_SHAPED.iter().find(|(n, _, _)| *n == name) else {
        crate::bail!("unknown model preset `{name}`: known presets are {}", PRESETS.join(", "));
    };
    let mut config =
        Config::from_json_str(json).with_context(|| format!("the {hub_id} config.json of preset {name}"))?;
    if vocab_size > config.text.vocab_size {
        crate::bail!(
            "preset {name}: a tokenizer of {vocab_size} tokens does not fit its vocabulary of {}",
            config.text.vocab_size
        );
    }
    config.tokens = tokens;
    Ok(config)
}

/// Whether `name` is a preset with a hub checkpoint's shapes (and so its image processor).
pub fn is_hub_shaped(name: &str) -> bool {
    HUB_SHAPED.iter().any(|(n, _, _)| *n == name)
}

impl Config {
    /// The same model cut to `layers` decoder layers and `vision_layers` vision blocks (for
    /// tests and memory probes at full width); full-attention blocks past the cut are dropped.
    pub fn with_depth(mut self, layers: Option<usize>, vision_layers: Option<usize>) -> Result<Self> {
        let cut = |option: &str, value: usize, full: usize| -> Result<usize> {
            if value == 0 || value > full {
                crate::bail!("new_model: option `{option}` must be between 1 and {full} (the preset's depth), got {value}");
            }
            Ok(value)
        };
        if let Some(n) = layers {
            self.text.num_hidden_layers = cut("layers", n, self.text.num_hidden_layers)?;
        }
        if let Some(n) = vision_layers {
            self.vision.depth = cut("vision_layers", n, self.vision.depth)?;
            self.vision.fullatt_block_indexes.retain(|&i| i < n);
        }
        Ok(self)
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

    /// The values of the hub's config.json files, field by field (Qwen/Qwen2.5-VL-7B-Instruct
    /// and -3B-Instruct): a parsing slip in the embedded files would change every shape.
    #[test]
    fn hub_shaped_presets_have_the_checkpoints_shapes() {
        let tokens = TokenIds::at_top(512);
        let b7 = preset("qwen2_5_vl_7b", 512, tokens.clone()).unwrap();
        let t = &b7.text;
        assert_eq!(
            (t.vocab_size, t.hidden_size, t.intermediate_size, t.num_hidden_layers),
            (152_064, 3584, 18_944, 28)
        );
        assert_eq!((t.num_attention_heads, t.num_key_value_heads, t.head_dim()), (28, 4, 128));
        assert_eq!(
            (t.mrope_section.clone(), t.rope_theta, t.max_position_embeddings),
            (vec![16, 24, 24], 1e6, 128_000)
        );
        assert!(!t.tie_word_embeddings);
        let v = &b7.vision;
        assert_eq!((v.depth, v.hidden_size, v.intermediate_size, v.num_heads), (32, 1280, 3420, 16));
        assert_eq!(
            (v.out_hidden_size, v.patch_size, v.spatial_merge_size, v.window_size),
            (3584, 14, 2, 112)
        );
        assert_eq!(v.fullatt_block_indexes, vec![7, 15, 23, 31]);
        assert_eq!(b7.tokens, tokens);

        let b3 = preset("qwen2_5_vl_3b", 512, tokens).unwrap();
        let t = &b3.text;
        assert_eq!(
            (t.vocab_size, t.hidden_size, t.intermediate_size, t.num_hidden_layers),
            (151_936, 2048, 11_008, 36)
        );
        assert_eq!((t.num_attention_heads, t.num_key_value_heads, t.head_dim()), (16, 2, 128));
        assert!(t.tie_word_embeddings);
        assert_eq!((b3.vision.depth, b3.vision.out_hidden_size), (32, 2048));
        assert!(preset("qwen2_5_vl_7b", 200_000, TokenIds::at_top(512))
            .unwrap_err()
            .to_string()
            .contains("does not fit"));
    }

    #[test]
    fn depth_cuts_keep_width_and_drop_blocks_past_the_cut() {
        let c = preset("qwen2_5_vl_7b", 512, TokenIds::at_top(512))
            .unwrap()
            .with_depth(Some(2), Some(9))
            .unwrap();
        assert_eq!((c.text.num_hidden_layers, c.text.hidden_size, c.vision.depth), (2, 3584, 9));
        assert_eq!(c.vision.fullatt_block_indexes, vec![7]);
        let err = Config::tiny().with_depth(Some(0), None).unwrap_err().to_string();
        assert!(err.contains("`layers`") && err.contains("got 0"), "{err}");
        assert!(Config::tiny()
            .with_depth(None, Some(4))
            .unwrap_err()
            .to_string()
            .contains("between 1 and 3"));
    }
}
