//! `memory_plan`: a training run's memory by part before it runs, from a preset name (no weights
//! built) or a loaded model. Part of the `train` family; the counting is the runtime's
//! (`train/memory_plan.rs`), this file only reads the options and returns the parts as a map.

use candle_core::DType;
use medbridge_runtime::models::qwen2_5_vl::load::parse_dtype;
use medbridge_runtime::models::qwen2_5_vl::Config;
use medbridge_runtime::models::Vlm;
use medbridge_runtime::train::adapters::lora_config_of;
use medbridge_runtime::train::memory_plan::{memory_plan, MemoryPlan, PlanMode, PlanRequest};
use rhai::plugin::*;
use rhai::Map;

use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::options::{opt, Absent, Kind, OptionSet, COUNT, POSITIVE};

pub static MEMORY_PLAN: OptionSet = OptionSet::new(
    "memory_plan",
    &[&[
        opt(
            "mode",
            Kind::Str(&["lora", "full"]),
            Absent::Str("lora"),
            "what trains: LoRA adapters or every language-model weight",
        ),
        opt("rank", POSITIVE, Absent::Means("the model's adapters' rank, else 8"), "LoRA rank (mode \"lora\")"),
        opt("batch", POSITIVE, Absent::Int(1), "prompts per step"),
        opt(
            "group",
            POSITIVE,
            Absent::Int(8),
            "completions per prompt (GRPO's G; 1 for SFT); batch × group sequences are sampled at once",
        ),
        opt(
            "micro_batch",
            POSITIVE,
            Absent::Means("batch × group: every sequence in one backward"),
            "sequences scored per backward (as grpo's micro_batch); activations are one micro-batch's",
        ),
        opt("prompt_tokens", COUNT, Absent::Required, "tokens of a prompt, image tokens included"),
        opt("completion_tokens", COUNT, Absent::Required, "tokens of a completion"),
        opt(
            "dtype",
            Kind::Str(&["f32", "float32", "bf16", "bfloat16", "f16", "float16"]),
            Absent::Means("a model's dtype; bf16 for a preset"),
            "weights' and activations' dtype",
        ),
        opt(
            "checkpointing",
            Kind::Bool,
            Absent::Bool(true),
            "per-layer activation checkpointing (as training runs it)",
        ),
        opt(
            "optimizer",
            Kind::Str(&["adamw", "sgd"]),
            Absent::Str("adamw"),
            "AdamW (what sft and grpo run) keeps an f32 master and two moments per trained weight; \"sgd\" plans a stateless optimizer",
        ),
        opt(
            "device",
            Kind::Str(&["cuda", "cpu"]),
            Absent::Means("a model's device; cuda for a preset"),
            "whose kernels: the CPU's fused f32 ones keep less (the plan counts the autograd pass; LoRA on CPU f32 trains by the hand-derived one, which keeps less still)",
        ),
    ]],
);

/// The plan's parts as a map of byte counts.
fn plan_map(plan: &MemoryPlan) -> Map {
    let int = |v: u64| Dynamic::from(v as i64);
    let a = &plan.activation_parts;
    let mut parts = Map::new();
    for (key, value) in [
        ("layer_inputs", a.layer_inputs),
        ("layer_graphs", a.layer_graphs),
        ("head", a.head),
        ("shared", a.shared),
        ("untracked_gradients", a.untracked_gradients),
        ("backward_in_flight", a.backward_in_flight),
    ] {
        parts.insert(key.into(), int(value));
    }
    let mut map = Map::new();
    for (key, value) in [
        ("weights", plan.weights),
        ("gradients", plan.gradients),
        ("optimizer_state", plan.optimizer_state),
        ("activations", plan.activations),
        ("kv_cache", plan.kv_cache),
        ("total", plan.total),
        ("peak", plan.peak()),
    ] {
        map.insert(key.into(), int(value));
    }
    map.insert("activation_parts".into(), Dynamic::from_map(parts));
    map
}

/// The config, dtype, device and adapter rank a plan starts from.
struct Subject {
    config: Config,
    dtype: DType,
    on_cpu: bool,
    rank: Option<usize>,
}

/// The plan for the options; `subject` is read after they are checked, so a misspelt key is
/// reported before an unknown preset.
fn plan(subject: impl FnOnce() -> ScriptResult<Subject>, options: &Map) -> ScriptResult<Map> {
    let o = MEMORY_PLAN.parse(options)?;
    let subject = subject()?;
    let mode = match o.string_or_default("mode")?.as_str() {
        "full" => PlanMode::Full,
        _ => PlanMode::Lora { rank: o.count("rank")?.or(subject.rank).unwrap_or(8) },
    };
    if mode == PlanMode::Full && o.count("rank")?.is_some() {
        return Err(script_msg("memory_plan: option `rank` applies to mode \"lora\", not \"full\""));
    }
    let dtype = match o.string("dtype")? {
        Some(name) => parse_dtype(&name).script()?,
        None => subject.dtype,
    };
    let on_cpu = match o.string("device")? {
        Some(device) => device == "cpu",
        None => subject.on_cpu,
    };
    let count = |key: &str| -> ScriptResult<usize> { o.count(key)?.ok_or_else(|| o.missing(key)) };
    let (batch, group) = (o.count_or_default("batch")?, o.count_or_default("group")?);
    let sequences = batch
        .checked_mul(group)
        .ok_or_else(|| script_msg(format!("memory_plan: batch {batch} × group {group} overflows")))?;
    let request = PlanRequest {
        mode,
        sequences,
        micro_batch: o.count("micro_batch")?,
        prompt_tokens: count("prompt_tokens")?,
        completion_tokens: count("completion_tokens")?,
        dtype,
        checkpointing: o.bool_or_default("checkpointing")?,
        rollout_sequences: sequences,
        adamw: o.string_or_default("optimizer")? == "adamw",
        on_cpu,
    };
    Ok(plan_map(&memory_plan(&subject.config, &request)))
}

#[export_module]
pub mod train_plan_api {
    use super::*;

    /// Bytes a training step needs, by part, before it runs: `memory_plan("qwen2_5_vl_7b",
    /// #{batch: 1, group: 8, prompt_tokens: 1300, completion_tokens: 2048})` → `#{weights,
    /// gradients, optimizer_state, activations, kv_cache, total, peak, activation_parts}`.
    /// `kv_cache` is the rollouts' (batch × group sequences of prompt + completion positions);
    /// `total` adds every part, `peak` counts the larger of rollouts and backward, which do not
    /// overlap; `activations` are one backward's, over `micro_batch` sequences when given (as
    /// `grpo`'s option). A preset name builds no weights.
    #[rhai_fn(name = "memory_plan", return_raw)]
    pub fn memory_plan_of_preset(preset: &str, options: Map) -> Result<Map, Box<EvalAltResult>> {
        let subject = || {
            let config = Vlm::preset_config(preset).script()?;
            Ok(Subject { config, dtype: DType::BF16, on_cpu: false, rank: None })
        };
        plan(subject, &options)
    }

    /// The same for a loaded or built model: its config, and by default its dtype, device and
    /// adapters' rank.
    #[rhai_fn(name = "memory_plan", return_raw)]
    pub fn memory_plan_of_model(model: &mut Vlm, options: Map) -> Result<Map, Box<EvalAltResult>> {
        let m = &model.model;
        let subject = || {
            Ok(Subject {
                config: m.config().clone(),
                dtype: m.dtype(),
                on_cpu: m.device().is_cpu(),
                rank: lora_config_of(m).ok().map(|c| c.rank),
            })
        };
        plan(subject, &options)
    }
}
