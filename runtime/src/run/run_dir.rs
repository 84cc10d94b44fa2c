//! A run directory: everything one `medbridge run` leaves behind.
//!
//! `script.rhai` + `script.sha256` (what ran), `run.json` (args, device, seed, versions),
//! `metrics.jsonl` (every logged value, stamped with time and step) and `output.log` (what the
//! script printed). A run can be re-checked and compared without the terminal it ran in.
//!
//! Under MPI rank 0 creates the directory and writes all of this; every other rank attaches to it
//! ([`RunDir::attach_rank`]) and writes only its own `rank-N.log` (what it printed and warned),
//! so the run directory has one writer per file.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub struct RunDir {
    path: PathBuf,
    started: Instant,
    /// `None` on a rank other than 0: its metrics are rank 0's.
    metrics: Option<Mutex<BufWriter<File>>>,
    output: Mutex<BufWriter<File>>,
    /// `output.log`, or `rank-N.log` on rank N > 0.
    output_name: String,
    /// 0, or the rank of a process attached to rank 0's directory.
    rank: usize,
    steps: Mutex<HashMap<String, u64>>,
    said_once: Mutex<HashSet<String>>,
    /// Held while `run.json` is read and rewritten, so two records never interleave.
    run_json: Mutex<()>,
}

impl std::fmt::Debug for RunDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunDir({})", self.path.display())
    }
}

impl RunDir {
    /// Create `out`, or `runs/<stem>-<UTC timestamp>` under the current directory.
    pub fn create(out: Option<&Path>, stem: &str) -> Result<Self> {
        let path = match out {
            Some(p) => p.to_path_buf(),
            None => unique(Path::new("runs").join(format!("{stem}-{}", utc_stamp(SystemTime::now())))),
        };
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        let path = path.canonicalize().map_err(|e| Error::io(&path, e))?;
        let open = |name: &str| -> Result<BufWriter<File>> {
            let p = path.join(name);
            File::create(&p).map(BufWriter::new).map_err(|e| Error::io(&p, e))
        };
        Ok(RunDir {
            metrics: Some(Mutex::new(open("metrics.jsonl")?)),
            output: Mutex::new(open("output.log")?),
            output_name: "output.log".into(),
            rank: 0,
            path,
            started: Instant::now(),
            steps: Mutex::new(HashMap::new()),
            said_once: Mutex::new(HashSet::new()),
            run_json: Mutex::new(()),
        })
    }

    /// Rank `rank` (> 0) of an MPI run joining the directory rank 0 created at `path`: it logs to
    /// `rank-{rank}.log` there and records nothing else.
    pub fn attach_rank(path: &Path, rank: usize) -> Result<Self> {
        if rank == 0 {
            crate::bail!("rank 0 creates the run directory; it does not attach to one");
        }
        let path = path.canonicalize().map_err(|e| Error::io(path, e))?;
        let output_name = format!("rank-{rank}.log");
        let log = path.join(&output_name);
        let output = File::create(&log).map(BufWriter::new).map_err(|e| Error::io(&log, e))?;
        Ok(RunDir {
            metrics: None,
            output: Mutex::new(output),
            output_name,
            rank,
            path,
            started: Instant::now(),
            steps: Mutex::new(HashMap::new()),
            said_once: Mutex::new(HashSet::new()),
            run_json: Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this process writes the run's records (rank 0, or a run of one process).
    pub fn is_writer(&self) -> bool {
        self.rank == 0
    }

    /// Keep a copy of the script and its SHA-256, so a result can be traced to its exact source.
    pub fn record_script(&self, source: &str) -> Result<String> {
        let digest = Sha256::digest(source.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if !self.is_writer() {
            return Ok(hex);
        }
        self.write("script.rhai", source.as_bytes())?;
        self.write("script.sha256", format!("{hex}  script.rhai\n").as_bytes())?;
        Ok(hex)
    }

    /// Write `run.json` (resolved args, device, seed, ...).
    pub fn record_run(&self, info: &Value) -> Result<()> {
        if !self.is_writer() {
            return Ok(());
        }
        let _held = self.run_json.lock().unwrap_or_else(|p| p.into_inner());
        self.write_atomically("run.json", serde_json::to_string_pretty(info)?.as_bytes())
    }

    /// Append `{"function": function, "settings": settings}` to `run.json`'s `settings` list: the
    /// resolved settings of a call (a preset and what overrode it), so a run says what it ran
    /// with. The file is rewritten through a temporary file and a rename, so a reader never
    /// sees half of it.
    pub fn record_settings(&self, function: &str, settings: Value) -> Result<()> {
        if !self.is_writer() {
            return Ok(());
        }
        let _held = self.run_json.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path.join("run.json");
        let mut info = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let Some(fields) = info.as_object_mut() else {
            crate::bail!("{}: run.json is not a JSON object", path.display());
        };
        let list = fields.entry("settings").or_insert_with(|| json!([]));
        let Some(list) = list.as_array_mut() else {
            crate::bail!("{}: run.json's `settings` is not a list", path.display());
        };
        list.push(json!({"function": function, "settings": settings}));
        self.write_atomically("run.json", serde_json::to_string_pretty(&info)?.as_bytes())
    }

    /// Write `name` whole or not at all: a temporary file beside it, then a rename.
    fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let tmp = self.path.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        let p = self.path.join(name);
        std::fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.path.join(name);
        std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))
    }

    /// Append one metric line. Without an explicit step, each name counts its own steps from 0.
    pub fn log_metric(&self, name: &str, value: Value, step: Option<u64>) -> Result<()> {
        let Some(metrics) = &self.metrics else { return Ok(()) };
        let step = {
            let mut steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
            let counter = steps.entry(name.to_string()).or_insert(0);
            let s = step.unwrap_or(*counter);
            *counter = s + 1;
            s
        };
        let line =
            json!({"time": self.started.elapsed().as_secs_f64(), "step": step, "name": name, "value": value});
        let mut w = metrics.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(w, "{line}")
            .and_then(|_| w.flush())
            .map_err(|e| Error::io(self.path.join("metrics.jsonl"), e))
    }

    /// Whether this run meets `key` for the first time, so a warning (a deprecation, say) is
    /// given once per run rather than once per call.
    pub fn first_time(&self, key: &str) -> bool {
        self.said_once.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string())
    }

    /// Append a line of script output to `output.log` (`rank-N.log` on rank N > 0).
    pub fn log_output(&self, line: &str) -> Result<()> {
        let mut w = self.output.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(w, "{line}")
            .and_then(|_| w.flush())
            .map_err(|e| Error::io(self.path.join(&self.output_name), e))
    }
}

/// `path`, or `path-2`, `path-3`, ... when two runs start in the same second.
fn unique(path: PathBuf) -> PathBuf {
    if !path.exists() {
        return path;
    }
    (2..).map(|i| PathBuf::from(format!("{}-{i}", path.display()))).find(|p| !p.exists()).unwrap_or(path)
}

/// `20261121T223000Z` for a moment in UTC.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_stamps_known_dates() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(1_795_300_200)), "20261121T223000Z");
        assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "20000229T000000Z");
    }

    #[test]
    fn metrics_lines_count_steps_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(Some(&dir.path().join("r")), "x").unwrap();
        run.log_metric("loss", json!(1.5), None).unwrap();
        run.log_metric("acc", json!(0.5), None).unwrap();
        run.log_metric("loss", json!(1.0), None).unwrap();
        run.log_metric("loss", json!(0.5), Some(10)).unwrap();
        let text = std::fs::read_to_string(run.path().join("metrics.jsonl")).unwrap();
        let steps: Vec<(String, u64)> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|v| (v["name"].as_str().unwrap().to_string(), v["step"].as_u64().unwrap()))
            .collect();
        let expected = [("loss", 0), ("acc", 0), ("loss", 1), ("loss", 10)];
        assert_eq!(steps, expected.map(|(n, s)| (n.to_string(), s)));
    }

    #[test]
    fn settings_are_appended_to_run_json_whole() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(Some(&dir.path().join("r")), "x").unwrap();
        run.record_run(&json!({"seed": 7})).unwrap();
        run.record_settings("grpo", json!({"lr": 5e-7})).unwrap();
        run.record_settings("evaluate", json!({"n": 16})).unwrap();
        let info: Value =
            serde_json::from_str(&std::fs::read_to_string(run.path().join("run.json")).unwrap()).unwrap();
        assert_eq!(info["seed"], 7);
        assert_eq!(
            info["settings"],
            json!([{"function": "grpo", "settings": {"lr": 5e-7}}, {"function": "evaluate", "settings": {"n": 16}}])
        );
        assert!(!run.path().join(".run.json.tmp").exists());
    }

    #[test]
    fn another_rank_writes_only_its_own_log() {
        let dir = tempfile::tempdir().unwrap();
        let root = RunDir::create(Some(&dir.path().join("r")), "x").unwrap();
        let other = RunDir::attach_rank(root.path(), 1).unwrap();
        other.log_output("hello from rank 1").unwrap();
        other.log_metric("loss", json!(1.0), Some(0)).unwrap();
        other.record_run(&json!({"seed": 7})).unwrap();
        other.record_script("print(1);").unwrap();
        let log = std::fs::read_to_string(root.path().join("rank-1.log")).unwrap();
        assert_eq!(log, "hello from rank 1\n");
        assert_eq!(std::fs::read_to_string(root.path().join("metrics.jsonl")).unwrap(), "");
        assert!(!root.path().join("run.json").exists() && !root.path().join("script.rhai").exists());
        assert!(!other.is_writer() && RunDir::attach_rank(root.path(), 0).is_err());
    }

    #[test]
    fn script_copy_carries_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(Some(&dir.path().join("r")), "x").unwrap();
        let hex = run.record_script("print(1);").unwrap();
        assert_eq!(hex.len(), 64);
        let line = std::fs::read_to_string(run.path().join("script.sha256")).unwrap();
        assert!(line.starts_with(&hex));
    }
}
