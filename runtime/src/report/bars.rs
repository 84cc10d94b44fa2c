//! A grouped bar chart: one group per task, one bar per series (e.g. probe ACC of several models
//! beside the published ResNet-18 and MedViT-v2 numbers), optional error bars (± half-widths, or
//! an interval's two ends, as a bootstrap gives them), a legend above the plot where it can never
//! hide a bar, and group names turned vertical when they would collide. A NaN value draws no bar
//! (e.g. a published table without that number).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figure::{check_text, fail, save_figure, text_size, Figure, PALETTE};
use super::font::FAMILY;
use crate::bail;
use crate::error::Result;
use crate::run::CancelFlag;

/// One named row of values, one per group, with optional error bars: half-widths (`errors`) or
/// the `[lo, hi]` ends of an interval (`intervals`), not both.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarSeries {
    pub name: String,
    pub values: Vec<f64>,
    pub errors: Option<Vec<f64>>,
    pub intervals: Option<Vec<[f64; 2]>>,
}

impl BarSeries {
    /// The ends of group `g`'s error bar, when it has one.
    fn whisker(&self, g: usize) -> Option<(f64, f64)> {
        let v = self.values[g];
        let ends = match (&self.errors, &self.intervals) {
            (Some(e), _) if e[g].is_finite() && e[g] > 0.0 => (v - e[g], v + e[g]),
            (_, Some(i)) if i[g].iter().all(|x| x.is_finite()) => (i[g][0], i[g][1]),
            _ => return None,
        };
        Some(ends)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarChart {
    pub groups: Vec<String>,
    pub series: Vec<BarSeries>,
    pub title: Option<String>,
    pub y_label: Option<String>,
    /// Axis range; defaults to [0, 1] when every bar lies in it (accuracies, AUCs), else to the
    /// data's range with some headroom.
    pub y_range: Option<(f64, f64)>,
}

const MARGIN: i32 = 16;
const LABEL_PT: f64 = 16.0;
const BAR_W: i32 = 18;
const Y_AXIS_W: i32 = 78;
/// More groups or series than these make a canvas no screen shows (and, far enough above, one
/// whose size overflows plotters' pixel arithmetic).
pub const MAX_GROUPS: usize = 500;
pub const MAX_SERIES: usize = 50;

impl BarChart {
    /// Every shape problem, named: no groups or series, too many of them or names too long to
    /// draw, lengths that do not match the groups, negative or non-finite error bars, an empty
    /// range.
    pub fn check(&self) -> Result<()> {
        if self.groups.is_empty() {
            bail!("bar chart: `groups` is empty");
        }
        if self.series.is_empty() {
            bail!("bar chart: `series` is empty");
        }
        if self.groups.len() > MAX_GROUPS {
            bail!("bar chart: {} groups is more than the {MAX_GROUPS} one chart can show", self.groups.len());
        }
        if self.series.len() > MAX_SERIES {
            bail!("bar chart: {} series is more than the {MAX_SERIES} one chart can show", self.series.len());
        }
        for (i, g) in self.groups.iter().enumerate() {
            check_text("bar chart", &format!("group {i}"), g)?;
        }
        for (what, text) in [("the title", &self.title), ("the y label", &self.y_label)] {
            check_text("bar chart", what, text.as_deref().unwrap_or_default())?;
        }
        for s in &self.series {
            check_text("bar chart", "a series name", &s.name)?;
            if s.values.len() != self.groups.len() {
                bail!(
                    "bar chart: series {:?} has {} values for {} groups",
                    s.name,
                    s.values.len(),
                    self.groups.len()
                );
            }
            if s.values.iter().any(|v| v.is_infinite()) {
                bail!("bar chart: series {:?} has an infinite value", s.name);
            }
            if let Some(errors) = &s.errors {
                if errors.len() != self.groups.len() {
                    bail!(
                        "bar chart: errors of {:?} have {} values for {} groups",
                        s.name,
                        errors.len(),
                        self.groups.len()
                    );
                }
                if errors.iter().any(|e| e.is_infinite() || *e < 0.0) {
                    bail!("bar chart: errors of {:?} must be finite and non-negative", s.name);
                }
            }
            if let Some(intervals) = &s.intervals {
                if s.errors.is_some() {
                    bail!("bar chart: series {:?} has both errors and intervals; give one", s.name);
                }
                if intervals.len() != self.groups.len() {
                    bail!(
                        "bar chart: intervals of {:?} have {} values for {} groups",
                        s.name,
                        intervals.len(),
                        self.groups.len()
                    );
                }
                if intervals.iter().any(|[lo, hi]| lo.is_infinite() || hi.is_infinite() || lo > hi) {
                    bail!("bar chart: intervals of {:?} must be finite [lo, hi] pairs with lo <= hi", s.name);
                }
            }
        }
        if let Some((lo, hi)) = self.y_range {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                bail!("bar chart: y_range must be two finite numbers, low < high, got [{lo}, {hi}]");
            }
        }
        Ok(())
    }

    fn range(&self) -> (f64, f64) {
        if let Some(r) = self.y_range {
            return r;
        }
        let (mut lo, mut hi) = (0.0f64, 0.0f64);
        for s in &self.series {
            for (g, &v) in s.values.iter().enumerate() {
                if v.is_finite() {
                    let (a, b) = s.whisker(g).unwrap_or((v, v));
                    lo = lo.min(v).min(a);
                    hi = hi.max(v).max(b);
                }
            }
        }
        if lo >= 0.0 && hi <= 1.0 {
            return (0.0, 1.0);
        }
        let pad = 0.08 * (hi - lo).max(1e-9);
        (if lo < 0.0 { lo - pad } else { 0.0 }, hi + pad)
    }
}

/// Draws `chart` to `<path>.png` and `<path>.svg` and returns both paths; `cancel` is checked
/// before each drawing.
pub fn plot_bars(
    chart: &BarChart,
    path: impl AsRef<Path>,
    cancel: Option<&CancelFlag>,
) -> Result<Vec<PathBuf>> {
    chart.check()?;
    save_figure(&Layout::new(chart)?, path.as_ref(), cancel)
}

/// Pixel layout from the text sizes: the legend wraps into rows above the plot, and group labels
/// turn vertical when the widest is wider than a group.
struct Layout<'a> {
    chart: &'a BarChart,
    legend_rows: Vec<Vec<(usize, i32)>>,
    vertical_groups: bool,
    label_h: i32,
    size: (u32, u32),
}

impl<'a> Layout<'a> {
    fn new(chart: &'a BarChart) -> Result<Self> {
        let n_series = chart.series.len() as i32;
        let group_w = (n_series * BAR_W + 24).max(56);
        let widest_group = chart
            .groups
            .iter()
            .try_fold(0i32, |m, g| -> Result<i32> { Ok(m.max(text_size(g, LABEL_PT)?.0 as i32)) })?;
        let plot_w = group_w * chart.groups.len() as i32;
        let width = (2 * MARGIN + 8 + Y_AXIS_W + plot_w).max(720);
        // Groups share the plot's real width, which a minimum figure width may have stretched.
        let drawn_group_w = (width - 2 * MARGIN - 8 - Y_AXIS_W) / chart.groups.len() as i32;
        let vertical_groups = widest_group > drawn_group_w - 8;
        let label_h = if vertical_groups { widest_group + 22 } else { 30 };

        // Legend entries (swatch + name) packed into rows no wider than the figure.
        let mut legend_rows: Vec<Vec<(usize, i32)>> = vec![Vec::new()];
        let mut used = 0;
        for (i, s) in chart.series.iter().enumerate() {
            let entry = 28 + text_size(&s.name, LABEL_PT)?.0 as i32 + 22;
            if used + entry > width - 2 * MARGIN && used > 0 {
                legend_rows.push(Vec::new());
                used = 0;
            }
            if let Some(row) = legend_rows.last_mut() {
                row.push((i, used));
            }
            used += entry;
        }
        let title_h = if chart.title.is_some() { 40 } else { 8 };
        let height = MARGIN + title_h + 26 * legend_rows.len() as i32 + 8 + 380 + label_h + MARGIN;
        Ok(Layout { chart, legend_rows, vertical_groups, label_h, size: (width as u32, height as u32) })
    }
}

impl Figure for Layout<'_> {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let chart = self.chart;
        let w = self.size.0 as i32;
        let label = TextStyle::from((FAMILY, LABEL_PT).into_font()).color(&BLACK);
        root.fill(&WHITE).map_err(fail)?;

        let mut y = MARGIN;
        if let Some(title) = &chart.title {
            let style = TextStyle::from((FAMILY, 22.0).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw_text(title, &style, (w / 2, y)).map_err(fail)?;
            y += 40;
        }
        for row in &self.legend_rows {
            let row_w = row.last().map_or(0, |&(i, x)| {
                x + 28 + text_size(&chart.series[i].name, LABEL_PT).map_or(0, |s| s.0 as i32)
            });
            let x0 = (w - row_w) / 2;
            for &(i, x) in row {
                let colour = PALETTE[i % PALETTE.len()];
                root.draw(&Rectangle::new([(x0 + x, y + 4), (x0 + x + 20, y + 18)], colour.filled()))
                    .map_err(fail)?;
                let style = label.pos(Pos::new(HPos::Left, VPos::Center));
                root.draw_text(&chart.series[i].name, &style, (x0 + x + 28, y + 11)).map_err(fail)?;
            }
            y += 26;
        }

        let (lo, hi) = chart.range();
        let area = root.margin(y + 8, MARGIN, MARGIN, MARGIN + 8);
        let n = chart.groups.len() as f64;
        let mut plot = ChartBuilder::on(&area)
            .x_label_area_size(self.label_h)
            .y_label_area_size(Y_AXIS_W)
            .build_cartesian_2d(0.0..n, lo..hi)
            .map_err(fail)?;
        let mut mesh = plot.configure_mesh();
        mesh.disable_x_mesh()
            .x_labels(0)
            .y_labels(11)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style((FAMILY, LABEL_PT))
            .axis_desc_style((FAMILY, 17.0))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.12));
        if let Some(y_label) = &chart.y_label {
            mesh.y_desc(y_label.as_str());
        }
        mesh.draw().map_err(fail)?;

        if lo < 0.0 {
            let zero = PathElement::new(vec![(0.0, 0.0), (n, 0.0)], BLACK.mix(0.6).stroke_width(1));
            plot.draw_series(std::iter::once(zero)).map_err(fail)?;
        }
        let k = chart.series.len() as f64;
        let slot = 1.0 / (k + 1.0);
        let base = lo.max(0.0).min(hi);
        for (s, series) in chart.series.iter().enumerate() {
            let colour = PALETTE[s % PALETTE.len()];
            for (g, &v) in series.values.iter().enumerate() {
                if v.is_nan() {
                    continue;
                }
                let x0 = g as f64 + slot * (0.5 + s as f64);
                let x1 = x0 + slot;
                plot.draw_series(std::iter::once(Rectangle::new([(x0, base), (x1, v)], colour.filled())))
                    .map_err(fail)?;
                if let Some((a, b)) = series.whisker(g) {
                    let xm = (x0 + x1) / 2.0;
                    let cap = slot * 0.25;
                    let ink = BLACK.stroke_width(2);
                    for line in [
                        vec![(xm, a), (xm, b)],
                        vec![(xm - cap, a), (xm + cap, a)],
                        vec![(xm - cap, b), (xm + cap, b)],
                    ] {
                        plot.draw_series(std::iter::once(PathElement::new(line, ink))).map_err(fail)?;
                    }
                }
            }
        }

        // Group names under the axis, centred on their group.
        for (g, name) in chart.groups.iter().enumerate() {
            let (x, y) = plot.backend_coord(&(g as f64 + 0.5, lo));
            if self.vertical_groups {
                let style =
                    label.transform(FontTransform::Rotate270).pos(Pos::new(HPos::Right, VPos::Center));
                root.draw_text(name, &style, (x, y + 8)).map_err(fail)?;
            } else {
                root.draw_text(name, &label.pos(Pos::new(HPos::Center, VPos::Top)), (x, y + 8))
                    .map_err(fail)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_chart() -> BarChart {
        let groups: Vec<String> =
            ["pathmnist", "pneumoniamnist", "dermamnist", "organamnist"].map(String::from).to_vec();
        BarChart {
            groups,
            series: vec![
                BarSeries {
                    name: "Qwen2.5-VL-7B probe".into(),
                    values: vec![0.88, 0.84, 0.74, 0.90],
                    errors: Some(vec![0.01, 0.03, 0.02, 0.01]),
                    ..Default::default()
                },
                BarSeries {
                    name: "ResNet-18 (224)".into(),
                    values: vec![0.909, 0.864, 0.754, 0.951],
                    ..Default::default()
                },
                BarSeries {
                    name: "MedViTV2-L".into(),
                    values: vec![0.977, 0.973, 0.817, f64::NAN],
                    ..Default::default()
                },
            ],
            title: Some("Linear-probe ACC beside published baselines".into()),
            y_label: Some("test ACC".into()),
            y_range: None,
        }
    }

    #[test]
    fn writes_png_and_svg_with_legend_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let files = plot_bars(&probe_chart(), dir.path().join("probe.png"), None).unwrap();
        assert_eq!(files, [dir.path().join("probe.png"), dir.path().join("probe.svg")]);
        assert!(image::open(&files[0]).unwrap().width() >= 640);
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        for text in ["MedViTV2-L", "ResNet-18 (224)", "pneumoniamnist", "test ACC", "published baselines"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn mismatched_lengths_are_refused_by_name() {
        let mut c = probe_chart();
        c.series[1].values.pop();
        let e = plot_bars(&c, "/tmp/never", None).unwrap_err().to_string();
        assert!(e.contains("\"ResNet-18 (224)\" has 3 values for 4 groups"), "{e}");
        let mut c = probe_chart();
        c.series[0].errors = Some(vec![0.1]);
        assert!(c.check().unwrap_err().to_string().contains("errors of"));
        let mut c = probe_chart();
        c.series[0].errors = Some(vec![-0.1, 0.0, 0.0, 0.0]);
        assert!(c.check().is_err());
        let mut c = probe_chart();
        c.y_range = Some((1.0, 0.0));
        assert!(c.check().is_err());
        assert!(BarChart::default().check().unwrap_err().to_string().contains("groups"));
    }

    /// Sizes a screen cannot show are errors naming them before any pixel is allocated: too many
    /// groups, a name too long to draw, a canvas too large; and a cancelled flag draws nothing.
    #[test]
    fn sizes_beyond_a_chart_and_cancellation_are_refused_before_drawing() {
        let groups = |n: usize| (0..n).map(|i| format!("g{i}")).collect::<Vec<_>>();
        let chart = |g: usize, s: usize| BarChart {
            groups: groups(g),
            series: (0..s)
                .map(|i| BarSeries {
                    name: format!("s{i}"),
                    values: vec![0.5; g],
                    errors: None,
                    intervals: None,
                })
                .collect(),
            ..Default::default()
        };
        let e = chart(100_000, 1).check().unwrap_err().to_string();
        assert_eq!(e, "bar chart: 100000 groups is more than the 500 one chart can show");
        let mut long = chart(2, 1);
        long.groups[1] = "x".repeat(5_000);
        let e = long.check().unwrap_err().to_string();
        assert_eq!(e, "bar chart: group 1 has 5000 characters, more than the 1000 one chart can show");
        long.title = Some("t".repeat(2_000));
        long.groups[1] = "g1".into();
        assert!(long.check().unwrap_err().to_string().contains("the title has 2000 characters"));
        // 500 groups of 50 bars is within the counts but not within a canvas.
        let e = plot_bars(&chart(500, 50), "/tmp/never", None).unwrap_err().to_string();
        assert!(e.starts_with("plot: the figure would be 462") && e.contains("16384 pixels a side"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let flag = CancelFlag::new();
        flag.cancel();
        let e = plot_bars(&probe_chart(), dir.path().join("p"), Some(&flag)).unwrap_err();
        assert!(e.is_cancelled() && !dir.path().join("p.png").exists(), "{e}");
    }

    #[test]
    fn fractions_get_a_zero_to_one_axis_and_deltas_a_symmetric_one() {
        assert_eq!(probe_chart().range(), (0.0, 1.0));
        let deltas = BarChart {
            groups: vec!["a".into(), "b".into()],
            series: vec![BarSeries { name: "Δ".into(), values: vec![-0.2, 0.3], ..Default::default() }],
            ..Default::default()
        };
        let (lo, hi) = deltas.range();
        assert!(lo < -0.2 && hi > 0.3, "{lo} {hi}");
    }

    #[test]
    fn intervals_draw_asymmetric_bars_and_widen_the_axis() {
        let mut effects = BarChart {
            groups: vec!["seed 0".into(), "seed 1".into(), "mean".into()],
            series: vec![BarSeries {
                name: "ΔAcc@1".into(),
                values: vec![0.1, -0.02, 0.04],
                intervals: Some(vec![[0.05, 0.2], [-0.08, 0.01], [-0.1, 0.18]]),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (lo, hi) = effects.range();
        assert!(lo < -0.1 && hi > 0.2, "{lo} {hi}");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(plot_bars(&effects, dir.path().join("effects"), None).unwrap().len(), 2);
        effects.series[0].errors = Some(vec![0.1; 3]);
        assert!(effects.check().unwrap_err().to_string().contains("both errors and intervals"));
        effects.series[0].errors = None;
        effects.series[0].intervals = Some(vec![[0.2, 0.1]; 3]);
        assert!(effects.check().unwrap_err().to_string().contains("lo <= hi"));
    }
}
