//! What each cell's state is now, from its status file, its process (local) or the Slurm queue,
//! and `medbridge sweep status DIR`: the table of cells.

use std::collections::HashMap;
use std::path::Path;

use medbridge_runtime::sweep::{host_name, CellState, CellStatus, SweepDir, SweepSpec};
use serde_json::Value;

use super::slurm;
use crate::commands::USAGE_ERROR;

/// A cell's state as seen now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Never started, never submitted.
    Pending,
    /// Submitted to Slurm, where the queue cannot be read now.
    Submitted,
    /// Waiting in the Slurm queue.
    Queued,
    Running,
    Done,
    Failed,
    /// Stopped by Ctrl-C.
    Cancelled,
    /// Recorded as running, but its process is gone and left no result (a killed process, a dead
    /// node, a Slurm task that never started).
    Lost,
}

impl Observed {
    pub fn as_str(self) -> &'static str {
        match self {
            Observed::Pending => "pending",
            Observed::Submitted => "submitted",
            Observed::Queued => "queued",
            Observed::Running => "running",
            Observed::Done => "done",
            Observed::Failed => "failed",
            Observed::Cancelled => "cancelled",
            Observed::Lost => "lost",
        }
    }

    /// A cell a (re)run starts again: never run, or ended without success.
    pub fn needs_run(self) -> bool {
        matches!(self, Observed::Pending | Observed::Failed | Observed::Cancelled | Observed::Lost)
    }

    /// A cell someone is still running (or Slurm still holds): left alone by a rerun.
    pub fn is_active(self) -> bool {
        matches!(self, Observed::Submitted | Observed::Queued | Observed::Running)
    }
}

/// One cell as seen now.
pub struct CellView {
    pub state: Observed,
    pub status: Option<CellStatus>,
    /// Why it is in this state when the status file does not say (a lost process, the Slurm
    /// reason a task waits).
    pub detail: Option<String>,
}

/// Every cell's state, asking Slurm about the cells it holds.
pub fn observe_all(dir: &SweepDir, spec: &SweepSpec) -> Vec<CellView> {
    let statuses: Vec<Option<CellStatus>> =
        spec.cells.iter().map(|c| dir.read_status(&c.name).ok().flatten()).collect();
    let mut jobs: Vec<String> = spec
        .cells
        .iter()
        .zip(&statuses)
        .filter_map(|(c, s)| s.as_ref().and_then(|s| s.slurm_job.clone()).or_else(|| c.slurm_job.clone()))
        .filter_map(|task| task.split('_').next().map(str::to_string))
        .collect();
    jobs.sort();
    jobs.dedup();
    let queue = if jobs.is_empty() { Some(HashMap::new()) } else { slurm::queue(&jobs).ok() };
    let here = host_name();
    spec.cells
        .iter()
        .zip(statuses)
        .map(|(cell, status)| {
            let task = status.as_ref().and_then(|s| s.slurm_job.clone()).or_else(|| cell.slurm_job.clone());
            let in_queue = task.as_ref().and_then(|t| queue.as_ref().map(|q| q.get(t).cloned()));
            observe(status, task.as_deref(), in_queue, &here)
        })
        .collect()
}

/// `in_queue`: `None` when the queue could not be read, `Some(None)` when the task is not in it.
fn observe(
    status: Option<CellStatus>,
    task: Option<&str>,
    in_queue: Option<Option<slurm::QueueEntry>>,
    here: &str,
) -> CellView {
    let view = |state, status, detail| CellView { state, status, detail };
    match status {
        None => match (task, in_queue) {
            (None, _) => view(Observed::Pending, None, None),
            (Some(_), None) => view(Observed::Submitted, None, None),
            (Some(_), Some(Some(entry))) => {
                let state = if entry.state == "PENDING" { Observed::Queued } else { Observed::Running };
                let reason = match entry.reason.as_str() {
                    "" | "(None)" => String::new(),
                    r => format!(" {r}"),
                };
                view(state, None, Some(format!("Slurm {}{reason}", entry.state)))
            }
            (Some(task), Some(None)) => view(
                Observed::Lost,
                None,
                Some(format!("Slurm task {task} left the queue without starting the cell")),
            ),
        },
        Some(s) => match s.state {
            CellState::Done => view(Observed::Done, Some(s), None),
            CellState::Failed => view(Observed::Failed, Some(s), None),
            CellState::Cancelled => view(Observed::Cancelled, Some(s), None),
            CellState::Running => {
                let alive = match (&s.slurm_job, in_queue) {
                    (Some(_), Some(entry)) => Some(entry.is_some()),
                    (Some(_), None) => None,
                    (None, _) if s.host == here => Some(process_alive(s.pid)),
                    (None, _) => None,
                };
                match alive {
                    Some(false) => {
                        let detail = match &s.slurm_job {
                            Some(t) => format!("Slurm task {t} ended without recording a result (killed, time limit or node failure)"),
                            None => format!("its process {} on {} is gone without recording a result", s.pid, s.host),
                        };
                        view(Observed::Lost, Some(s), Some(detail))
                    }
                    _ => view(Observed::Running, Some(s), None),
                }
            }
        },
    }
}

fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// `medbridge sweep status DIR`.
pub fn print_status(dir: &Path) -> u8 {
    let dir = SweepDir::new(dir);
    let spec = match dir.read_spec() {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("error: {e}");
            return USAGE_ERROR;
        }
    };
    let observed = observe_all(&dir, &spec);
    print_table(&dir, &spec, &observed);
    0
}

/// The summary line, one row per cell (state, runtime, last metric, log) and each failure's
/// error under its row.
pub fn print_table(dir: &SweepDir, spec: &SweepSpec, cells: &[CellView]) {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for c in cells {
        match counts.iter_mut().find(|(s, _)| *s == c.state.as_str()) {
            Some((_, n)) => *n += 1,
            None => counts.push((c.state.as_str(), 1)),
        }
    }
    let summary = counts.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ");
    println!(
        "sweep {} ({} cells of {}; executor {}): {summary}",
        dir.root().display(),
        spec.cells.len(),
        spec.script.display(),
        spec.executor
    );
    let mut rows = vec![["cell", "state", "runtime", "last metric", "log"].map(String::from)];
    for (record, view) in spec.cells.iter().zip(cells) {
        let runtime = view.status.as_ref().map(|s| duration(s.runtime())).unwrap_or_else(|| "-".into());
        let state = match (&view.status, &record.slurm_job) {
            (Some(CellStatus { slurm_job: Some(job), .. }), _) | (None, Some(job)) => {
                format!("{} ({job})", view.state.as_str())
            }
            _ => view.state.as_str().to_string(),
        };
        let log = dir.log_path(&record.name);
        rows.push([
            record.name.clone(),
            state,
            runtime,
            last_metric(&dir.cell_dir(&record.name).join("metrics.jsonl")).unwrap_or_else(|| "-".into()),
            if log.exists() { log.display().to_string() } else { "-".into() },
        ]);
    }
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
        let Some(view) = i.checked_sub(1).map(|k| &cells[k]) else { continue };
        let error = view.status.as_ref().and_then(|s| s.error.clone()).or_else(|| view.detail.clone());
        if let (Some(error), false) = (error, view.state == Observed::Done) {
            let lines: Vec<&str> = error.lines().filter(|l| !l.trim().is_empty()).collect();
            let shown = lines.len().min(6);
            for (j, line) in lines[lines.len() - shown..].iter().enumerate() {
                let label = if view.state.is_active() { "note: " } else { "error:" };
                println!("    {} {line}", if j == 0 { label } else { "      " });
            }
        }
    }
}

/// `acc=0.5 (step 3)`: the last line of a run's `metrics.jsonl`.
fn last_metric(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok())?;
    let name = line.get("name")?.as_str()?;
    let value = match line.get("value")? {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.4}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => {
            let s = other.to_string();
            if s.chars().count() > 24 {
                format!("{}…", s.chars().take(23).collect::<String>())
            } else {
                s
            }
        }
    };
    let step = line.get("step").and_then(Value::as_u64).map(|s| format!(" (step {s})")).unwrap_or_default();
    Some(format!("{name}={value}{step}"))
}

/// `3.2s`, `4m05s`, `2h07m`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, (s % 3600.0 / 60.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(host: &str, pid: u32, job: Option<&str>) -> CellStatus {
        CellStatus {
            state: CellState::Running,
            attempt: 1,
            started: 0.0,
            ended: None,
            exit_code: None,
            error: None,
            host: host.into(),
            pid,
            child_pid: None,
            slurm_job: job.map(String::from),
            gpus: None,
        }
    }

    #[test]
    fn a_running_cell_whose_process_is_gone_is_lost() {
        let me = std::process::id();
        assert_eq!(observe(Some(running("h", me, None)), None, None, "h").state, Observed::Running);
        assert_eq!(observe(Some(running("h", u32::MAX - 1, None)), None, None, "h").state, Observed::Lost);
        // Another host's process cannot be checked from here: still running as far as we know.
        assert_eq!(
            observe(Some(running("other", u32::MAX - 1, None)), None, None, "h").state,
            Observed::Running
        );
    }

    #[test]
    fn slurm_cells_follow_the_queue() {
        let entry = |state: &str| slurm::QueueEntry { state: state.into(), reason: "(Resources)".into() };
        assert_eq!(observe(None, Some("7_1"), Some(Some(entry("PENDING"))), "h").state, Observed::Queued);
        assert_eq!(observe(None, Some("7_1"), Some(Some(entry("RUNNING"))), "h").state, Observed::Running);
        assert_eq!(observe(None, Some("7_1"), Some(None), "h").state, Observed::Lost);
        assert_eq!(observe(None, Some("7_1"), None, "h").state, Observed::Submitted);
        let r = Some(running("node3", 1, Some("7_1")));
        assert_eq!(
            observe(r.clone(), Some("7_1"), Some(Some(entry("RUNNING"))), "h").state,
            Observed::Running
        );
        assert_eq!(observe(r, Some("7_1"), Some(None), "h").state, Observed::Lost);
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(3.21), "3.2s");
        assert_eq!(duration(245.0), "4m05s");
        assert_eq!(duration(7650.0), "2h07m");
    }
}
