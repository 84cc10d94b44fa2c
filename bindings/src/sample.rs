//! The `sample` family: sampling answers from a model and measuring support.
//!
//! `sampler(#{...})` builds reusable sampling options; `sample` draws completions; `evaluate`
//! turns a multiple-choice task into a support report (greedy Acc@1 and sampled Pass@k), reading
//! answers with the task's own extractor — the same one GRPO rewards with.

use medbridge_runtime::eval::{evaluate, EvalOptions};
use medbridge_runtime::models::Vlm;
use medbridge_runtime::sample::{sample, SampleRequest, SamplerOptions};
use medbridge_runtime::task::McqTask;
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::context::{seed_or_next, session};
use crate::convert::Options;
use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::model::image_arg;

const SAMPLER_KEYS: [&str; 11] = [
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "n",
    "max_new_tokens",
    "stop_token_ids",
    "stop_strings",
    "seed",
    "batch",
    "max_batch_tokens",
];

/// Apply the sampler keys present in `o` over `base`. Without a `seed` key, a `fresh` base takes
/// the run's next seed; a sampler built earlier keeps its own.
pub fn sampler_options(
    ctx: &NativeCallContext,
    o: &Options,
    mut base: SamplerOptions,
    fresh: bool,
) -> ScriptResult<SamplerOptions> {
    if let Some(t) = o.float("temperature")? {
        base.logits.temperature = t as f32;
    }
    if let Some(p) = o.float("top_p")? {
        base.logits.top_p = p as f32;
    }
    if let Some(k) = o.int("top_k")? {
        base.logits.top_k = k.max(0) as usize;
    }
    if let Some(p) = o.float("min_p")? {
        base.logits.min_p = p as f32;
    }
    let positive = |key: &str, v: i64| -> ScriptResult<usize> {
        usize::try_from(v).map_err(|_| script_msg(format!("option `{key}` must be non-negative, got {v}")))
    };
    if let Some(n) = o.int("n")? {
        base.n = positive("n", n)?;
    }
    if let Some(m) = o.int("max_new_tokens")? {
        base.max_new_tokens = positive("max_new_tokens", m)?;
    }
    if let Some(ids) = o.get("stop_token_ids") {
        let list = ids
            .read_lock::<Array>()
            .ok_or_else(|| script_msg("option `stop_token_ids` must be an array of ints"))?;
        base.stop_token_ids = Some(list.iter().map(|v| v.as_int().unwrap_or(-1).max(0) as u32).collect());
    }
    if let Some(s) = o.get("stop_strings") {
        let list = s
            .read_lock::<Array>()
            .ok_or_else(|| script_msg("option `stop_strings` must be an array of strings"))?;
        base.stop_strings = list.iter().map(|v| v.to_string()).collect();
    }
    if o.get("seed").is_some() || fresh {
        base.seed = seed_or_next(ctx, o.int("seed")?)?;
    }
    if let Some(b) = o.int("batch")? {
        base.batch = Some(positive("batch", b)?);
    }
    if let Some(b) = o.int("max_batch_tokens")? {
        base.max_batch_tokens = positive("max_batch_tokens", b)?;
    }
    base.validate().script()?;
    Ok(base)
}

fn sample_map(s: &medbridge_runtime::sample::Sample) -> Dynamic {
    let mut m = Map::new();
    m.insert("text".into(), s.text.clone().into());
    m.insert(
        "token_ids".into(),
        s.token_ids.iter().map(|&t| Dynamic::from_int(i64::from(t))).collect::<Array>().into(),
    );
    m.insert(
        "logprobs".into(),
        s.logprobs.iter().map(|&l| Dynamic::from_float(f64::from(l))).collect::<Array>().into(),
    );
    m.insert("finish_reason".into(), s.finish_reason.as_str().into());
    Dynamic::from_map(m)
}

#[export_module]
pub mod sample_api {
    use super::*;

    /// Reusable sampling options (temperature 0 = greedy).
    pub type Sampler = SamplerOptions;

    /// Sampling options to reuse across `sample`, `evaluate` and `grpo`:
    /// `sampler(#{temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, n: 16, max_new_tokens: 32,
    /// stop_strings: ["</answer>"], seed: 0, batch: 8, max_batch_tokens: 8192})`.
    #[rhai_fn(return_raw)]
    pub fn sampler(ctx: NativeCallContext, options: Map) -> Result<Sampler, Box<EvalAltResult>> {
        let o = Options::new(&options, "sampler", &SAMPLER_KEYS)?;
        sampler_options(&ctx, &o, SamplerOptions::default(), true)
    }

    /// `Sampler(n 16, temperature 1, top_p 1, max_new_tokens 32, seed 0)`.
    #[rhai_fn(global, name = "to_string", name = "to_debug")]
    pub fn sampler_string(s: &mut Sampler) -> String {
        format!(
            "Sampler(n {}, temperature {}, top_p {}, top_k {}, max_new_tokens {}, seed {})",
            s.n, s.logits.temperature, s.logits.top_p, s.logits.top_k, s.max_new_tokens, s.seed
        )
    }

    /// Draw `n` completions for each request `#{id, image, prompt}`: an array (per request) of
    /// arrays of `#{text, token_ids, logprobs, finish_reason}`. Reproducible from (seed, id, index).
    #[rhai_fn(name = "sample", return_raw)]
    pub fn sample_requests(
        ctx: NativeCallContext,
        model: Vlm,
        requests: Array,
        sampler: Sampler,
    ) -> Result<Array, Box<EvalAltResult>> {
        let s = session(&ctx)?;
        let parsed = requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let map = r
                    .read_lock::<Map>()
                    .ok_or_else(|| script_msg(format!("sample: request {i} is not a map")))?;
                let o = Options::new(&map, "sample request", &["id", "image", "prompt"])?;
                Ok(SampleRequest {
                    question_id: o.string("id")?.unwrap_or_else(|| i.to_string()),
                    image: image_arg(&ctx, o.get("image"), "sample")?,
                    prompt: o
                        .string("prompt")?
                        .ok_or_else(|| script_msg(format!("sample: request {i} has no `prompt`")))?,
                })
            })
            .collect::<ScriptResult<Vec<_>>>()?;
        let out = sample(&model, &parsed, &sampler, Some(&s.cancel), s.progress).script()?;
        Ok(out.iter().map(|samples| Dynamic::from_array(samples.iter().map(sample_map).collect())).collect())
    }

    /// Tag each question's image with the imaging modality the model picks in a constrained
    /// multiple-choice question (the paper's PMC-VQA tagging): `label_modality(m, task, #{labels:
    /// ["radiology", "microscopy", "visible_light"]})` → the task with `modality` set.
    #[rhai_fn(name = "label_modality", return_raw)]
    pub fn label_modality_task(
        ctx: NativeCallContext,
        model: Vlm,
        task: McqTask,
        options: Map,
    ) -> Result<McqTask, Box<EvalAltResult>> {
        use medbridge_runtime::data::Modality;
        let o = Options::new(&options, "label_modality", &["labels"])?;
        let labels: Vec<Modality> = match o.get("labels") {
            None => medbridge_runtime::eval::DEFAULT_LABELS.to_vec(),
            Some(v) => v
                .read_lock::<Array>()
                .ok_or_else(|| script_msg("label_modality: `labels` must be an array of modality names"))?
                .iter()
                .map(|l| Modality::parse(&l.to_string()).script())
                .collect::<ScriptResult<_>>()?,
        };
        let s = session(&ctx)?;
        medbridge_runtime::eval::label_modality(&model, &task, &labels, Some(&s.cancel)).script()
    }

    /// Measure support on a multiple-choice task: greedy Acc@1 plus `n` sampled answers per
    /// question for Pass@k, with bootstrap CIs:
    /// `evaluate(m, task, #{n: 16, temperature: 1.0, top_p: 1.0, max_new_tokens: 16, batch: 8,
    /// seed: 0, limit: 200, sampler: s})`. `k` is accepted for symmetry with reports.
    #[rhai_fn(name = "evaluate", return_raw)]
    pub fn evaluate_task(
        ctx: NativeCallContext,
        model: Vlm,
        task: McqTask,
        options: Map,
    ) -> Result<crate::metrics::Report, Box<EvalAltResult>> {
        let mut keys = SAMPLER_KEYS.to_vec();
        keys.extend(["k", "limit", "sampler", "resamples"]);
        let o = Options::new(&options, "evaluate", &keys)?;
        let mut opts = EvalOptions::default();
        let given = o.get("sampler").map(|s| {
            s.clone()
                .try_cast::<SamplerOptions>()
                .ok_or_else(|| script_msg("evaluate: `sampler` must come from sampler(#{...})"))
        });
        let fresh = given.is_none();
        if let Some(s) = given {
            opts.sampler = s?;
        }
        opts.sampler = sampler_options(&ctx, &o, opts.sampler, fresh)?;
        opts.limit = o.int("limit")?.map(|l| l.max(0) as usize);
        if let Some(r) = o.int("resamples")? {
            opts.bootstrap.resamples = r.max(1) as usize;
        }
        opts.bootstrap.seed = opts.sampler.seed;
        if let Some(k) = o.int("k")? {
            if k < 1 || k as usize > opts.sampler.n {
                return Err(script_msg(format!(
                    "evaluate: k = {k} must be between 1 and n = {}",
                    opts.sampler.n
                )));
            }
        }
        let s = session(&ctx)?;
        let run = evaluate(&model, &task, &opts, Some(&s.cancel), s.progress).script()?;
        let report = run.report;
        let acc1 = report.acc1().value;
        s.run.log_metric(&format!("eval/{}/acc1", task.name()), acc1.into(), None).script()?;
        let pass = report.pass_at(report.n()).script()?.value;
        s.run.log_metric(&format!("eval/{}/pass@{}", task.name(), report.n()), pass.into(), None).script()?;
        Ok(report)
    }
}
