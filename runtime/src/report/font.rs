//! The one font every plot uses, embedded so plots render the same on any machine without a system
//! font library: DejaVu Sans (Bitstream Vera license, `runtime/assets/fonts/DejaVuSans-LICENSE.txt`).

use std::sync::OnceLock;

use plotters::style::FontStyle;

use crate::error::{Error, Result};

/// The family name plots ask for.
pub const FAMILY: &str = "sans-serif";

const DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font with plotters once per process.
pub fn ensure_registered() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::msg("plot: the embedded DejaVu Sans font could not be read"))
    }
}
