//! The `run` family: the run directory, metrics, seeds, and sandboxed file access.
//!
//! Scripts touch files only through these functions and the loaders of the other families.
//! Reads are allowed under the sandbox's roots; writes land inside the run directory (from rank 0
//! only under MPI; `rank()` and `world_size()` tell a script where it runs).

use rhai::plugin::*;

use medbridge_runtime::sweep::{collect, SweepDir};

use crate::context::session;
use crate::convert::{from_json, to_json};
use crate::error::{script_msg, IntoScript};

fn io_error(path: &std::path::Path, e: std::io::Error) -> Box<rhai::EvalAltResult> {
    script_msg(format!("{}: {e}", path.display()))
}

/// `log(name, value)` read as the natural log of tensors and Rhai's log10 of floats, so the metric
/// is now `log_metric`; the old name still records, with one warning per run on stderr and in
/// `output.log`.
fn warn_log_deprecated(ctx: &NativeCallContext) -> Result<(), Box<EvalAltResult>> {
    let s = session(ctx)?;
    if s.run.first_time("deprecated:log") {
        let warning = "warning: `log(name, value)` is deprecated and will be removed in the next release; \
                       use `log_metric(name, value)`";
        eprintln!("{warning}");
        s.run.log_output(warning).script()?;
    }
    Ok(())
}

#[export_module]
pub mod run_api {
    use super::*;

    /// Record a metric in the run's `metrics.jsonl`, stamped with time and a per-name step:
    /// `log_metric("loss", 0.25)`. Values may be numbers, strings, bools, arrays or maps.
    #[rhai_fn(name = "log_metric", return_raw)]
    pub fn log_metric(ctx: NativeCallContext, name: &str, value: Dynamic) -> Result<(), Box<EvalAltResult>> {
        session(&ctx)?.run.log_metric(name, to_json(&value)?, None).script()
    }

    /// Record a metric at an explicit step: `log_metric("loss", 0.25, 10)`.
    #[rhai_fn(name = "log_metric", return_raw)]
    pub fn log_metric_at(
        ctx: NativeCallContext,
        name: &str,
        value: Dynamic,
        step: i64,
    ) -> Result<(), Box<EvalAltResult>> {
        if step < 0 {
            return Err(script_msg(format!("log_metric: step must be non-negative, got {step}")));
        }
        session(&ctx)?.run.log_metric(name, to_json(&value)?, Some(step as u64)).script()
    }

    /// Deprecated: use `log_metric(name, value)`. Kept for one release; warns once per run.
    #[rhai_fn(name = "log", return_raw)]
    pub fn log_deprecated(
        ctx: NativeCallContext,
        name: &str,
        value: Dynamic,
    ) -> Result<(), Box<EvalAltResult>> {
        warn_log_deprecated(&ctx)?;
        log_metric(ctx, name, value)
    }

    /// Deprecated: use `log_metric(name, value, step)`. Kept for one release; warns once per run.
    #[rhai_fn(name = "log", return_raw)]
    pub fn log_at_deprecated(
        ctx: NativeCallContext,
        name: &str,
        value: Dynamic,
        step: i64,
    ) -> Result<(), Box<EvalAltResult>> {
        warn_log_deprecated(&ctx)?;
        log_metric_at(ctx, name, value, step)
    }

    /// Set the global seed. Every stochastic primitive called without its own `seed` option
    /// draws from a stream that restarts here, so a seeded script replays exactly.
    #[rhai_fn(return_raw)]
    pub fn seed(ctx: NativeCallContext, n: i64) -> Result<(), Box<EvalAltResult>> {
        if n < 0 {
            return Err(script_msg(format!("seed must be non-negative, got {n}")));
        }
        session(&ctx)?.set_seed(n as u64);
        Ok(())
    }

    /// The run directory's absolute path.
    #[rhai_fn(return_raw)]
    pub fn run_dir(ctx: NativeCallContext) -> Result<String, Box<EvalAltResult>> {
        Ok(session(&ctx)?.run.path().display().to_string())
    }

    /// This process's rank in an MPI run (`mpirun -np N medbridge run ...`); 0 in a run of one
    /// process. Only rank 0 may write files, so a script saves under `if rank() == 0 { ... }`.
    #[rhai_fn(return_raw)]
    pub fn rank(ctx: NativeCallContext) -> Result<i64, Box<EvalAltResult>> {
        Ok(session(&ctx)?.world.rank() as i64)
    }

    /// How many ranks the run has (1 without MPI); `sft`, `grpo` and `evaluate` split their work
    /// over them.
    #[rhai_fn(return_raw)]
    pub fn world_size(ctx: NativeCallContext) -> Result<i64, Box<EvalAltResult>> {
        Ok(session(&ctx)?.world.size() as i64)
    }

    /// Read a text file (under the script's, the current or a data directory).
    #[rhai_fn(return_raw)]
    pub fn read_text(ctx: NativeCallContext, path: &str) -> Result<String, Box<EvalAltResult>> {
        let p = session(&ctx)?.sandbox.resolve_read(path).script()?;
        std::fs::read_to_string(&p).map_err(|e| io_error(&p, e))
    }

    /// Write a text file inside the run directory; returns the path written.
    #[rhai_fn(return_raw)]
    pub fn write_text(ctx: NativeCallContext, path: &str, text: &str) -> Result<String, Box<EvalAltResult>> {
        let p = session(&ctx)?.sandbox.resolve_write(path).script()?;
        std::fs::write(&p, text).map_err(|e| io_error(&p, e))?;
        Ok(p.display().to_string())
    }

    /// Read a JSON file as script data (maps, arrays, numbers, strings).
    #[rhai_fn(return_raw)]
    pub fn read_json(ctx: NativeCallContext, path: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        let p = session(&ctx)?.sandbox.resolve_read(path).script()?;
        let text = std::fs::read_to_string(&p).map_err(|e| io_error(&p, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| script_msg(format!("{}: invalid JSON: {e}", p.display())))?;
        from_json(&value)
    }

    /// Write script data as pretty JSON inside the run directory; returns the path written.
    #[rhai_fn(return_raw)]
    pub fn write_json(
        ctx: NativeCallContext,
        path: &str,
        value: Dynamic,
    ) -> Result<String, Box<EvalAltResult>> {
        let p = session(&ctx)?.sandbox.resolve_write(path).script()?;
        let text = serde_json::to_string_pretty(&to_json(&value)?).map_err(|e| script_msg(e.to_string()))?;
        std::fs::write(&p, text + "\n").map_err(|e| io_error(&p, e))?;
        Ok(p.display().to_string())
    }

    /// Whether a readable path exists. Paths outside the readable roots are an error, not `false`,
    /// so a script cannot probe the filesystem.
    #[rhai_fn(return_raw)]
    pub fn exists(ctx: NativeCallContext, path: &str) -> Result<bool, Box<EvalAltResult>> {
        Ok(session(&ctx)?.sandbox.locate_read(path).script()?.is_some())
    }

    /// Every cell of a sweep directory (`medbridge sweep SCRIPT --grid ... --out DIR`), in grid
    /// order, wherever it ran: `sweep_results("sweeps/transfer")` → `[#{index, name, args (the
    /// cell's grid values), state ("done", "failed", "cancelled", "running" or "pending"), error,
    /// exit_code, runtime_s, attempt, slurm_job, dir, log, run (its run.json), metrics (the last
    /// value of each metric), json (every other top-level .json file of the run by stem, what the
    /// script wrote with `write_json`), report (path of report/report.md or ())}, ...]`.
    /// The directory must be readable (under the script's, the current or an `--allow-read`
    /// directory).
    #[rhai_fn(return_raw)]
    pub fn sweep_results(ctx: NativeCallContext, dir: &str) -> Result<rhai::Array, Box<EvalAltResult>> {
        let s = session(&ctx)?;
        let root = s.sandbox.resolve_read(dir).script()?;
        let read = |path: &std::path::Path| -> medbridge_runtime::Result<Option<String>> {
            match s.sandbox.locate_read(&path.display().to_string())? {
                Some(real) => std::fs::read_to_string(&real)
                    .map(Some)
                    .map_err(|e| medbridge_runtime::Error::io(&real, e)),
                None => Ok(None),
            }
        };
        let cells = collect(&SweepDir::new(root), &read).script()?;
        cells.iter().map(from_json).collect()
    }

    /// The entries of a readable directory, sorted by name.
    #[rhai_fn(return_raw)]
    pub fn list_dir(ctx: NativeCallContext, path: &str) -> Result<rhai::Array, Box<EvalAltResult>> {
        let p = session(&ctx)?.sandbox.resolve_read(path).script()?;
        let mut names: Vec<String> = std::fs::read_dir(&p)
            .map_err(|e| io_error(&p, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names.into_iter().map(Dynamic::from).collect())
    }
}
