//! The `report` family: figures for a report directory, written as `<path>.png` and `<path>.svg`
//! inside the run directory (through the session's sandbox). A transfer heatmap for source ×
//! target matrices and grouped bar charts for per-task scores beside published baselines.
//!
//! Missing numbers are `()`: a heatmap cell shows "n/a", a bar is left out.

use medbridge_runtime::report::{BarChart, BarSeries, Heatmap};
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::context::session;
use crate::convert::as_f64;
use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::options::{opt, Absent, Kind, OptionSet, COUNT, POSITIVE_FLOAT, STR};
use crate::script_types::type_of;

fn paths(files: Vec<std::path::PathBuf>) -> Array {
    files.into_iter().map(|p| Dynamic::from(p.display().to_string())).collect()
}

const NUMBERS: Kind = Kind::Value("an array of numbers or ()");

static PLOT_HEATMAP: OptionSet = OptionSet::new(
    "plot_heatmap",
    &[&[
        opt("rows", Kind::Strs, Absent::Required, "row labels"),
        opt("cols", Kind::Strs, Absent::Required, "column labels"),
        opt(
            "values",
            Kind::Value("an array of rows of numbers or ()"),
            Absent::Required,
            "the matrix; () marks a missing cell",
        ),
        opt("title", STR, Absent::Means("none"), "figure title"),
        opt("label", STR, Absent::Means("none"), "colour bar label"),
        opt("row_title", STR, Absent::Means("none"), "what the rows are"),
        opt("col_title", STR, Absent::Means("none"), "what the columns are"),
        opt("scale", POSITIVE_FLOAT, Absent::Means("the largest |value|"), "the colour range ±scale"),
        opt("decimals", COUNT, Absent::Int(3), "digits shown in each cell"),
    ]],
);

static PLOT_BARS: OptionSet = OptionSet::new(
    "plot_bars",
    &[&[
        opt("groups", Kind::Strs, Absent::Required, "one group of bars per entry"),
        opt(
            "series",
            Kind::Value("a map #{name: [values]} or an array of #{name, values, errors | lo and hi}"),
            Absent::Required,
            "one bar per series in each group; a map draws in name order",
        ),
        opt(
            "errors",
            Kind::Map(None),
            Absent::Means("none"),
            "± half-widths by series name: #{name: [values]}",
        ),
        opt("title", STR, Absent::Means("none"), "figure title"),
        opt("y_label", STR, Absent::Means("none"), "y axis label"),
        opt("y_range", Kind::Value("[low, high]"), Absent::Means("fitted to the data"), "the y axis range"),
    ]],
);

/// One entry of `plot_bars`' `series` array.
static BAR_SERIES: OptionSet = OptionSet::new(
    "series",
    &[&[
        opt("name", STR, Absent::Required, "the series' name"),
        opt("values", NUMBERS, Absent::Required, "one value per group"),
        opt("errors", NUMBERS, Absent::Means("none"), "± half-widths per group"),
        opt(
            "lo",
            NUMBERS,
            Absent::Means("none"),
            "lower ends of interval bars per group (with `hi`, instead of `errors`)",
        ),
        opt("hi", NUMBERS, Absent::Means("none"), "upper ends of interval bars per group (with `lo`)"),
    ]],
);

/// The report family's declared options.
pub static OPTIONS: [&OptionSet; 2] = [&PLOT_HEATMAP, &PLOT_BARS];

/// Numbers, with `()` for a missing one (NaN inside the runtime).
fn numbers(value: &Dynamic, what: &str) -> ScriptResult<Vec<f64>> {
    let array = value
        .clone()
        .into_array()
        .map_err(|t| script_msg(format!("{what} must be an array of numbers, got {t}")))?;
    array
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if v.is_unit() {
                return Ok(f64::NAN);
            }
            as_f64(v)
                .ok_or_else(|| script_msg(format!("{what}[{i}] must be a number or (), got {}", type_of(v))))
        })
        .collect()
}

/// `series` as a map (drawn in name order) or as an array of `#{name, values, errors}` (drawn in
/// the array's order); `errors` as a map by series name.
fn bar_series(series: &Dynamic, errors: Option<Map>) -> ScriptResult<Vec<BarSeries>> {
    let mut out: Vec<BarSeries> = if let Some(map) = series.read_lock::<Map>() {
        map.iter()
            .map(|(name, values)| {
                Ok(BarSeries {
                    name: name.to_string(),
                    values: numbers(values, &format!("plot_bars: series.{name}"))?,
                    ..Default::default()
                })
            })
            .collect::<ScriptResult<_>>()?
    } else if let Some(array) = series.read_lock::<Array>() {
        array
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let what = format!("plot_bars: series[{i}]");
                let map = entry
                    .read_lock::<Map>()
                    .ok_or_else(|| script_msg(format!("{what} must be a map #{{name, values, errors}}")))?;
                let o = BAR_SERIES.parse_as(&map, &what)?;
                let name = o.string("name")?.ok_or_else(|| o.missing("name"))?;
                let values = o
                    .value("values")
                    .ok_or_else(|| o.missing("values"))
                    .and_then(|v| numbers(v, &format!("{what}.values")))?;
                let errors = o.value("errors").map(|e| numbers(e, &format!("{what}.errors"))).transpose()?;
                let end = |key: &str| o.value(key).map(|e| numbers(e, &format!("{what}.{key}"))).transpose();
                let intervals = match (end("lo")?, end("hi")?) {
                    (None, None) => None,
                    (Some(lo), Some(hi)) if lo.len() == hi.len() => {
                        Some(lo.into_iter().zip(hi).map(|(a, b)| [a, b]).collect())
                    }
                    (Some(_), Some(_)) => {
                        return Err(script_msg(format!(
                            "{what}: `lo` and `hi` must have one value per group each"
                        )))
                    }
                    _ => return Err(script_msg(format!("{what}: interval bars need both `lo` and `hi`"))),
                };
                Ok(BarSeries { name, values, errors, intervals })
            })
            .collect::<ScriptResult<_>>()?
    } else {
        return Err(script_msg(format!(
            "plot_bars: `series` must be a map #{{name: [values]}} or an array of #{{name, values}}, got {}",
            type_of(series)
        )));
    };
    if let Some(map) = errors {
        for (name, values) in map.iter() {
            let series = out
                .iter_mut()
                .find(|s| s.name == name.as_str())
                .ok_or_else(|| script_msg(format!("plot_bars: errors.{name} names no series")))?;
            series.errors = Some(numbers(values, &format!("plot_bars: errors.{name}"))?);
        }
    }
    Ok(out)
}

#[export_module]
pub mod report_api {
    use super::*;

    /// A source × target matrix as an annotated heatmap on a blue–white–red scale centred at 0,
    /// written as `<path>.png` and `<path>.svg` in the run directory; returns both paths:
    /// `plot_heatmap("transfer", #{rows: ["path", "derma"], cols: ["path", "derma"],
    /// values: [[0.2, -0.1], [0.0, 0.15]], title: "ΔAcc@1 after GRPO", label: "ΔAcc@1",
    /// row_title: "trained on", col_title: "evaluated on", scale: 0.3, decimals: 2})`.
    /// `()` marks a missing cell; `scale` fixes the colour range (default: the largest |value|).
    #[rhai_fn(return_raw)]
    pub fn plot_heatmap(ctx: NativeCallContext, path: &str, spec: Map) -> Result<Array, Box<EvalAltResult>> {
        let o = PLOT_HEATMAP.parse(&spec)?;
        let values = o.value("values").ok_or_else(|| o.missing("values"))?;
        let matrix = values.clone().into_array().map_err(|_| o.bad_value("values", values))?;
        let values = matrix
            .iter()
            .enumerate()
            .map(|(r, row)| numbers(row, &format!("plot_heatmap: values[{r}]")))
            .collect::<ScriptResult<Vec<_>>>()?;
        let heatmap = Heatmap {
            rows: o.strings("rows")?.ok_or_else(|| o.missing("rows"))?,
            cols: o.strings("cols")?.ok_or_else(|| o.missing("cols"))?,
            values,
            title: o.string("title")?,
            label: o.string("label")?,
            row_title: o.string("row_title")?,
            col_title: o.string("col_title")?,
            scale: o.float("scale")?,
            decimals: o.count("decimals")?,
        };
        heatmap.check().script()?;
        let s = session(&ctx)?;
        let target = s.sandbox.resolve_write(path).script()?;
        Ok(paths(medbridge_runtime::report::plot_heatmap(&heatmap, &target, Some(&s.cancel)).script()?))
    }

    /// Grouped bars, one group per entry of `groups` and one bar per series, with optional error
    /// bars (± `errors`, or an interval's `lo` and `hi` ends in the array form), written as
    /// `<path>.png` and `<path>.svg`; returns both paths:
    /// `plot_bars("probe", #{groups: ["pathmnist", "dermamnist"], series: #{"Qwen probe": [0.8, 0.7],
    /// "ResNet-18 (224)": [0.909, 0.754]}, errors: #{"Qwen probe": [0.02, 0.03]},
    /// title: "Probe ACC", y_label: "test ACC", y_range: [0.0, 1.0]})`.
    /// A map of series draws in name order; to choose the order pass an array of
    /// `#{name, values, errors}` (or `#{name, values, lo, hi}`) instead. `()` leaves a bar out.
    #[rhai_fn(return_raw)]
    pub fn plot_bars(ctx: NativeCallContext, path: &str, spec: Map) -> Result<Array, Box<EvalAltResult>> {
        let o = PLOT_BARS.parse(&spec)?;
        let series = o.value("series").ok_or_else(|| o.missing("series"))?;
        let y_range = match o.value("y_range") {
            None => None,
            Some(r) => match numbers(r, "plot_bars: `y_range`")?.as_slice() {
                &[lo, hi] => Some((lo, hi)),
                other => {
                    return Err(script_msg(format!(
                        "plot_bars: `y_range` must be [low, high], got {} numbers",
                        other.len()
                    )))
                }
            },
        };
        let chart = BarChart {
            groups: o.strings("groups")?.ok_or_else(|| o.missing("groups"))?,
            series: bar_series(series, o.map("errors")?)?,
            title: o.string("title")?,
            y_label: o.string("y_label")?,
            y_range,
        };
        chart.check().script()?;
        let s = session(&ctx)?;
        let target = s.sandbox.resolve_write(path).script()?;
        Ok(paths(medbridge_runtime::report::plot_bars(&chart, &target, Some(&s.cancel)).script()?))
    }
}
