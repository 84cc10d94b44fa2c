//! The `metrics` family: the statistics of support. The unbiased Pass@k estimator, the support
//! `Report` that `evaluate` returns (Acc@1, Pass@k, maj@k, gap, with bootstrap CIs; breakdowns;
//! JSON/CSV and plots), side-by-side comparison and the boundary rule.

use medbridge_runtime::metrics::{boundary, compare, BoundaryOptions, SupportReport};
use medbridge_runtime::report::plot::{plot_pass_curves, PlotOptions};
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::context::session;
use crate::convert::from_json;
use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::options::{int_arg, opt, Absent, Kind, OptionSet, FRACTION, POSITIVE, STR};

/// What `evaluate` returns.
pub type Report = SupportReport;

static COMPARE: OptionSet = OptionSet::new(
    "compare",
    &[&[
        opt("labels", Kind::Strs, Absent::Means("model 1, model 2, ..."), "one label per report"),
        opt("plot", STR, Absent::Means("no plot"), "write the overlaid Pass@k curves here (.png and .svg)"),
        opt("title", STR, Absent::Means("none"), "the plot's title"),
    ]],
);

static BOUNDARY: OptionSet = OptionSet::new(
    "boundary",
    &[&[
        opt("k", POSITIVE, Absent::Means("the report's n"), "the k of Pass@k"),
        opt("support_threshold", FRACTION, Absent::Float(0.5), "Pass@k below this is `bridge`"),
        opt("gap_threshold", FRACTION, Absent::Float(0.1), "a gap above this is `sharpen`"),
    ]],
);

/// The metrics family's declared options.
pub static OPTIONS: [&OptionSet; 2] = [&COMPARE, &BOUNDARY];

fn json_of<T: serde::Serialize>(value: &T) -> ScriptResult<Dynamic> {
    from_json(&serde_json::to_value(value).map_err(|e| script_msg(e.to_string()))?)
}

fn paths(files: Vec<std::path::PathBuf>) -> Array {
    files.into_iter().map(|p| Dynamic::from(p.display().to_string())).collect()
}

#[export_module]
pub mod metrics_api {
    use super::*;

    /// A support report: per-question records with Acc@1, Pass@k, maj@k and bootstrap CIs.
    pub type Report = SupportReport;

    /// The unbiased Pass@k of Chen et al. (2021) for `c` correct among `n` samples, in its
    /// stable product form: `pass_at_k(16, 3, 4)`.
    #[rhai_fn(return_raw)]
    pub fn pass_at_k(n: i64, c: i64, k: i64) -> Result<f64, Box<EvalAltResult>> {
        let count = |x: i64, name: &str| int_arg("pass_at_k", name, x, 0);
        medbridge_runtime::metrics::pass_at_k::pass_at_k(count(n, "n")?, count(c, "c")?, count(k, "k")?)
            .script()
    }

    /// Greedy accuracy.
    #[rhai_fn(get = "acc1", pure)]
    pub fn acc1(r: &mut Report) -> f64 {
        r.acc1().value
    }

    /// Samples per question.
    #[rhai_fn(get = "n", pure)]
    pub fn n(r: &mut Report) -> i64 {
        r.n() as i64
    }

    /// Number of questions.
    #[rhai_fn(get = "questions", pure)]
    pub fn questions(r: &mut Report) -> i64 {
        r.questions() as i64
    }

    /// Unbiased Pass@k (mean over questions), 1 ≤ k ≤ n.
    #[rhai_fn(name = "pass_at", return_raw)]
    pub fn pass_at(r: &mut Report, k: i64) -> Result<f64, Box<EvalAltResult>> {
        Ok(r.pass_at(int_arg("pass_at", "k", k, 1)?).script()?.value)
    }

    /// Majority vote over the first k samples.
    #[rhai_fn(name = "maj_at", return_raw)]
    pub fn maj_at(r: &mut Report, k: i64) -> Result<f64, Box<EvalAltResult>> {
        r.maj_at(int_arg("maj_at", "k", k, 1)?).script()
    }

    /// The support gap Pass@k − Acc@1.
    #[rhai_fn(name = "gap", return_raw)]
    pub fn gap(r: &mut Report, k: i64) -> Result<f64, Box<EvalAltResult>> {
        Ok(r.gap(int_arg("gap", "k", k, 1)?).script()?.value)
    }

    /// A statistic with its 95% bootstrap interval: `r.ci("acc1" | "mean" | "pass@k" | "gap@k")`
    /// → `#{value, lo, hi}`.
    #[rhai_fn(name = "ci", return_raw)]
    pub fn ci(r: &mut Report, name: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        let estimate = match name {
            "acc1" => r.acc1(),
            "mean" => r.mean_at_n(),
            other => match (other.strip_prefix("pass@"), other.strip_prefix("gap@")) {
                (Some(k), _) => r
                    .pass_at(k.parse().map_err(|_| script_msg(format!("ci: bad k in {other:?}")))?)
                    .script()?,
                (_, Some(k)) => {
                    r.gap(k.parse().map_err(|_| script_msg(format!("ci: bad k in {other:?}")))?).script()?
                }
                _ => {
                    return Err(script_msg(format!(
                        "ci: unknown statistic {other:?}; use acc1, mean, pass@k or gap@k"
                    )))
                }
            },
        };
        json_of(&estimate)
    }

    /// The Pass@k curve: `[#{k, pass: #{value, lo, hi}, gap: #{...}, maj}, ...]` for k = 1..n.
    #[rhai_fn(name = "curve", return_raw)]
    pub fn curve(r: &mut Report) -> Result<Dynamic, Box<EvalAltResult>> {
        json_of(&r.curve())
    }

    /// Everything in one map (what `save` writes as JSON).
    #[rhai_fn(name = "summary", return_raw)]
    pub fn summary(r: &mut Report) -> Result<Dynamic, Box<EvalAltResult>> {
        json_of(&r.summary().script()?)
    }

    /// Reports per group: `r.by("class" | "task" | "modality")` → map of name → Report.
    #[rhai_fn(name = "by", return_raw)]
    pub fn by(r: &mut Report, key: &str) -> Result<Map, Box<EvalAltResult>> {
        Ok(r.by(key).script()?.into_iter().map(|(k, v)| (k.into(), Dynamic::from(v))).collect())
    }

    /// Write the summary JSON and the per-question CSV inside the run directory
    /// (`"eval.json"` → eval.json + eval.csv; a directory → report.json + questions.csv).
    #[rhai_fn(name = "save", return_raw)]
    pub fn save(ctx: NativeCallContext, r: &mut Report, path: &str) -> Result<Array, Box<EvalAltResult>> {
        let target = session(&ctx)?.sandbox.resolve_write(path).script()?;
        Ok(paths(r.save(&target).script()?))
    }

    /// Plot the Pass@k curve with its CI band and Acc@1 marked, as PNG and SVG.
    #[rhai_fn(name = "plot", return_raw)]
    pub fn plot(ctx: NativeCallContext, r: &mut Report, path: &str) -> Result<Array, Box<EvalAltResult>> {
        let s = session(&ctx)?;
        let target = s.sandbox.resolve_write(path).script()?;
        Ok(paths(
            plot_pass_curves(&[("model", r)], &target, &PlotOptions::default(), Some(&s.cancel)).script()?,
        ))
    }

    /// The released `format_failure_rate`: the share of questions none of whose samples follows
    /// the task's answer format.
    #[rhai_fn(name = "format_failure_rate", pure)]
    pub fn format_failure_rate(r: &mut Report) -> f64 {
        r.format_failure_rate()
    }

    /// The released `avg_unique_answers@K`: the mean number of distinct answers among a
    /// question's samples, format failures excluded.
    #[rhai_fn(name = "avg_unique_answers", pure)]
    pub fn avg_unique_answers(r: &mut Report) -> f64 {
        r.avg_unique_answers()
    }

    /// `Report(200 questions, n 16: acc@1 0.41, pass@16 0.87)`.
    #[rhai_fn(global, name = "to_string", name = "to_debug")]
    pub fn report_string(r: &mut Report) -> String {
        let pass = r.pass_at(r.n()).map(|e| e.value).unwrap_or(f64::NAN);
        format!(
            "Report({} questions, n {}: acc@1 {:.3}, pass@{} {:.3})",
            r.questions(),
            r.n(),
            r.acc1().value,
            r.n(),
            pass
        )
    }

    /// Side by side: `compare([base, sft, rl], #{labels: ["base", "sft", "rl"], plot: "compare"})`
    /// → `#{table (Markdown), files (the overlaid Pass@k plot, when `plot` is given)}`.
    #[rhai_fn(name = "compare", return_raw)]
    pub fn compare_reports(
        ctx: NativeCallContext,
        reports: Array,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let o = COMPARE.parse(&options)?;
        let list: Vec<Report> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.clone()
                    .try_cast::<Report>()
                    .ok_or_else(|| script_msg(format!("compare: item {i} is not a Report")))
            })
            .collect::<ScriptResult<_>>()?;
        let labels = match o.strings("labels")? {
            Some(l) => l,
            None => (1..=list.len()).map(|i| format!("model {i}")).collect(),
        };
        let refs: Vec<&Report> = list.iter().collect();
        let table = compare(&refs, &labels).script()?.markdown();
        let mut out = Map::new();
        out.insert("table".into(), table.into());
        if let Some(p) = o.string("plot")? {
            let s = session(&ctx)?;
            let target = s.sandbox.resolve_write(&p).script()?;
            let named: Vec<(&str, &Report)> =
                labels.iter().map(String::as_str).zip(refs.iter().copied()).collect();
            let opts = PlotOptions { title: o.string("title")?, ..PlotOptions::default() };
            out.insert(
                "files".into(),
                paths(plot_pass_curves(&named, &target, &opts, Some(&s.cancel)).script()?).into(),
            );
        }
        Ok(out)
    }

    /// The boundary rule per task and per modality: `boundary(report, #{k: 16,
    /// support_threshold: 0.5, gap_threshold: 0.1})` → rows `#{scope, group, regime ("bridge" |
    /// "sharpen" | "saturated"), acc1, pass_at_k, gap, chance_pass_at_k, reason, ...}`.
    #[rhai_fn(name = "boundary", return_raw)]
    pub fn boundary_rows(r: Report, options: Map) -> Result<Dynamic, Box<EvalAltResult>> {
        let o = BOUNDARY.parse(&options)?;
        let opts = BoundaryOptions {
            k: o.count("k")?,
            support_threshold: o.float_or_default("support_threshold")?,
            gap_threshold: o.float_or_default("gap_threshold")?,
        };
        json_of(&boundary(&r, &opts).script()?)
    }
}
