//! The `train` family: `sft` bridges support, `grpo` sharpens it. Both return a new model sharing
//! the frozen base and leave their input unchanged, so a script can compare base, SFT and RL side
//! by side. Both can evaluate support (Acc@1, Pass@k) every `eval_every` steps, and GRPO takes
//! script closures `|completion, example| -> number` as rewards; they run on the calling thread,
//! inside the `grpo` call.

use medbridge_runtime::models::Vlm;
use medbridge_runtime::task::McqTask;
use medbridge_runtime::train::{
    grpo_with_rewards, sft as run_sft, EvalPoint, GrpoOptions, LossAggregation, PeriodicEval, RewardKind,
    Rewards, ScaleRewards, Schedule, SftOptions, TrainContext,
};
use medbridge_runtime::Error;
use rhai::plugin::*;
use rhai::{Array, FnPtr, Map};

use crate::context::{seed_or_next, session};
use crate::convert::{as_f64, Options};
use crate::data::question_fields;
use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::model::lora_config;
use crate::sample::sampler_options;
use crate::script_types::type_of;

/// `eval_every` and `eval_options: #{task, n, k, temperature, top_p, max_new_tokens, limit,
/// seed}` of `sft` and `grpo`; `None` when neither is given. The name `eval` is a Rhai
/// keyword, so it is accepted quoted (`#{"eval": #{...}}`) as an alias.
fn periodic_eval(ctx: &NativeCallContext, o: &Options, what: &str) -> ScriptResult<Option<PeriodicEval>> {
    let every = o.count("eval_every")?;
    if o.get("eval_options").is_some() && o.get("eval").is_some() {
        return Err(script_msg(format!("{what}: give `eval_options` or its alias \"eval\", not both")));
    }
    let map = match o.get("eval_options").or_else(|| o.get("eval")) {
        None => Map::new(),
        Some(m) => m
            .read_lock::<Map>()
            .ok_or_else(|| script_msg(format!("{what}: `eval_options` must be a map #{{n, k, limit, ...}}")))?
            .clone(),
    };
    let Some(every) = every else {
        if map.is_empty() {
            return Ok(None);
        }
        return Err(script_msg(format!(
            "{what}: `eval_options` needs `eval_every` (evaluate every how many steps)"
        )));
    };
    let keys = ["task", "n", "k", "temperature", "top_p", "max_new_tokens", "limit", "seed"];
    let eval_what = format!("{what} eval");
    let e = Options::new(&map, &eval_what, &keys)?;
    let mut eval = PeriodicEval::every(every as u64);
    eval.options.sampler = sampler_options(ctx, &e, eval.options.sampler, true)?;
    eval.options.bootstrap.seed = eval.options.sampler.seed;
    eval.options.limit = e.count("limit")?;
    eval.k = e.count("k")?.unwrap_or(eval.options.sampler.n);
    if let Some(task) = e.get("task") {
        let task = task.clone().try_cast::<McqTask>().ok_or_else(|| {
            script_msg(format!("{eval_what}: `task` must be a Task, got {}", type_of(task)))
        })?;
        eval.task = Some(task);
    }
    eval.check(what).script()?;
    Ok(Some(eval))
}

/// The support curve as `[#{step, acc1, pass_at_k, gap}]`.
fn eval_curve(points: &[EvalPoint]) -> Dynamic {
    let curve: Array = points
        .iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("step".into(), Dynamic::from_int(p.step as i64));
            m.insert("acc1".into(), Dynamic::from_float(p.acc1));
            m.insert("pass_at_k".into(), Dynamic::from_float(p.pass_at_k));
            m.insert("gap".into(), Dynamic::from_float(p.gap));
            Dynamic::from_map(m)
        })
        .collect();
    curve.into()
}

/// Options `sft` and `grpo` share: adapters or full fine-tuning, the schedule, checkpoints and
/// resume, periodic evaluation, the seed and the non-finite-step guard.
const TRAINING_OPTIONS: [&str; 11] = [
    "lora",
    "full",
    "schedule",
    "warmup",
    "save_every",
    "resume",
    "eval_every",
    "eval_options",
    "eval",
    "seed",
    "max_bad_steps",
];

/// What a reward closure sees as `example`: the question's shared fields plus its index, answer
/// text, rationale and class name.
fn example_map(task: &McqTask, i: usize) -> medbridge_runtime::Result<Map> {
    let mut m = question_fields(task, i)?;
    let item = task.item(i)?;
    let text = |v: &Option<String>| v.clone().map_or(Dynamic::UNIT, Dynamic::from);
    m.insert("index".into(), Dynamic::from_int(i as i64));
    m.insert("answer_text".into(), text(&item.answer_text));
    m.insert("rationale".into(), text(&item.rationale));
    m.insert("class_name".into(), text(&item.class_name));
    Ok(m)
}

/// `rewards: #{accuracy: 1.0, mine: |completion, example| ..., theirs: #{score: f, weight: 0.5}}`:
/// built-in names with weights, and closures (weight 1 unless given) that call back into the
/// script. (`fn` is a Rhai keyword, so the closure's key is `score`.)
fn parse_rewards<'a>(
    ctx: &'a NativeCallContext,
    task: &'a McqTask,
    map: &Map,
) -> ScriptResult<(Vec<(String, f64)>, Rewards<'a>)> {
    let (mut builtin, mut custom) = (Vec::new(), Rewards::default());
    for (name, value) in map.iter() {
        if let Some(w) = as_f64(value) {
            builtin.push((name.to_string(), w));
            continue;
        }
        let what = format!("grpo reward `{name}`");
        let (f, weight) = if let Some(f) = value.clone().try_cast::<FnPtr>() {
            (f, 1.0)
        } else {
            let spec = value.read_lock::<Map>().ok_or_else(|| {
                script_msg(format!(
                    "{what}: give a weight, a closure |completion, example| or #{{score: closure, weight: 1.0}}, got {}",
                    type_of(value)
                ))
            })?;
            let o = Options::new(&spec, &what, &["score", "weight"])?;
            let f = o.get("score").and_then(|f| f.clone().try_cast::<FnPtr>()).ok_or_else(|| {
                script_msg(format!("{what}: `score` must be a closure |completion, example|"))
            })?;
            (f, o.float("weight")?.unwrap_or(1.0))
        };
        let call = move |completion: &str, i: usize| -> medbridge_runtime::Result<f64> {
            let example = example_map(task, i)?;
            let value: Dynamic = f
                .call_within_context(ctx, (completion.to_string(), example))
                .map_err(|e| Error::msg(format!("the closure failed: {e}")))?;
            as_f64(&value).ok_or_else(|| {
                Error::msg(format!("the closure must return a number, got {} ({value})", type_of(&value)))
            })
        };
        custom.push(name, weight, RewardKind::Custom(Box::new(call))).script()?;
    }
    Ok((builtin, custom))
}

#[export_module]
pub mod train_api {
    use super::*;

    /// Completion-only SFT on a task's targets (e.g. `<answer>C</answer>`), LoRA by default:
    /// `sft(m, task, #{epochs: 1, steps: 100, lr: 2e-4, batch: 8, grad_accum: 1,
    /// lora: #{rank: 8, alpha: 16}, full: false, schedule: "linear" | "cosine" | "constant",
    /// warmup: 10, weight_decay: 0.0, max_grad_norm: 1.0, save_every: 50, resume: "checkpoints",
    /// eval_every: 20, eval_options: #{task, n: 16, k: 16, temperature: 1.0, max_new_tokens: 16,
    /// limit: 50, seed: 0}, seed: 0})` → `#{model, losses, token_accuracy, grad_norms,
    /// skipped_steps, support_curve: [#{step, acc1, pass_at_k, gap}], checkpoint,
    /// seconds_per_step}`. Evaluation (on the training task unless `task` is given) runs after
    /// every `eval_every` steps and the last one, and logs `eval/acc1`, `eval/pass@k` and
    /// `eval/gap` to metrics.jsonl. `eval` is a Rhai keyword: write it quoted, `"eval": #{...}`, or
    /// as `eval_options`.
    #[rhai_fn(return_raw)]
    pub fn sft(
        ctx: NativeCallContext,
        model: Vlm,
        task: McqTask,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let own = ["epochs", "steps", "lr", "batch", "grad_accum", "weight_decay", "max_grad_norm"];
        let known = [&own[..], &TRAINING_OPTIONS[..]].concat();
        let o = Options::new(&options, "sft", &known)?;
        let s = session(&ctx)?;
        let count = |key: &str| o.count(key);
        let mut opts = SftOptions::default();
        if let Some(e) = count("epochs")? {
            opts.epochs = e;
        }
        opts.steps = count("steps")?.map(|v| v as u64);
        if let Some(lr) = o.float("lr")? {
            opts.lr = lr;
        }
        if let Some(b) = count("batch")? {
            opts.batch = b;
        }
        if let Some(g) = count("grad_accum")? {
            opts.grad_accum = g;
        }
        if let Some(map) = o.get("lora") {
            let map = map
                .read_lock::<Map>()
                .ok_or_else(|| script_msg("sft: `lora` must be a map #{rank, alpha, ...}"))?;
            opts.lora = Some(lora_config(&ctx, &map, "sft lora")?);
        }
        opts.full = o.bool("full")?.unwrap_or(false);
        if let Some(name) = o.string("schedule")? {
            opts.schedule = Schedule::parse(&name).script()?;
        }
        opts.warmup = count("warmup")?.unwrap_or(0) as u64;
        opts.weight_decay = o.float("weight_decay")?.unwrap_or(opts.weight_decay);
        if let Some(n) = o.float("max_grad_norm")? {
            opts.max_grad_norm = (n > 0.0).then_some(n);
        }
        opts.save_every = count("save_every")?.map(|v| v as u64);
        if let Some(r) = o.string("resume")? {
            opts.resume = Some(s.sandbox.resolve_read(&r).script()?);
        }
        opts.seed = seed_or_next(&ctx, o.int("seed")?)?;
        if let Some(n) = count("max_bad_steps")? {
            opts.max_bad_steps = n;
        }
        opts.eval = periodic_eval(&ctx, &o, "sft")?;
        let train_ctx =
            TrainContext { run: Some(&s.run), cancel: s.cancel.clone(), progress: s.progress, out_dir: None };
        let (trained, summary) = run_sft(&model, &task, &opts, &train_ctx).script()?;
        let floats = |v: &[f64]| -> Array { v.iter().map(|&x| Dynamic::from_float(x)).collect() };
        let mut out = Map::new();
        out.insert("model".into(), Dynamic::from(trained));
        out.insert("losses".into(), floats(&summary.losses).into());
        out.insert("token_accuracy".into(), floats(&summary.token_accuracy).into());
        out.insert("grad_norms".into(), floats(&summary.grad_norms).into());
        out.insert(
            "skipped_steps".into(),
            summary.skipped_steps.iter().map(|&x| Dynamic::from_int(x as i64)).collect::<Array>().into(),
        );
        out.insert(
            "checkpoint".into(),
            summary.last_checkpoint.map_or(Dynamic::UNIT, |p| p.display().to_string().into()),
        );
        out.insert("support_curve".into(), eval_curve(&summary.eval));
        out.insert("seconds_per_step".into(), Dynamic::from_float(summary.seconds_per_step));
        Ok(out)
    }

    /// GRPO with verifiable rewards: `grpo(m, task, #{steps: 50, batch: 4, group: 8, lr: 1e-6,
    /// beta: 0.0, epsilon_low: 0.2, epsilon_high: 0.2, mu: 1, loss: "token_mean" | "seq_mean" |
    /// "dr_grpo", scale_rewards: "group" | "batch" | "none", filter_zero_variance: false,
    /// dynamic_sampling: false, max_draws: 12, mask_truncated: false,
    /// rewards: #{accuracy: 1.0, format: 0.1, mine: #{score: |completion, example| ..., weight: 0.5}},
    /// max_new_tokens: 32, temperature: 1.0, top_p: 1.0, lora: #{rank: 8}, full: false,
    /// save_every: 25, resume: "checkpoints", eval_every: 10, eval_options: #{n: 8, limit: 50}, seed: 0})`
    /// → `#{model, rewards, zero_variance, prompts_drawn, batch_filled, losses, kl,
    /// support_curve: [#{step, acc1, pass_at_k, gap}], checkpoint, seconds_per_step}`.
    /// A reward closure gets the completion text and the item as a map (`index`, `id`,
    /// `question`, `options`, `answer` index, `letter`, `task`, ...) and returns a number.
    /// `dynamic_sampling` drops groups whose rewards are all equal and draws more prompts until
    /// `batch` groups carry signal or `max_draws` (default 3 × batch) prompts were drawn.
    #[rhai_fn(return_raw)]
    pub fn grpo(
        ctx: NativeCallContext,
        model: Vlm,
        task: McqTask,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let own = [
            "steps",
            "batch",
            "group",
            "lr",
            "beta",
            "epsilon_low",
            "epsilon_high",
            "mu",
            "loss",
            "scale_rewards",
            "filter_zero_variance",
            "dynamic_sampling",
            "max_draws",
            "mask_truncated",
            "rewards",
            "max_new_tokens",
            "temperature",
            "top_p",
        ];
        let known = [&own[..], &TRAINING_OPTIONS[..]].concat();
        let o = Options::new(&options, "grpo", &known)?;
        let s = session(&ctx)?;
        let count = |key: &str| o.count(key);
        let mut opts = GrpoOptions::default();
        if let Some(v) = count("steps")? {
            opts.steps = v as u64;
        }
        if let Some(v) = count("batch")? {
            opts.batch = v;
        }
        if let Some(v) = count("group")? {
            opts.step.group = v;
        }
        if let Some(v) = count("mu")? {
            opts.step.mu = v;
        }
        opts.lr = o.float("lr")?.unwrap_or(opts.lr);
        opts.step.loss.beta = o.float("beta")?.unwrap_or(opts.step.loss.beta);
        opts.step.loss.epsilon_low = o.float("epsilon_low")?.unwrap_or(opts.step.loss.epsilon_low);
        opts.step.loss.epsilon_high = o.float("epsilon_high")?.unwrap_or(opts.step.loss.epsilon_high);
        if let Some(l) = o.string("loss")? {
            opts.step.loss.aggregation = LossAggregation::parse(&l).script()?;
        }
        if let Some(sr) = o.string("scale_rewards")? {
            opts.step.scale_rewards = ScaleRewards::parse(&sr).script()?;
        }
        opts.step.filter_zero_variance = o.bool("filter_zero_variance")?.unwrap_or(false);
        opts.step.mask_truncated = o.bool("mask_truncated")?.unwrap_or(false);
        opts.dynamic_sampling = o.bool("dynamic_sampling")?.unwrap_or(false);
        opts.max_draws = count("max_draws")?;
        let mut custom = Rewards::default();
        if let Some(r) = o.get("rewards") {
            let map = r.read_lock::<Map>().ok_or_else(|| {
                script_msg("grpo: `rewards` must be a map of name → weight, closure or #{score, weight}")
            })?;
            (opts.rewards, custom) = parse_rewards(&ctx, &task, &map)?;
        }
        if let Some(v) = count("max_new_tokens")? {
            opts.max_new_tokens = v;
            opts.step.loss.max_completion_length = v;
        }
        opts.step.temperature = o.float("temperature")?.unwrap_or(opts.step.temperature);
        opts.top_p = o.float("top_p")?.unwrap_or(opts.top_p);
        if let Some(map) = o.get("lora") {
            let map = map
                .read_lock::<Map>()
                .ok_or_else(|| script_msg("grpo: `lora` must be a map #{rank, alpha, ...}"))?;
            opts.lora = Some(lora_config(&ctx, &map, "grpo lora")?);
        }
        opts.full = o.bool("full")?.unwrap_or(false);
        if let Some(name) = o.string("schedule")? {
            opts.schedule = Schedule::parse(&name).script()?;
        }
        opts.warmup = count("warmup")?.unwrap_or(0) as u64;
        opts.save_every = count("save_every")?.map(|v| v as u64);
        if let Some(r) = o.string("resume")? {
            opts.resume = Some(s.sandbox.resolve_read(&r).script()?);
        }
        opts.seed = seed_or_next(&ctx, o.int("seed")?)?;
        if let Some(n) = count("max_bad_steps")? {
            opts.max_bad_steps = n;
        }
        opts.eval = periodic_eval(&ctx, &o, "grpo")?;
        let train_ctx =
            TrainContext { run: Some(&s.run), cancel: s.cancel.clone(), progress: s.progress, out_dir: None };
        let (trained, summary) = grpo_with_rewards(&model, &task, &opts, custom, &train_ctx).script()?;
        let floats = |v: &[f64]| -> Array { v.iter().map(|&x| Dynamic::from_float(x)).collect() };
        let mut out = Map::new();
        out.insert("model".into(), Dynamic::from(trained));
        out.insert("rewards".into(), floats(&summary.rewards).into());
        out.insert("zero_variance".into(), floats(&summary.zero_variance).into());
        out.insert(
            "prompts_drawn".into(),
            summary.prompts_drawn.iter().map(|&n| Dynamic::from_int(n as i64)).collect::<Array>().into(),
        );
        out.insert(
            "batch_filled".into(),
            summary.batch_filled.iter().map(|&b| Dynamic::from_bool(b)).collect::<Array>().into(),
        );
        out.insert("losses".into(), floats(&summary.losses).into());
        out.insert("kl".into(), floats(&summary.kl).into());
        out.insert("support_curve".into(), eval_curve(&summary.eval));
        out.insert(
            "checkpoint".into(),
            summary.last_checkpoint.map_or(Dynamic::UNIT, |p| p.display().to_string().into()),
        );
        out.insert("seconds_per_step".into(), Dynamic::from_float(summary.seconds_per_step));
        Ok(out)
    }
}
