//! `--executor local[:N]`: N worker threads on this machine, each taking the next cell and
//! running its `medbridge run` child to the end. With CUDA each worker owns one GPU; on the CPU
//! the cores are shared out. Ctrl-C stops the workers: the children are interrupted (they save
//! what they can and exit), no new cell starts, and a rerun picks up where this one stopped.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use medbridge_runtime::run::CancelFlag;
use medbridge_runtime::sweep::CellState;

use super::cell::{run_cell, Placement};
use super::plan::{Plan, INTERRUPTED};
use super::status::{duration, observe_all};
use crate::commands::{install_cancel_handler, SCRIPT_ERROR};

/// How many workers, and the GPU each one owns (`None`: the device is not a GPU, or there is
/// none to hand out).
pub fn workers(requested: Option<usize>, device: &str) -> (usize, Vec<Option<String>>) {
    let gpus = visible_gpus(device);
    let n = requested.unwrap_or(gpus.len().max(1));
    let place = (0..n).map(|i| (!gpus.is_empty()).then(|| gpus[i % gpus.len()].clone())).collect();
    (n, place)
}

/// The GPUs to hand out one per worker: only when this medbridge has CUDA and the cells run on
/// `cuda`/`gpu`/`auto` (a fixed `cuda:N` is the user's choice and is left alone).
fn visible_gpus(device: &str) -> Vec<String> {
    let device = device.trim().to_ascii_lowercase();
    if !cfg!(feature = "cuda") || !matches!(device.as_str(), "cuda" | "gpu" | "auto") {
        return vec![];
    }
    if let Ok(list) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    }
    let Ok(out) = std::process::Command::new("nvidia-smi").arg("-L").output() else { return vec![] };
    let text = String::from_utf8_lossy(&out.stdout);
    (0..text.lines().filter(|l| l.starts_with("GPU ")).count()).map(|i| i.to_string()).collect()
}

/// Run `cells` (indices into the plan's cells) on the workers; returns the exit code.
pub fn run(plan: &mut Plan, cells: &[usize], requested: Option<usize>) -> u8 {
    let (n, gpus) = workers(requested, &plan.device);
    let n = n.min(cells.len()).max(1);
    let cpu_share = gpus[0].is_none().then(|| {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        (cores / n).max(1)
    });
    println!(
        "running {} cell{} on {n} local worker{}{}",
        cells.len(),
        if cells.len() == 1 { "" } else { "s" },
        if n == 1 { "" } else { "s" },
        match &cpu_share {
            Some(t) if n > 1 => format!(" ({t} CPU thread{} each)", if *t == 1 { "" } else { "s" }),
            Some(_) => String::new(),
            None => format!(" (GPUs {})", gpus.iter().flatten().cloned().collect::<Vec<_>>().join(",")),
        }
    );
    let cancel = CancelFlag::new();
    install_cancel_handler(&cancel);
    let never_terminated = AtomicBool::new(false);
    let queue = Mutex::new(cells.iter().copied().collect::<VecDeque<_>>());
    let finished = Mutex::new(0usize);
    let plan_lock = Mutex::new(&mut *plan);
    let total = cells.len();
    std::thread::scope(|scope| {
        for (worker, gpu) in gpus.iter().enumerate().take(n) {
            let (queue, finished, plan_lock, cancel, never) =
                (&queue, &finished, &plan_lock, &cancel, &never_terminated);
            let place = Placement {
                gpus: gpu.clone(),
                slurm_job: None,
                threads: if n > 1 { cpu_share } else { None },
            };
            scope.spawn(move || loop {
                if cancel.is_cancelled() {
                    break;
                }
                let Some(index) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else { break };
                let (dir, spec, cell) = {
                    let plan = plan_lock.lock().unwrap_or_else(|p| p.into_inner());
                    (plan.dir.clone(), plan.spec.clone(), plan.spec.cells[index].clone())
                };
                println!("  {}: started (worker {})", cell.name, worker + 1);
                let state = run_cell(&dir, &spec, &cell, &place, cancel, never);
                let status = dir.read_status(&cell.name).ok().flatten();
                let took = status.as_ref().map(|s| duration(s.runtime())).unwrap_or_default();
                let k = {
                    let mut f = finished.lock().unwrap_or_else(|p| p.into_inner());
                    *f += 1;
                    *f
                };
                let first_error = status
                    .as_ref()
                    .and_then(|s| s.error.as_deref())
                    .and_then(|e| e.lines().find(|l| !l.trim().is_empty()))
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                match state {
                    CellState::Done => println!("  [{k}/{total}] {}: done in {took}", cell.name),
                    other => println!(
                        "  [{k}/{total}] {}: {} after {took}{first_error}",
                        cell.name,
                        other.as_str()
                    ),
                }
                let mut plan = plan_lock.lock().unwrap_or_else(|p| p.into_inner());
                let observed = observe_all(&plan.dir, &plan.spec);
                plan.record_states(&observed);
            });
        }
    });
    if cancel.is_cancelled() {
        let left = queue.lock().unwrap_or_else(|p| p.into_inner()).len();
        println!(
            "\ninterrupted: the running cells were stopped{}; rerun the same command to resume",
            if left > 0 { format!(" and {left} never started") } else { String::new() }
        );
        let observed = observe_all(&plan.dir, &plan.spec);
        plan.record_states(&observed);
        return INTERRUPTED;
    }
    let failed = observe_all(&plan.dir, &plan.spec).iter().any(|o| o.state != super::status::Observed::Done);
    if failed {
        SCRIPT_ERROR
    } else {
        0
    }
}
