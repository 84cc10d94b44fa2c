//! The `train` family: `sft` bridges support, `grpo` sharpens it. Both return a new model sharing
//! the frozen base and leave their input unchanged, so a script can compare base, SFT and RL side
//! by side. Both can evaluate support (Acc@1, Pass@k) every `eval_every` steps, and GRPO takes
//! script closures `|completion, example| -> number` as rewards; they run on the calling thread,
//! inside the `grpo` call.

use medbridge_runtime::models::qwen2_5_vl::LoraConfig;
use medbridge_runtime::models::Vlm;
use medbridge_runtime::run::Session;
use medbridge_runtime::task::McqTask;
use medbridge_runtime::train::{
    grpo_with_rewards, sft as run_sft, CareOptions, EvalPoint, GrpoOptions, LossAggregation, PeriodicEval,
    RewardKind, Rewards, ScaleRewards, Schedule, SftOptions, TrainContext,
};
use medbridge_runtime::Error;
use rhai::plugin::*;
use rhai::{Array, FnPtr, Map};

use crate::context::{seed_or_next, session};
use crate::convert::{as_f64, from_json};
use crate::data::{preset_of, question_fields, PRESETS};
use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::model::{lora_config, LORA};
use crate::options::{
    opt, Absent, Kind, OptionSet, OptionSpec, Opts, COUNT, FLOAT, FRACTION, NON_NEGATIVE, POSITIVE,
    POSITIVE_FLOAT, SEED, STR,
};
use crate::sample::{sampler_options, EVAL_KEYS, EVAL_SAMPLER_KEYS, MAX_BATCH_TOKENS, MAX_SEQS, TOP_P};
use crate::script_types::type_of;
use crate::train_pieces::{bonus_over, BONUS_KEYS, CARE_BONUS, GROUP_ADVANTAGES, SCORE_REWARD};

/// The sub-options of `eval_options`: evaluation's sampler keys and defaults, plus the task.
static PERIODIC_EVAL: OptionSet = OptionSet::new(
    "eval_options",
    &[
        &[opt("task", Kind::Value("a Task"), Absent::Means("the training task"), "the task to evaluate on")],
        &EVAL_KEYS,
        &EVAL_SAMPLER_KEYS,
    ],
);

/// Where a training call of the run reports and how it stops: the run's directory, cancel flag,
/// progress mode and memory budget.
fn train_context(s: &Session) -> TrainContext<'_> {
    TrainContext {
        run: Some(&s.run),
        cancel: s.cancel.clone(),
        progress: s.progress,
        out_dir: None,
        memory: s.memory,
        world: s.world.clone(),
    }
}

/// `eval_every` and `eval_options` of `sft` and `grpo`; `None` when neither is given.
fn periodic_eval(ctx: &NativeCallContext, o: &Opts, what: &str) -> ScriptResult<Option<PeriodicEval>> {
    let every = o.count("eval_every")?;
    let map = o.map("eval_options")?.unwrap_or_default();
    let Some(every) = every else {
        if map.is_empty() {
            return Ok(None);
        }
        return Err(script_msg(format!(
            "{what}: `eval_options` needs `eval_every` (evaluate every how many steps)"
        )));
    };
    let e = PERIODIC_EVAL.parse_as(&map, format!("{what} eval_options"))?;
    let mut eval = PeriodicEval::every(every as u64);
    eval.options.sampler = sampler_options(ctx, &e, eval.options.sampler, true)?;
    eval.options.bootstrap.seed = eval.options.sampler.seed;
    eval.options.limit = e.count("limit")?;
    eval.k = e.count("k")?.unwrap_or(eval.options.sampler.n);
    eval.task = e.typed::<McqTask>("task")?;
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

/// Options `sft` and `grpo` share, declared once: adapters or full fine-tuning, the schedule
/// (whose default differs), checkpoints and resume, periodic evaluation, the seed and the
/// non-finite-step guard.
const fn training_keys(schedule: &'static str) -> [OptionSpec; 11] {
    [
        opt("lora", Kind::Map(Some(&LORA)), Absent::Means("LoRA with its defaults"), "the adapters to train"),
        opt("full", Kind::Bool, Absent::Bool(false), "train every language-model weight instead of adapters"),
        opt(
            "train_vision",
            Kind::Bool,
            Absent::Bool(false),
            "with `full`, train the vision tower's weights too (adapters on it: lora's `vision`)",
        ),
        opt("schedule", SCHEDULES, Absent::Str(schedule), "learning-rate schedule after warmup"),
        opt("warmup", COUNT, Absent::Int(0), "linear warmup steps"),
        opt(
            "save_every",
            COUNT,
            Absent::Means("no checkpoints"),
            "write a resumable checkpoint every this many steps",
        ),
        opt("resume", STR, Absent::Means("start fresh"), "a checkpoint directory to continue from"),
        opt(
            "eval_every",
            POSITIVE,
            Absent::Means("no periodic evaluation"),
            "evaluate support every this many steps and after the last",
        ),
        opt(
            "eval_options",
            Kind::Map(Some(&PERIODIC_EVAL)),
            Absent::Means("evaluation's defaults"),
            "how to evaluate (the alias `eval` is a Rhai keyword, so write it quoted)",
        )
        .aliases(&["eval"]),
        SEED,
        opt("max_bad_steps", COUNT, Absent::Int(5), "non-finite steps skipped before training stops"),
    ]
}

const SCHEDULES: Kind = Kind::Str(&["linear", "cosine", "constant"]);

static SFT: OptionSet = OptionSet::new(
    "sft",
    &[
        &[
            opt("epochs", COUNT, Absent::Int(1), "passes over the task (unless `steps` is given)"),
            opt("steps", COUNT, Absent::Means("epochs × batches"), "optimizer steps"),
            opt("lr", POSITIVE_FLOAT, Absent::Float(2e-5), "peak learning rate"),
            opt("batch", POSITIVE, Absent::Int(8), "questions per optimizer step"),
            opt("grad_accum", POSITIVE, Absent::Int(1), "micro-batches per optimizer step"),
            opt("weight_decay", NON_NEGATIVE, Absent::Float(0.0), "AdamW weight decay"),
            opt(
                "max_grad_norm",
                FLOAT,
                Absent::Float(1.0),
                "gradient clipping norm; <= 0 turns clipping off",
            ),
        ],
        &training_keys("linear"),
    ],
);

static GRPO: OptionSet = OptionSet::new(
    "grpo",
    &[
        &[
            opt("steps", COUNT, Absent::Int(100), "optimizer steps"),
            opt("batch", POSITIVE, Absent::Int(4), "prompts (groups) per step"),
            opt(
                "group",
                POSITIVE,
                Absent::Int(8),
                "samples per prompt (canonical; `n` as in `evaluate` is an alias)",
            )
            .aliases(&["n"]),
            opt("lr", POSITIVE_FLOAT, Absent::Float(1e-6), "learning rate"),
            opt("beta", NON_NEGATIVE, Absent::Float(0.0), "KL penalty weight; 0 skips the reference model"),
            opt("epsilon_low", NON_NEGATIVE, Absent::Float(0.2), "lower clip range of the ratio"),
            opt("epsilon_high", NON_NEGATIVE, Absent::Float(0.2), "upper clip range of the ratio"),
            opt("mu", POSITIVE, Absent::Int(1), "optimizer passes per generated batch"),
            opt(
                "micro_batch",
                POSITIVE,
                Absent::Means("all of a process's completions in one backward"),
                "completions scored per backward pass; gradients accumulate to one step, the \
                 update is the same, only memory changes",
            ),
            opt(
                "loss",
                Kind::Str(&["token_mean", "seq_mean", "dr_grpo", "dapo", "bnpo", "grpo"]),
                Absent::Str("token_mean"),
                "loss aggregation (dapo and bnpo are token_mean, grpo is seq_mean)",
            ),
            opt(
                "scale_rewards",
                Kind::Str(&["group", "batch", "none"]),
                Absent::Str("group"),
                "advantage scaling",
            ),
            opt(
                "filter_zero_variance",
                Kind::Bool,
                Absent::Bool(false),
                "skip groups whose rewards are all equal",
            ),
            opt(
                "dynamic_sampling",
                Kind::Bool,
                Absent::Bool(false),
                "draw more prompts until `batch` groups carry signal",
            ),
            opt(
                "max_draws",
                POSITIVE,
                Absent::Means("3 × batch"),
                "prompts drawn per step at most with dynamic_sampling",
            ),
            opt(
                "mask_truncated",
                Kind::Bool,
                Absent::Bool(false),
                "no loss on completions cut at max_new_tokens",
            ),
            opt(
                "rewards",
                Kind::Map(None),
                Absent::Means("#{accuracy: 1.0}"),
                "name → weight (built-in), closure |completion, example| or #{score: closure, weight}",
            ),
            opt("max_new_tokens", POSITIVE, Absent::Int(32), "tokens per completion at most"),
            opt("temperature", NON_NEGATIVE, Absent::Float(1.0), "sampling temperature"),
            opt("top_p", TOP_P, Absent::Float(1.0), "nucleus mass kept when sampling"),
            MAX_BATCH_TOKENS,
            MAX_SEQS,
            opt(
                "preset",
                PRESETS,
                Absent::Means("the defaults here, whatever the task's preset"),
                "\"medbridgerl\": every setting of the paper's released GRPO-CARE run (one epoch, G 8, \
                 lr 5e-7, CARE on, ...); keys given here override it",
            ),
            opt(
                "care",
                Kind::Map(Some(&CARE)),
                Absent::Means("off, or on as released under the medbridgerl preset"),
                "GRPO-CARE's consistency bonus and EMA reference; false or () turns it off",
            ),
        ],
        &training_keys("constant"),
    ],
);

/// `care` of `grpo`; absent keys keep the released values.
static CARE: OptionSet = OptionSet::new(
    "care",
    &[
        &BONUS_KEYS,
        &[
            opt(
                "ema_decay",
                FRACTION,
                Absent::Float(0.995),
                "reference ← decay · reference + (1 − decay) · policy",
            ),
            opt("ema_every", POSITIVE, Absent::Int(10), "blend the reference every this many steps"),
        ],
    ],
);

/// A `care` map as settings over `base` (the released ones unless the preset says otherwise).
fn care_options(map: &Map, base: CareOptions) -> ScriptResult<CareOptions> {
    let o = CARE.parse_as(map, "grpo care")?;
    let care = CareOptions {
        bonus: bonus_over(&o, base.bonus)?,
        ema_decay: o.float("ema_decay")?.unwrap_or(base.ema_decay),
        ema_every: o.count("ema_every")?.map_or(base.ema_every, |n| n as u64),
    };
    care.check().script()?;
    Ok(care)
}

/// `care` of `grpo`: `false` or `()` off, `true` the released settings, a map those settings
/// with its keys over them; absent, whatever `base` (the preset) says.
fn care_setting(o: &Opts, base: Option<CareOptions>) -> ScriptResult<Option<CareOptions>> {
    let Some(v) = o.either("care") else { return Ok(base) };
    if v.is_unit() {
        return Ok(None);
    }
    if let Ok(on) = v.as_bool() {
        return Ok(on.then(|| base.unwrap_or_default()));
    }
    let map = o.map("care")?.expect("given");
    care_options(&map, base.unwrap_or_default()).map(Some)
}

/// A custom reward given as a map.
static REWARD: OptionSet = OptionSet::new(
    "reward",
    &[&[
        opt("score", Kind::Closure, Absent::Required, "|completion, example| -> number"),
        opt("weight", FLOAT, Absent::Float(1.0), "its weight in the total reward"),
    ]],
);

/// The train family's declared options, its pieces' (`train_pieces.rs`) included.
pub static OPTIONS: [&OptionSet; 6] =
    [&SFT, &GRPO, &SCORE_REWARD, &CARE_BONUS, &GROUP_ADVANTAGES, &crate::train_plan::MEMORY_PLAN];

/// The shared training keys as parsed values.
struct Training {
    lora: Option<LoraConfig>,
    full: bool,
    train_vision: bool,
    schedule: Schedule,
    warmup: u64,
    save_every: Option<u64>,
    resume: Option<std::path::PathBuf>,
    seed: u64,
    max_bad_steps: usize,
}

fn training(ctx: &NativeCallContext, o: &Opts) -> ScriptResult<Training> {
    let lora = match o.map("lora")? {
        Some(map) => Some(lora_config(ctx, &map, &format!("{} lora", o.what()))?),
        None => None,
    };
    let resume = match o.string("resume")? {
        Some(r) => Some(session(ctx)?.sandbox.resolve_read(&r).script()?),
        None => None,
    };
    Ok(Training {
        lora,
        full: o.bool_or_default("full")?,
        train_vision: o.bool_or_default("train_vision")?,
        schedule: Schedule::parse(&o.string_or_default("schedule")?).script()?,
        warmup: o.count_or_default("warmup")? as u64,
        save_every: o.count("save_every")?.map(|v| v as u64),
        resume,
        seed: seed_or_next(ctx, o.int("seed")?)?,
        max_bad_steps: o.count_or_default("max_bad_steps")?,
    })
}

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
            let o = REWARD.parse_as(&spec, &what)?;
            (o.closure("score")?.ok_or_else(|| o.missing("score"))?, o.float_or_default("weight")?)
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
    /// `sft(m, task, #{steps: 100, lr: 2e-4, lora: #{rank: 8}, eval_every: 20,
    /// eval_options: #{n: 16, limit: 50}})` → `#{model, losses, token_accuracy, grad_norms,
    /// skipped_steps, support_curve: [#{step, acc1, pass_at_k, gap}], checkpoint,
    /// seconds_per_step}`. Evaluation (on the training task unless `task` is given) runs after
    /// every `eval_every` steps and the last one, and logs `eval/acc1`, `eval/pass@k` and
    /// `eval/gap` to metrics.jsonl.
    #[rhai_fn(return_raw)]
    pub fn sft(
        ctx: NativeCallContext,
        model: Vlm,
        task: McqTask,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let o = SFT.parse(&options)?;
        let s = session(&ctx)?;
        let mut opts = SftOptions {
            epochs: o.count_or_default("epochs")?,
            steps: o.count("steps")?.map(|v| v as u64),
            lr: o.float_or_default("lr")?,
            batch: o.count_or_default("batch")?,
            grad_accum: o.count_or_default("grad_accum")?,
            weight_decay: o.float_or_default("weight_decay")?,
            max_grad_norm: Some(o.float_or_default("max_grad_norm")?).filter(|&n| n > 0.0),
            ..SftOptions::default()
        };
        let shared = training(&ctx, &o)?;
        (opts.lora, opts.full, opts.train_vision, opts.schedule, opts.warmup) =
            (shared.lora, shared.full, shared.train_vision, shared.schedule, shared.warmup);
        (opts.save_every, opts.resume, opts.seed, opts.max_bad_steps) =
            (shared.save_every, shared.resume, shared.seed, shared.max_bad_steps);
        opts.eval = periodic_eval(&ctx, &o, "sft")?;
        let train_ctx = train_context(&s);
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

    /// GRPO with verifiable rewards: `grpo(m, task, #{steps: 50, group: 8, lr: 1e-6,
    /// rewards: #{accuracy: 1.0, format: 0.1, mine: #{score: |completion, example| ..., weight: 0.5}},
    /// eval_every: 10, eval_options: #{n: 8, limit: 50}})` → `#{model, rewards, zero_variance,
    /// prompts_drawn, batch_filled, losses, kl, support_curve: [#{step, acc1, pass_at_k, gap}],
    /// checkpoint, seconds_per_step}`.
    /// A reward closure gets the completion text and the item as a map (`index`, `id`,
    /// `question`, `options`, `answer` index, `letter`, `task`, ...) and returns a number.
    /// `dynamic_sampling` drops groups whose rewards are all equal and draws more prompts until
    /// `batch` groups carry signal or `max_draws` prompts were drawn.
    /// `micro_batch: n` scores n completions per backward pass and accumulates their gradients
    /// into the pass's one update (the same update, one micro-batch's activations in memory).
    /// `preset: "medbridgerl"` starts from every setting of the paper's released GRPO-CARE run
    /// (`GrpoOptions::preset`: one epoch, G 8, 4 prompts, lr 5e-7, released rewards, CARE on,
    /// seed 42) and the keys given override it; without `preset` the defaults here apply even on a
    /// medbridgerl task (presets are opt-in per call). `care: #{coefficient, upper_bound, margin,
    /// ema_decay, ema_every}` turns GRPO-CARE on (absent keys as released), `false` or `()` off.
    /// The result also holds `care_bonus` and `confidence` (per step, with care),
    /// `skipped_steps` and `settings`, every setting as resolved; `run.json` records `settings`.
    #[rhai_fn(return_raw)]
    pub fn grpo(
        ctx: NativeCallContext,
        model: Vlm,
        task: McqTask,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let o = GRPO.parse(&options)?;
        let s = session(&ctx)?;
        let preset = preset_of(&o)?;
        let mut opts = GrpoOptions::preset(preset.unwrap_or_default(), task.len());
        let base = opts.clone();
        if let Some(n) = o.count("steps")? {
            opts.steps = n as u64;
        }
        opts.batch = o.count("batch")?.unwrap_or(base.batch);
        opts.lr = o.float("lr")?.unwrap_or(base.lr);
        opts.dynamic_sampling = o.bool("dynamic_sampling")?.unwrap_or(base.dynamic_sampling);
        opts.max_draws = o.count("max_draws")?.or(base.max_draws);
        opts.max_new_tokens = o.count("max_new_tokens")?.unwrap_or(base.max_new_tokens);
        opts.top_p = o.float("top_p")?.unwrap_or(base.top_p);
        opts.max_batch_tokens = o.count("max_batch_tokens")?.unwrap_or(base.max_batch_tokens);
        opts.max_seqs = o.count("max_seqs")?.unwrap_or(base.max_seqs);
        let step = &mut opts.step;
        step.group = o.count("group")?.unwrap_or(base.step.group);
        step.mu = o.count("mu")?.unwrap_or(base.step.mu);
        step.micro_batch = o.count("micro_batch")?.or(base.step.micro_batch);
        step.loss.beta = o.float("beta")?.unwrap_or(base.step.loss.beta);
        step.loss.epsilon_low = o.float("epsilon_low")?.unwrap_or(base.step.loss.epsilon_low);
        step.loss.epsilon_high = o.float("epsilon_high")?.unwrap_or(base.step.loss.epsilon_high);
        if let Some(name) = o.string("loss")? {
            step.loss.aggregation = LossAggregation::parse(&name).script()?;
        }
        if let Some(name) = o.string("scale_rewards")? {
            step.scale_rewards = ScaleRewards::parse(&name).script()?;
        }
        step.filter_zero_variance = o.bool("filter_zero_variance")?.unwrap_or(base.step.filter_zero_variance);
        step.mask_truncated = o.bool("mask_truncated")?.unwrap_or(base.step.mask_truncated);
        step.temperature = o.float("temperature")?.unwrap_or(base.step.temperature);
        if o.count("max_new_tokens")?.is_some() {
            step.loss.max_completion_length = opts.max_new_tokens;
        }
        opts.care = care_setting(&o, base.care)?;
        let mut custom = Rewards::default();
        if let Some(map) = o.map("rewards")? {
            (opts.rewards, custom) = parse_rewards(&ctx, &task, &map)?;
        }
        let shared = training(&ctx, &o)?;
        if preset.is_none() {
            (opts.lora, opts.full, opts.train_vision, opts.schedule, opts.warmup) =
                (shared.lora, shared.full, shared.train_vision, shared.schedule, shared.warmup);
            (opts.save_every, opts.resume, opts.seed, opts.max_bad_steps) =
                (shared.save_every, shared.resume, shared.seed, shared.max_bad_steps);
        } else {
            // Under a preset only the keys given override it (the release's seed is 42).
            (opts.save_every, opts.resume, opts.max_bad_steps) =
                (shared.save_every, shared.resume, shared.max_bad_steps);
            if o.given("lora") || o.given("full") || o.given("train_vision") {
                (opts.lora, opts.full, opts.train_vision) = (shared.lora, shared.full, shared.train_vision);
            }
            if o.given("schedule") {
                opts.schedule = shared.schedule;
            }
            if o.given("warmup") {
                opts.warmup = shared.warmup;
            }
            if o.given("seed") {
                opts.seed = shared.seed;
            }
        }
        opts.eval = periodic_eval(&ctx, &o, "grpo")?;
        let settings = opts.describe();
        s.run.record_settings("grpo", settings.clone()).script()?;
        let train_ctx = train_context(&s);
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
        out.insert("care_bonus".into(), floats(&summary.care_bonus).into());
        out.insert("confidence".into(), floats(&summary.confidence).into());
        out.insert(
            "skipped_steps".into(),
            summary.skipped_steps.iter().map(|&x| Dynamic::from_int(x as i64)).collect::<Array>().into(),
        );
        out.insert("settings".into(), from_json(&settings)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Absent;

    /// A declared default as a number, for comparing with the runtime's own.
    fn number(set: &OptionSet, key: &str) -> f64 {
        match set.specs().find(|s| s.key == key).unwrap().absent {
            Absent::Int(n) => n as f64,
            Absent::Float(x) => x,
            other => panic!("{key}: {other:?}"),
        }
    }

    fn text(set: &OptionSet, key: &str) -> &'static str {
        match set.specs().find(|s| s.key == key).unwrap().absent {
            Absent::Str(s) => s,
            other => panic!("{key}: {other:?}"),
        }
    }

    /// What `medbridge doc` says an absent key means is what training does without it.
    #[test]
    fn declared_defaults_are_the_runtime_defaults() {
        let sft = SftOptions::default();
        assert_eq!(number(&SFT, "epochs"), sft.epochs as f64);
        assert_eq!(number(&SFT, "lr"), sft.lr);
        assert_eq!(number(&SFT, "batch"), sft.batch as f64);
        assert_eq!(number(&SFT, "grad_accum"), sft.grad_accum as f64);
        assert_eq!(number(&SFT, "weight_decay"), sft.weight_decay);
        assert_eq!(Some(number(&SFT, "max_grad_norm")), sft.max_grad_norm);
        assert_eq!(Schedule::parse(text(&SFT, "schedule")).unwrap(), sft.schedule);
        assert_eq!(number(&SFT, "warmup"), sft.warmup as f64);
        assert_eq!(number(&SFT, "max_bad_steps"), sft.max_bad_steps as f64);

        let grpo = GrpoOptions::default();
        assert_eq!(number(&GRPO, "steps"), grpo.steps as f64);
        assert_eq!(number(&GRPO, "batch"), grpo.batch as f64);
        assert_eq!(number(&GRPO, "group"), grpo.step.group as f64);
        assert_eq!(number(&GRPO, "mu"), grpo.step.mu as f64);
        assert_eq!(number(&GRPO, "lr"), grpo.lr);
        assert_eq!(number(&GRPO, "beta"), grpo.step.loss.beta);
        assert_eq!(number(&GRPO, "epsilon_low"), grpo.step.loss.epsilon_low);
        assert_eq!(number(&GRPO, "epsilon_high"), grpo.step.loss.epsilon_high);
        assert_eq!(number(&GRPO, "max_new_tokens"), grpo.max_new_tokens as f64);
        assert_eq!(number(&GRPO, "max_batch_tokens"), grpo.max_batch_tokens as f64);
        assert_eq!(number(&GRPO, "max_seqs"), grpo.max_seqs as f64);
        assert_eq!(number(&GRPO, "temperature"), grpo.step.temperature);
        assert_eq!(number(&GRPO, "top_p"), grpo.top_p);
        assert_eq!(number(&GRPO, "warmup"), grpo.warmup as f64);
        assert_eq!(number(&GRPO, "max_bad_steps"), grpo.max_bad_steps as f64);
        assert_eq!(Schedule::parse(text(&GRPO, "schedule")).unwrap(), grpo.schedule);
        assert_eq!(LossAggregation::parse(text(&GRPO, "loss")).unwrap(), grpo.step.loss.aggregation);
        assert_eq!(ScaleRewards::parse(text(&GRPO, "scale_rewards")).unwrap(), grpo.step.scale_rewards);
    }

    /// `care`'s declared defaults are the released ones `care: #{}` turns on.
    #[test]
    fn declared_care_defaults_are_the_released_ones() {
        let care = CareOptions::default();
        assert_eq!(number(&CARE, "coefficient"), care.bonus.coefficient);
        assert_eq!(Some(number(&CARE, "upper_bound")), care.bonus.upper_bound);
        assert_eq!(Some(number(&CARE, "margin")), care.bonus.margin);
        assert_eq!(number(&CARE, "ema_decay"), care.ema_decay);
        assert_eq!(number(&CARE, "ema_every"), care.ema_every as f64);
        assert_eq!(care_options(&Map::new(), care).unwrap(), care);
    }
}
