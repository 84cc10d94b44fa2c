//! Qwen2.5-VL's image preprocessing: `preprocessor_config.json`, `smart_resize`, bicubic resize,
//! rescale and normalise, and the patch layout the vision tower reads.
//!
//! This follows transformers' slow (Pillow) `Qwen2VLImageProcessor`, step for step, so that
//! `pixel_values` match it: the image is resized so both sides are multiples of
//! `patch_size * merge_size` with the pixel count inside `[min_pixels, max_pixels]`, scaled to
//! `[0, 1]`, normalised per channel, and cut into flattened patches ordered merge unit by merge
//! unit, each patch repeated over `temporal_patch_size` frames.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::{Map, Value};

use super::resize::resize_bicubic;
use crate::error::{Context, Error, Result};
use crate::image::Image;

/// CLIP's per-channel mean and standard deviation, transformers' defaults for Qwen2-VL.
const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Pillow's resampling code for bicubic, the only filter Qwen's processors use.
const PIL_BICUBIC: u64 = 3;

/// The image processor's settings, as `preprocessor_config.json` spells them.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    /// Smallest pixel count after resizing (`min_pixels` or `size.shortest_edge`).
    pub min_pixels: usize,
    /// Largest pixel count after resizing (`max_pixels` or `size.longest_edge`).
    pub max_pixels: usize,
    pub patch_size: usize,
    pub merge_size: usize,
    pub temporal_patch_size: usize,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    pub do_resize: bool,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
}

impl Default for PreprocessorConfig {
    /// transformers' `Qwen2VLImageProcessor` defaults.
    fn default() -> Self {
        PreprocessorConfig {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
            do_resize: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
        }
    }
}

impl PreprocessorConfig {
    /// Read `preprocessor_config.json`; errors name the file and the key.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text).with_context(|| path.display().to_string())
    }

    /// Parse the JSON text of a `preprocessor_config.json`. Keys left out take the defaults;
    /// `min_pixels` / `max_pixels` win over `size`, as in transformers.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)?;
        let map = value.as_object().context("expected a JSON object")?;
        let mut cfg = PreprocessorConfig::default();
        if let Some(size) = map.get("size").filter(|v| !v.is_null()) {
            let size = size.as_object().context("key \"size\": expected an object")?;
            let shortest = pixel_bound(size, "size", &["shortest_edge", "min_pixels"])?;
            let longest = pixel_bound(size, "size", &["longest_edge", "max_pixels"])?;
            cfg.min_pixels = shortest.unwrap_or(cfg.min_pixels);
            cfg.max_pixels = longest.unwrap_or(cfg.max_pixels);
        }
        if let Some(v) = optional_usize(map, "min_pixels")? {
            cfg.min_pixels = v;
        }
        if let Some(v) = optional_usize(map, "max_pixels")? {
            cfg.max_pixels = v;
        }
        for (key, field) in [
            ("patch_size", &mut cfg.patch_size),
            ("merge_size", &mut cfg.merge_size),
            ("temporal_patch_size", &mut cfg.temporal_patch_size),
        ] {
            if let Some(v) = optional_usize(map, key)? {
                if v == 0 {
                    crate::bail!("key \"{key}\": must be positive");
                }
                *field = v;
            }
        }
        if let Some(v) = optional_channels(map, "image_mean")? {
            cfg.image_mean = v;
        }
        if let Some(v) = optional_channels(map, "image_std")? {
            if v.contains(&0.0) {
                crate::bail!("key \"image_std\": a standard deviation of 0 divides by zero");
            }
            cfg.image_std = v;
        }
        for (key, field) in [
            ("do_resize", &mut cfg.do_resize),
            ("do_rescale", &mut cfg.do_rescale),
            ("do_normalize", &mut cfg.do_normalize),
        ] {
            if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
                *field =
                    v.as_bool().with_context(|| format!("key \"{key}\": expected true or false, got {v}"))?;
            }
        }
        if let Some(v) = map.get("rescale_factor").filter(|v| !v.is_null()) {
            cfg.rescale_factor =
                v.as_f64().with_context(|| format!("key \"rescale_factor\": expected a number, got {v}"))?;
        }
        if let Some(v) = map.get("resample").filter(|v| !v.is_null()) {
            if v.as_u64() != Some(PIL_BICUBIC) {
                crate::bail!("key \"resample\": only 3 (bicubic) is supported, got {v}");
            }
        }
        if cfg.min_pixels > cfg.max_pixels {
            crate::bail!("min_pixels {} is larger than max_pixels {}", cfg.min_pixels, cfg.max_pixels);
        }
        Ok(cfg)
    }

    /// Side length both resized dimensions are multiples of: one merge unit in pixels.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Length of one flattened patch: `3 * temporal_patch_size * patch_size²`.
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

fn optional_usize(map: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
    match map.get(key).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .with_context(|| format!("key \"{key}\": expected a non-negative integer, got {v}")),
    }
}

/// The first of `keys` present in `size`.
fn pixel_bound(size: &Map<String, Value>, parent: &str, keys: &[&str]) -> Result<Option<usize>> {
    for key in keys {
        if let Some(v) = optional_usize(size, key).with_context(|| format!("key \"{parent}\""))? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// A per-channel triple, or one number used for all three channels.
fn optional_channels(map: &Map<String, Value>, key: &str) -> Result<Option<[f64; 3]>> {
    let Some(v) = map.get(key).filter(|v| !v.is_null()) else { return Ok(None) };
    if let Some(x) = v.as_f64() {
        return Ok(Some([x; 3]));
    }
    let bad = || format!("key \"{key}\": expected 3 numbers (one per RGB channel), got {v}");
    let items = v.as_array().with_context(bad)?;
    let nums: Vec<f64> = items.iter().filter_map(Value::as_f64).collect();
    match nums[..] {
        [r, g, b] if items.len() == 3 => Ok(Some([r, g, b])),
        _ => Err(Error::msg(bad())),
    }
}

/// The size transformers resizes a `height`x`width` image to: both sides multiples of `factor`,
/// the pixel count within `[min_pixels, max_pixels]`, the aspect ratio kept as far as possible.
///
/// Rounding follows Python: `round` (ties to even) to the nearest multiple first; if that is too
/// large, both sides shrink by `sqrt(h*w/max_pixels)` and floor (never below `factor`); if too
/// small, both grow by `sqrt(min_pixels/(h*w))` and ceil. Aspect ratios above 200 are refused.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    if height == 0 || width == 0 || factor == 0 {
        crate::bail!("cannot resize a {height}x{width} image to multiples of {factor}");
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let ratio = h.max(w) / h.min(w);
    if ratio > 200.0 {
        crate::bail!("absolute aspect ratio must be smaller than 200, got {ratio} ({height}x{width})");
    }
    let mut h_bar = (h / f).round_ties_even() as usize * factor;
    let mut w_bar = (w / f).round_ties_even() as usize * factor;
    if h_bar * w_bar > max_pixels {
        let beta = (h * w / max_pixels as f64).sqrt();
        h_bar = factor.max((h / beta / f).floor() as usize * factor);
        w_bar = factor.max((w / beta / f).floor() as usize * factor);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() as usize * factor;
        w_bar = (w * beta / f).ceil() as usize * factor;
    }
    if h_bar == 0 || w_bar == 0 {
        crate::bail!("a {height}x{width} image resizes to {h_bar}x{w_bar}; raise min_pixels");
    }
    Ok((h_bar, w_bar))
}

/// One image ready for the vision tower.
#[derive(Debug, Clone)]
pub struct ProcessedImage {
    /// `(grid_t * grid_h * grid_w, 3 * temporal_patch_size * patch_size²)`, f32, on the CPU.
    pub pixel_values: Tensor,
    /// Patch grid `[t, h, w]`; `t` is 1 for a still image.
    pub grid_thw: [usize; 3],
}

impl ProcessedImage {
    /// Number of `<|image_pad|>` tokens this image occupies after the merger.
    pub fn num_image_tokens(&self, merge_size: usize) -> usize {
        self.grid_thw.iter().product::<usize>() / (merge_size * merge_size)
    }
}

/// The `(height, width)` an image of `width`x`height` pixels is resized to before patchifying.
fn output_size(width: usize, height: usize, cfg: &PreprocessorConfig) -> Result<(usize, usize)> {
    let (out_h, out_w) = if cfg.do_resize {
        smart_resize(height, width, cfg.factor(), cfg.min_pixels, cfg.max_pixels)?
    } else {
        (height, width)
    };
    if out_h % cfg.factor() != 0 || out_w % cfg.factor() != 0 {
        crate::bail!(
            "image {width}x{height} is not a multiple of patch_size*merge_size = {} and do_resize is false",
            cfg.factor()
        );
    }
    Ok((out_h, out_w))
}

/// Number of `<|image_pad|>` tokens `image` occupies, without resizing it: what
/// [`ProcessedImage::num_image_tokens`] of [`preprocess_image`]'s result says.
pub fn image_token_count(image: &Image, cfg: &PreprocessorConfig) -> Result<usize> {
    let (out_h, out_w) = output_size(image.width() as usize, image.height() as usize, cfg)?;
    let side = cfg.patch_size * cfg.merge_size;
    Ok((out_h / side) * (out_w / side))
}

/// Resize, rescale, normalise and patchify one image. Grey input is replicated to RGB.
pub fn preprocess_image(image: &Image, cfg: &PreprocessorConfig) -> Result<ProcessedImage> {
    let rgb = image.to_rgb();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    let (out_h, out_w) = output_size(width, height, cfg)?;
    let pixels = if (out_h, out_w) == (height, width) {
        rgb.pixels().to_vec()
    } else {
        resize_bicubic(rgb.pixels(), width, height, 3, out_w, out_h)
    };
    let planes = normalised_planes(&pixels, out_h * out_w, cfg);
    let (rows, grid_thw) = patchify(&planes, out_h, out_w, cfg);
    let pixel_values = Tensor::from_vec(rows, (grid_thw[1] * grid_thw[2], cfg.patch_dim()), &Device::Cpu)?;
    Ok(ProcessedImage { pixel_values, grid_thw })
}

/// Channel-first f32 planes from interleaved RGB bytes, with transformers' precision: rescale in
/// f64 then cast to f32, normalise in f32.
fn normalised_planes(pixels: &[u8], area: usize, cfg: &PreprocessorConfig) -> Vec<f32> {
    let mut planes = vec![0f32; 3 * area];
    for c in 0..3 {
        let (mean, std) = (cfg.image_mean[c] as f32, cfg.image_std[c] as f32);
        for i in 0..area {
            let raw = pixels[i * 3 + c];
            let mut v =
                if cfg.do_rescale { (f64::from(raw) * cfg.rescale_factor) as f32 } else { f32::from(raw) };
            if cfg.do_normalize {
                v = (v - mean) / std;
            }
            planes[c * area + i] = v;
        }
    }
    planes
}

/// Cut channel-first planes into flattened patches in transformers' order.
///
/// Rows run over merge units (block row, block column) and, inside each unit, over its
/// `merge_size²` patches row by row, so the merger later sees each unit's patches adjacent.
/// Each row holds channel, then time (the single frame repeated `temporal_patch_size` times),
/// then the patch's pixel rows and columns.
fn patchify(planes: &[f32], height: usize, width: usize, cfg: &PreprocessorConfig) -> (Vec<f32>, [usize; 3]) {
    let (p, m, t) = (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size);
    let (grid_h, grid_w) = (height / p, width / p);
    let area = height * width;
    let mut out = Vec::with_capacity(grid_h * grid_w * cfg.patch_dim());
    for block_row in 0..grid_h / m {
        for block_col in 0..grid_w / m {
            for mh in 0..m {
                for mw in 0..m {
                    let top = (block_row * m + mh) * p;
                    let left = (block_col * m + mw) * p;
                    for c in 0..3 {
                        for _frame in 0..t {
                            for ph in 0..p {
                                let start = c * area + (top + ph) * width + left;
                                out.extend_from_slice(&planes[start..start + p]);
                            }
                        }
                    }
                }
            }
        }
    }
    (out, [1, grid_h, grid_w])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_transformers_rounding() {
        // (h, w, factor, min, max) -> expected, worked by hand with Python's semantics.
        let cases = [
            // Already multiples, inside the bounds: unchanged.
            ((56, 84, 28, 56 * 56, 28 * 28 * 1280), (56, 84)),
            // 42/28 = 1.5 rounds to even (2), 70/28 = 2.5 rounds to even (2).
            ((42, 70, 28, 56 * 56, 28 * 28 * 1280), (56, 56)),
            // 98/28 = 3.5 rounds up to 4 (even).
            ((98, 98, 28, 56 * 56, 28 * 28 * 1280), (112, 112)),
            // Too small: 28x28 = 784 < 7056; beta = 3, ceil(3) = 3 -> 84x84.
            ((28, 28, 28, 84 * 84, 112 * 112), (84, 84)),
            // 64 rounds to 56 (3136 < 7056); beta = 1.3125, 64*1.3125/28 = 3 exactly -> 84.
            ((64, 64, 28, 84 * 84, 112 * 112), (84, 84)),
            // Non-square too small: beta = sqrt(7056/851) = 2.8794; 23*b/28 = 2.365 -> 3,
            // 37*b/28 = 3.805 -> 4.
            ((23, 37, 28, 84 * 84, 112 * 112), (84, 112)),
            // Too large: 224x224 -> round 224x224 > 12544; beta = 2, floor(112/28) = 4 -> 112.
            ((224, 224, 28, 84 * 84, 112 * 112), (112, 112)),
            // Too large and thin: 1000x30 -> 1008x28 > 12544; beta = sqrt(30000/12544) = 1.5465,
            // 1000/b/28 = 23.09 -> 644, 30/b/28 = 0.69 -> 0, raised to factor 28.
            ((1000, 30, 28, 84 * 84, 112 * 112), (644, 28)),
        ];
        for ((h, w, f, lo, hi), expected) in cases {
            assert_eq!(smart_resize(h, w, f, lo, hi).unwrap(), expected, "{h}x{w}");
        }
    }

    #[test]
    fn smart_resize_refuses_extreme_aspect_ratios() {
        let err = smart_resize(10, 2010, 28, 56 * 56, 28 * 28 * 1280).unwrap_err();
        assert!(err.to_string().contains("aspect ratio must be smaller than 200"), "{err}");
        assert!(smart_resize(10, 2000, 28, 56 * 56, 28 * 28 * 1280).is_ok());
    }

    #[test]
    fn min_and_max_pixels_override_size() {
        let cfg = PreprocessorConfig::from_json_str(
            r#"{"size": {"shortest_edge": 100, "longest_edge": 5000}, "max_pixels": 9000}"#,
        )
        .unwrap();
        assert_eq!((cfg.min_pixels, cfg.max_pixels), (100, 9000));
        let empty = PreprocessorConfig::from_json_str("{}").unwrap();
        assert_eq!(empty, PreprocessorConfig::default());
    }

    #[test]
    fn bad_keys_are_named() {
        for (json, key) in [
            (r#"{"patch_size": "14"}"#, "patch_size"),
            (r#"{"image_mean": [0.5, 0.5]}"#, "image_mean"),
            (r#"{"size": {"shortest_edge": -1}}"#, "size"),
            (r#"{"resample": 2}"#, "resample"),
            (r#"{"do_resize": "yes"}"#, "do_resize"),
        ] {
            let err = PreprocessorConfig::from_json_str(json).unwrap_err().to_string();
            assert!(err.contains(key), "{json}: {err}");
        }
    }

    #[test]
    fn bad_file_error_names_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preprocessor_config.json");
        std::fs::write(&path, r#"{"merge_size": 0}"#).unwrap();
        let err = PreprocessorConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("preprocessor_config.json") && err.contains("merge_size"), "{err}");
    }

    /// A config that neither resizes nor normalises, so patch values are the raw pixel values.
    fn raw_config(patch_size: usize, merge_size: usize) -> PreprocessorConfig {
        PreprocessorConfig {
            patch_size,
            merge_size,
            do_resize: false,
            do_rescale: false,
            do_normalize: false,
            ..PreprocessorConfig::default()
        }
    }

    #[test]
    fn patches_are_ordered_by_merge_unit_then_channel_time_row_col() {
        // Grey 4x8 image with value = 10*row + col, patch 1, merge 2: grid 4x8, two block rows
        // of four 2x2 merge units. Grey is replicated, so every channel carries the same value.
        let px: Vec<u8> = (0..4u8).flat_map(|r| (0..8u8).map(move |c| 10 * r + c)).collect();
        let image = Image::new(8, 4, 1, px).unwrap();
        let out = preprocess_image(&image, &raw_config(1, 2)).unwrap();
        assert_eq!(out.grid_thw, [1, 4, 8]);
        assert_eq!(out.pixel_values.dims(), &[32, 6]);
        let rows = out.pixel_values.to_vec2::<f32>().unwrap();
        let first_value: Vec<f32> = rows.iter().map(|r| r[0]).collect();
        let expected: Vec<f32> = [
            0, 1, 10, 11, 2, 3, 12, 13, 4, 5, 14, 15, 6, 7, 16, 17, //
            20, 21, 30, 31, 22, 23, 32, 33, 24, 25, 34, 35, 26, 27, 36, 37,
        ]
        .iter()
        .map(|&v| v as f32)
        .collect();
        assert_eq!(first_value, expected);
        assert!(rows.iter().all(|r| r.iter().all(|&v| v == r[0])), "channels and frames repeat the pixel");
    }

    #[test]
    fn patch_rows_hold_channel_then_frame_then_pixels() {
        // RGB 2x2 image, patch 2, merge 1: a single patch. Row layout is [c][t][ph][pw].
        let px: Vec<u8> = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let image = Image::new(2, 2, 3, px).unwrap();
        let out = preprocess_image(&image, &raw_config(2, 1)).unwrap();
        let row = out.pixel_values.to_vec2::<f32>().unwrap().remove(0);
        let red = [1.0, 4.0, 7.0, 10.0];
        let green = [2.0, 5.0, 8.0, 11.0];
        let blue = [3.0, 6.0, 9.0, 12.0];
        let expected: Vec<f32> = [red, red, green, green, blue, blue].concat();
        assert_eq!(row, expected);
    }

    #[test]
    fn normalisation_uses_rescale_mean_and_std() {
        let cfg = PreprocessorConfig { do_resize: false, patch_size: 1, merge_size: 1, ..Default::default() };
        let image = Image::new(1, 1, 3, vec![255u8, 0, 128]).unwrap();
        let row = preprocess_image(&image, &cfg).unwrap().pixel_values.to_vec2::<f32>().unwrap().remove(0);
        let expect =
            |v: f64, c: usize| ((v / 255.0) as f32 - OPENAI_CLIP_MEAN[c] as f32) / OPENAI_CLIP_STD[c] as f32;
        assert_eq!(
            row,
            vec![
                expect(255.0, 0),
                expect(255.0, 0),
                expect(0.0, 1),
                expect(0.0, 1),
                expect(128.0, 2),
                expect(128.0, 2)
            ]
        );
    }

    fn fixture_path(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/models/qwen2_5_vl/processor/testdata").join(name)
    }

    /// transformers' `Qwen2VLImageProcessorPil` output for the 37x23 fixture image with patch 2,
    /// merge 2 and max_pixels 600 (a downscale to 28x16), from `make_processor_fixture.py`.
    #[test]
    fn pixel_values_match_transformers_fixture() {
        let expected_json: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture_path("expected.json")).unwrap()).unwrap();
        let cfg = PreprocessorConfig::from_json_str(&expected_json["small_config"].to_string()).unwrap();
        let image = Image::open(&fixture_path("input_37x23.png")).unwrap();
        let out = preprocess_image(&image, &cfg).unwrap();
        assert_eq!(
            out.grid_thw.to_vec(),
            serde_json::from_value::<Vec<usize>>(expected_json["small_grid_thw"].clone()).unwrap()
        );
        let bytes = std::fs::read(fixture_path("pixel_values_small.f32")).unwrap();
        let expected: Vec<f32> =
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let got: Vec<f32> = out.pixel_values.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(out.pixel_values.dims(), &[112, 24]);
        let max_diff = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert_eq!(got.len(), expected.len());
        assert!(max_diff <= 1e-6, "max |diff| {max_diff}");
    }

    #[test]
    fn rgba_is_composited_on_white_like_transformers() {
        let decoded = Image::open(&fixture_path("rgba_8x6.png")).unwrap();
        let expected = Image::open(&fixture_path("rgba_8x6_on_white.png")).unwrap();
        assert_eq!(decoded.pixels(), expected.pixels());
    }

    #[test]
    fn grey_input_becomes_three_equal_channels() {
        let grey = Image::new(28, 28, 1, vec![90u8; 28 * 28]).unwrap();
        let rgb = Image::new(28, 28, 3, vec![90u8; 28 * 28 * 3]).unwrap();
        let cfg = PreprocessorConfig { min_pixels: 28 * 28, ..Default::default() };
        let a = preprocess_image(&grey, &cfg).unwrap();
        let b = preprocess_image(&rgb, &cfg).unwrap();
        assert_eq!(a.grid_thw, [1, 2, 2]);
        assert_eq!(a.pixel_values.to_vec2::<f32>().unwrap(), b.pixel_values.to_vec2::<f32>().unwrap());
        assert_eq!(a.num_image_tokens(cfg.merge_size), 1);
    }
}
