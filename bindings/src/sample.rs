//! The `sample` family: sampling answers from a model and measuring support.
//!
//! `sampler(#{...})` builds reusable sampling options; `sample` draws completions; `evaluate`
//! turns a multiple-choice task into a support report (greedy Acc@1 and sampled Pass@k), reading
//! answers with the task's own extractor — the same one GRPO rewards with.

use medbridge_runtime::eval::{evaluate_on, EvalOptions, DEFAULT_EVAL_MAX_NEW_TOKENS, DEFAULT_EVAL_SAMPLES};
use medbridge_runtime::models::Vlm;
use medbridge_runtime::sample::{
    sample, SampleRequest, SamplerOptions, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_SEQS,
};
use medbridge_runtime::task::{McqTask, TaskPreset};
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::context::{seed_or_next, session};
use crate::data::{preset_of, PRESETS};
use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::model::image_arg;
use crate::options::{
    opt, Absent, Bound, Kind, OptionSet, OptionSpec, Opts, COUNT, FRACTION, NON_NEGATIVE, POSITIVE, SEED, STR,
};

/// The sampler keys `sampler`, `evaluate` and periodic evaluation share, declared once; `n` and
/// `max_new_tokens` default per caller (one sample for `sampler`, evaluation's 16 for the rest).
pub const fn sampler_keys(n: i64, max_new_tokens: i64) -> [OptionSpec; 12] {
    [
        opt("temperature", NON_NEGATIVE, Absent::Float(1.0), "softmax temperature; 0 is greedy"),
        opt("top_p", TOP_P, Absent::Float(1.0), "nucleus mass kept"),
        opt("top_k", COUNT, Absent::Int(0), "keep the k most likely tokens; 0 keeps all"),
        opt("min_p", FRACTION, Absent::Float(0.0), "drop tokens below min_p × the top probability"),
        opt("n", POSITIVE, Absent::Int(n), "samples per prompt"),
        opt("max_new_tokens", POSITIVE, Absent::Int(max_new_tokens), "tokens generated per sample at most"),
        opt(
            "stop_token_ids",
            Kind::Ints,
            Absent::Means("the tokenizer's end tokens"),
            "token ids that end a sample",
        ),
        opt("stop_strings", Kind::Strs, Absent::Means("none"), "texts that end a sample (kept in the text)"),
        SEED,
        opt(
            "batch",
            POSITIVE,
            Absent::Means("as many prompts as max_batch_tokens and max_seqs allow"),
            "prompts decoded at once at most",
        ),
        MAX_BATCH_TOKENS,
        MAX_SEQS,
    ]
}

/// The rollout engine's budget, shared by the sampler keys and `grpo` (its rollouts).
pub const MAX_BATCH_TOKENS: OptionSpec = opt(
    "max_batch_tokens",
    POSITIVE,
    Absent::Int(DEFAULT_MAX_BATCH_TOKENS as i64),
    "KV-cache positions the running samples may hold at once (each at its full length, a shared prompt once); sizes the paged cache",
);
pub const MAX_SEQS: OptionSpec = opt(
    "max_seqs",
    POSITIVE,
    Absent::Int(DEFAULT_MAX_SEQS as i64),
    "samples decoded at once at most; a finished one's slot goes to the next waiting sample",
);

/// `top_p`: the nucleus keeps a mass in (0, 1].
pub const TOP_P: Kind = Kind::Float { min: Bound::Excl(0.0), max: Bound::Incl(1.0) };

static SAMPLER_KEYS: [OptionSpec; 12] = sampler_keys(1, 256);

/// The sampler keys where evaluation's defaults apply (`evaluate`, periodic evaluation).
pub static EVAL_SAMPLER_KEYS: [OptionSpec; 12] =
    sampler_keys(DEFAULT_EVAL_SAMPLES as i64, DEFAULT_EVAL_MAX_NEW_TOKENS as i64);

/// `k` and `limit`, shared by `evaluate` and periodic evaluation.
pub static EVAL_KEYS: [OptionSpec; 2] = [
    opt("k", POSITIVE, Absent::Means("n"), "the k of Pass@k, 1 <= k <= n"),
    opt("limit", COUNT, Absent::Means("every question"), "evaluate the first `limit` questions only"),
];

static SAMPLER: OptionSet = OptionSet::new("sampler", &[&SAMPLER_KEYS]);

static EVALUATE: OptionSet = OptionSet::new(
    "evaluate",
    &[
        &EVAL_SAMPLER_KEYS,
        &EVAL_KEYS,
        &[
            opt(
                "sampler",
                Kind::Value("a Sampler"),
                Absent::Means("none"),
                "a sampler(#{...}) to start from; keys given here override it",
            ),
            opt("resamples", POSITIVE, Absent::Int(1000), "bootstrap resamples behind the CIs"),
            opt(
                "preset",
                PRESETS,
                Absent::Means("these defaults, whatever the task's preset"),
                "\"medbridgerl\": the release's sampling (n 16, temperature 0.7, top_p 0.9, top_k 0, \
                 2,048 tokens, seed 123), keys given here override it; recorded in run.json",
            ),
        ],
    ],
);

static SAMPLE_REQUEST: OptionSet = OptionSet::new(
    "sample request",
    &[&[
        opt(
            "id",
            STR,
            Absent::Means("its index"),
            "question id; samples are reproducible from (seed, id, index)",
        ),
        opt("image", Kind::Value("an Image or a file path"), Absent::Means("no image"), "the picture"),
        opt("prompt", STR, Absent::Required, "the user turn"),
    ]],
);

static LABEL_MODALITY: OptionSet = OptionSet::new(
    "label_modality",
    &[&[opt(
        "labels",
        Kind::Strs,
        Absent::Means("radiology, microscopy, visible_light"),
        "the modalities the model picks from",
    )]],
);

/// The sample family's declared options.
pub static OPTIONS: [&OptionSet; 3] = [&SAMPLER, &EVALUATE, &LABEL_MODALITY];

/// Apply the sampler keys present in `o` over `base`. Without a `seed` key, a `fresh` base takes
/// the run's next seed; a sampler built earlier keeps its own.
pub fn sampler_options(
    ctx: &NativeCallContext,
    o: &Opts,
    mut base: SamplerOptions,
    fresh: bool,
) -> ScriptResult<SamplerOptions> {
    if let Some(t) = o.float("temperature")? {
        base.logits.temperature = t as f32;
    }
    if let Some(p) = o.float("top_p")? {
        base.logits.top_p = p as f32;
    }
    if let Some(k) = o.count("top_k")? {
        base.logits.top_k = k;
    }
    if let Some(p) = o.float("min_p")? {
        base.logits.min_p = p as f32;
    }
    if let Some(n) = o.count("n")? {
        base.n = n;
    }
    if let Some(m) = o.count("max_new_tokens")? {
        base.max_new_tokens = m;
    }
    if let Some(ids) = o.ints("stop_token_ids")? {
        let ids = ids.into_iter().map(|id| {
            u32::try_from(id)
                .map_err(|_| script_msg(format!("{}: stop token id {id} is too large", o.what())))
        });
        base.stop_token_ids = Some(ids.collect::<ScriptResult<_>>()?);
    }
    if let Some(list) = o.strings("stop_strings")? {
        base.stop_strings = list;
    }
    let seed = o.int("seed")?;
    if seed.is_some() || fresh {
        base.seed = seed_or_next(ctx, seed)?;
    }
    if let Some(b) = o.count("batch")? {
        base.batch = Some(b);
    }
    if let Some(b) = o.count("max_batch_tokens")? {
        base.max_batch_tokens = b;
    }
    if let Some(m) = o.count("max_seqs")? {
        base.max_seqs = m;
    }
    base.memory = session(ctx)?.memory;
    base.validate().script()?;
    Ok(base)
}

/// What `evaluate` resolved, for `run.json`.
fn eval_settings(preset: TaskPreset, opts: &EvalOptions) -> serde_json::Value {
    let s = &opts.sampler;
    serde_json::json!({
        "preset": preset.as_str(),
        "n": s.n,
        "temperature": s.logits.temperature,
        "top_p": s.logits.top_p,
        "top_k": s.logits.top_k,
        "min_p": s.logits.min_p,
        "max_new_tokens": s.max_new_tokens,
        "stop_strings": s.stop_strings,
        "seed": s.seed,
        "limit": opts.limit,
        "resamples": opts.bootstrap.resamples,
    })
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
    /// `sampler(#{temperature: 1.0, n: 16, max_new_tokens: 32, stop_strings: ["</answer>"]})`.
    #[rhai_fn(return_raw)]
    pub fn sampler(ctx: NativeCallContext, options: Map) -> Result<Sampler, Box<EvalAltResult>> {
        let o = SAMPLER.parse(&options)?;
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
                let o = SAMPLE_REQUEST.parse_as(&map, format!("sample: request {i}"))?;
                Ok(SampleRequest {
                    question_id: o.string("id")?.unwrap_or_else(|| i.to_string()),
                    image: image_arg(&ctx, o.value("image"), "sample")?,
                    prompt: o.string("prompt")?.ok_or_else(|| o.missing("prompt"))?,
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
        let o = LABEL_MODALITY.parse(&options)?;
        let labels: Vec<Modality> = match o.strings("labels")? {
            None => medbridge_runtime::eval::DEFAULT_LABELS.to_vec(),
            Some(names) => names.iter().map(|l| Modality::parse(l).script()).collect::<ScriptResult<_>>()?,
        };
        let s = session(&ctx)?;
        medbridge_runtime::eval::label_modality(&model, &task, &labels, Some(&s.cancel)).script()
    }

    /// Measure support on a multiple-choice task: greedy Acc@1 plus `n` sampled answers per
    /// question for Pass@k, with bootstrap CIs:
    /// `evaluate(m, task, #{n: 16, temperature: 1.0, top_p: 1.0, max_new_tokens: 16, batch: 8,
    /// seed: 0, limit: 200, sampler: s, preset: "medbridgerl"})`. `k` is accepted for symmetry
    /// with reports. `preset` starts from the release's sampling settings (keys given override
    /// them), records what was resolved in `run.json` and logs `format_failure_rate` and
    /// `avg_unique_answers`; without it the defaults here apply even on a medbridgerl task, since
    /// presets are opt-in per call.
    #[rhai_fn(name = "evaluate", return_raw)]
    pub fn evaluate_task(
        ctx: NativeCallContext,
        model: Vlm,
        task: McqTask,
        options: Map,
    ) -> Result<crate::metrics::Report, Box<EvalAltResult>> {
        let o = EVALUATE.parse(&options)?;
        let preset = preset_of(&o)?;
        let mut opts = EvalOptions::preset(preset.unwrap_or_default());
        let given = o.typed::<SamplerOptions>("sampler")?;
        // A preset fixes its seed as released; a `seed` key still overrides it.
        let fresh = given.is_none() && preset.is_none();
        if let Some(s) = given {
            opts.sampler = s;
        }
        opts.sampler = sampler_options(&ctx, &o, opts.sampler, fresh)?;
        opts.limit = o.count("limit")?;
        if let Some(r) = o.count("resamples")? {
            opts.bootstrap.resamples = r;
        }
        opts.bootstrap.seed = opts.sampler.seed;
        if let Some(k) = o.count("k")? {
            if k > opts.sampler.n {
                return Err(script_msg(format!(
                    "evaluate: k = {k} must be between 1 and n = {}",
                    opts.sampler.n
                )));
            }
        }
        let s = session(&ctx)?;
        if let Some(p) = preset {
            s.run.record_settings("evaluate", eval_settings(p, &opts)).script()?;
        }
        let run = evaluate_on(&s.world, &model, &task, &opts, Some(&s.cancel), s.progress).script()?;
        let report = run.report;
        if preset.is_some() {
            for (name, value) in [
                ("format_failure_rate", report.format_failure_rate()),
                ("avg_unique_answers", report.avg_unique_answers()),
            ] {
                s.run.log_metric(&format!("eval/{}/{name}", task.name()), value.into(), None).script()?;
            }
        }
        let acc1 = report.acc1().value;
        s.run.log_metric(&format!("eval/{}/acc1", task.name()), acc1.into(), None).script()?;
        let pass = report.pass_at(report.n()).script()?.value;
        s.run.log_metric(&format!("eval/{}/pass@{}", task.name(), report.n()), pass.into(), None).script()?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(keys: &[OptionSpec], key: &str) -> f64 {
        match keys.iter().find(|s| s.key == key).unwrap().absent {
            Absent::Int(n) => n as f64,
            Absent::Float(x) => x,
            other => panic!("{key}: {other:?}"),
        }
    }

    /// What `medbridge doc` says an absent sampler key means is what sampling does without it.
    #[test]
    fn declared_defaults_are_the_runtime_defaults() {
        for (keys, base) in
            [(&SAMPLER_KEYS, SamplerOptions::default()), (&EVAL_SAMPLER_KEYS, EvalOptions::default().sampler)]
        {
            assert_eq!(number(keys, "temperature"), f64::from(base.logits.temperature));
            assert_eq!(number(keys, "top_p"), f64::from(base.logits.top_p));
            assert_eq!(number(keys, "top_k"), base.logits.top_k as f64);
            assert_eq!(number(keys, "min_p"), f64::from(base.logits.min_p));
            assert_eq!(number(keys, "n"), base.n as f64);
            assert_eq!(number(keys, "max_new_tokens"), base.max_new_tokens as f64);
            assert_eq!(number(keys, "max_batch_tokens"), base.max_batch_tokens as f64);
            assert_eq!(number(keys, "max_seqs"), base.max_seqs as f64);
        }
        let resamples = EVALUATE.specs().find(|s| s.key == "resamples").unwrap().absent;
        assert!(
            matches!(resamples, Absent::Int(n) if n as usize == EvalOptions::default().bootstrap.resamples)
        );
    }
}
