//! The `train` family: supervised fine-tuning that bridges support. `sft` returns a new model
//! sharing the frozen base and leaves its input unchanged, so a script can compare base, SFT and
//! RL side by side. (GRPO's loss, advantages and rewards are in the runtime; its loop is not yet
//! exposed.)

use medbridge_runtime::models::Vlm;
use medbridge_runtime::task::McqTask;
use medbridge_runtime::train::{sft as run_sft, Schedule, SftOptions, TrainContext};
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
        let count = |key: &str| -> Result<Option<usize>, Box<EvalAltResult>> {
            o.int(key)?
                .map(|v| {
                    usize::try_from(v)
                        .map_err(|_| script_msg(format!("sft: `{key}` must be non-negative, got {v}")))
                })
                .transpose()
        };
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
}
