//! Qwen2.5-VL configuration, read from either `config.json` layout.
//!
//! The hub's checkpoints are flat: text fields at the top level, `rope_scaling: {type: mrope,
//! mrope_section}` and a nested `vision_config`. transformers 5 writes `text_config` with
//! `rope_parameters` instead. Both are normalised into one [`Config`]; field names follow the
//! checkpoint so this file doubles as a map of `config.json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Context, Error, Result};

/// The language model's hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Rotary half-dimensions given to the temporal, height and width position ids.
    pub mrope_section: Vec<usize>,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub tie_word_embeddings: bool,
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// The vision tower's hyper-parameters (`vision_config` in the checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    #[serde(default = "default_in_chans")]
    pub in_chans: usize,
    pub out_hidden_size: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    /// Attention window side, in pixels.
    pub window_size: usize,
    pub fullatt_block_indexes: Vec<usize>,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

fn default_in_chans() -> usize {
    3
}

fn default_hidden_act() -> String {
    "silu".to_string()
}

/// Special token ids the model and processor agree on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenIds {
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

/// A whole Qwen2.5-VL configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub tokens: TokenIds,
}

/// The `model_type` values this implementation accepts.
pub const MODEL_TYPES: &[&str] = &["qwen2_5_vl"];

/// `vision_config`, accepting the older `in_channels` spelling (transformers 5 re-saves keep both).
fn vision_config(root: &Value) -> Result<VisionConfig> {
    let mut raw = root.get("vision_config").cloned().context("config has no `vision_config`")?;
    if let Some(map) = raw.as_object_mut() {
        if !map.contains_key("in_chans") {
            if let Some(c) = map.get("in_channels").cloned() {
                map.insert("in_chans".into(), c);
            }
        }
    }
    serde_json::from_value(raw).context("config key `vision_config`")
}

impl Config {
    /// Parse `config.json` text in either layout.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(text).context("config.json is not valid JSON")?;
        Self::from_value(&root)
    }

    /// Read and parse a `config.json` file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text).with_context(|| path.display().to_string())
    }

    fn from_value(root: &Value) -> Result<Self> {
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("<missing>");
        if !MODEL_TYPES.contains(&model_type) {
            crate::bail!(
                "unsupported model_type `{model_type}`: medbridge implements {}",
                MODEL_TYPES.join(", ")
            );
        }
        // transformers 5 nests the text fields; the hub's flat files keep them at the root.
        let text_root = root.get("text_config").filter(|v| v.is_object()).unwrap_or(root);
        let field = |name: &str| text_root.get(name).or_else(|| root.get(name));
        let usize_field = |name: &str| -> Result<usize> {
            field(name)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .with_context(|| format!("config key `{name}` missing or not an integer"))
        };
        let rope = field("rope_parameters").or_else(|| field("rope_scaling")).filter(|v| v.is_object());
        let mrope_section: Vec<usize> = rope
            .and_then(|r| r.get("mrope_section"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .context("config has no `rope_scaling.mrope_section` (or `rope_parameters.mrope_section`)")?;
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .or_else(|| field("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(1_000_000.0);
        let tie_word_embeddings = root
            .get("tie_word_embeddings")
            .or_else(|| field("tie_word_embeddings"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let text = TextConfig {
            vocab_size: usize_field("vocab_size")?,
            hidden_size: usize_field("hidden_size")?,
            intermediate_size: usize_field("intermediate_size")?,
            num_hidden_layers: usize_field("num_hidden_layers")?,
            num_attention_heads: usize_field("num_attention_heads")?,
            num_key_value_heads: usize_field("num_key_value_heads")?,
            rms_norm_eps: field("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
            rope_theta,
            mrope_section,
            max_position_embeddings: field("max_position_embeddings")
                .and_then(Value::as_u64)
                .unwrap_or(128_000) as usize,
            hidden_act: field("hidden_act").and_then(Value::as_str).unwrap_or("silu").to_string(),
            tie_word_embeddings,
        };
        let vision = vision_config(root)?;
        let token = |name: &str, default: u32| -> u32 {
            root.get(name)
                .or_else(|| field(name))
                .and_then(Value::as_u64)
                .map(|v| v as u32)
                .unwrap_or(default)
        };
        let optional = |name: &str| field(name).and_then(Value::as_u64).map(|v| v as u32);
        let tokens = TokenIds {
            image_token_id: token("image_token_id", 151_655),
            video_token_id: token("video_token_id", 151_656),
            vision_start_token_id: token("vision_start_token_id", 151_652),
            vision_end_token_id: token("vision_end_token_id", 151_653),
            bos_token_id: optional("bos_token_id"),
            eos_token_id: optional("eos_token_id"),
        };
        let config = Config { text, vision, tokens };
        config.validate()?;
        Ok(config)
    }

    /// Reject sizes the architecture cannot run with.
    pub fn validate(&self) -> Result<()> {
        let t = &self.text;
        if t.hidden_size % t.num_attention_heads != 0 {
            crate::bail!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                t.hidden_size,
                t.num_attention_heads
            );
        }
        if t.num_attention_heads % t.num_key_value_heads != 0 {
            crate::bail!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                t.num_attention_heads,
                t.num_key_value_heads
            );
        }
        if 2 * t.mrope_section.iter().sum::<usize>() != t.head_dim() {
            crate::bail!("mrope_section {:?} must sum to head_dim/2 = {}", t.mrope_section, t.head_dim() / 2);
        }
        let v = &self.vision;
        if v.hidden_size % v.num_heads != 0 {
            crate::bail!(
                "vision hidden_size {} is not divisible by num_heads {}",
                v.hidden_size,
                v.num_heads
            );
        }
        if v.window_size % (v.patch_size * v.spatial_merge_size) != 0 {
            crate::bail!(
                "vision window_size {} must be a multiple of patch_size*spatial_merge_size",
                v.window_size
            );
        }
        Ok(())
    }

    /// The flat hub layout, as `save` writes it (transformers 4 and 5 both read it).
    pub fn to_hub_json(&self) -> Value {
        let t = &self.text;
        serde_json::json!({
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "model_type": "qwen2_5_vl",
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": t.rope_theta,
            "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": t.mrope_section},
            "max_position_embeddings": t.max_position_embeddings,
            "hidden_act": t.hidden_act,
            "tie_word_embeddings": t.tie_word_embeddings,
            "attention_dropout": 0.0,
            "use_sliding_window": false,
            "image_token_id": self.tokens.image_token_id,
            "video_token_id": self.tokens.video_token_id,
            "vision_start_token_id": self.tokens.vision_start_token_id,
            "vision_end_token_id": self.tokens.vision_end_token_id,
            "bos_token_id": self.tokens.bos_token_id,
            "eos_token_id": self.tokens.eos_token_id,
            "vision_config": serde_json::to_value(&self.vision).expect("plain struct"),
            "torch_dtype": "float32",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VISION: &str = r#"{"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
        "in_chans": 3, "out_hidden_size": 64, "patch_size": 14, "spatial_merge_size": 2,
        "temporal_patch_size": 2, "window_size": 56, "fullatt_block_indexes": [1]}"#;

    fn flat() -> String {
        format!(
            r#"{{"model_type": "qwen2_5_vl", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "rope_scaling": {{"type": "mrope", "mrope_section": [2, 3, 3]}},
            "image_token_id": 290, "vision_config": {VISION}}}"#
        )
    }

    fn nested() -> String {
        format!(
            r#"{{"model_type": "qwen2_5_vl", "image_token_id": 290, "tie_word_embeddings": false,
            "text_config": {{"vocab_size": 300, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
              "rope_parameters": {{"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}}}},
            "vision_config": {VISION}}}"#
        )
    }

    #[test]
    fn flat_and_nested_layouts_agree() {
        let a = Config::from_json_str(&flat()).unwrap();
        let b = Config::from_json_str(&nested()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.text.mrope_section, vec![2, 3, 3]);
        assert_eq!(a.tokens.image_token_id, 290);
    }

    #[test]
    fn the_parity_fixture_configs_parse_in_both_layouts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen2_5_vl_tiny");
        let hub = Config::from_file(&dir.join("config.json")).unwrap();
        let t5 = Config::from_file(&dir.join("transformers5/config.json")).unwrap();
        assert_eq!(hub, t5);
        assert_eq!(hub.text.mrope_section, vec![2, 3, 3]);
        assert_eq!(hub.vision.fullatt_block_indexes, vec![2]);
        assert_eq!(hub.tokens.image_token_id, 368);
    }

    #[test]
    fn hub_json_round_trips() {
        let a = Config::from_json_str(&flat()).unwrap();
        assert_eq!(Config::from_value(&a.to_hub_json()).unwrap(), a);
    }

    #[test]
    fn transformers5_in_channels_beside_in_chans_is_accepted() {
        let both = nested().replace("\"in_chans\": 3,", "\"in_chans\": 3, \"in_channels\": 3,");
        assert_eq!(Config::from_json_str(&both).unwrap(), Config::from_json_str(&flat()).unwrap());
        let only = nested().replace("\"in_chans\": 3,", "\"in_channels\": 4,");
        assert_eq!(Config::from_json_str(&only).unwrap().vision.in_chans, 4);
    }

    #[test]
    fn unknown_model_type_is_named() {
        let err = Config::from_json_str(&flat().replace("qwen2_5_vl", "llava")).unwrap_err().to_string();
        assert!(err.contains("unsupported model_type `llava`"), "{err}");
    }

    #[test]
    fn missing_key_is_named() {
        let err = Config::from_json_str(&flat().replace("\"hidden_size\": 64,", "")).unwrap_err().to_string();
        assert!(err.contains("`hidden_size`"), "{err}");
    }
}
