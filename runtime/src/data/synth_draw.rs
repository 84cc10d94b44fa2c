//! Procedural pictures for synthetic MedMNIST, one look per modality: grey organ-like blobs for
//! radiology, coloured cells for microscopy, a coloured lesion on skin (or fundus, or retinal
//! layers) for visible-light imaging.
//!
//! A picture is a function of a class-conditional parameter vector `Look` (eight numbers in
//! [0, 1]) and a per-image RNG for the nuisances (placement, noise). What each number controls is
//! documented on each renderer; classes differ only through their `Look`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Eight class-conditional shape/colour parameters, each in [0, 1].
pub type Look = [f32; 8];

/// Which renderer and palette a flag uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    XRay,
    Ct,
    Ultrasound,
    Histology,
    BloodSmear,
    Fluorescence,
    Skin,
    Fundus,
    Oct,
}

impl Style {
    pub fn for_flag(flag: &str) -> Style {
        match flag {
            "chestmnist" | "pneumoniamnist" => Style::XRay,
            "breastmnist" => Style::Ultrasound,
            "organamnist" | "organcmnist" | "organsmnist" => Style::Ct,
            "pathmnist" => Style::Histology,
            "bloodmnist" => Style::BloodSmear,
            "tissuemnist" => Style::Fluorescence,
            "retinamnist" => Style::Fundus,
            "octmnist" => Style::Oct,
            _ => Style::Skin,
        }
    }
}

/// An RGB float picture with coordinates in [0, 1]².
pub struct Canvas {
    size: usize,
    px: Vec<[f32; 3]>,
}

impl Canvas {
    pub fn new(size: usize, color: [f32; 3]) -> Self {
        Canvas { size, px: vec![color; size * size] }
    }

    /// Blend `color` into an ellipse centred at (cx, cy) with radii (rx, ry), rotated by `angle`;
    /// `wobble` (0 = smooth) makes the border irregular, `alpha` is the opacity at the centre.
    #[allow(clippy::too_many_arguments)]
    pub fn ellipse(
        &mut self,
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
        angle: f32,
        wobble: f32,
        color: [f32; 3],
        alpha: f32,
    ) {
        let s = self.size as f32;
        let reach = rx.max(ry) * (1.0 + wobble) + 1.5 / s;
        let (x0, x1) =
            (((cx - reach) * s).floor().max(0.0) as usize, ((cx + reach) * s).ceil().min(s) as usize);
        let (y0, y1) =
            (((cy - reach) * s).floor().max(0.0) as usize, ((cy + reach) * s).ceil().min(s) as usize);
        let (sin, cos) = angle.sin_cos();
        let edge = 1.5 / (s * rx.min(ry).max(1e-3));
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = ((x as f32 + 0.5) / s - cx, (y as f32 + 0.5) / s - cy);
                let (u, v) = ((dx * cos + dy * sin) / rx, (-dx * sin + dy * cos) / ry);
                let mut d = (u * u + v * v).sqrt();
                if wobble > 0.0 {
                    d /= 1.0 + wobble * (5.0 * v.atan2(u)).sin();
                }
                let a = alpha * ((1.0 - d) / edge).clamp(0.0, 1.0);
                if a > 0.0 {
                    let p = &mut self.px[y * self.size + x];
                    for k in 0..3 {
                        p[k] += (color[k] - p[k]) * a;
                    }
                }
            }
        }
    }

    /// Apply `f(x, y, pixel)` everywhere (gradients, stripes, vignettes).
    pub fn shade(&mut self, mut f: impl FnMut(f32, f32, &mut [f32; 3])) {
        let s = self.size as f32;
        for (i, p) in self.px.iter_mut().enumerate() {
            let (x, y) = (((i % self.size) as f32 + 0.5) / s, ((i / self.size) as f32 + 0.5) / s);
            f(x, y, p);
        }
    }

    /// Add zero-mean noise of the given amplitude; `speckle` makes it multiplicative (ultrasound).
    pub fn noise(&mut self, rng: &mut ChaCha8Rng, amplitude: f32, speckle: bool) {
        for p in &mut self.px {
            let n = (rng.random::<f32>() + rng.random::<f32>() - 1.0) * amplitude;
            for c in p.iter_mut() {
                *c = if speckle { *c * (1.0 + 2.0 * n) } else { *c + n };
            }
        }
    }

    /// Quantise to `u8`, RGB interleaved or grey (ITU-R 601 luma).
    pub fn to_bytes(&self, channels: usize, out: &mut Vec<u8>) {
        let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        for p in &self.px {
            if channels == 1 {
                out.push(q(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]));
            } else {
                out.extend(p.iter().map(|&v| q(v)));
            }
        }
    }
}

fn grey(v: f32) -> [f32; 3] {
    [v, v, v]
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn jitter(rng: &mut ChaCha8Rng, amount: f32) -> f32 {
    (rng.random::<f32>() - 0.5) * 2.0 * amount
}

/// Draw one picture of `style` for `look`; `nuisance` (0..1) scales placement jitter.
pub fn render(style: Style, look: &Look, nuisance: f32, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    match style {
        Style::XRay | Style::Ct | Style::Ultrasound => radiology(style, look, nuisance, size, rng),
        Style::Histology | Style::BloodSmear | Style::Fluorescence => microscopy(style, look, size, rng),
        Style::Skin | Style::Fundus | Style::Oct => visible_light(style, look, nuisance, size, rng),
    }
}

/// A body silhouette with one organ-like blob. look: 0-1 blob centre, 2-3 radii, 4 rotation,
/// 5 brightness, 6 stripe texture, 7 a second, smaller blob's brightness.
fn radiology(style: Style, l: &Look, nuisance: f32, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let mut c = Canvas::new(size, grey(0.04));
    let body = if style == Style::Ultrasound { 0.35 } else { 0.3 };
    c.ellipse(0.5, 0.5, 0.46, 0.42 + jitter(rng, 0.03), 0.0, 0.0, grey(body), 1.0);
    if style == Style::XRay {
        for side in [-1.0f32, 1.0] {
            c.ellipse(0.5 + side * 0.18, 0.48, 0.13, 0.27, side * 0.1, 0.05, grey(0.12), 0.9);
        }
    }
    let (cx, cy) =
        (0.25 + 0.5 * l[0] + jitter(rng, 0.08 * nuisance), 0.25 + 0.5 * l[1] + jitter(rng, 0.08 * nuisance));
    let (rx, ry) = (0.07 + 0.16 * l[2], 0.07 + 0.16 * l[3]);
    let shade = if style == Style::Ultrasound { 0.05 + 0.5 * l[5] } else { 0.25 + 0.7 * l[5] };
    c.ellipse(cx, cy, rx, ry, l[4] * std::f32::consts::PI, 0.08 * l[6], grey(shade), 0.95);
    let stripes = 0.12 * l[6];
    let freq = 10.0 + 30.0 * l[6];
    c.shade(|x, y, p| {
        let inside = ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) < 1.0;
        if inside {
            let t = stripes * (freq * (x + y)).sin();
            p.iter_mut().for_each(|v| *v += t);
        }
    });
    c.ellipse(1.0 - cx, 1.0 - cy, 0.5 * rx, 0.5 * ry, 0.0, 0.0, grey(0.1 + 0.8 * l[7]), 0.8);
    c.noise(rng, 0.06, style == Style::Ultrasound);
    c
}

/// Scattered cells. look: 0 cell count, 1 cell radius, 2 nucleus hue, 3 nucleus size,
/// 4 granularity, 5 elongation, 6 cytoplasm brightness, 7 background stain.
fn microscopy(style: Style, l: &Look, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let (background, cytoplasm, nucleus_a, nucleus_b) = match style {
        Style::Histology => ([0.93, 0.80, 0.86], [0.85, 0.55, 0.70], [0.35, 0.15, 0.55], [0.60, 0.20, 0.35]),
        Style::BloodSmear => ([0.95, 0.88, 0.80], [0.90, 0.65, 0.60], [0.40, 0.20, 0.65], [0.75, 0.30, 0.25]),
        _ => ([0.05, 0.05, 0.05], [0.45, 0.45, 0.45], [0.95, 0.95, 0.95], [0.65, 0.65, 0.65]),
    };
    let mut c = Canvas::new(size, mix(background, cytoplasm, 0.35 * l[7]));
    let cells = 2 + (l[0] * 10.0).round() as usize;
    for _ in 0..cells {
        let (x, y) = (rng.random::<f32>(), rng.random::<f32>());
        let r = (0.05 + 0.10 * l[1]) * (0.85 + 0.3 * rng.random::<f32>());
        let angle = rng.random::<f32>() * std::f32::consts::PI;
        let body = mix(cytoplasm, background, 0.6 * (1.0 - l[6]));
        c.ellipse(x, y, r * (1.0 + 0.8 * l[5]), r, angle, 0.05, body, 0.9);
        let nucleus = mix(nucleus_a, nucleus_b, l[2]);
        c.ellipse(
            x,
            y,
            r * (0.3 + 0.5 * l[3]),
            r * (0.3 + 0.5 * l[3]) * 0.8,
            angle,
            0.2 * l[4],
            nucleus,
            0.95,
        );
    }
    c.noise(rng, 0.03 + 0.12 * l[4], false);
    c
}

/// A lesion on a background. look: 0 lesion radius, 1 hue, 2 darkness, 3 border irregularity,
/// 4 number of spots, 5 spot colour, 6 asymmetry, 7 halo.
fn visible_light(style: Style, l: &Look, nuisance: f32, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let base = match style {
        Style::Skin => [0.85 + jitter(rng, 0.05), 0.66 + jitter(rng, 0.05), 0.55 + jitter(rng, 0.05)],
        Style::Fundus => [0.0, 0.0, 0.0],
        _ => grey(0.08),
    };
    let mut c = Canvas::new(size, base);
    match style {
        Style::Fundus => c.ellipse(0.5, 0.5, 0.47, 0.47, 0.0, 0.0, [0.80, 0.35, 0.12], 1.0),
        Style::Oct => {
            let tilt = jitter(rng, 0.1 * nuisance);
            c.shade(|x, y, p| {
                let depth = y - 0.45 - tilt * (x - 0.5);
                let band =
                    if (0.0..0.25).contains(&depth) { 0.45 + 0.25 * (40.0 * depth).sin().abs() } else { 0.0 };
                p.iter_mut().for_each(|v| *v += band);
            });
        }
        _ => {}
    }
    let (cx, cy) = (0.5 + jitter(rng, 0.12 * nuisance), 0.5 + jitter(rng, 0.12 * nuisance));
    let r = 0.08 + 0.22 * l[0];
    let hue = mix([0.45, 0.25, 0.12], [0.75, 0.15, 0.20], l[1]);
    let lesion = mix(hue, [0.08, 0.05, 0.05], 0.7 * l[2]);
    let (lesion, halo) = match style {
        Style::Oct => (grey(0.15 + 0.8 * l[1]), grey(0.5 * l[7])),
        _ => (lesion, mix(base, lesion, 0.4)),
    };
    c.ellipse(cx, cy, r * 1.35, r * 1.35, 0.0, 0.0, halo, 0.5 * l[7]);
    c.ellipse(
        cx,
        cy,
        r * (1.0 + 0.6 * l[6]),
        r,
        rng.random::<f32>() * std::f32::consts::PI,
        0.3 * l[3],
        lesion,
        0.95,
    );
    let spots = (l[4] * 8.0).round() as usize;
    let spot = mix([0.95, 0.85, 0.30], [0.55, 0.0, 0.0], l[5]);
    for _ in 0..spots {
        let (a, d) = (rng.random::<f32>() * std::f32::consts::TAU, 0.35 * rng.random::<f32>());
        c.ellipse(0.5 + d * a.cos(), 0.5 + d * a.sin(), 0.025, 0.025, 0.0, 0.0, spot, 0.9);
    }
    c.noise(rng, 0.05, false);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_style_draws_a_nonflat_picture_of_the_right_size() {
        for style in [Style::XRay, Style::Ct, Style::Ultrasound, Style::Histology, Style::BloodSmear]
            .into_iter()
            .chain([Style::Fluorescence, Style::Skin, Style::Fundus, Style::Oct])
        {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let mut out = Vec::new();
            render(style, &[0.5; 8], 0.5, 28, &mut rng).to_bytes(3, &mut out);
            assert_eq!(out.len(), 28 * 28 * 3);
            let (lo, hi) = (out.iter().min().unwrap(), out.iter().max().unwrap());
            assert!(hi - lo > 60, "{style:?} is nearly flat: {lo}..{hi}");
        }
    }
}
