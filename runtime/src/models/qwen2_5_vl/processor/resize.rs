//! Bicubic resizing that reproduces Pillow's `Image.resize(size, BICUBIC)` on 8-bit images.
//!
//! transformers' slow Qwen2-VL image processor resizes through Pillow, so matching it pixel for
//! pixel keeps `pixel_values` identical to the reference. Pillow's algorithm is separable: a
//! horizontal pass then a vertical pass, each with a Keys cubic kernel (a = -0.5) widened by the
//! downscale factor (antialiasing), weights normalised per output pixel, quantised to 22-bit
//! fixed point, and every pass rounded and clamped back to `u8`. The `image` crate's CatmullRom
//! resize, measured on the committed fixture, differs from Pillow by up to 9 grey levels (37x23
//! to 112x84; 3 at 20x40, 1 at 13x9), so it is not used; this one agrees exactly.

/// Fixed-point precision of Pillow's 8-bit resampling weights (32 bits - 8 - 2 guard bits).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Half-width of the cubic kernel at scale 1.
const BICUBIC_SUPPORT: f64 = 2.0;

/// Keys' cubic convolution kernel with a = -0.5 (Catmull-Rom), Pillow's `BICUBIC`.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output position: the first input index and its fixed-point weights.
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// Weights mapping `in_size` samples onto `out_size`, sampling at output pixel centres.
fn taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filter_scale;
    // Pillow multiplies by the reciprocal rather than dividing; the last bit can differ.
    let inv_filter_scale = 1.0 / filter_scale;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for out in 0..out_size {
        let center = (out as f64 + 0.5) * scale;
        // Pillow truncates toward zero here; clamping at 0 makes that the same as flooring.
        let lo = ((center - support + 0.5).max(0.0)) as usize;
        let hi = ((center + support + 0.5) as usize).min(in_size);
        let raw: Vec<f64> = (lo..hi).map(|i| bicubic((i as f64 - center + 0.5) * inv_filter_scale)).collect();
        let total: f64 = raw.iter().sum();
        let one = f64::from(1u32 << PRECISION_BITS);
        let fixed = raw
            .iter()
            .map(|&w| {
                let w = if total != 0.0 { w / total } else { w };
                // Round half away from zero, as Pillow's conversion does.
                (w * one + if w < 0.0 { -0.5 } else { 0.5 }) as i32
            })
            .collect();
        first.push(lo);
        weights.push(fixed);
    }
    Taps { first, weights }
}

/// Weighted sum of `u8` samples read through `at`, rounded and clamped like Pillow's `clip8`.
fn convolve(weights: &[i32], at: impl Fn(usize) -> u8) -> u8 {
    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
    for (k, &w) in weights.iter().enumerate() {
        acc += i64::from(at(k)) * i64::from(w);
    }
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize interleaved `channels`-channel `u8` pixels from `width`x`height` to
/// `out_width`x`out_height`. Returns the input unchanged when the size already matches.
pub(crate) fn resize_bicubic(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    out_height: usize,
) -> Vec<u8> {
    let mut current = pixels.to_vec();
    let mut cur_width = width;
    if out_width != width {
        let t = taps(width, out_width);
        let mut next = vec![0u8; out_width * height * channels];
        for y in 0..height {
            let row = &current[y * width * channels..(y + 1) * width * channels];
            for x in 0..out_width {
                for c in 0..channels {
                    let lo = t.first[x];
                    next[(y * out_width + x) * channels + c] =
                        convolve(&t.weights[x], |k| row[(lo + k) * channels + c]);
                }
            }
        }
        current = next;
        cur_width = out_width;
    }
    if out_height != height {
        let t = taps(height, out_height);
        let stride = cur_width * channels;
        let mut next = vec![0u8; out_height * stride];
        for y in 0..out_height {
            let lo = t.first[y];
            for i in 0..stride {
                next[y * stride + i] = convolve(&t.weights[y], |k| current[(lo + k) * stride + i]);
            }
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Image;

    fn fixture(name: &str) -> Image {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/models/qwen2_5_vl/processor/testdata")
            .join(name);
        Image::open(&path).unwrap()
    }

    /// Pillow's `Image.resize((w, h), BICUBIC)` of a noisy 37x23 RGB image, written by
    /// `testdata/make_processor_fixture.py` with Pillow 13.0: up, down and mixed scales all
    /// agree exactly (max |difference| 0 grey levels).
    #[test]
    fn matches_pillow_exactly() {
        let input = fixture("input_37x23.png");
        for (w, h) in [(112, 84), (13, 9), (20, 40), (37, 50)] {
            let expected = fixture(&format!("resize_{w}x{h}.png"));
            let out = resize_bicubic(input.pixels(), 37, 23, 3, w, h);
            let max_diff = out.iter().zip(expected.pixels()).map(|(&a, &b)| a.abs_diff(b)).max().unwrap();
            assert_eq!(out.len(), expected.pixels().len());
            assert_eq!(max_diff, 0, "{w}x{h}");
        }
    }

    #[test]
    fn same_size_is_identity() {
        let px: Vec<u8> = (0..24).collect();
        assert_eq!(resize_bicubic(&px, 4, 2, 3, 4, 2), px);
    }

    #[test]
    fn constant_image_stays_constant() {
        let px = vec![77u8; 5 * 3 * 3];
        let out = resize_bicubic(&px, 5, 3, 3, 11, 7);
        assert!(out.iter().all(|&v| v == 77), "{out:?}");
        let down = resize_bicubic(&out, 11, 7, 3, 2, 2);
        assert!(down.iter().all(|&v| v == 77), "{down:?}");
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (n_in, n_out) in [(28, 84), (64, 56), (37, 12), (5, 5)] {
            let t = taps(n_in, n_out);
            for w in &t.weights {
                let sum: i64 = w.iter().map(|&v| i64::from(v)).sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= w.len() as i64, "{n_in}->{n_out}: {sum}");
            }
        }
    }
}
