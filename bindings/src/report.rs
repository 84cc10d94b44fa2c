//! The `report` family: figures for a report directory, written as `<path>.png` and `<path>.svg`
//! inside the run directory (through the session's sandbox). A transfer heatmap for source ×
//! target matrices and grouped bar charts for per-task scores beside published baselines.
//!
//! Missing numbers are `()`: a heatmap cell shows "n/a", a bar is left out.

use medbridge_runtime::report::{BarChart, BarSeries, Heatmap};
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::context::session;
use crate::convert::{as_f64, Options};
use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::script_types::{type_of, type_of_name};

fn paths(files: Vec<std::path::PathBuf>) -> Array {
    files.into_iter().map(|p| Dynamic::from(p.display().to_string())).collect()
}

fn strings(value: Option<&Dynamic>, what: &str) -> ScriptResult<Vec<String>> {
    let array =
        value.ok_or_else(|| script_msg(format!("{what} is required")))?.clone().into_array().map_err(
            |t| script_msg(format!("{what} must be an array of strings, got {}", type_of_name(t))),
        )?;
    array
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.into_string()
                .map_err(|t| script_msg(format!("{what}[{i}] must be a string, got {}", type_of_name(t))))
        })
        .collect()
}

/// Numbers, with `()` for a missing one (NaN inside the runtime).
fn numbers(value: &Dynamic, what: &str) -> ScriptResult<Vec<f64>> {
    let array = value
        .clone()
        .into_array()
        .map_err(|t| script_msg(format!("{what} must be an array of numbers, got {}", type_of_name(t))))?;
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
fn bar_series(series: &Dynamic, errors: Option<&Dynamic>) -> ScriptResult<Vec<BarSeries>> {
    let mut out: Vec<BarSeries> = if let Some(map) = series.read_lock::<Map>() {
        map.iter()
            .map(|(name, values)| {
                Ok(BarSeries {
                    name: name.to_string(),
                    values: numbers(values, &format!("plot_bars: series.{name}"))?,
                    errors: None,
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
                let o = Options::new(&map, &what, &["name", "values", "errors"])?;
                let name =
                    o.string("name")?.ok_or_else(|| script_msg(format!("{what}: `name` is required")))?;
                let values = o
                    .get("values")
                    .ok_or_else(|| script_msg(format!("{what}: `values` is required")))
                    .and_then(|v| numbers(v, &format!("{what}.values")))?;
                let errors = o.get("errors").map(|e| numbers(e, &format!("{what}.errors"))).transpose()?;
                Ok(BarSeries { name, values, errors })
            })
            .collect::<ScriptResult<_>>()?
    } else {
        return Err(script_msg(format!(
            "plot_bars: `series` must be a map #{{name: [values]}} or an array of #{{name, values}}, got {}",
            type_of(series)
        )));
    };
    if let Some(errors) = errors {
        let map = errors
            .read_lock::<Map>()
            .ok_or_else(|| script_msg("plot_bars: `errors` must be a map #{name: [half-widths]}"))?;
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
        let o = Options::new(
            &spec,
            "plot_heatmap",
            &["rows", "cols", "values", "title", "label", "row_title", "col_title", "scale", "decimals"],
        )?;
        let matrix = o
            .get("values")
            .ok_or_else(|| script_msg("plot_heatmap: `values` is required"))?
            .clone()
            .into_array()
            .map_err(|t| {
                script_msg(format!(
                    "plot_heatmap: `values` must be an array of rows, got {}",
                    type_of_name(t)
                ))
            })?;
        let values = matrix
            .iter()
            .enumerate()
            .map(|(r, row)| numbers(row, &format!("plot_heatmap: values[{r}]")))
            .collect::<ScriptResult<Vec<_>>>()?;
        let heatmap = Heatmap {
            rows: strings(o.get("rows"), "plot_heatmap: `rows`")?,
            cols: strings(o.get("cols"), "plot_heatmap: `cols`")?,
            values,
            title: o.string("title")?,
            label: o.string("label")?,
            row_title: o.string("row_title")?,
            col_title: o.string("col_title")?,
            scale: o.float("scale")?,
            decimals: o.count("decimals")?,
        };
        heatmap.check().script()?;
        let target = session(&ctx)?.sandbox.resolve_write(path).script()?;
        Ok(paths(medbridge_runtime::report::plot_heatmap(&heatmap, &target).script()?))
    }

    /// Grouped bars, one group per entry of `groups` and one bar per series, with optional ±
    /// error bars, written as `<path>.png` and `<path>.svg`; returns both paths:
    /// `plot_bars("probe", #{groups: ["pathmnist", "dermamnist"], series: #{"Qwen probe": [0.8, 0.7],
    /// "ResNet-18 (224)": [0.909, 0.754]}, errors: #{"Qwen probe": [0.02, 0.03]},
    /// title: "Probe ACC", y_label: "test ACC", y_range: [0.0, 1.0]})`.
    /// A map of series draws in name order; to choose the order pass an array of
    /// `#{name, values, errors}` instead. `()` leaves a bar out.
    #[rhai_fn(return_raw)]
    pub fn plot_bars(ctx: NativeCallContext, path: &str, spec: Map) -> Result<Array, Box<EvalAltResult>> {
        let o =
            Options::new(&spec, "plot_bars", &["groups", "series", "errors", "title", "y_label", "y_range"])?;
        let series = o.get("series").ok_or_else(|| script_msg("plot_bars: `series` is required"))?;
        let y_range = match o.get("y_range") {
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
            groups: strings(o.get("groups"), "plot_bars: `groups`")?,
            series: bar_series(series, o.get("errors"))?,
            title: o.string("title")?,
            y_label: o.string("y_label")?,
            y_range,
        };
        chart.check().script()?;
        let target = session(&ctx)?.sandbox.resolve_write(path).script()?;
        Ok(paths(medbridge_runtime::report::plot_bars(&chart, &target).script()?))
    }
}
