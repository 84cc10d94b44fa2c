//! `Vlm`: a Qwen2.5-VL model together with its processor — what a script calls a model.
//!
//! The model only knows tensors and the processor only knows text and pixels; this pairing turns
//! `(image, prompt)` into ids and pixels, runs the model, and turns ids back into text. Loading
//! checks that the two agree (patch sizes, special token ids), because a mismatch would not fail
//! loudly: it would just give a model that never sees its images right.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::qwen2_5_vl::{
    load, presets, Config, Encoded, LoraConfig, ModelInfo, Processor, Qwen25VL, TokenIds,
};
use crate::error::{Context, Result};
use crate::image::Image;

/// How a random-initialised model is made: its seed, dtype and device, and optional depth cuts
/// (`layers` decoder layers, `vision_layers` vision blocks) that keep every width.
#[derive(Clone, Debug)]
pub struct RandomInit {
    pub seed: u64,
    pub dtype: DType,
    pub device: Device,
    pub layers: Option<usize>,
    pub vision_layers: Option<usize>,
}

impl RandomInit {
    /// f32 at full depth.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self { seed, dtype: DType::F32, device: device.clone(), layers: None, vision_layers: None }
    }
}

#[derive(Clone, Debug)]
pub struct Vlm {
    pub model: Qwen25VL,
    pub processor: Processor,
    /// Where it came from: a preset name, a directory or a hub id (adapters record it as base).
    pub source: String,
}

impl Vlm {
    /// Load weights and processor files from a directory or a cached hub id.
    pub fn load(path_or_id: &str, dtype: DType, device: &Device) -> Result<Self> {
        let files = load::resolve(path_or_id)?;
        Self::load_files(path_or_id, &files, dtype, device)
    }

    /// Load from a directory or a hub id, downloading what the cache lacks when `source` allows;
    /// also says where the files came from (repo, revision, commit, what was downloaded).
    pub fn load_with(
        path_or_id: &str,
        source: &load::HubSource,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, load::Origin)> {
        let (files, origin) =
            load::resolve_with(path_or_id, source).with_context(|| format!("loading model {path_or_id}"))?;
        Ok((Self::load_files(path_or_id, &files, dtype, device)?, origin))
    }

    fn load_files(
        path_or_id: &str,
        files: &load::CheckpointFiles,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let dir: PathBuf = files.config.parent().map(Path::to_path_buf).unwrap_or_default();
        let model = Qwen25VL::load_files(files, dtype, device)
            .with_context(|| format!("loading model {path_or_id}"))?;
        let processor =
            Processor::from_dir(&dir).with_context(|| format!("loading the processor of {path_or_id}"))?;
        Self::pair(model, processor, path_or_id)
    }

    /// A random-initialised preset in f32 at full depth (see [`Vlm::new_preset_with`]).
    pub fn new_preset(name: &str, seed: u64, device: &Device) -> Result<Self> {
        Self::new_preset_with(name, &RandomInit::new(seed, device))
    }

    /// A random-initialised preset with the tiny tokenizer: `qwen2_5_vl_tiny`, or the hub shapes
    /// of `qwen2_5_vl_3b`/`qwen2_5_vl_7b` with the hub's image processor.
    pub fn new_preset_with(name: &str, init: &RandomInit) -> Result<Self> {
        let (config, processor) = Self::preset_parts(name)?;
        Self::new_random(config, processor, init, name)
    }

    /// The config [`Vlm::new_preset_with`] builds preset `name` from, without its weights (what
    /// `memory_plan` reads).
    pub fn preset_config(name: &str) -> Result<Config> {
        Ok(Self::preset_parts(name)?.0)
    }

    fn preset_parts(name: &str) -> Result<(Config, Processor)> {
        let processor = match presets::is_hub_shaped(name) {
            true => Processor::tiny_tokenizer_with(presets::HUB_PREPROCESSOR_CONFIG)?,
            false => Processor::tiny()?,
        };
        let config = presets::preset(name, processor.vocab_size(), tiny_token_ids(&processor))?;
        Ok((config, processor))
    }

    /// A random-initialised model of `config` paired with the tiny tokenizer (whose vocabulary
    /// and special ids override the config's).
    pub fn new_custom(mut config: Config, init: &RandomInit) -> Result<Self> {
        let processor = Processor::tiny()?;
        config.text.vocab_size = processor.vocab_size();
        config.tokens = tiny_token_ids(&processor);
        config.validate()?;
        Self::new_random(config, processor, init, "custom")
    }

    fn new_random(config: Config, processor: Processor, init: &RandomInit, source: &str) -> Result<Self> {
        let config = config.with_depth(init.layers, init.vision_layers)?;
        let model = Qwen25VL::new_random(&config, init.seed, init.dtype, &init.device)?;
        Self::pair(model, processor, source)
    }

    fn pair(model: Qwen25VL, processor: Processor, source: &str) -> Result<Self> {
        let (v, p) = (&model.config().vision, processor.preprocessor_config());
        if (v.patch_size, v.spatial_merge_size, v.temporal_patch_size)
            != (p.patch_size, p.merge_size, p.temporal_patch_size)
        {
            crate::bail!(
                "{source}: the vision tower expects patch {}/merge {}/temporal {} but preprocessor_config.json gives {}/{}/{}",
                v.patch_size, v.spatial_merge_size, v.temporal_patch_size, p.patch_size, p.merge_size, p.temporal_patch_size
            );
        }
        let (model_pad, proc_pad) = (model.config().tokens.image_token_id, processor.image_pad_id());
        if model_pad != proc_pad {
            crate::bail!("{source}: config image_token_id {model_pad} differs from the tokenizer's <|image_pad|> {proc_pad}");
        }
        Ok(Vlm { model, processor, source: source.to_string() })
    }

    /// Same processor, another model (after LoRA, training or merging).
    pub fn with_model(&self, model: Qwen25VL) -> Self {
        Vlm { model, processor: self.processor.clone(), source: self.source.clone() }
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// Chat-templated ids (with the generation prompt) and the image's pixels on the model's device.
    pub fn encode(&self, image: Option<&Image>, prompt: &str) -> Result<Encoded> {
        let mut enc = self.processor.encode(image, prompt)?;
        if let Some(px) = enc.pixel_values.take() {
            enc.pixel_values = Some(px.to_device(self.device())?.to_dtype(self.model.dtype())?);
        }
        Ok(enc)
    }

    fn grids(enc: &Encoded) -> Vec<[usize; 3]> {
        enc.grid_thw.into_iter().collect()
    }

    /// Logits `[seq, vocab]` (f32) over exactly the encoded ids.
    pub fn logits(&self, image: Option<&Image>, prompt: &str) -> Result<Tensor> {
        let enc = self.encode(image, prompt)?;
        let ids = Tensor::new(enc.input_ids.as_slice(), self.device())?.unsqueeze(0)?;
        let logits = self.model.forward(&ids, enc.pixel_values.as_ref(), &Self::grids(&enc))?;
        Ok(logits.squeeze(0)?.to_dtype(DType::F32)?)
    }

    /// Greedy continuation, decoded without special tokens; stops at the tokenizer's eos ids.
    pub fn generate_greedy(
        &self,
        image: Option<&Image>,
        prompt: &str,
        max_new_tokens: usize,
    ) -> Result<String> {
        let enc = self.encode(image, prompt)?;
        let ids = self.model.generate(
            &enc.input_ids,
            enc.pixel_values.as_ref(),
            &Self::grids(&enc),
            max_new_tokens,
            self.processor.eos_token_ids(),
        )?;
        self.processor.decode(&ids, true)
    }

    /// Merged vision features `[tokens, hidden]` of one image and their mean `[hidden]`.
    pub fn vision_features(&self, image: &Image) -> Result<(Tensor, Tensor)> {
        let processed = self.processor.preprocess_image(image)?;
        let px = processed.pixel_values.to_device(self.device())?.to_dtype(self.model.dtype())?;
        let (mut per_image, pooled) = self.model.vision_features(&px, &[processed.grid_thw])?;
        let tokens = per_image.pop().context("the vision tower returned no features")?;
        Ok((tokens.to_dtype(DType::F32)?, pooled.squeeze(0)?.to_dtype(DType::F32)?))
    }

    pub fn with_lora(&self, cfg: &LoraConfig) -> Result<Self> {
        Ok(self.with_model(self.model.with_lora(cfg)?))
    }

    /// Weights (adapters merged) plus the processor's files, in the hub layout.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.model.save(dir)?;
        self.processor.save(dir)
    }

    pub fn info(&self) -> Result<ModelInfo> {
        self.model.info()
    }
}

/// The model-side special ids of a processor's tokenizer.
fn tiny_token_ids(p: &Processor) -> TokenIds {
    let s = p.special_tokens();
    TokenIds {
        image_token_id: s.image_pad,
        video_token_id: s.video_pad,
        vision_start_token_id: s.vision_start,
        vision_end_token_id: s.vision_end,
        bos_token_id: Some(s.endoftext),
        eos_token_id: Some(s.im_end),
    }
}
