//! Where a training call reports and how it stops: the run directory for metrics and warnings,
//! the cancel flag, the progress mode, where its checkpoints go, the memory budget of its
//! sampling, and the ranks it splits its batches over (under MPI, rank 0 alone claims the
//! checkpoint folder and writes into it).
//!
//! Under a run directory each call gets its own checkpoint folder, `checkpoints/{trainer}/` for
//! the first `sft` (or `grpo`) of the run, then `checkpoints/{trainer}-2/`, `-3/`, … for later
//! calls of the same trainer, so a script that trains twice never overwrites its first run's
//! checkpoints. The folder is claimed when training starts; an explicit `out_dir` is used as
//! given, for callers that choose their own layout.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::dist::World;
use crate::error::{Error, Result};
use crate::run::{CancelFlag, MemoryBudget, ProgressMode, RunDir};

/// Where a training primitive reports and how it stops.
#[derive(Debug, Clone)]
pub struct TrainContext<'a> {
    /// Per-step metrics go to this run's `metrics.jsonl`.
    pub run: Option<&'a RunDir>,
    pub cancel: CancelFlag,
    pub progress: ProgressMode,
    /// Checkpoints go here; without it, under the run directory's `checkpoints/` (one folder per
    /// call, see the module header), else nowhere.
    pub out_dir: Option<PathBuf>,
    /// What one rollout or evaluation sampling call may hold (the run's `--max-memory`).
    pub memory: MemoryBudget,
    /// The ranks of the run; one process unless under MPI.
    pub world: World,
}

impl TrainContext<'_> {
    /// No run directory, a fresh cancel flag, no progress bars and the machine's memory budget:
    /// a training call that reports nowhere (benchmarks, tests).
    pub fn quiet() -> TrainContext<'static> {
        TrainContext {
            run: None,
            cancel: CancelFlag::new(),
            progress: ProgressMode::Quiet,
            out_dir: None,
            memory: MemoryBudget::machine_default(),
            world: World::single(),
        }
    }

    /// Claim this call's checkpoint folder for `trainer` (`"sft"` or `"grpo"`): rank 0 claims it
    /// and every other rank learns its path.
    pub(crate) fn claim_checkpoint_dir(&self, trainer: &str) -> Result<Option<PathBuf>> {
        let claimed = if self.world.is_root() { self.claim_here(trainer)? } else { None };
        if !self.world.is_distributed() {
            return Ok(claimed);
        }
        let text = claimed.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let agreed = self.world.broadcast_text("the checkpoint folder", &text)?;
        Ok((!agreed.is_empty()).then(|| PathBuf::from(agreed)))
    }

    fn claim_here(&self, trainer: &str) -> Result<Option<PathBuf>> {
        if let Some(out) = &self.out_dir {
            return Ok(Some(out.clone()));
        }
        let Some(run) = self.run else { return Ok(None) };
        claim_call_dir(&run.path().join("checkpoints"), trainer).map(Some)
    }

    pub(crate) fn metric(&self, name: &str, value: f64, step: u64) -> Result<()> {
        match self.run {
            Some(run) => run.log_metric(name, json!(value), Some(step)),
            None => Ok(()),
        }
    }

    pub(crate) fn warn(&self, message: &str) -> Result<()> {
        eprintln!("warning: {message}");
        match self.run {
            Some(run) => run.log_output(&format!("warning: {message}")),
            None => Ok(()),
        }
    }
}

/// Create and return the first of `root/{trainer}`, `root/{trainer}-2`, … that does not exist
/// yet; creating it is the claim, so two calls can never get the same folder.
fn claim_call_dir(root: &Path, trainer: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    for n in 1u32.. {
        let dir = root.join(call_dir_name(trainer, n));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    unreachable!("some call number below u32::MAX is free")
}

/// The folder name of the `n`-th call (from 1) of `trainer` in a run.
pub(crate) fn call_dir_name(trainer: &str, n: u32) -> String {
    if n == 1 {
        trainer.to_string()
    } else {
        format!("{trainer}-{n}")
    }
}

/// The call number of folder `name` if it is one of `trainer`'s call folders.
pub(crate) fn call_number(name: &str, trainer: &str) -> Option<u32> {
    let rest = name.strip_prefix(trainer)?;
    if rest.is_empty() {
        return Some(1);
    }
    rest.strip_prefix('-')?.parse().ok().filter(|&n| n >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_claims_its_own_folder_per_trainer() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(Some(tmp.path()), "t").unwrap();
        let ctx = TrainContext { run: Some(&run), ..TrainContext::quiet() };
        let root = tmp.path().join("checkpoints");
        let claims: Vec<PathBuf> = ["sft", "grpo", "sft", "sft"]
            .iter()
            .map(|t| ctx.claim_checkpoint_dir(t).unwrap().unwrap())
            .collect();
        assert_eq!(claims, [root.join("sft"), root.join("grpo"), root.join("sft-2"), root.join("sft-3")]);
        assert_eq!(call_number("sft-3", "sft"), Some(3));
        assert_eq!((call_number("grpo", "sft"), call_number("sft-1", "sft")), (None, None));
        let explicit = TrainContext { out_dir: Some(tmp.path().join("mine")), ..ctx };
        assert_eq!(explicit.claim_checkpoint_dir("sft").unwrap(), Some(tmp.path().join("mine")));
    }
}
