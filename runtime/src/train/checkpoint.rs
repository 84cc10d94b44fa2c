//! Resumable checkpoints: `checkpoint-{step}/` holding the trainable tensors under their PEFT
//! (adapters) or hub (full fine-tuning) names in `trainable.safetensors`, the optimiser's f32
//! masters and moments in `optimizer.safetensors`, and `trainer_state.json` with the step, the
//! data order with its generator state, and the steps skipped so far. A trainer that keeps
//! tensors of its own (GRPO-CARE's EMA reference) adds `trainer_tensors.safetensors`.
//!
//! Each training call writes its checkpoints into its own folder (a run's
//! `checkpoints/{trainer}[-N]/`, see [`super::context`]); `resume` takes a checkpoint, such a
//! folder (its latest checkpoint), or the run's `checkpoints/` (the trainer's last call).
//!
//! Resuming restores all of it, so on the CPU a run of 2N steps and a run of N steps resumed for
//! N more give the same losses. (LoRA dropout draws from the model's own generator, which is not
//! saved: exact resumption needs `dropout = 0`.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::context::call_number;
use super::data_order::{DataOrder, DataOrderState};
use super::grad::NonFiniteGuard;
use super::optim::AdamW;
use crate::error::{Context, Error, Result};

const TRAINABLE_FILE: &str = "trainable.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "trainer_state.json";
const TRAINER_TENSORS_FILE: &str = "trainer_tensors.safetensors";

/// Everything but the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// `sft` or `grpo`: a checkpoint only resumes the trainer that wrote it.
    pub trainer: String,
    /// Optimiser steps completed (skipped non-finite steps included).
    pub step: u64,
    /// Updates actually applied (AdamW's bias-correction count).
    pub optimizer_steps: u64,
    pub data_order: DataOrderState,
    /// Steps skipped for a non-finite loss or gradient.
    pub skipped_steps: Vec<u64>,
}

/// Save a trainer's progress into `out` (when there is one): the step, optimizer state, data order
/// and skipped steps of `trainer` (`"sft"` or `"grpo"`) beside its trainable tensors, and the
/// trainer's own tensors `extra` when there are any.
#[allow(clippy::too_many_arguments)]
pub fn save_progress(
    out: Option<&Path>,
    trainer: &str,
    trainable: &[(String, Var)],
    step: u64,
    order: &DataOrder,
    optimizer: &AdamW,
    guard: &NonFiniteGuard,
    extra: &[(String, Tensor)],
) -> Result<Option<PathBuf>> {
    let Some(out) = out else { return Ok(None) };
    let state = TrainerState {
        trainer: trainer.into(),
        step,
        optimizer_steps: optimizer.steps(),
        data_order: order.state(),
        skipped_steps: guard.skipped.clone(),
    };
    let dir = save(out, trainable, optimizer, &state)?;
    if !extra.is_empty() {
        let path = dir.join(TRAINER_TENSORS_FILE);
        let tensors: HashMap<String, Tensor> = extra.iter().cloned().collect();
        candle_core::safetensors::save(&tensors, &path)
            .with_context(|| format!("saving checkpoint {}", path.display()))?;
    }
    Ok(Some(dir))
}

/// The trainer's own tensors in the checkpoint `path` names for `trainer` ([`locate`]); `None`
/// when it has none.
pub fn load_trainer_tensors(
    path: &Path,
    trainer: &str,
    device: &Device,
) -> Result<Option<HashMap<String, Tensor>>> {
    let file = locate(path, trainer)?.join(TRAINER_TENSORS_FILE);
    if !file.is_file() {
        return Ok(None);
    }
    let tensors = candle_core::safetensors::load(&file, device)
        .with_context(|| format!("resuming from {}", file.display()))?;
    Ok(Some(tensors))
}

/// Write `out/checkpoint-{step}` and return its path.
/// Where [`save`] puts the checkpoint of `step` under `out`.
pub fn checkpoint_dir(out: &Path, step: u64) -> PathBuf {
    out.join(format!("checkpoint-{step}"))
}

pub fn save(
    out: &Path,
    trainable: &[(String, Var)],
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(out, state.step);
    let run = || -> Result<()> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let weights: HashMap<String, Tensor> = trainable
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        let path = dir.join(TRAINABLE_FILE);
        candle_core::safetensors::save(&weights, &path).with_context(|| path.display().to_string())?;
        let opt: HashMap<String, Tensor> = optimizer.state_tensors().into_iter().collect();
        let path = dir.join(OPTIMIZER_FILE);
        candle_core::safetensors::save(&opt, &path).with_context(|| path.display().to_string())?;
        let path = dir.join(STATE_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(state)?).map_err(|e| Error::io(&path, e))
    };
    run().with_context(|| format!("saving checkpoint {}", dir.display()))?;
    Ok(dir)
}

/// The checkpoint `path` names for `trainer`: a checkpoint directory itself; the latest
/// `checkpoint-N` inside an output directory; or, in a run's `checkpoints/` folder, the latest
/// checkpoint of `trainer`'s last call (`{trainer}-N` with the highest N, see
/// [`super::context`]).
pub fn locate(path: &Path, trainer: &str) -> Result<PathBuf> {
    if path.join(STATE_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    let step_of = |name: &str| name.strip_prefix("checkpoint-")?.parse().ok();
    let latest_checkpoint = |dir: &Path| latest_in(dir, step_of, &|p| p.join(STATE_FILE).is_file());
    if let Some(latest) = latest_checkpoint(path)? {
        return Ok(latest);
    }
    let call_of = |name: &str| call_number(name, trainer).map(u64::from);
    let last_call = latest_in(path, call_of, &|p| latest_checkpoint(p).is_ok_and(|c| c.is_some()))?;
    match last_call {
        Some(dir) => Ok(latest_checkpoint(&dir)?.unwrap_or(dir)),
        None => crate::bail!(
            "resume: {} holds neither {STATE_FILE}, nor a checkpoint-N directory, nor {trainer}'s \
             checkpoint folders",
            path.display()
        ),
    }
}

/// The entry of `dir` that `keep` accepts with the highest number `number` reads from its name.
fn latest_in(
    dir: &Path,
    number: impl Fn(&str) -> Option<u64>,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<Option<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((number(&e.file_name().to_string_lossy())?, e.path())))
        .filter(|(_, p)| keep(p))
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p))
}

/// Read a checkpoint written by `trainer` and load its optimiser state (and so the trainable
/// weights) into `optimizer`.
pub fn load(path: &Path, trainer: &str, optimizer: &mut AdamW, device: &Device) -> Result<TrainerState> {
    let dir = locate(path, trainer)?;
    let mut run = || -> Result<TrainerState> {
        let state_path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let state: TrainerState =
            serde_json::from_str(&text).with_context(|| state_path.display().to_string())?;
        if state.trainer != trainer {
            crate::bail!("it was written by {}, not {trainer}", state.trainer);
        }
        let path = dir.join(OPTIMIZER_FILE);
        let tensors =
            candle_core::safetensors::load(&path, device).with_context(|| path.display().to_string())?;
        optimizer.load_state(&tensors, state.optimizer_steps)?;
        Ok(state)
    };
    run().with_context(|| format!("resuming from {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data_order::DataOrder;
    use crate::train::optim::AdamWConfig;

    #[test]
    fn save_then_load_restores_weights_and_state() {
        let dev = &Device::Cpu;
        let tmp = tempfile::tempdir().unwrap();
        let var = Var::new(&[1.0f32, 2.0], dev).unwrap();
        let params = vec![("w".to_string(), var.clone())];
        let mut opt = AdamW::new(&params, AdamWConfig::default()).unwrap();
        opt.step(&[Tensor::new(&[1.0f32, 1.0], dev).unwrap()], 0.1).unwrap();
        let state = TrainerState {
            trainer: "sft".into(),
            step: 1,
            optimizer_steps: 1,
            data_order: DataOrder::new(4, 1).unwrap().state(),
            skipped_steps: vec![],
        };
        let dir = save(tmp.path(), &params, &opt, &state).unwrap();
        assert_eq!(locate(tmp.path(), "sft").unwrap(), dir);

        let other = Var::new(&[0.0f32, 0.0], dev).unwrap();
        let mut opt2 = AdamW::new(&[("w".to_string(), other.clone())], AdamWConfig::default()).unwrap();
        assert_eq!(load(tmp.path(), "sft", &mut opt2, dev).unwrap(), state);
        assert_eq!(other.as_tensor().to_vec1::<f32>().unwrap(), var.as_tensor().to_vec1::<f32>().unwrap());
        let err = load(tmp.path(), "grpo", &mut opt2, dev).unwrap_err().to_string();
        assert!(err.contains("written by sft"), "{err}");
    }

    #[test]
    fn a_runs_checkpoints_folder_resumes_the_trainers_last_call() {
        let dev = &Device::Cpu;
        let tmp = tempfile::tempdir().unwrap();
        let params = vec![("w".to_string(), Var::new(&[1.0f32], dev).unwrap())];
        let opt = AdamW::new(&params, AdamWConfig::default()).unwrap();
        let state = |trainer: &str, step| TrainerState {
            trainer: trainer.into(),
            step,
            optimizer_steps: 0,
            data_order: DataOrder::new(4, 1).unwrap().state(),
            skipped_steps: vec![],
        };
        let root = tmp.path();
        for (folder, trainer, step) in
            [("sft", "sft", 9), ("sft-2", "sft", 2), ("sft-2", "sft", 4), ("grpo", "grpo", 1)]
        {
            save(&root.join(folder), &params, &opt, &state(trainer, step)).unwrap();
        }
        std::fs::create_dir(root.join("sft-3")).unwrap();
        assert_eq!(locate(root, "sft").unwrap(), root.join("sft-2/checkpoint-4"));
        assert_eq!(locate(&root.join("sft"), "sft").unwrap(), root.join("sft/checkpoint-9"));
        assert_eq!(locate(root, "grpo").unwrap(), root.join("grpo/checkpoint-1"));
        assert!(locate(&root.join("sft-3"), "sft").unwrap_err().to_string().contains("holds neither"));
    }
}
