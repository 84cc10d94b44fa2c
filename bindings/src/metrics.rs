//! The `metrics` family: the statistics of support. The unbiased Pass@k estimator, the support
//! `Report` that `evaluate` returns (Acc@1, Pass@k, maj@k, gap, with bootstrap CIs; breakdowns;
//! JSON/CSV and plots), side-by-side comparison, the boundary rule, and the statistics of a
//! claim: the paired bootstrap of a change on the same questions and the t interval across seeds.

use medbridge_runtime::metrics::{
    boundary, compare, mean_interval, paired_contrast, BootstrapOptions, BoundaryOptions, PairedTerm,
    Statistic, SupportReport,
};
use medbridge_runtime::report::plot::{plot_pass_curves, PlotOptions};
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::context::{seed_or_next, session};
use crate::convert::{as_f64, from_json};
use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::options::{
    int_arg, opt, Absent, Bound, Kind, OptionSet, OptionSpec, Opts, FRACTION, POSITIVE, SEED, STR,
};
use crate::script_types::type_of;

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

/// A confidence level strictly between 0 and 1.
const CONFIDENCE: OptionSpec = opt(
    "confidence",
    Kind::Float { min: Bound::Excl(0.0), max: Bound::Excl(1.0) },
    Absent::Float(0.95),
    "coverage of the two-sided interval",
);

/// The keys of a paired bootstrap, shared by `paired_diff` and `paired_contrast`.
const PAIRED_KEYS: [OptionSpec; 4] = [
    opt(
        "stat",
        STR,
        Absent::Str("acc1"),
        "the per-question statistic compared when the values are Reports: acc1, mean, pass@k or gap@k",
    ),
    opt("resamples", POSITIVE, Absent::Int(1000), "bootstrap resamples"),
    SEED,
    CONFIDENCE,
];

static PAIRED_DIFF: OptionSet = OptionSet::new("paired_diff", &[&PAIRED_KEYS]);
static PAIRED_CONTRAST: OptionSet = OptionSet::new("paired_contrast", &[&PAIRED_KEYS]);
static MEAN_INTERVAL: OptionSet = OptionSet::new("mean_interval", &[&[CONFIDENCE]]);

/// The metrics family's declared options.
pub static OPTIONS: [&OptionSet; 5] = [&COMPARE, &BOUNDARY, &PAIRED_DIFF, &PAIRED_CONTRAST, &MEAN_INTERVAL];

/// The bootstrap settings of a paired call and the statistic it compares.
fn paired_settings(ctx: &NativeCallContext, o: &Opts) -> ScriptResult<(BootstrapOptions, Statistic)> {
    let stat = Statistic::parse(&o.string_or_default("stat")?)
        .map_err(|e| script_msg(format!("{}: {e}", o.what())))?;
    let bootstrap = BootstrapOptions {
        resamples: o.count_or_default("resamples")?,
        seed: seed_or_next(ctx, o.int("seed")?)?,
        confidence: o.float_or_default("confidence")?,
    };
    Ok((bootstrap, stat))
}

/// Numbers from an array, each named by position when it is not one.
fn numbers(what: &str, side: &str, values: &Array) -> ScriptResult<Vec<f64>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            as_f64(v).ok_or_else(|| {
                script_msg(format!("{what}: `{side}` item {i} is {}, not a number", type_of(v)))
            })
        })
        .collect()
}

/// One paired term from `after` and `before`: two Reports (compared on `stat`, matched by
/// question) or two arrays of per-question numbers in the same order (a probe's `hits`).
fn paired_term(
    what: &str,
    after: &Dynamic,
    before: &Dynamic,
    stat: Statistic,
    weight: f64,
) -> ScriptResult<PairedTerm> {
    if let (Some(a), Some(b)) = (after.read_lock::<Report>(), before.read_lock::<Report>()) {
        return PairedTerm::from_reports(&a, &b, stat, weight)
            .map_err(|e| script_msg(format!("{what}: {e}")));
    }
    if let (Some(a), Some(b)) = (after.read_lock::<Array>(), before.read_lock::<Array>()) {
        return Ok(PairedTerm {
            after: numbers(what, "after", &a)?,
            before: numbers(what, "before", &b)?,
            weight,
        });
    }
    Err(script_msg(format!(
        "{what}: `after` and `before` must both be Reports or both arrays of numbers, got {} and {}",
        type_of(after),
        type_of(before)
    )))
}

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
        let stat = Statistic::parse(name).map_err(|e| script_msg(format!("ci: {e}")))?;
        json_of(&r.estimate(stat).script()?)
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

    /// The change from `before` to `after` on the same questions, with its paired bootstrap
    /// interval (questions resampled with both their values): `paired_diff(grpo_report,
    /// sft_report, #{stat: "acc1" | "mean" | "pass@k" | "gap@k", resamples: 1000, seed: 0,
    /// confidence: 0.95})` → `#{value, lo, hi, questions}`. Reports are matched question by
    /// question and must hold the same questions; two arrays of per-question numbers (a probe's
    /// `hits`) are paired by position.
    #[rhai_fn(name = "paired_diff", return_raw)]
    pub fn paired_diff(
        ctx: NativeCallContext,
        after: Dynamic,
        before: Dynamic,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let o = PAIRED_DIFF.parse(&options)?;
        let (bootstrap, stat) = paired_settings(&ctx, &o)?;
        let term = paired_term("paired_diff", &after, &before, stat, 1.0)?;
        let questions = term.after.len();
        let estimate = paired_contrast(&[term], &bootstrap).script()?;
        let mut out: Map = json_of(&estimate)?.cast();
        out.insert("questions".into(), Dynamic::from_int(questions as i64));
        Ok(out)
    }

    /// A weighted sum of changes measured on different question sets, `Σ weight · (after −
    /// before)`, with a paired bootstrap interval that resamples each term's questions on their
    /// own: `paired_contrast([#{after: rl_a, before: sft_a, weight: 1.0}, #{after: rl_b, before:
    /// sft_b, weight: -1.0}], #{stat: "acc1"})` → `#{value, lo, hi}` (the in-domain gain minus a
    /// transfer gain, say). Each term's `after`/`before` are as in `paired_diff`; `weight`
    /// defaults to 1.
    #[rhai_fn(name = "paired_contrast", return_raw)]
    pub fn paired_contrast_of(
        ctx: NativeCallContext,
        terms: Array,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let o = PAIRED_CONTRAST.parse(&options)?;
        let (bootstrap, stat) = paired_settings(&ctx, &o)?;
        let parsed = terms
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let what = format!("paired_contrast term {i}");
                let map = t.read_lock::<Map>().ok_or_else(|| {
                    script_msg(format!(
                        "{what}: expected a map #{{after, before, weight}}, got {}",
                        type_of(t)
                    ))
                })?;
                let side = |key: &str| {
                    map.get(key).cloned().ok_or_else(|| script_msg(format!("{what}: `{key}` is required")))
                };
                let weight = match map.get("weight") {
                    None => 1.0,
                    Some(w) => {
                        as_f64(w).ok_or_else(|| script_msg(format!("{what}: `weight` must be a number")))?
                    }
                };
                paired_term(&what, &side("after")?, &side("before")?, stat, weight)
            })
            .collect::<ScriptResult<Vec<_>>>()?;
        Ok(json_of(&paired_contrast(&parsed, &bootstrap).script()?)?.cast())
    }

    /// The mean of a few independent values (one effect per seed) with its Student-t interval:
    /// `mean_interval([0.12, 0.08, 0.15], #{confidence: 0.95})` → `#{mean, lo, hi, sd, n}`; needs
    /// at least two values.
    #[rhai_fn(name = "mean_interval", return_raw)]
    pub fn mean_interval_of(values: Array, options: Map) -> Result<Map, Box<EvalAltResult>> {
        let o = MEAN_INTERVAL.parse(&options)?;
        let confidence = o.float_or_default("confidence")?;
        let values = numbers("mean_interval", "values", &values)?;
        Ok(json_of(&mean_interval(&values, confidence).script()?)?.cast())
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
