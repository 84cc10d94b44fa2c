//! Pass@k curves as PNG and SVG: one line per report with its 95% bootstrap band, and each
//! report's greedy Acc@1 as a dashed line of the same colour, on a log2 k axis so the small k
//! where curves differ most get as much room as the large ones.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::figure::{check_text, fail, save_figure, Figure, MAX_SIDE, PALETTE};
use super::font::FAMILY;
use crate::bail;
use crate::error::Result;
use crate::metrics::SupportReport;
use crate::run::CancelFlag;

/// The most reports one plot overlays: each adds two legend lines, and beyond this many the
/// legend no longer fits beside the curves (and the colours repeat).
pub const MAX_CURVES: usize = 12;

#[derive(Debug, Clone, PartialEq)]
pub struct PlotOptions {
    /// Defaults to "Pass@k with 95% bootstrap CI".
    pub title: Option<String>,
    pub width: u32,
    pub height: u32,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions { title: None, width: 960, height: 640 }
    }
}

/// Plots one or several labelled reports overlaid. `path`'s extension is replaced: the plot is
/// written as both `<path>.png` and `<path>.svg`, which are returned. `cancel` is checked before
/// each drawing.
pub fn plot_pass_curves(
    reports: &[(&str, &SupportReport)],
    path: impl AsRef<Path>,
    options: &PlotOptions,
    cancel: Option<&CancelFlag>,
) -> Result<Vec<PathBuf>> {
    if reports.is_empty() {
        bail!("plot: no reports to plot");
    }
    if reports.len() > MAX_CURVES {
        bail!("plot: {} reports is more than the {MAX_CURVES} one Pass@k plot can show", reports.len());
    }
    for (label, _) in reports {
        check_text("plot", "a report's label", label)?;
    }
    check_text("plot", "the title", options.title.as_deref().unwrap_or_default())?;
    if let Some((label, _)) = reports.iter().find(|(_, r)| r.n() == 0) {
        bail!("plot: report {label:?} has no samples, so no Pass@k curve");
    }
    if options.width < 200 || options.height < 150 {
        bail!("plot: size {}x{} is too small (at least 200x150)", options.width, options.height);
    }
    if options.width > MAX_SIDE || options.height > MAX_SIDE {
        bail!("plot: size {}x{} is too large (at most {MAX_SIDE} a side)", options.width, options.height);
    }
    save_figure(&PassCurves { reports, options }, path.as_ref(), cancel)
}

struct PassCurves<'a, 'r> {
    reports: &'a [(&'r str, &'r SupportReport)],
    options: &'a PlotOptions,
}

impl Figure for PassCurves<'_, '_> {
    fn size(&self) -> (u32, u32) {
        (self.options.width, self.options.height)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        draw(root, self.reports, self.options)
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    reports: &[(&str, &SupportReport)],
    options: &PlotOptions,
) -> Result<()> {
    let n_max = reports.iter().map(|(_, r)| r.n()).max().unwrap_or(1);
    // With n = 1 there is a single k; widen the axis so the point is not on the frame.
    let x_max = (n_max as f64).log2().max(1.0);
    let title = options.title.clone().unwrap_or_else(|| "Pass@k with 95% bootstrap CI".to_string());

    root.fill(&WHITE).map_err(fail)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 26))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.05 * x_max..x_max * 1.02, 0.0..1.02)
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_desc("k (samples drawn, log2 scale)")
        .y_desc("Pass@k")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| power_of_two_label(*x))
        .y_labels(11)
        .y_label_formatter(&|y| format!("{y:.1}"))
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(fail)?;

    let x = |k: usize| (k as f64).log2();
    // All bands first, so no band tints another report's line.
    for (i, (_, report)) in reports.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let curve = report.curve();
        let band: Vec<(f64, f64)> = curve
            .iter()
            .map(|p| (x(p.k), p.pass.hi))
            .chain(curve.iter().rev().map(|p| (x(p.k), p.pass.lo)))
            .collect();
        chart.draw_series(std::iter::once(Polygon::new(band, colour.mix(0.18).filled()))).map_err(fail)?;
    }
    for (i, (label, report)) in reports.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let curve = report.curve();
        let k_max = curve.last().map_or(1, |p| p.k);
        let pass = curve.last().map_or(0.0, |p| p.pass.value);
        chart
            .draw_series(LineSeries::new(
                curve.iter().map(|p| (x(p.k), p.pass.value)),
                colour.stroke_width(3),
            ))
            .map_err(fail)?
            .label(format!("{label}: Pass@{k_max} = {pass:.3}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3)));

        let acc1 = report.acc1().value;
        let dashed = DashedLineSeries::new([(0.0, acc1), (x(k_max), acc1)], 10, 6, colour.stroke_width(2));
        chart
            .draw_series(dashed)
            .map_err(fail)?
            .label(format!("{label}: Acc@1 (greedy) = {acc1:.3}"))
            .legend(move |(x, y)| {
                DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 4, colour.stroke_width(2))
            });
        chart.draw_series(std::iter::once(Circle::new((0.0, acc1), 5, colour.filled()))).map_err(fail)?;
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(fail)?;
    Ok(())
}

/// "1", "2", "4", ... at integer log2 positions; nothing between them.
fn power_of_two_label(x: f64) -> String {
    let rounded = x.round();
    if (x - rounded).abs() < 1e-6 && rounded >= 0.0 {
        format!("{}", 1u64 << rounded as u32)
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::support::tests::record;
    use crate::metrics::BootstrapOptions;

    fn report(offset: usize) -> SupportReport {
        let records = (0..40)
            .map(|q| {
                let samples: Vec<_> =
                    (0..16).map(|s| Some(usize::from((q * 7 + s * 3 + offset) % 5 != 0))).collect();
                record(&q.to_string(), "t", 0, Some(usize::from(q % 3 != 0)), &samples)
            })
            .collect();
        SupportReport::new(records, BootstrapOptions { resamples: 200, ..Default::default() }).unwrap()
    }

    #[test]
    fn writes_png_and_svg_with_labels() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (report(0), report(2));
        let written = plot_pass_curves(
            &[("base", &a), ("grpo", &b)],
            dir.path().join("plots/pass.png"),
            &PlotOptions::default(),
            None,
        )
        .unwrap();
        assert_eq!(written, [dir.path().join("plots/pass.png"), dir.path().join("plots/pass.svg")]);
        let png = image::open(&written[0]).unwrap();
        assert_eq!((png.width(), png.height()), (960, 640));
        let svg = std::fs::read_to_string(&written[1]).unwrap();
        assert!(
            svg.contains("Acc@1 (greedy)") && svg.contains("grpo: Pass@16") && svg.contains("log2 scale")
        );
    }

    #[test]
    fn axis_labels_are_powers_of_two() {
        let labels: Vec<String> = [0.0, 1.0, 2.5, 4.0, 10.0].iter().map(|&x| power_of_two_label(x)).collect();
        assert_eq!(labels, ["1", "2", "", "16", "1024"]);
    }

    #[test]
    fn refuses_reports_without_samples() {
        let empty =
            SupportReport::new(vec![record("1", "t", 0, Some(0), &[])], BootstrapOptions::default()).unwrap();
        let err = plot_pass_curves(&[("greedy only", &empty)], "/tmp/x", &PlotOptions::default(), None)
            .unwrap_err();
        assert!(err.to_string().contains("greedy only"), "{err}");
        assert!(plot_pass_curves(&[], "/tmp/x", &PlotOptions::default(), None).is_err());
    }

    /// More curves than a legend holds, labels and titles too long to draw and canvases too
    /// large are errors naming them; a cancelled flag draws nothing.
    #[test]
    fn sizes_beyond_a_plot_and_cancellation_are_refused() {
        let r = report(0);
        let many: Vec<(&str, &SupportReport)> = vec![("m", &r); 100_000];
        let e = plot_pass_curves(&many, "/tmp/x", &PlotOptions::default(), None).unwrap_err().to_string();
        assert_eq!(e, "plot: 100000 reports is more than the 12 one Pass@k plot can show");
        let dir = tempfile::tempdir().unwrap();
        let twelve = &many[..MAX_CURVES];
        assert_eq!(
            plot_pass_curves(twelve, dir.path().join("twelve"), &PlotOptions::default(), None).unwrap().len(),
            2
        );
        let long = "l".repeat(1_001);
        let e =
            plot_pass_curves(&[(long.as_str(), &r)], "/tmp/x", &PlotOptions::default(), None).unwrap_err();
        assert!(e.to_string().contains("a report's label has 1001 characters"), "{e}");
        let titled = PlotOptions { title: Some(long.clone()), ..Default::default() };
        assert!(plot_pass_curves(&[("m", &r)], "/tmp/x", &titled, None)
            .unwrap_err()
            .to_string()
            .contains("the title"));
        let huge = PlotOptions { width: 1_000_000, height: 1_000_000, ..Default::default() };
        let e = plot_pass_curves(&[("m", &r)], "/tmp/x", &huge, None).unwrap_err().to_string();
        assert!(e.contains("1000000x1000000 is too large"), "{e}");
        let flag = CancelFlag::new();
        flag.cancel();
        let e = plot_pass_curves(&[("m", &r)], dir.path().join("c"), &PlotOptions::default(), Some(&flag))
            .unwrap_err();
        assert!(e.is_cancelled() && !dir.path().join("c.png").exists(), "{e}");
    }
}
