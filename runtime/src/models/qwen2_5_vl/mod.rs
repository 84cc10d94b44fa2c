//! Qwen2.5-VL (vision tower + Qwen2 decoder with M-RoPE), faithful to transformers' implementation.
//!
//! [`Qwen25VL`] takes the same raw tensors as transformers' `Qwen2_5_VLForConditionalGeneration`:
//! `input_ids`, `pixel_values` `(Σ t·h·w, C·T·P·P)` and one `[t, h, w]` grid per image. Image
//! features replace the `image_token_id` positions; position ids follow `get_rope_index`.
//! The folder reads in data-flow order: `processor/` turns an image and a prompt into those
//! tensors; then the inference model: `config`, `presets`, `weights`/`load`, `ops/` (the kernels
//! and which one runs), `lora` (the linear layer, which can carry an adapter), `vision_window`,
//! `vision`, `text`, `rope_index`, `cache`, then this file; `training/` makes it trainable, reads
//! and writes PEFT adapters, and holds the hand-derived training pass. `README.md` maps the
//! folder and tables which kernel runs for which device, dtype and mode.

pub mod cache;
pub mod config;
pub mod load;
pub mod lora;
pub mod ops;
pub mod presets;
pub mod processor;
pub mod rope_index;
pub mod text;
pub mod training;
pub mod vision;
pub mod vision_window;
pub mod weights;

#[cfg(test)]
mod parity_tests;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};

pub use cache::KvCache;
pub use config::{Config, TextConfig, TokenIds, VisionConfig};
pub use lora::{LoraConfig, LoraInit};
pub use processor::chat_template::{ChatMessage, ChatTemplate, ContentPart};
pub use processor::image::{smart_resize, PreprocessorConfig, ProcessedImage};
pub use processor::{Encoded, EncodedConversation, Processor, SpecialTokens};
pub use text::KvLayer;
pub use training::backprop;
pub use training::trainable::ModelInfo;
pub use vision_window::{grids_from_tensor, Grid};

use crate::device::on_cpu_pool;
use crate::error::{Context, Result};
use lora::LoraState;
use text::TextModel;
use vision::VisionModel;
use weights::{RandomSource, Weights};

/// The whole model. Cloning is cheap: tensors are shared, not copied.
#[derive(Debug, Clone)]
pub struct Qwen25VL {
    pub(crate) vision: VisionModel,
    pub(crate) text: TextModel,
    cfg: Config,
    /// Switches shared by this model's LoRA adapters, when it has any.
    pub(crate) lora: Option<Arc<LoraState>>,
    /// What an optimiser should update, with PEFT-style (adapters) or hub (full FT) names.
    pub(crate) trainable: Vec<(String, Var)>,
}

/// [`Qwen25VL::decoder_inputs`]' result.
pub(crate) struct DecoderInputs {
    pub embeds: Tensor,
    pub pos: text::MropePositions,
    pub cache: KvCache,
    pub mask: Option<Tensor>,
}

impl Qwen25VL {
    /// Build from a hub-layout weight source (`model.*`, `visual.*`, `lm_head`).
    pub fn new(cfg: &Config, w: &Weights) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            vision: VisionModel::new(&cfg.vision, &w.pp("visual"))?,
            text: TextModel::new(&cfg.text, w)?,
            cfg: cfg.clone(),
            lora: None,
            trainable: Vec::new(),
        })
    }

    /// A seeded random initialisation (transformers' scheme: normal(0, 0.02) weights, zero
    /// biases, unit norms). The same seed gives the same weights on every run.
    pub fn new_random(cfg: &Config, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let source = RandomSource::new(seed);
        Self::new(cfg, &Weights::new(&source, dtype, device))
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn vision(&self) -> &VisionModel {
        &self.vision
    }

    pub fn dtype(&self) -> DType {
        self.text.dtype()
    }

    pub fn device(&self) -> &Device {
        self.text.device()
    }

    /// Merged vision features of each image `(tokens_i, out_hidden)` and their per-image mean
    /// `(images, out_hidden)`, the pooled form a linear probe reads.
    pub fn vision_features(&self, pixel_values: &Tensor, grids: &[Grid]) -> Result<(Vec<Tensor>, Tensor)> {
        let merged = self.vision.forward(pixel_values, grids)?;
        let unit = self.cfg.vision.spatial_merge_size.pow(2);
        let mut per_image = Vec::with_capacity(grids.len());
        let mut start = 0;
        for &[t, h, w] in grids {
            let n = t * h * w / unit;
            per_image.push(merged.narrow(0, start, n)?);
            start += n;
        }
        let pooled = per_image.iter().map(|f| f.mean_keepdim(0)).collect::<candle_core::Result<Vec<_>>>()?;
        Ok((per_image, Tensor::cat(&pooled, 0)?))
    }

    /// Token embeddings with the image features written over the image tokens, `(b, s, hidden)`.
    pub fn embed_inputs(
        &self,
        input_ids: &Tensor,
        pixel_values: Option<&Tensor>,
        grids: &[Grid],
    ) -> Result<Tensor> {
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let embeds = self.text.embed(&input_ids.to_dtype(DType::U32)?)?;
        let image_token = self.cfg.tokens.image_token_id;
        let slots: usize = ids.iter().flatten().filter(|&&t| t == image_token).count();
        let features = match pixel_values {
            Some(pv) => Some(self.vision.forward(pv, grids)?),
            None => None,
        };
        let n_features = match &features {
            Some(f) => f.dim(0)?,
            None => 0,
        };
        if slots != n_features {
            crate::bail!(
                "image features and image tokens do not match: the prompt holds {slots} image tokens \
                 (id {image_token}) but the images give {n_features} features"
            );
        }
        let Some(features) = features else { return Ok(embeds) };
        let (b, s, h) = embeds.dims3()?;
        // Gather from [text embeddings; image features]: image slots point past the text rows.
        let mut next = b * s;
        let gather: Vec<u32> = ids
            .iter()
            .flatten()
            .enumerate()
            .map(|(p, &t)| {
                if t == image_token {
                    next += 1;
                    (next - 1) as u32
                } else {
                    p as u32
                }
            })
            .collect();
        let gather = Tensor::new(gather, embeds.device())?;
        let pool = Tensor::cat(&[&embeds.reshape((b * s, h))?, &features.to_dtype(embeds.dtype())?], 0)?;
        Ok(pool.index_select(&gather, 0)?.reshape((b, s, h))?)
    }

    /// Run a (possibly padded) batch of prompts and return logits `(b, s, vocab)` with the
    /// cache to continue from. `attention_mask` is `(b, s)`, 1 for tokens and 0 for padding.
    pub fn prefill(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        pixel_values: Option<&Tensor>,
        grids: &[Grid],
    ) -> Result<(Tensor, KvCache)> {
        on_cpu_pool(|| {
            let (hidden, cache) = self.prefill_hidden(input_ids, attention_mask, pixel_values, grids)?;
            Ok((self.text.lm_head(&hidden)?, cache))
        })
    }

    /// [`Self::prefill`] without the LM head: the final-normed hidden states `(b, s, hidden)`,
    /// for callers that need logits at a few positions only ([`Self::lm_head`] them).
    pub fn prefill_hidden(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        pixel_values: Option<&Tensor>,
        grids: &[Grid],
    ) -> Result<(Tensor, KvCache)> {
        let DecoderInputs { embeds, pos, mut cache, mask } =
            self.decoder_inputs(input_ids, attention_mask, pixel_values, grids)?;
        let hidden = self.text.forward(&embeds, &pos, mask.as_ref(), &mut cache.layers)?;
        Ok((hidden, cache))
    }

    /// What the decoder runs on for a (possibly padded) batch: embeddings with the image
    /// features in place, M-RoPE positions, an empty cache that knows the valid keys, and the
    /// additive mask `(b, 1, s, s)`.
    pub(crate) fn decoder_inputs(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        pixel_values: Option<&Tensor>,
        grids: &[Grid],
    ) -> Result<DecoderInputs> {
        let (b, s) = input_ids.dims2().context("input_ids must be (batch, seq)")?;
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let valid: Vec<Vec<bool>> = match attention_mask {
            Some(m) => {
                if m.dims() != [b, s] {
                    crate::bail!("attention_mask has shape {:?}, input_ids [{b}, {s}]", m.dims());
                }
                m.to_dtype(DType::F32)?
                    .to_vec2::<f32>()?
                    .iter()
                    .map(|r| r.iter().map(|&v| v != 0.0).collect())
                    .collect()
            }
            None => vec![vec![true; s]; b],
        };
        let embeds = self.embed_inputs(input_ids, pixel_values, grids)?;
        let (pos, deltas) = rope_index::rope_index(
            &ids,
            &valid,
            grids,
            &self.cfg.tokens,
            self.cfg.vision.spatial_merge_size,
        )?;
        let mut cache = KvCache::empty(self.text.num_layers(), b, deltas);
        cache.extend_valid(&valid);
        let mask = cache.mask(s, embeds.device())?;
        Ok(DecoderInputs { embeds, pos, cache, mask })
    }

    /// Logits `(.., vocab)` from final hidden states.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        self.text.lm_head(hidden)
    }

    /// Logits `(b, s, vocab)` over a whole unpadded batch, as transformers' `forward`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        pixel_values: Option<&Tensor>,
        grids: &[Grid],
    ) -> Result<Tensor> {
        Ok(self.prefill(input_ids, None, pixel_values, grids)?.0)
    }

    /// Feed `n` new tokens per row `(b, n)` after the cached ones; returns their logits `(b, n, vocab)`.
    pub fn decode_step(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, n) = input_ids.dims2().context("decode input_ids must be (batch, n)")?;
        if b != cache.batch() {
            crate::bail!("decode batch {b} does not match the cache's {} rows", cache.batch());
        }
        let past = cache.len() as i64;
        let mut ids = vec![0i64; 3 * b * n];
        for axis in 0..3 {
            for (row, delta) in cache.rope_deltas.iter().enumerate() {
                for j in 0..n {
                    ids[(axis * b + row) * n + j] = past + j as i64 + delta;
                }
            }
        }
        let pos = text::MropePositions { batch: b, seq: n, ids };
        cache.extend_valid(&vec![vec![true; n]; b]);
        let embeds = self.text.embed(input_ids)?;
        let mask = cache.mask(n, embeds.device())?;
        let hidden = self.text.forward(&embeds, &pos, mask.as_ref(), &mut cache.layers)?;
        self.text.lm_head(&hidden)
    }

    /// One new token per row, `ids[r]` at M-RoPE position `positions[r]` on every axis (the row's
    /// cached length plus its delta), over caller-kept layers: logits `(rows, vocab)`. Rows may
    /// hold different lengths, as in the sampling engine's paged decode steps.
    pub fn decode_rows(&self, ids: &[u32], positions: &[i64], kv: &mut [impl KvLayer]) -> Result<Tensor> {
        let rows = ids.len();
        if positions.len() != rows {
            crate::bail!("decode_rows: {rows} tokens but {} positions", positions.len());
        }
        let pos = text::MropePositions { batch: rows, seq: 1, ids: positions.repeat(3) };
        let embeds = self.text.embed(&Tensor::new(ids, self.device())?.unsqueeze(1)?)?;
        let hidden = self.text.forward(&embeds, &pos, None, kv)?;
        Ok(self.text.lm_head(&hidden)?.squeeze(1)?)
    }

    /// Greedy decoding of one prompt: the new token ids, stopping after an id in `eos_ids`
    /// (included) or `max_new_tokens`.
    pub fn generate(
        &self,
        input_ids: &[u32],
        pixel_values: Option<&Tensor>,
        grids: &[Grid],
        max_new_tokens: usize,
        eos_ids: &[u32],
    ) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if input_ids.is_empty() {
            crate::bail!("generate needs at least one prompt token");
        }
        if max_new_tokens == 0 {
            return Ok(out);
        }
        let ids = Tensor::new(input_ids, self.device())?.unsqueeze(0)?;
        let (logits, mut cache) = self.prefill(&ids, None, pixel_values, grids)?;
        let mut last = logits.narrow(1, input_ids.len() - 1, 1)?;
        loop {
            // One copy of the row to the host serves both the finiteness check and the choice.
            let values = last.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            crate::tensor::check_logits_finite(&values, "generate", || format!("new token {}", out.len()))?;
            let next = crate::tensor::first_argmax(&values);
            out.push(next);
            if eos_ids.contains(&next) || out.len() == max_new_tokens {
                return Ok(out);
            }
            last = self.decode_step(&Tensor::new(&[[next]], self.device())?, &mut cache)?;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A non-square image: 8x6 patches, merged 4x3, so 2x2-unit windows need edge padding.
    pub(crate) const GRID: Grid = [1, 8, 6];

    /// The committed parity fixture `tests/fixtures/qwen2_5_vl_tiny/`.
    pub(crate) fn fixture() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen2_5_vl_tiny")
    }

    pub(crate) fn tiny(dtype: DType, dev: &Device) -> Qwen25VL {
        Qwen25VL::new_random(&Config::tiny(), 7, dtype, dev).unwrap()
    }

    /// Text, `<vision_start>`, 12 image tokens, `<vision_end>`, text.
    pub(crate) fn prompt(cfg: &Config) -> Vec<u32> {
        let t = &cfg.tokens;
        let mut ids = vec![5, 17, 42, t.vision_start_token_id];
        ids.extend(std::iter::repeat_n(t.image_token_id, 12));
        ids.extend([t.vision_end_token_id, 99, 3, 250, 8]);
        ids
    }

    pub(crate) fn pixels(dtype: DType, dev: &Device) -> Tensor {
        let n = GRID.iter().product::<usize>();
        let values: Vec<f32> = (0..n * 294).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        Tensor::from_vec(values, (n, 294), dev).unwrap().to_dtype(dtype).unwrap()
    }

    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap();
        d.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    fn row(ids: &[u32], dev: &Device) -> Tensor {
        Tensor::new(ids, dev).unwrap().unsqueeze(0).unwrap()
    }

    fn kv_cached_decoding_equals_full_forward(dev: &Device) {
        let m = tiny(DType::F32, dev);
        let pv = pixels(DType::F32, dev);
        let mut ids = prompt(m.config());
        let n = ids.len();
        ids.extend([11, 12, 13]);
        let full = m.forward(&row(&ids, dev), Some(&pv), &[GRID]).unwrap();
        let (pre, mut cache) = m.prefill(&row(&ids[..n], dev), None, Some(&pv), &[GRID]).unwrap();
        assert!(max_diff(&pre, &full.narrow(1, 0, n).unwrap()) < 1e-5);
        let one = m.decode_step(&row(&ids[n..n + 1], dev), &mut cache).unwrap();
        let two = m.decode_step(&row(&ids[n + 1..], dev), &mut cache).unwrap();
        assert!(max_diff(&one, &full.narrow(1, n, 1).unwrap()) < 1e-4);
        assert!(max_diff(&two, &full.narrow(1, n + 1, 2).unwrap()) < 1e-4);
        assert_eq!(cache.len(), n + 3);
    }

    #[test]
    fn kv_cached_decoding_equals_full_forward_cpu() {
        kv_cached_decoding_equals_full_forward(&Device::Cpu);
    }

    fn padded_batch_equals_unbatched(dev: &Device, left: bool) {
        let m = tiny(DType::F32, dev);
        let pv = pixels(DType::F32, dev);
        let long = prompt(m.config());
        let short = vec![7u32, 8, 9, 10, 11];
        let pad = long.len() - short.len();
        let (mut padded, mut mask) = (Vec::new(), Vec::new());
        if left {
            padded.extend(std::iter::repeat_n(0u32, pad));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        padded.extend(&short);
        mask.extend(std::iter::repeat_n(1u32, short.len()));
        if !left {
            padded.extend(std::iter::repeat_n(0u32, pad));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        let ids = Tensor::new(vec![long.clone(), padded], dev).unwrap();
        let masks = Tensor::new(vec![vec![1u32; long.len()], mask], dev).unwrap();
        let (batched, mut cache) = m.prefill(&ids, Some(&masks), Some(&pv), &[GRID]).unwrap();

        let (alone_long, mut cache_long) = m.prefill(&row(&long, dev), None, Some(&pv), &[GRID]).unwrap();
        let (alone_short, mut cache_short) = m.prefill(&row(&short, dev), None, None, &[]).unwrap();
        assert!(max_diff(&batched.get(0).unwrap(), &alone_long.get(0).unwrap()) < 1e-4);
        let start = if left { pad } else { 0 };
        let valid = batched.get(1).unwrap().narrow(0, start, short.len()).unwrap();
        assert!(max_diff(&valid, &alone_short.get(0).unwrap()) < 1e-4);

        if left {
            // Decoding continues each row from its own last position.
            let step = m.decode_step(&Tensor::new(&[[20u32], [21]], dev).unwrap(), &mut cache).unwrap();
            let a = m.decode_step(&row(&[20], dev), &mut cache_long).unwrap();
            let b = m.decode_step(&row(&[21], dev), &mut cache_short).unwrap();
            assert!(max_diff(&step.get(0).unwrap(), &a.get(0).unwrap()) < 1e-4);
            assert!(max_diff(&step.get(1).unwrap(), &b.get(0).unwrap()) < 1e-4);
        }
    }

    #[test]
    fn left_padded_batch_equals_unbatched_cpu() {
        padded_batch_equals_unbatched(&Device::Cpu, true);
    }

    #[test]
    fn right_padded_batch_equals_unbatched_cpu() {
        padded_batch_equals_unbatched(&Device::Cpu, false);
    }

    #[test]
    fn expanded_cache_decodes_like_the_original() {
        let dev = &Device::Cpu;
        let m = tiny(DType::F32, dev);
        let pv = pixels(DType::F32, dev);
        let (_, cache) = m.prefill(&row(&prompt(m.config()), dev), None, Some(&pv), &[GRID]).unwrap();
        let mut one = cache.clone();
        let mut three = cache.repeat_each(3).unwrap();
        assert_eq!(three.batch(), 3);
        let a = m.decode_step(&row(&[30], dev), &mut one).unwrap();
        let b = m.decode_step(&Tensor::new(&[[30u32], [30], [30]], dev).unwrap(), &mut three).unwrap();
        for r in 0..3 {
            assert!(max_diff(&b.get(r).unwrap(), &a.get(0).unwrap()) < 1e-5);
        }
        assert!(cache.select(&[1]).is_err());
    }

    #[test]
    fn greedy_generation_follows_the_argmax() {
        let dev = &Device::Cpu;
        let m = tiny(DType::F32, dev);
        let pv = pixels(DType::F32, dev);
        let mut ids = prompt(m.config());
        let out = m.generate(&ids, Some(&pv), &[GRID], 4, &[]).unwrap();
        assert_eq!(out.len(), 4);
        for &tok in &out {
            let logits = m.forward(&row(&ids, dev), Some(&pv), &[GRID]).unwrap();
            let last = logits.get(0).unwrap().get(ids.len() - 1).unwrap();
            assert_eq!(last.argmax(0).unwrap().to_scalar::<u32>().unwrap(), tok);
            ids.push(tok);
        }
        let stopped = m.generate(&prompt(m.config()), Some(&pv), &[GRID], 4, &[out[0]]).unwrap();
        assert_eq!(stopped, vec![out[0]]);
    }

    #[test]
    fn non_finite_logits_stop_greedy_generation_with_an_error() {
        let dev = &Device::Cpu;
        let m = tiny(DType::F32, dev).with_lora(&lora::LoraConfig::new(4, f64::NAN)).unwrap();
        let err =
            m.generate(&prompt(m.config()), Some(&pixels(DType::F32, dev)), &[GRID], 4, &[]).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("generate: the model's logits are not finite at new token 0 (NaN)"), "{err}");
        assert!(err.contains("LoRA alpha"), "{err}");
    }

    #[test]
    fn same_seed_same_model() {
        let dev = &Device::Cpu;
        let ids = row(&[1, 2, 3], dev);
        let a = tiny(DType::F32, dev).forward(&ids, None, &[]).unwrap();
        let b = tiny(DType::F32, dev).forward(&ids, None, &[]).unwrap();
        let c = Qwen25VL::new_random(&Config::tiny(), 8, DType::F32, dev)
            .unwrap()
            .forward(&ids, None, &[])
            .unwrap();
        assert_eq!(max_diff(&a, &b), 0.0);
        assert!(max_diff(&a, &c) > 0.0);
    }

    #[test]
    fn bad_inputs_are_named() {
        let dev = &Device::Cpu;
        let m = tiny(DType::F32, dev);
        let pv = pixels(DType::F32, dev);
        let ids = prompt(m.config());
        let err = m.forward(&row(&ids[..10], dev), Some(&pv), &[GRID]).unwrap_err().to_string();
        assert!(err.contains("6 image tokens") && err.contains("12 features"), "{err}");
        let err = m.forward(&row(&ids, dev), Some(&pv), &[[1, 8, 8]]).unwrap_err().to_string();
        assert!(err.contains("pixel_values has shape [48, 294]"), "{err}");
        let err = m.forward(&row(&ids, dev), Some(&pv), &[[1, 7, 6]]).unwrap_err().to_string();
        assert!(err.contains("multiples of 2"), "{err}");
        assert!(m.generate(&[], None, &[], 3, &[]).is_err());
    }

    #[test]
    fn vision_features_cover_every_merged_unit() {
        let dev = &Device::Cpu;
        let m = tiny(DType::F32, dev);
        let pv = pixels(DType::F32, dev);
        let two = Tensor::cat(&[&pv, &pv.narrow(0, 0, 16).unwrap()], 0).unwrap();
        let grids = [GRID, [1, 4, 4]];
        let merged = m.vision().forward(&two, &grids).unwrap();
        assert_eq!(merged.dims(), &[16, 64]);
        // Images attend only within themselves: the first image's features are unchanged.
        let alone = m.vision().forward(&pv, &[GRID]).unwrap();
        assert!(max_diff(&merged.narrow(0, 0, 12).unwrap(), &alone) < 1e-5);
        let patches = m.vision().forward_pre_merger(&pv, &[GRID]).unwrap();
        assert_eq!(patches.dims(), &[48, 32]);
        let (per_image, pooled) = m.vision_features(&two, &grids).unwrap();
        assert_eq!(
            (per_image[0].dims(), per_image[1].dims(), pooled.dims()),
            (&[12, 64][..], &[4, 64][..], &[2, 64][..])
        );
        let mean = merged.narrow(0, 12, 4).unwrap().mean_keepdim(0).unwrap();
        assert!(max_diff(&pooled.narrow(0, 1, 1).unwrap(), &mean) < 1e-6);
    }
}
