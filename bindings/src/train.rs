//! The `train` family: `sft` bridges support, `grpo` sharpens it. Both return a new model sharing
//! the frozen base and leave their input unchanged, so a script can compare base, SFT and RL side
//! by side.

use medbridge_runtime::models::Vlm;
use medbridge_runtime::task::McqTask;
use medbridge_runtime::train::{
    grpo as run_grpo, sft as run_sft, GrpoOptions, LossAggregation, ScaleRewards, Schedule, SftOptions,
    TrainContext,
};
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::context::{seed_or_next, session};
use crate::convert::Options;
use crate::error::{script_msg, IntoScript};
use crate::model::lora_config;

#[export_module]
pub mod train_api {
    use super::*;

    /// Completion-only SFT on a task's targets (e.g. `<answer>C</answer>`), LoRA by default:
    /// `sft(m, task, #{epochs: 1, steps: 100, lr: 2e-4, batch: 8, grad_accum: 1,
    /// lora: #{rank: 8, alpha: 16}, full: false, schedule: "linear" | "cosine" | "constant",
    /// warmup: 10, weight_decay: 0.0, max_grad_norm: 1.0, save_every: 50, resume: "checkpoints",
    /// seed: 0})` → `#{model, losses, token_accuracy, grad_norms, skipped_steps, checkpoint, seconds_per_step}`.
    #[rhai_fn(return_raw)]
    pub fn sft(
        ctx: NativeCallContext,
        model: Vlm,
        task: McqTask,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let known = [
            "epochs",
            "steps",
            "lr",
            "batch",
            "grad_accum",
            "lora",
            "full",
            "schedule",
            "warmup",
            "weight_decay",
            "max_grad_norm",
            "save_every",
            "resume",
            "seed",
            "max_bad_steps",
        ];
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
        out.insert("seconds_per_step".into(), Dynamic::from_float(summary.seconds_per_step));
        Ok(out)
    }

    /// GRPO with verifiable rewards: `grpo(m, task, #{steps: 50, batch: 4, group: 8, lr: 1e-6,
    /// beta: 0.0, epsilon_low: 0.2, epsilon_high: 0.2, mu: 1, loss: "token_mean" | "seq_mean" |
    /// "dr_grpo", scale_rewards: "group" | "batch" | "none", filter_zero_variance: false,
    /// mask_truncated: false, rewards: #{accuracy: 1.0, format: 0.1}, max_new_tokens: 32,
    /// temperature: 1.0, top_p: 1.0, lora: #{rank: 8}, full: false, save_every: 25, seed: 0})`
    /// → `#{model, rewards, zero_variance, losses, kl, checkpoint, seconds_per_step}`.
    #[rhai_fn(return_raw)]
    pub fn grpo(
        ctx: NativeCallContext,
        model: Vlm,
        task: McqTask,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let known = [
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
            "mask_truncated",
            "rewards",
            "max_new_tokens",
            "temperature",
            "top_p",
            "lora",
            "full",
            "schedule",
            "warmup",
            "save_every",
            "seed",
            "max_bad_steps",
        ];
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
        if let Some(r) = o.get("rewards") {
            let map = r
                .read_lock::<Map>()
                .ok_or_else(|| script_msg("grpo: `rewards` must be a map of name → weight"))?;
            opts.rewards = map
                .iter()
                .map(|(k, v)| {
                    crate::convert::as_f64(v)
                        .map(|w| (k.to_string(), w))
                        .ok_or_else(|| script_msg(format!("grpo: weight of reward `{k}` must be a number")))
                })
                .collect::<Result<_, _>>()?;
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
        opts.seed = seed_or_next(&ctx, o.int("seed")?)?;
        if let Some(n) = count("max_bad_steps")? {
            opts.max_bad_steps = n;
        }
        let train_ctx =
            TrainContext { run: Some(&s.run), cancel: s.cancel.clone(), progress: s.progress, out_dir: None };
        let (trained, summary) = run_grpo(&model, &task, &opts, &train_ctx).script()?;
        let floats = |v: &[f64]| -> Array { v.iter().map(|&x| Dynamic::from_float(x)).collect() };
        let mut out = Map::new();
        out.insert("model".into(), Dynamic::from(trained));
        out.insert("rewards".into(), floats(&summary.rewards).into());
        out.insert("zero_variance".into(), floats(&summary.zero_variance).into());
        out.insert("losses".into(), floats(&summary.losses).into());
        out.insert("kl".into(), floats(&summary.kl).into());
        out.insert(
            "checkpoint".into(),
            summary.last_checkpoint.map_or(Dynamic::UNIT, |p| p.display().to_string().into()),
        );
        out.insert("seconds_per_step".into(), Dynamic::from_float(summary.seconds_per_step));
        Ok(out)
    }
}
