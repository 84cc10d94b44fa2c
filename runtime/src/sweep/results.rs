//! Gathering a sweep's cells into one value, wherever they ran: what `sweep_results(DIR)` gives
//! scripts.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::dir::SweepDir;
use crate::error::{Error, Result};

/// Reads a file as text: `Ok(None)` when it does not exist. The bindings pass the sandbox's
/// reader, so every file a sweep's results come from is checked like any other script read.
pub type ReadText<'a> = dyn Fn(&Path) -> Result<Option<String>> + 'a;

/// One map per cell, in grid order:
/// `{index, name, args, state, error, exit_code, runtime_s, attempt, slurm_job, dir, log,
///   run, metrics, json, report}` where `run` is the cell's `run.json`, `metrics` the last value
/// of each name in its `metrics.jsonl`, `json` every other top-level `*.json` file of its run
/// directory by file stem (what the script wrote with `write_json` or `Report.save`), and
/// `report` the path of `report/report.md` when there is one. A cell that never started has
/// state "pending" and `()` for what it would have written.
pub fn collect(dir: &SweepDir, read: &ReadText) -> Result<Vec<Value>> {
    let spec = dir.read_spec()?;
    let mut out = Vec::with_capacity(spec.cells.len());
    for cell in &spec.cells {
        let status = dir.read_status(&cell.name)?;
        let run_dir = dir.cell_dir(&cell.name);
        let run = read_json(read, &run_dir.join("run.json"))?;
        let metrics = match read(&run_dir.join("metrics.jsonl"))? {
            Some(text) => last_metrics(&text),
            None => Value::Null,
        };
        let mut files = Map::new();
        if let Ok(entries) = std::fs::read_dir(&run_dir) {
            let mut names: Vec<String> =
                entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            for name in names {
                let Some(stem) = name.strip_suffix(".json") else { continue };
                if stem == "run" || stem.starts_with('.') {
                    continue;
                }
                if let Some(value) = read_json(read, &run_dir.join(&name))? {
                    files.insert(stem.to_string(), value);
                }
            }
        }
        let report = run_dir.join("report/report.md");
        let state = status.as_ref().map_or("pending", |s| s.state.as_str());
        out.push(json!({
            "index": cell.index,
            "name": cell.name,
            "args": cell.args,
            "state": state,
            "error": status.as_ref().and_then(|s| s.error.clone()),
            "exit_code": status.as_ref().and_then(|s| s.exit_code),
            "runtime_s": status.as_ref().map(|s| s.runtime()),
            "attempt": status.as_ref().map(|s| s.attempt),
            "slurm_job": status.as_ref().and_then(|s| s.slurm_job.clone()).or_else(|| cell.slurm_job.clone()),
            "dir": run_dir.display().to_string(),
            "log": dir.log_path(&cell.name).display().to_string(),
            "run": run,
            "metrics": metrics,
            "json": if run_dir.is_dir() { Value::Object(files) } else { Value::Null },
            "report": report.is_file().then(|| report.display().to_string()),
        }));
    }
    Ok(out)
}

fn read_json(read: &ReadText, path: &Path) -> Result<Option<Value>> {
    match read(path)? {
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::msg(format!("{}: invalid JSON: {e}", path.display()))),
        None => Ok(None),
    }
}

/// The last value of each metric name in a `metrics.jsonl`; a torn last line (a run killed
/// mid-write) is skipped.
fn last_metrics(text: &str) -> Value {
    let mut last = Map::new();
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
        if let (Some(name), Some(value)) = (entry.get("name").and_then(Value::as_str), entry.get("value")) {
            last.insert(name.to_string(), value.clone());
        }
    }
    Value::Object(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::{CellRecord, CellState, CellStatus, GridAxis, SweepSpec, SWEEP_FORMAT};

    fn plain_read(path: &Path) -> Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    #[test]
    fn cells_carry_args_state_run_metrics_and_json_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SweepDir::new(tmp.path());
        let record = |index: usize, name: &str, seed: i64| CellRecord {
            index,
            name: name.into(),
            args: json!({"seed": seed}),
            dir: SweepDir::cell_rel(name),
            log: SweepDir::log_rel(name),
            state: "pending".into(),
            slurm_job: None,
            command: vec![],
        };
        let spec = SweepSpec {
            format: SWEEP_FORMAT,
            script: "/s.rhai".into(),
            cwd: "/".into(),
            grid: vec![GridAxis { name: "seed".into(), values: vec!["0".into(), "1".into()] }],
            set: vec![],
            run_flags: vec![],
            executor: "local:1".into(),
            command: vec![],
            created: 0.0,
            updated: 0.0,
            cells: vec![record(0, "seed=0", 0), record(1, "seed=1", 1)],
            slurm: vec![],
        };
        dir.write_spec(&spec).unwrap();
        let run = dir.cell_dir("seed=0");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("run.json"), r#"{"args": {"seed": 0}}"#).unwrap();
        std::fs::write(
            run.join("metrics.jsonl"),
            "{\"name\":\"acc\",\"value\":0.25,\"step\":0}\n{\"name\":\"acc\",\"value\":0.5,\"step\":1}\n{\"name\":",
        )
        .unwrap();
        std::fs::write(run.join("cell.json"), r#"{"x": [1, 2]}"#).unwrap();
        let status = CellStatus {
            state: CellState::Done,
            attempt: 1,
            started: 1.0,
            ended: Some(3.0),
            exit_code: Some(0),
            error: None,
            host: "h".into(),
            pid: 1,
            child_pid: None,
            slurm_job: Some("7_0".into()),
            gpus: None,
        };
        dir.write_status("seed=0", &status).unwrap();

        let cells = collect(&dir, &plain_read).unwrap();
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0]["state"], "done");
        assert_eq!(cells[0]["args"]["seed"], 0);
        assert_eq!(cells[0]["run"]["args"]["seed"], 0);
        assert_eq!(cells[0]["metrics"]["acc"], 0.5);
        assert_eq!(cells[0]["json"]["cell"]["x"][1], 2);
        assert_eq!(cells[0]["runtime_s"], 2.0);
        assert_eq!(cells[0]["slurm_job"], "7_0");
        assert_eq!(cells[1]["state"], "pending");
        assert!(cells[1]["run"].is_null() && cells[1]["json"].is_null());
    }
}
