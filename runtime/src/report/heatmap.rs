//! A source × target matrix as a heatmap, e.g. ΔAcc@1 of GRPO trained on each source task and
//! evaluated on each target. Each cell is annotated with its value; the colour scale diverges
//! around 0 (blue below, red above, white at 0) and is symmetric, so equal gains and losses look
//! equally strong, with a colour bar to read it. Missing cells (NaN) are grey and say "n/a".

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figure::{check_text, fail, save_figure, text_size, Figure};
use super::font::FAMILY;
use crate::bail;
use crate::error::Result;
use crate::run::CancelFlag;

/// What to draw. `values[r][c]` is row `r` (source), column `c` (target); NaN marks a missing cell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Heatmap {
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    pub values: Vec<Vec<f64>>,
    pub title: Option<String>,
    /// What the values are, written beside the colour bar (e.g. "ΔAcc@1").
    pub label: Option<String>,
    /// Axis titles, e.g. "trained on (source)" and "evaluated on (target)".
    pub row_title: Option<String>,
    pub col_title: Option<String>,
    /// Half-range of the colour scale; defaults to the largest |value|. Fix it to compare plots.
    pub scale: Option<f64>,
    /// Decimals in the cell annotations (default 3).
    pub decimals: Option<usize>,
}

const MARGIN: i32 = 16;
const CELL_H: i32 = 50;
const MIN_CELL_W: i32 = 76;
const MAX_CELL_W: i32 = 150;
const MAX_GRID_W: i32 = 1100;
const LABEL_PT: f64 = 16.0;
const VALUE_PT: f64 = 15.0;
const BAR_W: i32 = 22;
/// Axis titles are a shade lighter than the labels they explain.
const AXIS_INK: RGBColor = RGBColor(60, 60, 60);
/// More rows or columns than this make a canvas no screen shows (and, far enough above, one
/// whose size overflows plotters' pixel arithmetic).
pub const MAX_CELLS_PER_SIDE: usize = 200;
/// Decimals past what an f64 holds only print noise (and, by the million, exhaust memory).
pub const MAX_DECIMALS: usize = 15;

impl Heatmap {
    /// Every shape problem, named: empty axes, ragged rows, infinite values, a bad scale.
    pub fn check(&self) -> Result<()> {
        if self.rows.is_empty() || self.cols.is_empty() {
            bail!(
                "heatmap: needs at least one row and one column, got {}×{}",
                self.rows.len(),
                self.cols.len()
            );
        }
        for (axis, n) in [("rows", self.rows.len()), ("columns", self.cols.len())] {
            if n > MAX_CELLS_PER_SIDE {
                bail!("heatmap: {n} {axis} is more than the {MAX_CELLS_PER_SIDE} one heatmap can show");
            }
        }
        for (axis, names) in [("row", &self.rows), ("column", &self.cols)] {
            for (i, name) in names.iter().enumerate() {
                check_text("heatmap", &format!("{axis} {i}'s name"), name)?;
            }
        }
        let titles = [
            ("the title", &self.title),
            ("the label", &self.label),
            ("the row title", &self.row_title),
            ("the column title", &self.col_title),
        ];
        for (what, text) in titles {
            check_text("heatmap", what, text.as_deref().unwrap_or_default())?;
        }
        if let Some(d) = self.decimals.filter(|&d| d > MAX_DECIMALS) {
            bail!("heatmap: decimals = {d} is more than the {MAX_DECIMALS} an f64 holds");
        }
        if self.values.len() != self.rows.len() {
            bail!("heatmap: {} rows are named but `values` has {} rows", self.rows.len(), self.values.len());
        }
        for (r, row) in self.values.iter().enumerate() {
            if row.len() != self.cols.len() {
                bail!(
                    "heatmap: row {r} ({:?}) has {} values but there are {} columns (the matrix is ragged)",
                    self.rows[r],
                    row.len(),
                    self.cols.len()
                );
            }
            if let Some(c) = row.iter().position(|v| v.is_infinite()) {
                bail!("heatmap: value at row {:?}, column {:?} is infinite", self.rows[r], self.cols[c]);
            }
        }
        if let Some(s) = self.scale.filter(|s| !(s.is_finite() && *s > 0.0)) {
            bail!("heatmap: scale must be a positive number, got {s}");
        }
        Ok(())
    }

    fn half_range(&self) -> f64 {
        let largest =
            self.values.iter().flatten().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
        self.scale.unwrap_or(if largest > 0.0 { largest } else { 1.0 })
    }

    fn annotation(&self, v: f64) -> String {
        if v.is_nan() {
            "n/a".into()
        } else {
            format!("{v:+.*}", self.decimals.unwrap_or(3))
        }
    }
}

/// Draws `heatmap` to `<path>.png` and `<path>.svg` and returns both paths; `cancel` is checked
/// before each drawing.
pub fn plot_heatmap(
    heatmap: &Heatmap,
    path: impl AsRef<Path>,
    cancel: Option<&CancelFlag>,
) -> Result<Vec<PathBuf>> {
    heatmap.check()?;
    save_figure(&Layout::new(heatmap)?, path.as_ref(), cancel)
}

/// Blue–white–red, the ColorBrewer "RdBu" stops, for `t` in [-1, 1].
pub fn diverging_colour(t: f64) -> RGBColor {
    const STOPS: [(f64, (u8, u8, u8)); 5] = [
        (-1.0, (33, 102, 172)),
        (-0.5, (146, 197, 222)),
        (0.0, (247, 247, 247)),
        (0.5, (244, 165, 130)),
        (1.0, (178, 24, 43)),
    ];
    let t = if t.is_nan() { 0.0 } else { t.clamp(-1.0, 1.0) };
    let i = STOPS.iter().rposition(|(s, _)| *s <= t).unwrap_or(0).min(STOPS.len() - 2);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let f = (t - a) / (b - a);
    let mix = |x: u8, y: u8| (f64::from(x) + f * (f64::from(y) - f64::from(x))).round() as u8;
    RGBColor(mix(ca.0, cb.0), mix(ca.1, cb.1), mix(ca.2, cb.2))
}

/// The width in pixels of the widest of `texts`.
fn widest(texts: impl Iterator<Item = String>, pt: f64) -> Result<i32> {
    let mut most = 0;
    for t in texts {
        most = most.max(text_size(&t, pt)?.0 as i32);
    }
    Ok(most)
}

/// Pixel positions, computed once from the text sizes so long task names get the room they need:
/// column labels turn vertical when they are wider than a cell.
struct Layout<'a> {
    map: &'a Heatmap,
    cell_w: i32,
    grid: (i32, i32),
    vertical_cols: bool,
    col_label_h: i32,
    half: f64,
    size: (u32, u32),
}

impl<'a> Layout<'a> {
    fn new(map: &'a Heatmap) -> Result<Self> {
        let value_w = widest(map.values.iter().flatten().map(|&v| map.annotation(v)), VALUE_PT)?;
        let col_w = widest(map.cols.iter().cloned(), LABEL_PT)?;
        let row_w = widest(map.rows.iter().cloned(), LABEL_PT)?;
        // Cells widen to fit their column's name up to MAX_CELL_W while the grid stays under
        // MAX_GRID_W; otherwise the names turn vertical and the cells stay compact.
        let fits = col_w + 14 <= MAX_CELL_W && (col_w + 14) * map.cols.len() as i32 <= MAX_GRID_W;
        let cell_w = (value_w + 18).max(MIN_CELL_W).max(if fits { col_w + 14 } else { 0 });
        let vertical_cols = !fits;
        let col_label_h = if vertical_cols { col_w + 10 } else { 26 };
        let half = map.half_range();
        let tick_w = widest([-half, half].iter().map(|v| format!("{v:+.2}")), LABEL_PT)?;
        let title_w = widest(map.title.iter().cloned(), 22.0)?;

        let row_title_w = if map.row_title.is_some() { 28 } else { 0 };
        let col_title_h = if map.col_title.is_some() { 30 } else { 0 };
        let grid_x = MARGIN + row_title_w + row_w + 10;
        let grid_y = MARGIN + if map.title.is_some() { 44 } else { 8 };
        let grid_w = cell_w * map.cols.len() as i32;
        let grid_h = CELL_H * map.rows.len() as i32;
        let bar_label_w = if map.label.is_some() { 30 } else { 0 };
        let width =
            (grid_x + grid_w + 28 + BAR_W + 8 + tick_w + bar_label_w + MARGIN).max(title_w + 2 * MARGIN);
        let height = (grid_y + grid_h + col_label_h + col_title_h + MARGIN).max(grid_y + 160 + MARGIN);
        Ok(Layout {
            map,
            cell_w,
            grid: (grid_x, grid_y),
            vertical_cols,
            col_label_h,
            half,
            size: (width as u32, height as u32),
        })
    }
}

impl Figure for Layout<'_> {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let map = self.map;
        let (gx, gy) = self.grid;
        let (w, _) = (self.size.0 as i32, self.size.1 as i32);
        let grid_w = self.cell_w * map.cols.len() as i32;
        let grid_h = CELL_H * map.rows.len() as i32;
        let label = TextStyle::from((FAMILY, LABEL_PT).into_font()).color(&BLACK);
        root.fill(&WHITE).map_err(fail)?;

        if let Some(title) = &map.title {
            let style = TextStyle::from((FAMILY, 22.0).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw_text(title, &style, (w / 2, MARGIN)).map_err(fail)?;
        }

        for (r, row) in map.values.iter().enumerate() {
            let y0 = gy + r as i32 * CELL_H;
            for (c, &v) in row.iter().enumerate() {
                let x0 = gx + c as i32 * self.cell_w;
                let t = v / self.half;
                let fill = if v.is_nan() { RGBColor(200, 200, 200) } else { diverging_colour(t) };
                root.draw(&Rectangle::new([(x0, y0), (x0 + self.cell_w, y0 + CELL_H)], fill.filled()))
                    .map_err(fail)?;
                let ink = if !v.is_nan() && t.abs() > 0.6 { WHITE } else { BLACK };
                let style = TextStyle::from((FAMILY, VALUE_PT).into_font())
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                root.draw_text(&map.annotation(v), &style, (x0 + self.cell_w / 2, y0 + CELL_H / 2))
                    .map_err(fail)?;
            }
        }
        // Thin white rules between cells, then a frame around the grid.
        for c in 1..map.cols.len() as i32 {
            let x = gx + c * self.cell_w;
            root.draw(&PathElement::new(vec![(x, gy), (x, gy + grid_h)], WHITE.stroke_width(2)))
                .map_err(fail)?;
        }
        for r in 1..map.rows.len() as i32 {
            let y = gy + r * CELL_H;
            root.draw(&PathElement::new(vec![(gx, y), (gx + grid_w, y)], WHITE.stroke_width(2)))
                .map_err(fail)?;
        }
        root.draw(&Rectangle::new([(gx, gy), (gx + grid_w, gy + grid_h)], BLACK.mix(0.5))).map_err(fail)?;

        let right = label.pos(Pos::new(HPos::Right, VPos::Center));
        for (r, name) in map.rows.iter().enumerate() {
            root.draw_text(name, &right, (gx - 8, gy + r as i32 * CELL_H + CELL_H / 2)).map_err(fail)?;
        }
        let below = gy + grid_h + 6;
        for (c, name) in map.cols.iter().enumerate() {
            let x = gx + c as i32 * self.cell_w + self.cell_w / 2;
            if self.vertical_cols {
                let style =
                    label.transform(FontTransform::Rotate270).pos(Pos::new(HPos::Right, VPos::Center));
                root.draw_text(name, &style, (x, below)).map_err(fail)?;
            } else {
                root.draw_text(name, &label.pos(Pos::new(HPos::Center, VPos::Top)), (x, below))
                    .map_err(fail)?;
            }
        }
        let axis_title = TextStyle::from((FAMILY, 17.0).into_font()).color(&AXIS_INK);
        if let Some(t) = &map.col_title {
            let style = axis_title.pos(Pos::new(HPos::Center, VPos::Top));
            root.draw_text(t, &style, (gx + grid_w / 2, below + self.col_label_h)).map_err(fail)?;
        }
        if let Some(t) = &map.row_title {
            let style = axis_title.transform(FontTransform::Rotate270).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw_text(t, &style, (MARGIN, gy + grid_h / 2)).map_err(fail)?;
        }
        self.draw_colour_bar(root, gx + grid_w + 28, gy, grid_h.max(160))
    }
}

impl Layout<'_> {
    /// A vertical gradient from -scale (bottom) to +scale (top) with five ticks and the label.
    fn draw_colour_bar<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        x: i32,
        y: i32,
        h: i32,
    ) -> Result<()> {
        for i in 0..h {
            let t = 1.0 - 2.0 * f64::from(i) / f64::from(h - 1);
            root.draw(&Rectangle::new([(x, y + i), (x + BAR_W, y + i + 1)], diverging_colour(t).filled()))
                .map_err(fail)?;
        }
        root.draw(&Rectangle::new([(x, y), (x + BAR_W, y + h)], BLACK.mix(0.5))).map_err(fail)?;
        let style = TextStyle::from((FAMILY, LABEL_PT).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let mut tick_w = 0;
        for k in 0..=4 {
            let frac = f64::from(k) / 4.0;
            let ty = y + ((h - 1) as f64 * frac).round() as i32;
            let v = self.half * (1.0 - 2.0 * frac);
            let text = if v == 0.0 { "0".to_string() } else { format!("{v:+.2}") };
            tick_w = tick_w.max(text_size(&text, LABEL_PT)?.0 as i32);
            root.draw(&PathElement::new(vec![(x + BAR_W, ty), (x + BAR_W + 5, ty)], BLACK)).map_err(fail)?;
            root.draw_text(&text, &style, (x + BAR_W + 8, ty)).map_err(fail)?;
        }
        if let Some(label) = &self.map.label {
            let style = TextStyle::from((FAMILY, 17.0).into_font())
                .color(&AXIS_INK)
                .transform(FontTransform::Rotate90)
                .pos(Pos::new(HPos::Center, VPos::Top));
            root.draw_text(label, &style, (x + BAR_W + 8 + tick_w + 26, y + h / 2)).map_err(fail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer() -> Heatmap {
        let tasks: Vec<String> = ["pathmnist", "pneumoniamnist", "dermamnist"].map(String::from).to_vec();
        Heatmap {
            rows: tasks.clone(),
            cols: tasks,
            values: vec![vec![0.21, -0.03, 0.01], vec![0.02, 0.15, f64::NAN], vec![-0.08, 0.0, 0.12]],
            title: Some("ΔAcc@1 after GRPO on source, evaluated on target".into()),
            label: Some("ΔAcc@1".into()),
            row_title: Some("trained on".into()),
            col_title: Some("evaluated on".into()),
            ..Default::default()
        }
    }

    #[test]
    fn writes_png_and_svg_with_annotations() {
        let dir = tempfile::tempdir().unwrap();
        let files = plot_heatmap(&transfer(), dir.path().join("transfer"), None).unwrap();
        assert_eq!(files, [dir.path().join("transfer.png"), dir.path().join("transfer.svg")]);
        let png = image::open(&files[0]).unwrap();
        assert!(png.width() > 300 && png.height() > 200);
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        for text in ["+0.210", "-0.080", "n/a", "pneumoniamnist", "ΔAcc@1", "evaluated on", "+0.21"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn ragged_or_mismatched_matrices_are_refused_by_name() {
        let mut ragged = transfer();
        ragged.values[1].pop();
        let e = plot_heatmap(&ragged, "/tmp/never", None).unwrap_err().to_string();
        assert!(e.contains("row 1") && e.contains("pneumoniamnist") && e.contains("ragged"), "{e}");
        let mut short = transfer();
        short.values.pop();
        assert!(short.check().unwrap_err().to_string().contains("3 rows are named"));
        let mut inf = transfer();
        inf.values[0][0] = f64::INFINITY;
        assert!(inf.check().is_err());
        assert!(Heatmap::default().check().is_err());
        let e = Heatmap { decimals: Some(1_000_000), ..transfer() }.check().unwrap_err().to_string();
        assert_eq!(e, "heatmap: decimals = 1000000 is more than the 15 an f64 holds");
        let e = Heatmap { col_title: Some("c".repeat(1_001)), ..transfer() }.check().unwrap_err().to_string();
        assert!(e.contains("the column title has 1001 characters"), "{e}");
        let mut wide = transfer();
        wide.rows[2] = "r".repeat(1_001);
        assert!(wide.check().unwrap_err().to_string().contains("row 2's name has 1001 characters"));
    }

    #[test]
    fn the_scale_is_centred_at_zero_and_symmetric() {
        assert_eq!(diverging_colour(0.0), RGBColor(247, 247, 247));
        assert_eq!(diverging_colour(1.0), RGBColor(178, 24, 43));
        assert_eq!(diverging_colour(-1.0), RGBColor(33, 102, 172));
        assert_eq!(diverging_colour(5.0), diverging_colour(1.0));
        let (pos, neg) = (diverging_colour(0.3), diverging_colour(-0.3));
        assert!(pos.0 > pos.2 && neg.2 > neg.0, "{pos:?} {neg:?}");
        assert_eq!(transfer().half_range(), 0.21);
    }
}
