//! `Image`: the one picture type that flows from datasets to the processor.
//!
//! MedMNIST stores grey (H×W) or RGB (H×W×3) `u8` arrays and VQA benchmarks store encoded
//! PNG/JPEG bytes; both become an `Image` with shared pixels, so cloning a dataset item or passing
//! it through a script costs nothing.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Context, Error, Result};

/// An 8-bit image with 1 (grey) or 3 (RGB) interleaved channels, row-major.
#[derive(Clone, PartialEq)]
pub struct Image {
    width: u32,
    height: u32,
    channels: u8,
    pixels: Arc<[u8]>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.channels == 1 { "grey" } else { "rgb" };
        write!(f, "Image({}x{} {kind})", self.width, self.height)
    }
}

impl Image {
    /// Wrap raw pixels; `pixels.len()` must equal `width * height * channels`.
    pub fn new(width: u32, height: u32, channels: u8, pixels: impl Into<Arc<[u8]>>) -> Result<Self> {
        let pixels = pixels.into();
        if channels != 1 && channels != 3 {
            crate::bail!("an image has 1 or 3 channels, got {channels}");
        }
        let expected = width as usize * height as usize * channels as usize;
        if pixels.len() != expected {
            crate::bail!("image {width}x{height}x{channels} needs {expected} bytes, got {}", pixels.len());
        }
        Ok(Image { width, height, channels, pixels })
    }

    /// Decode PNG, JPEG, BMP, TIFF or WebP bytes. Alpha is dropped and palettes are expanded.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let img =
            image::load_from_memory(bytes).map_err(|e| Error::msg(format!("cannot decode image: {e}")))?;
        Ok(Self::from_dynamic(img))
    }

    /// Read and decode an image file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::decode(&bytes).with_context(|| path.display().to_string())
    }

    fn from_dynamic(img: image::DynamicImage) -> Self {
        let (width, height) = (img.width(), img.height());
        match img {
            image::DynamicImage::ImageLuma8(g) => {
                Image { width, height, channels: 1, pixels: g.into_raw().into() }
            }
            other if other.color().has_alpha() => {
                let rgb = rgba_on_white(&other.to_rgba8().into_raw());
                Image { width, height, channels: 3, pixels: rgb.into() }
            }
            other => Image { width, height, channels: 3, pixels: other.to_rgb8().into_raw().into() },
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// Interleaved row-major pixels.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The same picture with three channels; grey is replicated, RGB is returned as is.
    pub fn to_rgb(&self) -> Image {
        if self.channels == 3 {
            return self.clone();
        }
        let pixels: Vec<u8> = self.pixels.iter().flat_map(|&v| [v, v, v]).collect();
        Image { width: self.width, height: self.height, channels: 3, pixels: pixels.into() }
    }

    /// Encode as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let mut out = std::io::Cursor::new(Vec::new());
        let color =
            if self.channels == 1 { image::ExtendedColorType::L8 } else { image::ExtendedColorType::Rgb8 };
        image::write_buffer_with_format(
            &mut out,
            &self.pixels,
            self.width,
            self.height,
            color,
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::msg(format!("cannot encode PNG: {e}")))?;
        Ok(out.into_inner())
    }
}

/// Flatten RGBA pixels onto an opaque white background as transformers' `convert_to_rgb` does
/// (Pillow's `alpha_composite` in its 7-bit fixed point), giving interleaved RGB. Dropping the
/// alpha instead would show the model whatever colour hides under transparent regions.
pub fn rgba_on_white(rgba: &[u8]) -> Vec<u8> {
    const BITS: u32 = 7;
    let div255 = |v: u32| ((v >> 8) + v) >> 8;
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let alpha = u32::from(px[3]);
        let src_weight = alpha << BITS;
        let white_weight = (255 << BITS) - src_weight;
        for &channel in &px[..3] {
            let mixed = u32::from(channel) * src_weight + 255 * white_weight;
            out.push((div255(mixed + (0x80 << BITS)) >> BITS) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_becomes_rgb_by_replication() {
        let img = Image::new(2, 1, 1, vec![7u8, 9]).unwrap();
        assert_eq!(img.to_rgb().pixels(), &[7, 7, 7, 9, 9, 9]);
    }

    #[test]
    fn png_round_trip_keeps_pixels() {
        let img = Image::new(3, 2, 3, (0..18u8).collect::<Vec<_>>()).unwrap();
        let back = Image::decode(&img.to_png().unwrap()).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn transparent_pixels_become_white() {
        assert_eq!(rgba_on_white(&[10, 20, 30, 0, 10, 20, 30, 255]), vec![255, 255, 255, 10, 20, 30]);
    }

    #[test]
    fn wrong_byte_count_is_an_error() {
        let err = Image::new(2, 2, 3, vec![0u8; 5]).unwrap_err();
        assert!(err.to_string().contains("needs 12 bytes"));
    }
}
