//! A sweep directory on disk and the two kinds of record in it.
//!
//! ```text
//! DIR/sweep.json               the sweep: script, grid, --set, forwarded flags, every cell's
//!                              command, state and Slurm job (rewritten by `medbridge sweep`)
//! DIR/cells/<name=value,...>/  each cell's run directory (run.json, metrics.jsonl, output.log, ...)
//! DIR/status/<cell>.json       each cell's own record, written by whoever runs it: running, done,
//!                              failed or cancelled, with times, exit code and error
//! DIR/logs/<cell>.log          the cell's `medbridge run` stdout and stderr
//! DIR/attempts/<cell>/<n>/     the folders of an attempt that was rerun
//! DIR/slurm/                   sbatch scripts and Slurm's own output of each array task
//! ```
//!
//! A cell's status file is the truth about it: it is written by the process that runs the cell
//! (a local worker or a Slurm array task), never by two at once. `sweep.json` is written only by
//! the `medbridge sweep` that coordinates, which copies the states into it as it sees them.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::grid::GridAxis;
use crate::error::{Error, Result};

/// The version of the `sweep.json` layout.
pub const SWEEP_FORMAT: u32 = 1;

/// `sweep.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepSpec {
    pub format: u32,
    /// The script, as an absolute path.
    pub script: PathBuf,
    /// Where each cell's `medbridge run` starts (relative paths in `--set` resolve here).
    pub cwd: PathBuf,
    pub grid: Vec<GridAxis>,
    /// The `--set name=value` pairs every cell gets.
    pub set: Vec<String>,
    /// The `medbridge run` flags every cell gets (`--device`, `--allow-read`, limits, ...).
    pub run_flags: Vec<String>,
    /// `local:N` or `slurm`, as last run.
    pub executor: String,
    /// The `medbridge sweep` command line last run on this directory.
    pub command: Vec<String>,
    pub created: f64,
    pub updated: f64,
    pub cells: Vec<CellRecord>,
    /// Every `sbatch` submission, oldest first.
    #[serde(default)]
    pub slurm: Vec<SlurmSubmission>,
}

/// One cell in `sweep.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellRecord {
    pub index: usize,
    /// `name=value,...`, its folder name.
    pub name: String,
    /// The grid values as the script sees them in `args` (typed as `--set` types them).
    pub args: serde_json::Value,
    /// Its run directory and log, relative to the sweep directory.
    pub dir: String,
    pub log: String,
    /// pending, queued, running, done, failed, cancelled or lost, as last seen.
    pub state: String,
    /// `<job>_<index>` once submitted to Slurm.
    #[serde(default)]
    pub slurm_job: Option<String>,
    /// The `medbridge run` command that runs it (argv; the program first).
    pub command: Vec<String>,
}

/// One `sbatch` of an array of cells.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlurmSubmission {
    pub job_id: String,
    /// The `--array=` value: cell indices, with `%P` when throttled.
    pub array: String,
    /// The sbatch script, relative to the sweep directory.
    pub script: String,
    pub cells: Vec<usize>,
    pub submitted: f64,
}

/// What a cell's own status file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellState {
    Running,
    Done,
    Failed,
    Cancelled,
}

impl CellState {
    pub fn as_str(self) -> &'static str {
        match self {
            CellState::Running => "running",
            CellState::Done => "done",
            CellState::Failed => "failed",
            CellState::Cancelled => "cancelled",
        }
    }
}

/// `status/<cell>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellStatus {
    pub state: CellState,
    /// 1 for the first run of the cell, 2 for its first rerun, ...
    pub attempt: u32,
    pub started: f64,
    #[serde(default)]
    pub ended: Option<f64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why it failed: the end of the run's stderr, or what stopped it.
    #[serde(default)]
    pub error: Option<String>,
    pub host: String,
    /// The process that runs the cell (a local `medbridge sweep` or a Slurm task's
    /// `medbridge sweep cell`) and the `medbridge run` it started.
    pub pid: u32,
    #[serde(default)]
    pub child_pid: Option<u32>,
    #[serde(default)]
    pub slurm_job: Option<String>,
    /// `CUDA_VISIBLE_DEVICES` as the cell saw it.
    #[serde(default)]
    pub gpus: Option<String>,
}

impl CellStatus {
    /// Seconds from start to end, or to now while running.
    pub fn runtime(&self) -> f64 {
        (self.ended.unwrap_or_else(now) - self.started).max(0.0)
    }
}

/// A sweep directory.
#[derive(Clone, Debug)]
pub struct SweepDir {
    root: PathBuf,
}

impl SweepDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SweepDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn spec_path(&self) -> PathBuf {
        self.root.join("sweep.json")
    }

    /// Whether `sweep.json` exists here.
    pub fn exists(&self) -> bool {
        self.spec_path().is_file()
    }

    pub fn cell_dir(&self, cell: &str) -> PathBuf {
        self.root.join(Self::cell_rel(cell))
    }

    pub fn cell_rel(cell: &str) -> String {
        format!("cells/{cell}")
    }

    pub fn log_path(&self, cell: &str) -> PathBuf {
        self.root.join(Self::log_rel(cell))
    }

    pub fn log_rel(cell: &str) -> String {
        format!("logs/{cell}.log")
    }

    pub fn status_path(&self, cell: &str) -> PathBuf {
        self.root.join("status").join(format!("{cell}.json"))
    }

    pub fn slurm_dir(&self) -> PathBuf {
        self.root.join("slurm")
    }

    pub fn read_spec(&self) -> Result<SweepSpec> {
        let path = self.spec_path();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::msg(format!(
                    "{} is not a sweep directory: it has no sweep.json (`medbridge sweep SCRIPT --grid ... --out DIR` makes one)",
                    self.root.display()
                ))
            } else {
                Error::io(&path, e)
            }
        })?;
        let spec: SweepSpec = serde_json::from_str(&text).map_err(|e| {
            Error::msg(format!("{}: not a sweep.json medbridge can read: {e}", path.display()))
        })?;
        if spec.format != SWEEP_FORMAT {
            return Err(Error::msg(format!(
                "{}: format {} (this medbridge reads format {SWEEP_FORMAT})",
                path.display(),
                spec.format
            )));
        }
        Ok(spec)
    }

    pub fn write_spec(&self, spec: &SweepSpec) -> Result<()> {
        write_atomically(&self.spec_path(), serde_json::to_string_pretty(spec)?.as_bytes())
    }

    /// The cell's status file, or `None` when it never started.
    pub fn read_status(&self, cell: &str) -> Result<Option<CellStatus>> {
        let path = self.status_path(cell);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::msg(format!("{}: not a cell status: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    pub fn write_status(&self, cell: &str, status: &CellStatus) -> Result<()> {
        let path = self.status_path(cell);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        write_atomically(&path, serde_json::to_string_pretty(status)?.as_bytes())
    }

    /// Move a cell's run directory, log and status of attempt `attempt` into
    /// `attempts/<cell>/<attempt>/`, so the cell runs again in a fresh folder and the failed
    /// attempt stays readable. Returns where they went, or `None` when there was nothing.
    pub fn archive_attempt(&self, cell: &str, attempt: u32) -> Result<Option<PathBuf>> {
        let parts = [
            (self.cell_dir(cell), "run"),
            (self.log_path(cell), "cell.log"),
            (self.status_path(cell), "status.json"),
        ];
        if !parts.iter().any(|(p, _)| p.exists()) {
            return Ok(None);
        }
        let base = self.root.join("attempts").join(cell);
        let mut target = base.join(attempt.to_string());
        let mut n = 2;
        while target.exists() {
            target = base.join(format!("{attempt}-{n}"));
            n += 1;
        }
        std::fs::create_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        for (from, name) in parts {
            if from.exists() {
                let to = target.join(name);
                std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
            }
        }
        Ok(Some(target))
    }
}

/// Write `path` whole or not at all: a temporary file beside it, then a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// This machine's host name (for telling whose process a running cell is).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: CellState) -> CellStatus {
        CellStatus {
            state,
            attempt: 1,
            started: 10.0,
            ended: Some(12.5),
            exit_code: Some(1),
            error: Some("boom".into()),
            host: "h".into(),
            pid: 1,
            child_pid: None,
            slurm_job: None,
            gpus: None,
        }
    }

    #[test]
    fn statuses_round_trip_and_archive_with_the_run() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SweepDir::new(tmp.path());
        assert!(dir.read_status("a=1").unwrap().is_none());
        dir.write_status("a=1", &status(CellState::Failed)).unwrap();
        let back = dir.read_status("a=1").unwrap().unwrap();
        assert_eq!(back.state, CellState::Failed);
        assert_eq!(back.runtime(), 2.5);
        std::fs::create_dir_all(dir.cell_dir("a=1")).unwrap();
        std::fs::write(dir.cell_dir("a=1").join("run.json"), "{}").unwrap();
        let moved = dir.archive_attempt("a=1", 1).unwrap().unwrap();
        assert!(moved.join("run/run.json").is_file());
        assert!(moved.join("status.json").is_file());
        assert!(!dir.cell_dir("a=1").exists());
        assert!(dir.read_status("a=1").unwrap().is_none());
        assert!(dir.archive_attempt("a=1", 2).unwrap().is_none());
    }

    #[test]
    fn a_folder_without_sweep_json_is_named_as_such() {
        let tmp = tempfile::tempdir().unwrap();
        let err = SweepDir::new(tmp.path()).read_spec().unwrap_err().to_string();
        assert!(err.contains("is not a sweep directory"), "{err}");
    }
}
