//! Qwen2.5-VL's processor: from an image and a prompt to the token ids and pixel values the model
//! reads, as transformers' `Qwen2_5_VLProcessor` produces them.
//!
//! A user turn (image first, then text) is rendered with the checkpoint's chat template and the
//! generation prompt, the single `<|image_pad|>` is expanded to one pad per merged patch
//! (`grid_t * grid_h * grid_w / merge_size²`) in the text before tokenizing, as transformers
//! does, and the text is tokenized with the checkpoint's `tokenizer.json`. The tiny preset's
//! files are embedded so `Processor::tiny()` works from any directory. [`image`] resizes
//! (`resize`: Pillow's bicubic) and patchifies the pixels, [`chat_template`] renders the prompt.

pub mod chat_template;
pub mod image;
mod resize;

use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;
use tokenizers::Tokenizer;

use self::chat_template::{ChatMessage, ChatTemplate};
use self::image::{preprocess_image, PreprocessorConfig, ProcessedImage};
use crate::error::{Context, Error, Result};
use crate::image::Image;

pub(crate) const TINY_TOKENIZER: &str = include_str!("../../../../assets/qwen2_5_vl_tiny/tokenizer.json");
pub(crate) const TINY_TOKENIZER_CONFIG: &str =
    include_str!("../../../../assets/qwen2_5_vl_tiny/tokenizer_config.json");
pub(crate) const TINY_PREPROCESSOR_CONFIG: &str =
    include_str!("../../../../assets/qwen2_5_vl_tiny/preprocessor_config.json");

const IMAGE_PAD: &str = "<|image_pad|>";

/// Ids of the special tokens the model and the sampler need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `<|image_pad|>`: one per merged image patch; the model's `image_token_id`.
    pub image_pad: u32,
    /// `<|video_pad|>`: the model's `video_token_id`.
    pub video_pad: u32,
    /// `<|vision_start|>`: the model's `vision_start_token_id`, used by `get_rope_index`.
    pub vision_start: u32,
    pub vision_end: u32,
    pub im_start: u32,
    pub im_end: u32,
    pub endoftext: u32,
}

impl SpecialTokens {
    fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self> {
        let id = |token: &str| {
            tokenizer.token_to_id(token).with_context(|| format!("tokenizer.json has no {token} token"))
        };
        Ok(SpecialTokens {
            image_pad: id(IMAGE_PAD)?,
            video_pad: id("<|video_pad|>")?,
            vision_start: id("<|vision_start|>")?,
            vision_end: id("<|vision_end|>")?,
            im_start: id("<|im_start|>")?,
            im_end: id("<|im_end|>")?,
            endoftext: id("<|endoftext|>")?,
        })
    }
}

/// A templated, tokenized user turn and its image.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Token ids with the image pads expanded and the generation prompt appended.
    pub input_ids: Vec<u32>,
    /// `(grid_t * grid_h * grid_w, 3 * temporal_patch_size * patch_size²)`, f32, on the CPU.
    pub pixel_values: Option<Tensor>,
    pub grid_thw: Option<[usize; 3]>,
}

/// A templated user turn followed by the assistant's answer, for supervised fine-tuning.
#[derive(Debug, Clone)]
pub struct EncodedConversation {
    /// The prompt ids exactly as [`Processor::encode`] gives them, then the completion ids.
    pub input_ids: Vec<u32>,
    /// True where an id belongs to the completion: the answer and the template's closing
    /// `<|im_end|>\n`, as TRL's completion-only loss counts it.
    pub completion_mask: Vec<bool>,
    pub pixel_values: Option<Tensor>,
    pub grid_thw: Option<[usize; 3]>,
}

/// Tokenizer, chat template and image preprocessing of one checkpoint.
#[derive(Clone)]
pub struct Processor {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    image_config: PreprocessorConfig,
    special: SpecialTokens,
    eos_token_ids: Vec<u32>,
    /// The checkpoint files it was read from, verbatim, so `save` reproduces them exactly.
    files: Vec<(String, String)>,
}

/// The processor files a checkpoint may carry, all copied verbatim by [`Processor::save`].
const PROCESSOR_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "generation_config.json",
];

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .field("image_config", &self.image_config)
            .finish()
    }
}

impl Processor {
    /// Load `tokenizer.json`, `preprocessor_config.json` and the chat template from a checkpoint
    /// directory. `generation_config.json`'s `eos_token_id`, when present, sets the stop ids.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::load_dir(dir).with_context(|| format!("loading the processor from {}", dir.display()))
    }

    fn load_dir(dir: &Path) -> Result<Self> {
        let tokenizer_path = dir.join("tokenizer.json");
        let bytes = std::fs::read(&tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
        let tokenizer = parse_tokenizer(&bytes).with_context(|| tokenizer_path.display().to_string())?;
        let image_config = PreprocessorConfig::from_file(&dir.join("preprocessor_config.json"))?;
        let template = ChatTemplate::from_dir(dir)?;
        let generation_path = dir.join("generation_config.json");
        let eos = match std::fs::read_to_string(&generation_path) {
            Ok(text) => eos_ids_in(&text).with_context(|| generation_path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&generation_path, e)),
        };
        let files = PROCESSOR_FILES
            .iter()
            .filter_map(|name| {
                std::fs::read_to_string(dir.join(name)).ok().map(|text| (name.to_string(), text))
            })
            .collect();
        Ok(Self::new(tokenizer, template, image_config, eos)?.with_files(files))
    }

    /// The tiny preset's processor: a 1024-token byte-level BPE with Qwen's special tokens,
    /// Qwen2.5-VL's chat template, and images kept between 28 and 56 px (files embedded at build time).
    pub fn tiny() -> Result<Self> {
        Self::tiny_tokenizer_with(TINY_PREPROCESSOR_CONFIG)
    }

    /// The tiny tokenizer and chat template with another image processor: the hub-shaped presets
    /// pair it with the hub's `preprocessor_config.json`, so images become as many tokens as they
    /// would for the real checkpoint.
    pub fn tiny_tokenizer_with(preprocessor_config: &str) -> Result<Self> {
        let tokenizer = parse_tokenizer(TINY_TOKENIZER.as_bytes()).context("tiny preset tokenizer.json")?;
        let config: Value =
            serde_json::from_str(TINY_TOKENIZER_CONFIG).context("tiny preset tokenizer_config.json")?;
        let template = ChatTemplate::from_tokenizer_config(&config, "tiny preset tokenizer_config.json")?;
        let image_config = PreprocessorConfig::from_json_str(preprocessor_config)
            .context("preset preprocessor_config.json")?;
        let files = [
            ("tokenizer.json", TINY_TOKENIZER),
            ("tokenizer_config.json", TINY_TOKENIZER_CONFIG),
            ("preprocessor_config.json", preprocessor_config),
        ];
        let files = files.into_iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        Ok(Self::new(tokenizer, template, image_config, None)?.with_files(files))
    }

    fn with_files(mut self, files: Vec<(String, String)>) -> Self {
        self.files = files;
        self
    }

    /// Write the processor files it was loaded from into `dir` (next to saved weights), so the
    /// directory loads again here and in transformers.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if self.files.is_empty() {
            crate::bail!("this processor was assembled in code and has no files to save");
        }
        for (name, text) in &self.files {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    /// Assemble a processor. Without explicit `eos_token_ids` generation stops at `<|im_end|>`
    /// or `<|endoftext|>`, as Qwen2.5-VL-Instruct's generation config says.
    pub fn new(
        tokenizer: Tokenizer,
        template: ChatTemplate,
        image_config: PreprocessorConfig,
        eos_token_ids: Option<Vec<u32>>,
    ) -> Result<Self> {
        let special = SpecialTokens::from_tokenizer(&tokenizer)?;
        let eos_token_ids = eos_token_ids.unwrap_or_else(|| vec![special.im_end, special.endoftext]);
        Ok(Processor { tokenizer, template, image_config, special, eos_token_ids, files: Vec::new() })
    }

    /// Token ids of one user turn (the image, if any, then `prompt`) with the template's
    /// default system prompt and the generation prompt, plus the image's pixel values.
    pub fn encode(&self, image: Option<&Image>, prompt: &str) -> Result<Encoded> {
        let processed = image.map(|img| self.preprocess_image(img)).transpose()?;
        let text = self.template.render(&[ChatMessage::user(image.is_some(), prompt)], true)?;
        let input_ids = self.tokenize(&self.expand_image_pads(&text, processed.as_ref())?, true)?;
        let (pixel_values, grid_thw) = split(processed);
        Ok(Encoded { input_ids, pixel_values, grid_thw })
    }

    /// [`Processor::encode`]'s ids followed by the assistant's `answer` as the template closes
    /// it, with a mask marking the answer's ids. The two parts are tokenized separately, so the
    /// prompt ids are exactly those the model is given at generation time.
    pub fn encode_conversation(
        &self,
        image: Option<&Image>,
        prompt: &str,
        answer: &str,
    ) -> Result<EncodedConversation> {
        let processed = image.map(|img| self.preprocess_image(img)).transpose()?;
        let user = ChatMessage::user(image.is_some(), prompt);
        let prompt_text = self.template.render(std::slice::from_ref(&user), true)?;
        let full_text = self.template.render(&[user, ChatMessage::assistant(answer)], false)?;
        let completion = full_text.strip_prefix(prompt_text.as_str()).with_context(|| {
            format!(
                "the chat template's conversation does not start with its generation prompt: {prompt_text:?}"
            )
        })?;
        let mut input_ids =
            self.tokenize(&self.expand_image_pads(&prompt_text, processed.as_ref())?, true)?;
        let completion_ids = self.tokenize(completion, false)?;
        let mut completion_mask = vec![false; input_ids.len()];
        completion_mask.resize(input_ids.len() + completion_ids.len(), true);
        input_ids.extend(completion_ids);
        let (pixel_values, grid_thw) = split(processed);
        Ok(EncodedConversation { input_ids, completion_mask, pixel_values, grid_thw })
    }

    /// Resize, normalise and patchify an image with this checkpoint's settings.
    pub fn preprocess_image(&self, image: &Image) -> Result<ProcessedImage> {
        preprocess_image(image, &self.image_config)
    }

    /// Replace the rendered `<|image_pad|>` with one pad per merged patch of `image`.
    fn expand_image_pads(&self, text: &str, image: Option<&ProcessedImage>) -> Result<String> {
        let found = text.matches(IMAGE_PAD).count();
        let expected = usize::from(image.is_some());
        if found != expected {
            crate::bail!("the templated prompt holds {found} {IMAGE_PAD} tokens for {expected} image(s)");
        }
        Ok(match image {
            Some(img) => text.replacen(
                IMAGE_PAD,
                &IMAGE_PAD.repeat(img.num_image_tokens(self.image_config.merge_size)),
                1,
            ),
            None => text.to_string(),
        })
    }

    /// Tokenize text in which special tokens are written out (`<|im_start|>` becomes one id).
    pub fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| Error::msg(format!("tokenizing {:?}: {e}", preview(text))))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`; with `skip_special_tokens` the chat and vision markers are left out.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::msg(format!("decoding token ids: {e}")))
    }

    pub fn special_tokens(&self) -> SpecialTokens {
        self.special
    }

    pub fn image_pad_id(&self) -> u32 {
        self.special.image_pad
    }

    pub fn vision_start_id(&self) -> u32 {
        self.special.vision_start
    }

    pub fn vision_end_id(&self) -> u32 {
        self.special.vision_end
    }

    pub fn endoftext_id(&self) -> u32 {
        self.special.endoftext
    }

    /// Ids at which generation stops.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// Number of tokens the tokenizer knows, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn preprocessor_config(&self) -> &PreprocessorConfig {
        &self.image_config
    }

    pub fn chat_template(&self) -> &ChatTemplate {
        &self.template
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

fn parse_tokenizer(bytes: &[u8]) -> Result<Tokenizer> {
    Tokenizer::from_bytes(bytes).map_err(|e| Error::msg(format!("not a valid tokenizer: {e}")))
}

/// `eos_token_id` of a `generation_config.json`: one id or a list.
fn eos_ids_in(text: &str) -> Result<Option<Vec<u32>>> {
    let cfg: Value = serde_json::from_str(text)?;
    let to_id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    match cfg.get("eos_token_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let ids: Option<Vec<u32>> = items.iter().map(to_id).collect();
            Ok(Some(ids.with_context(|| format!("key \"eos_token_id\": expected token ids, got {items:?}"))?))
        }
        Some(v) => Ok(Some(vec![
            to_id(v).with_context(|| format!("key \"eos_token_id\": expected a token id, got {v}"))?
        ])),
    }
}

fn split(processed: Option<ProcessedImage>) -> (Option<Tensor>, Option<[usize; 3]>) {
    match processed {
        Some(p) => (Some(p.pixel_values), Some(p.grid_thw)),
        None => (None, None),
    }
}

/// The start of a long text, for error messages.
fn preview(text: &str) -> String {
    text.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/models/qwen2_5_vl/processor/testdata").join(name)
    }

    fn expected() -> Value {
        serde_json::from_str(&std::fs::read_to_string(testdata("expected.json")).unwrap()).unwrap()
    }

    fn ids(v: &Value) -> Vec<u32> {
        serde_json::from_value(v.clone()).unwrap()
    }

    /// Ids from transformers' tokenizer and chat template on the tiny preset's files, with the
    /// image pads expanded for the 37x23 fixture image (grid 1x6x8 -> 12 pads).
    #[test]
    fn tiny_ids_match_transformers() {
        let exp = expected();
        let prompt = exp["prompt"].as_str().unwrap();
        let processor = Processor::tiny().unwrap();
        let image = Image::open(&testdata("input_37x23.png")).unwrap();
        let with_image = processor.encode(Some(&image), prompt).unwrap();
        assert_eq!(with_image.input_ids, ids(&exp["tiny_image_ids"]));
        assert_eq!(with_image.grid_thw, Some([1, 4, 6]));
        let text_only = processor.encode(None, prompt).unwrap();
        assert_eq!(text_only.input_ids, ids(&exp["tiny_text_ids"]));
        assert!(text_only.pixel_values.is_none() && text_only.grid_thw.is_none());
    }

    #[test]
    fn image_pad_expands_to_one_token_per_merged_patch() {
        let processor = Processor::tiny().unwrap();
        let image = Image::new(28, 28, 1, vec![128u8; 28 * 28]).unwrap();
        let enc = processor.encode(Some(&image), "What organ is this?").unwrap();
        // A 28 px image keeps its size: a 4x4 grid of 7 px patches, 2x2 merged patches.
        assert_eq!(enc.grid_thw, Some([1, 4, 4]));
        let pads = enc.input_ids.iter().filter(|&&id| id == processor.image_pad_id()).count();
        assert_eq!(pads, 4);
        let start = enc.input_ids.iter().position(|&id| id == processor.vision_start_id()).unwrap();
        assert!(enc.input_ids[start + 1..start + 5].iter().all(|&id| id == processor.image_pad_id()));
        assert_eq!(enc.input_ids[start + 5], processor.vision_end_id());
        assert_eq!(enc.pixel_values.unwrap().dims(), &[16, 3 * 2 * 7 * 7]);
    }

    #[test]
    fn generation_prompt_ends_the_ids_and_decodes_back() {
        let processor = Processor::tiny().unwrap();
        let enc = processor.encode(None, "Is there a nodule? Answer yes or no.").unwrap();
        let text = processor.decode(&enc.input_ids, false).unwrap();
        assert!(text.ends_with("<|im_start|>assistant\n"), "{text:?}");
        let plain = processor.decode(&enc.input_ids, true).unwrap();
        assert_eq!(
            plain,
            "system\nYou are a helpful assistant.\nuser\nIs there a nodule? Answer yes or no.\nassistant\n"
        );
    }

    #[test]
    fn conversation_masks_exactly_the_completion() {
        let processor = Processor::tiny().unwrap();
        let image = Image::new(28, 28, 3, vec![200u8; 28 * 28 * 3]).unwrap();
        let answer = "<think>The texture suggests debris.</think>\n<answer>C</answer>";
        let conv = processor.encode_conversation(Some(&image), "Which tissue?", answer).unwrap();
        let prompt = processor.encode(Some(&image), "Which tissue?").unwrap();
        let n = prompt.input_ids.len();
        assert_eq!(&conv.input_ids[..n], &prompt.input_ids[..]);
        assert_eq!(conv.completion_mask.len(), conv.input_ids.len());
        assert!(
            conv.completion_mask[..n].iter().all(|&m| !m) && conv.completion_mask[n..].iter().all(|&m| m)
        );
        let completion = processor.decode(&conv.input_ids[n..], false).unwrap();
        assert_eq!(completion, format!("{answer}<|im_end|>\n"));
        assert_eq!(conv.grid_thw, prompt.grid_thw);
    }

    #[test]
    fn tiny_special_ids_follow_the_trained_vocabulary() {
        let processor = Processor::tiny().unwrap();
        assert_eq!(processor.vocab_size(), 1024);
        let s = processor.special_tokens();
        assert_eq!((s.endoftext, s.im_start, s.im_end), (1002, 1003, 1004));
        assert_eq!((s.vision_start, s.vision_end, s.image_pad, s.video_pad), (1011, 1012, 1014, 1015));
        assert_eq!(processor.eos_token_ids(), &[1004, 1002]);
    }

    #[test]
    fn from_dir_reads_a_checkpoint_and_its_generation_config() {
        let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/qwen2_5_vl_tiny");
        let dir = tempfile::tempdir().unwrap();
        for name in ["tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"] {
            std::fs::copy(assets.join(name), dir.path().join(name)).unwrap();
        }
        let loaded = Processor::from_dir(dir.path()).unwrap();
        let tiny = Processor::tiny().unwrap();
        assert_eq!(
            loaded.encode(None, "hello").unwrap().input_ids,
            tiny.encode(None, "hello").unwrap().input_ids
        );
        std::fs::write(dir.path().join("generation_config.json"), r#"{"eos_token_id": 1004}"#).unwrap();
        assert_eq!(Processor::from_dir(dir.path()).unwrap().eos_token_ids(), &[1004]);
    }

    #[test]
    fn missing_tokenizer_json_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Processor::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("loading the processor from") && err.contains("tokenizer.json"), "{err}");
    }

    #[test]
    fn bad_preprocessor_config_is_named() {
        let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/qwen2_5_vl_tiny");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(assets.join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
        std::fs::write(dir.path().join("preprocessor_config.json"), r#"{"patch_size": "big"}"#).unwrap();
        let err = Processor::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("preprocessor_config.json") && err.contains("patch_size"), "{err}");
    }
}
