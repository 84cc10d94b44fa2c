//! `--executor slurm`: one sbatch job array, a task per cell, each task running
//! `medbridge sweep cell DIR $SLURM_ARRAY_TASK_ID` (the cell's `medbridge run`, its status file
//! and log). The array is followed with `squeue` and the cells' own status files: `sacct` needs
//! accounting, which many clusters (and the test cluster) do not run.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use medbridge_runtime::run::CancelFlag;
use medbridge_runtime::sweep::{now, CellState, CellStatus, SlurmSubmission, SweepSpec};

use super::plan::{shell_quote, shell_words, Plan, INTERRUPTED};
use super::status::{observe_all, CellView, Observed};
use crate::commands::{install_cancel_handler, SCRIPT_ERROR, USAGE_ERROR};

/// Seconds between two looks at the queue while following (`MEDBRIDGE_SWEEP_POLL` overrides).
const POLL_SECONDS: f64 = 5.0;

/// sbatch options we write ourselves, which a setting may not override.
const RESERVED: [&str; 5] = ["array", "chdir", "output", "wrap", "parsable"];

/// What goes into the sbatch script besides the array itself.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `--gres=gpu:G`; `None`: 1 when the cells run on a GPU device, else none.
    pub gpus: Option<u32>,
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// At most this many tasks at once (`--array=...%P`).
    pub parallel: Option<usize>,
    pub cpus: Option<u32>,
    pub mem: Option<String>,
    pub job_name: Option<String>,
    /// Shell lines run before the cell (`module load cuda`, `source venv/bin/activate`).
    pub setup: Vec<String>,
    /// Any other sbatch option: `#SBATCH --key=value` (`--key` when the value is empty).
    pub extra: Vec<(String, String)>,
}

impl Settings {
    /// The `[slurm]` section of a sweep config, then each `--slurm key=value` over it.
    pub fn from_sources(config: Option<&Path>, pairs: &[String]) -> Result<Self, String> {
        let mut settings = Settings::default();
        if let Some(path) = config {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
            for (line, key, value) in
                config_pairs(&text).map_err(|e| format!("--config {}: {e}", path.display()))?
            {
                settings
                    .apply(&key, &value)
                    .map_err(|e| format!("--config {}:{line}: {e}", path.display()))?;
            }
        }
        for pair in pairs {
            let (key, value) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
            settings.apply(key.trim(), value.trim()).map_err(|e| format!("--slurm `{pair}`: {e}"))?;
        }
        Ok(settings)
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("`{key}` is not an sbatch option name"));
        }
        if value.contains(['\n', '\r']) {
            return Err("a value must be one line".into());
        }
        let number = |what: &str| {
            value.parse::<u32>().map_err(|_| format!("{what} must be a whole number, got `{value}`"))
        };
        let key = key.replace('_', "-");
        match key.as_str() {
            "gpus" => self.gpus = Some(number("gpus")?),
            "time" => self.time = Some(value.into()),
            "partition" => self.partition = Some(value.into()),
            "account" => self.account = Some(value.into()),
            "parallel" => {
                let p = number("parallel")?;
                if p == 0 {
                    return Err("parallel must be at least 1".into());
                }
                self.parallel = Some(p as usize);
            }
            "cpus" | "cpus-per-task" => self.cpus = Some(number("cpus")?),
            "mem" => self.mem = Some(value.into()),
            "job-name" => self.job_name = Some(value.into()),
            "setup" => self.setup.push(value.into()),
            "gres" if value.starts_with("gpu:") => {
                self.gpus = Some(
                    value["gpu:".len()..].parse().map_err(|_| format!("gres `{value}`: expected gpu:G"))?,
                )
            }
            reserved if RESERVED.contains(&reserved) => {
                return Err(format!("`{reserved}` is written by medbridge sweep itself and cannot be set"))
            }
            other => {
                self.extra.retain(|(k, _)| k != other);
                self.extra.push((other.to_string(), value.to_string()));
            }
        }
        Ok(())
    }
}

/// `(line, key, value)` of each `key = value` line in the `[slurm]` section; `#` starts a comment
/// line and values may be double-quoted.
fn config_pairs(text: &str) -> Result<Vec<(usize, String, String)>, String> {
    let mut section: Option<String> = None;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            if name != "slurm" {
                return Err(format!(
                    "line {}: unknown section [{name}]; a sweep config has a [slurm] section",
                    i + 1
                ));
            }
            section = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected key = value, got `{line}`", i + 1));
        };
        if section.is_none() {
            return Err(format!("line {}: `{line}` is outside the [slurm] section", i + 1));
        }
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        out.push((i + 1, key.trim().to_string(), value.to_string()));
    }
    Ok(out)
}

/// `0-3`, `1,4-6`: cell indices as sbatch's `--array` list.
fn index_list(cells: &[usize]) -> String {
    let mut sorted = cells.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        parts.push(if sorted[i] == start { start.to_string() } else { format!("{start}-{}", sorted[i]) });
        i += 1;
    }
    parts.join(",")
}

fn uses_gpu(device: &str) -> bool {
    matches!(device.trim().to_ascii_lowercase().as_str(), "cuda" | "gpu" | "auto")
        || device.starts_with("cuda:")
}

/// The `--array=` value: the cells' indices, `%P` at most P at once (default: all).
fn array_spec(settings: &Settings, cells: &[usize]) -> String {
    format!("{}%{}", index_list(cells), settings.parallel.unwrap_or(cells.len()).max(1))
}

/// The sbatch script for `cells` (submission number `n`).
pub fn render(plan: &Plan, cells: &[usize], n: usize) -> String {
    let s = &plan.slurm;
    let root = plan.dir.root();
    let stem = plan.spec.script.file_stem().map_or("sweep".into(), |s| s.to_string_lossy().into_owned());
    let exe = std::env::current_exe().map_or_else(|_| "medbridge".into(), |p| p.display().to_string());
    let gpus = s.gpus.unwrap_or(u32::from(uses_gpu(&plan.device)));
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!(
            "# medbridge sweep of {}: {} cell(s), one array task each (submission {n}).",
            plan.spec.script.display(),
            cells.len()
        ),
        format!("# Written by: {}", shell_words(&plan.spec.command)),
        "# Each task runs its cell's `medbridge run` (the command is in sweep.json) and records the".into(),
        format!(
            "# result in {}/status/<cell>.json, its output in {}/logs/<cell>.log.",
            root.display(),
            root.display()
        ),
        format!("#SBATCH --job-name={}", s.job_name.clone().unwrap_or_else(|| format!("medbridge-{stem}"))),
        format!("#SBATCH --array={}", array_spec(s, cells)),
        format!("#SBATCH --output={}/%A_%a.out", plan.dir.slurm_dir().display()),
        format!("#SBATCH --chdir={}", plan.spec.cwd.display()),
    ];
    if gpus > 0 {
        lines.push(format!("#SBATCH --gres=gpu:{gpus}"));
    }
    let optional = [("time", &s.time), ("partition", &s.partition), ("account", &s.account), ("mem", &s.mem)];
    for (key, value) in optional {
        if let Some(v) = value {
            lines.push(format!("#SBATCH --{key}={v}"));
        }
    }
    if let Some(c) = s.cpus {
        lines.push(format!("#SBATCH --cpus-per-task={c}"));
    }
    for (key, value) in &s.extra {
        lines.push(if value.is_empty() {
            format!("#SBATCH --{key}")
        } else {
            format!("#SBATCH --{key}={value}")
        });
    }
    lines.push("#".into());
    lines.push("# array index: cell".into());
    for &i in cells {
        lines.push(format!("#   {i}: {}", plan.spec.cells[i].name));
    }
    lines.push("set -euo pipefail".into());
    lines.extend(s.setup.iter().cloned());
    lines.push(format!(
        "exec {} sweep cell {} \"$SLURM_ARRAY_TASK_ID\"",
        shell_quote(&exe),
        shell_quote(&root.display().to_string())
    ));
    lines.join("\n") + "\n"
}

/// Write the array script, submit it, and (with `follow`) watch it until every task has left
/// the queue; returns the exit code.
pub fn submit(plan: &mut Plan, cells: &[usize], watch: bool) -> u8 {
    let n = plan.spec.slurm.len() + 1;
    let script = render(plan, cells, n);
    let path = plan.dir.slurm_dir().join(format!("array-{n}.sbatch"));
    if let Err(e) = std::fs::create_dir_all(plan.dir.slurm_dir()).and_then(|_| std::fs::write(&path, &script))
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        return USAGE_ERROR;
    }
    let out = match Command::new("sbatch").arg("--parsable").arg(&path).current_dir(&plan.spec.cwd).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("error: cannot run sbatch: {e}");
            return USAGE_ERROR;
        }
    };
    if !out.status.success() {
        eprintln!(
            "error: sbatch refused {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return USAGE_ERROR;
    }
    // `--parsable` prints `<job id>` or `<job id>;<cluster>`.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let job = stdout.trim().split(';').next().unwrap_or_default().to_string();
    if job.is_empty() || !job.chars().all(|c| c.is_ascii_digit()) {
        eprintln!("error: sbatch printed no job id (got `{}`)", stdout.trim());
        return USAGE_ERROR;
    }
    println!("submitted Slurm job array {job} ({} cells): {}", cells.len(), path.display());
    plan.spec.slurm.push(SlurmSubmission {
        job_id: job.clone(),
        array: array_spec(&plan.slurm, cells),
        script: format!("slurm/array-{n}.sbatch"),
        cells: cells.to_vec(),
        submitted: now(),
    });
    for &i in cells {
        plan.spec.cells[i].slurm_job = Some(format!("{job}_{i}"));
        plan.spec.cells[i].state = Observed::Submitted.as_str().into();
    }
    if let Err(e) = plan.save() {
        eprintln!("error: {e}");
        return USAGE_ERROR;
    }
    if !watch {
        println!(
            "not following it (--no-follow): `medbridge sweep status {}` shows the cells, `scancel {job}` stops them",
            plan.dir.root().display()
        );
        return 0;
    }
    follow(plan, std::slice::from_ref(&job), cells)
}

/// The Slurm jobs holding `cells`.
pub fn jobs_of(spec: &SweepSpec, observed: &[CellView], cells: &[usize]) -> Vec<String> {
    let mut jobs: Vec<String> = cells
        .iter()
        .filter_map(|&i| {
            let task = observed[i].status.as_ref().and_then(|s| s.slurm_job.clone());
            task.or_else(|| spec.cells[i].slurm_job.clone())
        })
        .filter_map(|task| task.split('_').next().map(str::to_string))
        .collect();
    jobs.sort();
    jobs.dedup();
    jobs
}

/// Watch `jobs` until none of their tasks is queued or running, printing each of `cells` as its
/// state changes; then record a failure for a cell whose task left no result. Ctrl-C stops
/// watching (the jobs go on).
pub fn follow(plan: &mut Plan, jobs: &[String], cells: &[usize]) -> u8 {
    let job = jobs.join(",");
    let cancel = CancelFlag::new();
    install_cancel_handler(&cancel);
    let poll = std::env::var("MEDBRIDGE_SWEEP_POLL")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(POLL_SECONDS);
    let mut shown: HashMap<usize, String> = HashMap::new();
    let mut queue_errors = 0;
    loop {
        let queue = match queue(jobs) {
            Ok(q) => {
                queue_errors = 0;
                q
            }
            Err(e) => {
                queue_errors += 1;
                if queue_errors >= 5 {
                    eprintln!("error: cannot read the Slurm queue: {e}");
                    return SCRIPT_ERROR;
                }
                HashMap::new()
            }
        };
        let observed = observe_all(&plan.dir, &plan.spec);
        for &i in cells {
            let o = &observed[i];
            let text = match &o.detail {
                Some(d) if o.state.is_active() => format!("{} ({d})", o.state.as_str()),
                _ => o.state.as_str().to_string(),
            };
            if shown.get(&i) != Some(&text) {
                println!("  {}: {text}", plan.spec.cells[i].name);
                shown.insert(i, text);
            }
        }
        plan.record_states(&observed);
        if queue_errors == 0 && queue.is_empty() {
            break;
        }
        if cancel.is_cancelled() {
            println!(
                "\nstopped following; the array keeps running under Slurm (job {job}): \
                 `medbridge sweep status {}` shows the cells, `scancel {job}` stops them",
                plan.dir.root().display()
            );
            return INTERRUPTED;
        }
        std::thread::sleep(Duration::from_secs_f64(poll));
    }
    // Every task has left the queue: a cell without a final status never recorded one.
    for &i in cells {
        let name = plan.spec.cells[i].name.clone();
        let status = plan.dir.read_status(&name).ok().flatten();
        if status.as_ref().is_some_and(|s| s.state != CellState::Running) {
            continue;
        }
        let Some(task) = plan.spec.cells[i].slurm_job.clone() else { continue };
        let out = plan.dir.slurm_dir().join(format!("{task}.out"));
        let tail = std::fs::read_to_string(&out)
            .map(|t| {
                t.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            })
            .unwrap_or_default();
        let mut error = format!("Slurm task {task} left the queue without recording the cell's result");
        if let Some(state) = accounting_state(&task) {
            error += &format!(" (sacct: {state})");
        }
        error += &format!("; Slurm's output {}:", out.display());
        error += &if tail.is_empty() { " (empty)".to_string() } else { format!("\n{tail}") };
        let record = CellStatus {
            state: CellState::Failed,
            attempt: status.as_ref().map_or(1, |s| s.attempt),
            started: status.as_ref().map_or(now(), |s| s.started),
            ended: Some(now()),
            exit_code: None,
            error: Some(error),
            host: status.as_ref().map_or_else(String::new, |s| s.host.clone()),
            pid: status.as_ref().map_or(0, |s| s.pid),
            child_pid: status.as_ref().and_then(|s| s.child_pid),
            slurm_job: Some(task),
            gpus: status.as_ref().and_then(|s| s.gpus.clone()),
        };
        let _ = plan.dir.write_status(&name, &record);
        println!("  {name}: failed (no result recorded)");
    }
    0
}

/// One array task in `squeue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    pub state: String,
    pub reason: String,
}

/// The queued and running tasks of `jobs`, by `<job>_<index>`. A job Slurm no longer knows is
/// simply not there.
pub fn queue(jobs: &[String]) -> Result<HashMap<String, QueueEntry>, String> {
    let out = Command::new("squeue")
        .args(["--noheader", "--array", "--format=%i|%T|%R", "--jobs"])
        .arg(jobs.join(","))
        .output()
        .map_err(|e| format!("cannot run squeue: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("Invalid job id") {
            return Ok(HashMap::new());
        }
        return Err(format!("squeue: {}", stderr.trim()));
    }
    Ok(parse_queue(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_queue(text: &str) -> HashMap<String, QueueEntry> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(3, '|');
            let (id, state) = (parts.next()?, parts.next()?);
            let reason = parts.next().unwrap_or_default();
            Some((id.to_string(), QueueEntry { state: state.into(), reason: reason.into() }))
        })
        .collect()
}

/// What `sacct` says about a task, when the cluster keeps accounting.
fn accounting_state(task: &str) -> Option<String> {
    let out = Command::new("sacct")
        .args(["--noheader", "--parsable2", "--format=State,ExitCode", "--jobs", task])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.replace('|', ", exit "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists_compress_runs() {
        assert_eq!(index_list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(index_list(&[3, 1]), "1,3");
        assert_eq!(index_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }

    #[test]
    fn settings_come_from_config_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sweep.conf");
        std::fs::write(&conf, "# cluster\n[slurm]\npartition = \"gpu\"\ntime = 24:00:00\nqos = high\nsetup = module load cuda\n").unwrap();
        let s = Settings::from_sources(
            Some(&conf),
            &["time=1:00:00".into(), "parallel=4".into(), "exclusive".into()],
        )
        .unwrap();
        assert_eq!(s.partition.as_deref(), Some("gpu"));
        assert_eq!(s.time.as_deref(), Some("1:00:00"));
        assert_eq!(s.parallel, Some(4));
        assert_eq!(s.setup, ["module load cuda"]);
        assert_eq!(s.extra, [("qos".to_string(), "high".to_string()), ("exclusive".into(), String::new())]);
        let err = |pairs: &[&str]| {
            Settings::from_sources(None, &pairs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap_err()
        };
        assert!(err(&["array=0-3"]).contains("written by medbridge sweep"));
        assert!(err(&["gpus=two"]).contains("whole number"));
        assert!(err(&["parallel=0"]).contains("at least 1"));
        std::fs::write(&conf, "[grid]\nx = 1\n").unwrap();
        assert!(Settings::from_sources(Some(&conf), &[]).unwrap_err().contains("unknown section [grid]"));
    }

    #[test]
    fn squeue_lines_parse_per_task() {
        let q = parse_queue("12_0|RUNNING|node1\n12_3|PENDING|(Resources)\n");
        assert_eq!(q["12_0"], QueueEntry { state: "RUNNING".into(), reason: "node1".into() });
        assert_eq!(q["12_3"].state, "PENDING");
    }
}
