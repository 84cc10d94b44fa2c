//! Figures for reports, each written as PNG and SVG: Pass@k curves with confidence bands, a
//! diverging heatmap for source × target transfer matrices, and grouped bar charts.
//!
//! | file | job |
//! | --- | --- |
//! | `figure.rs` | palette, text measuring, bounds on text and canvas size, one drawing written as both PNG and SVG |
//! | `font.rs` | the embedded DejaVu Sans every figure uses |
//! | `plot.rs` | Pass@k curves with bootstrap bands and Acc@1 lines |
//! | `heatmap.rs` | annotated source × target matrix on a colour scale centred at 0 |
//! | `bars.rs` | grouped bars with optional error bars (probe ACC beside published baselines) |

pub mod bars;
mod figure;
mod font;
pub mod heatmap;
pub mod plot;

pub use bars::{plot_bars, BarChart, BarSeries};
pub use heatmap::{plot_heatmap, Heatmap};
pub use plot::{plot_pass_curves, PlotOptions};
