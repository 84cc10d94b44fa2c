//! What every figure shares: the palette, text measuring, the bounds on text and canvas size, and
//! writing one drawing as both PNG (for reading) and SVG (for papers), so each plot only says how
//! to draw itself.
//!
//! The bounds turn what would abort the process (a canvas whose pixel buffer cannot be allocated,
//! pixel arithmetic that overflows inside plotters) into an error naming the size.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::font::{ensure_registered, FAMILY};
use crate::error::{Error, Result};
use crate::run::CancelFlag;

/// Distinguishable series colours (the "tab10" palette), reused in order.
pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The longest canvas side, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// The most pixels one canvas may have (192 MiB of RGB).
pub const MAX_PIXELS: u64 = 64 << 20;
/// The longest title, label or name one figure draws, in characters.
pub const MAX_TEXT_CHARS: usize = 1_000;

/// `Err` when `text` (a title, label or name; `what` says which) is too long to draw.
pub(crate) fn check_text(chart: &str, what: &str, text: &str) -> Result<()> {
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        crate::bail!(
            "{chart}: {what} has {chars} characters, more than the {MAX_TEXT_CHARS} one chart can show"
        );
    }
    Ok(())
}

/// A drawing that knows its size and can render onto any plotters backend.
pub(crate) trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Any plotters error, as ours.
pub(crate) fn fail<E: std::fmt::Display>(e: E) -> Error {
    Error::msg(format!("plot: {e}"))
}

/// Width and height in pixels of `text` at `size` points in the embedded font.
pub(crate) fn text_size(text: &str, size: f64) -> Result<(u32, u32)> {
    ensure_registered()?;
    (FAMILY, size).into_font().box_size(text).map_err(fail)
}

/// Writes `figure` as `<path>.png` and `<path>.svg` (any extension of `path` is replaced),
/// creating the parent folder, and returns both paths. The canvas size is checked before any
/// pixel is allocated, and `cancel` before each of the two drawings.
pub(crate) fn save_figure(
    figure: &impl Figure,
    path: &Path,
    cancel: Option<&CancelFlag>,
) -> Result<Vec<PathBuf>> {
    let (w, h) = figure.size();
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        crate::bail!(
            "plot: the figure would be {w}x{h} pixels, more than a chart may be ({MAX_SIDE} pixels a side, \
             {} million pixels in all); draw fewer groups, rows or series, or shorter names",
            MAX_PIXELS >> 20
        );
    }
    let check = |format: &str| match cancel {
        Some(flag) => flag.check(|| format!("plotting {} as {format}", path.display())),
        None => Ok(()),
    };
    check("PNG")?;
    ensure_registered()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }

    let png = path.with_extension("png");
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        figure.draw(&root)?;
        root.present().map_err(fail)?;
    }
    image::save_buffer(&png, &pixels, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::msg(format!("{}: {e}", png.display())))?;

    check("SVG")?;
    let svg = path.with_extension("svg");
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
        figure.draw(&root)?;
        root.present().map_err(fail)?;
    }
    std::fs::write(&svg, text).map_err(|e| Error::io(&svg, e))?;
    Ok(vec![png, svg])
}
