//! Figures from metrics: Pass@k curves with confidence bands, as PNG and SVG.

mod font;
pub mod plot;

pub use plot::{plot_pass_curves, PlotOptions};
