//! `medbridge sweep` end to end: a 2×2 grid of a toy transfer experiment
//! (`tests/fixtures/sweep/tiny_transfer.rhai`, seconds per cell) through local workers — one cell
//! failing, its error in `status`, a resume rerunning only it — and through a real Slurm as one
//! job array; the gathered numbers against one process running the same seeds; the paper's
//! transfer sweep gathered from cells; Ctrl-C; `--dry-run`; and bad input.
//!
//! The Slurm test needs a cluster: `.ci/slurm/start-cluster.sh` starts a one-node one on this
//! machine (README, "Sweeps"). CI sets `MEDBRIDGE_TEST_SLURM=require`, and then a missing
//! cluster fails the test; without it the test prints why it skipped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const GRID: [&str; 4] = ["--grid", "source=dermamnist,pneumoniamnist", "--grid", "seed=0,1"];
const BROKEN: &str = "source=pneumoniamnist,seed=1";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn medbridge(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medbridge"));
    cmd.current_dir(cwd).env("MEDBRIDGE_CACHE", cwd.join("cache"));
    cmd
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A scratch folder holding a copy of the toy script.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("tests/fixtures/sweep/tiny_transfer.rhai"),
        dir.path().join("tiny_transfer.rhai"),
    )
    .unwrap();
    dir
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The toy experiment in one process for `seed`: every source in turn (computed once per test
/// binary, shared by the tests that compare against it).
fn one_process(seed: i64) -> &'static Value {
    static RESULTS: OnceLock<[Value; 2]> = OnceLock::new();
    let all = RESULTS.get_or_init(|| {
        let dir = workspace();
        [0, 1].map(|s| {
            let out = dir.path().join(format!("one-{s}"));
            let o = medbridge(dir.path())
                .args(["run", "tiny_transfer.rhai", "--quiet", "--set", &format!("seed={s}"), "--out"])
                .arg(&out)
                .output()
                .unwrap();
            assert!(o.status.success(), "one-process run, seed {s}:\n{}", text(&o));
            read_json(&out.join("transfer.json"))
        })
    });
    &all[seed as usize]
}

/// Numbers equal to the last bit the JSON round trip keeps.
fn assert_same_numbers(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{at}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_same_numbers(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(x), keys(y), "{at}: keys");
            for (k, v) in x {
                assert_same_numbers(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// The collected sweeps (`DIR/collected/collected.json`, one per seed) against one process.
fn assert_collected_match_one_process(sweep_dir: &Path) {
    let groups = read_json(&sweep_dir.join("collected/collected.json"));
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2, "one sweep per seed: {groups:?}");
    for g in groups {
        let seed = g["args"]["seed"].as_i64().unwrap();
        assert_eq!(g["label"], format!("seed={seed}"));
        let one = one_process(seed);
        assert_eq!(g["sweep"]["sources"], serde_json::json!(["dermamnist", "pneumoniamnist"]));
        for key in ["targets", "k", "d_acc1", "d_pass", "relation", "by_relation", "start", "trained"] {
            assert_same_numbers(&g["sweep"][key], &one[key], &format!("seed {seed} {key}"));
        }
    }
    // Not all zeros: the comparison has something to compare.
    let start = &groups[0]["sweep"]["start"]["acc1"];
    assert!(start.as_array().unwrap().iter().any(|v| v.as_f64().unwrap() > 0.0), "{start}");
}

fn status_of(sweep_dir: &Path, cell: &str) -> Value {
    read_json(&sweep_dir.join("status").join(format!("{cell}.json")))
}

#[test]
fn local_workers_record_a_failed_cell_and_a_resume_reruns_only_it() {
    let ws = workspace();
    let dir = ws.path();
    let sweep = || {
        let mut cmd = medbridge(dir);
        cmd.args(["sweep", "tiny_transfer.rhai"]).args(GRID).args([
            "--out",
            "sw",
            "--executor",
            "local:2",
            "--quiet",
        ]);
        cmd.arg("--collect");
        cmd.output().unwrap()
    };
    let first = sweep();
    assert_eq!(first.status.code(), Some(1), "one cell fails:\n{}", text(&first));
    let sw = dir.join("sw");
    let spec = read_json(&sw.join("sweep.json"));
    assert_eq!(spec["cells"].as_array().unwrap().len(), 4);
    assert_eq!(spec["cells"][3]["name"], BROKEN);
    assert_eq!(spec["cells"][3]["args"], serde_json::json!({"source": "pneumoniamnist", "seed": 1}));
    assert!(!sw.join("collected").exists(), "no collecting while a cell is missing");
    for cell in &spec["cells"].as_array().unwrap()[..3] {
        let name = cell["name"].as_str().unwrap();
        assert_eq!(status_of(&sw, name)["state"], "done", "{name}");
        assert!(sw.join("cells").join(name).join("transfer.json").is_file(), "{name}: its run directory");
    }
    assert_eq!(status_of(&sw, BROKEN)["state"], "failed");

    let status = medbridge(dir).args(["sweep", "status", "sw"]).output().unwrap();
    let table = text(&status);
    assert!(status.status.success(), "{table}");
    assert!(table.contains("3 done, 1 failed"), "{table}");
    let row = table.lines().find(|l| l.starts_with(BROKEN)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("failed") && row.contains(&format!("logs/{BROKEN}.log")), "{row}");
    assert!(
        table.contains("error: ") && table.contains("this cell is broken until fixed.txt exists"),
        "{table}"
    );
    assert!(table.contains("tiny_transfer.rhai:"), "the error keeps its script position: {table}");
    assert!(table.contains("d_acc1_mean="), "last metric of finished cells: {table}");

    let started: Vec<Value> = spec["cells"].as_array().unwrap()[..3]
        .iter()
        .map(|c| status_of(&sw, c["name"].as_str().unwrap())["started"].clone())
        .collect();
    std::fs::write(dir.join("fixed.txt"), "").unwrap();
    let second = sweep();
    let out = text(&second);
    assert!(second.status.success(), "{out}");
    assert!(out.contains("3 done, 1 to run"), "{out}");
    assert_eq!(out.matches(": started (worker").count(), 1, "only the failed cell reruns: {out}");
    for (cell, before) in spec["cells"].as_array().unwrap()[..3].iter().zip(&started) {
        assert_eq!(&status_of(&sw, cell["name"].as_str().unwrap())["started"], before, "{cell} ran again");
    }
    let rerun = status_of(&sw, BROKEN);
    assert_eq!((rerun["state"].as_str(), rerun["attempt"].as_u64()), (Some("done"), Some(2)));
    assert!(sw.join("attempts").join(BROKEN).join("1/status.json").is_file(), "the failed attempt is kept");
    assert!(read_json(&sw.join("sweep.json"))["cells"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["state"] == "done"));
    assert_collected_match_one_process(&sw);

    // A third run finds nothing to do.
    let third = sweep();
    assert!(third.status.success() && text(&third).contains("4 done, 0 to run"), "{}", text(&third));
}

/// Run `cmd` for at most `limit`, with stdout and stderr captured; `None` when it ran over
/// (and was killed).
fn output_within(mut cmd: Command, limit: Duration) -> (Option<std::process::ExitStatus>, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pipes = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .flatten()
        .map(|mut p| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = p.read_to_string(&mut s);
                s
            })
        })
        .collect();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = readers.into_iter().map(|r| r.join().unwrap_or_default()).collect::<Vec<_>>().join("");
    (status, out)
}

/// What a Slurm failure needs to be understood: the queue, the daemons' logs, the cells' logs.
fn slurm_diagnostics(sweep_dir: &Path) -> String {
    let mut out = String::new();
    for (what, args) in [("squeue", vec!["--all"]), ("sinfo", vec!["-N", "-l"])] {
        if let Ok(o) = Command::new(what).args(&args).output() {
            out += &format!("\n--- {what} {}\n{}", args.join(" "), text(&o));
        }
    }
    for log in ["/var/log/slurm/slurmctld.log", "/var/log/slurm/slurmd.log"] {
        let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("({e})"));
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        out += &format!("\n--- tail of {log}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    for sub in ["logs", "slurm", "status"] {
        for entry in std::fs::read_dir(sweep_dir.join(sub)).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            out += &format!("\n--- {}\n{text}", entry.path().display());
        }
    }
    out
}

/// Whether a Slurm cluster answers here. Under `MEDBRIDGE_TEST_SLURM` (CI) its absence is a
/// failure; otherwise the test says why it skips.
fn slurm_cluster() -> bool {
    let required = std::env::var_os("MEDBRIDGE_TEST_SLURM").is_some();
    let sbatch = Command::new("sbatch").arg("--version").output().is_ok_and(|o| o.status.success());
    let ping = Command::new("scontrol").arg("ping").output().map(|o| text(&o)).unwrap_or_default();
    if sbatch && ping.contains("UP") {
        return true;
    }
    let why = if !sbatch {
        "sbatch is not on PATH (apt-get install slurm-wlm munge)".to_string()
    } else {
        format!("slurmctld does not answer `scontrol ping`: {}", ping.trim())
    };
    assert!(
        !required,
        "MEDBRIDGE_TEST_SLURM is set, so this test needs a Slurm cluster, but {why}; start one with .ci/slurm/start-cluster.sh"
    );
    eprintln!(
        "skipping the Slurm sweep test: {why}; .ci/slurm/start-cluster.sh starts a one-node cluster here"
    );
    false
}

#[test]
fn slurm_runs_the_grid_as_one_job_array() {
    if !slurm_cluster() {
        return;
    }
    let ws = workspace();
    let dir = ws.path();
    std::fs::write(dir.join("fixed.txt"), "").unwrap();
    let mut cmd = medbridge(dir);
    cmd.args(["sweep", "tiny_transfer.rhai"]).args(GRID);
    cmd.args(["--out", "sw", "--executor", "slurm", "--slurm", "time=10:00", "--quiet", "--collect"]);
    cmd.env("MEDBRIDGE_SWEEP_POLL", "0.5");
    let sw = dir.join("sw");
    let (status, out) = output_within(cmd, Duration::from_secs(240));
    let failure = match status {
        None => Some("did not finish in 240 s".to_string()),
        Some(s) if !s.success() => Some(format!("failed ({s})")),
        Some(_) => None,
    };
    if let Some(failure) = failure {
        let diagnostics = slurm_diagnostics(&sw);
        // Leave the cluster empty for whoever runs next.
        let spec = std::fs::read_to_string(sw.join("sweep.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        for job in spec.iter().flat_map(|s| s["slurm"].as_array().cloned().unwrap_or_default()) {
            let _ = Command::new("scancel").arg(job["job_id"].as_str().unwrap_or_default()).status();
        }
        panic!("the Slurm sweep {failure}:\n{out}{diagnostics}");
    }
    let spec = read_json(&sw.join("sweep.json"));
    let submissions = spec["slurm"].as_array().unwrap();
    assert_eq!(submissions.len(), 1, "one array: {out}");
    let job = submissions[0]["job_id"].as_str().unwrap();
    assert_eq!(submissions[0]["array"], "0-3%4");
    let script = std::fs::read_to_string(sw.join("slurm/array-1.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-3%4") && script.contains("#SBATCH --time=10:00"), "{script}");
    for (i, cell) in spec["cells"].as_array().unwrap().iter().enumerate() {
        let name = cell["name"].as_str().unwrap();
        let status = status_of(&sw, name);
        assert_eq!(status["state"], "done", "{name}: {status}");
        assert_eq!(status["slurm_job"], format!("{job}_{i}"), "{name} ran as its own array task");
        assert!(sw.join("slurm").join(format!("{job}_{i}.out")).is_file(), "Slurm's output of task {i}");
    }
    assert_collected_match_one_process(&sw);
    let table = text(&medbridge(dir).args(["sweep", "status", "sw"]).output().unwrap());
    assert!(table.contains("4 done") && table.contains(&format!("done ({job}_3)")), "{table}");
}

#[test]
fn the_paper_transfer_sweep_gathers_its_cells_into_the_one_process_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let smoke = [
        "models=tests/fixtures/qwen2_5_vl_tiny",
        "synthetic=true",
        "limit=6",
        "k=2",
        "rl_steps=1",
        "max_new_tokens=4",
        "sources=dermamnist,organamnist",
        "targets=dermamnist,organamnist,organcmnist",
    ];
    let sets: Vec<String> = smoke.iter().flat_map(|s| ["--set".to_string(), s.to_string()]).collect();
    let script = "scripts/paper/transfer_sweep.rhai";
    let one = dir.path().join("one");
    let o = medbridge(&root())
        .env("MEDBRIDGE_CACHE", dir.path().join("cache"))
        .args(["run", script, "--quiet", "--out"])
        .arg(&one)
        .args(&sets)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let sw = dir.path().join("sw");
    let o = medbridge(&root())
        .env("MEDBRIDGE_CACHE", dir.path().join("cache"))
        .args([
            "sweep",
            script,
            "--grid",
            "source=dermamnist,organamnist",
            "--executor",
            "local:2",
            "--quiet",
            "--collect",
            "--out",
        ])
        .arg(&sw)
        .args(&sets)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let gathered = read_json(&sw.join("collected/transfer.json"));
    let whole = read_json(&one.join("transfer.json"));
    for key in ["sources", "targets", "d_acc1", "d_pass", "relation", "by_relation", "start", "trained"] {
        assert_same_numbers(&gathered[key], &whole[key], key);
    }
    assert!(sw.join("collected/report/report.md").is_file());
    assert!(sw.join("collected/report/transfer_d_acc1.png").is_file());
}

#[test]
fn ctrl_c_stops_local_workers_and_a_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slow.rhai"),
        "log_metric(\"started\", args.a);\nlet i = 0;\nloop { i += 1; }\n",
    )
    .unwrap();
    let mut child = medbridge(dir.path())
        .args(["sweep", "slow.rhai", "--grid", "a=1,2,3", "--out", "sw", "--executor", "local:2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sw = dir.path().join("sw");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Both workers have a cell running once both status files name a child process.
    loop {
        let running = ["a=1", "a=2"]
            .iter()
            .filter(|c| {
                std::fs::read_to_string(sw.join(format!("status/{c}.json")))
                    .is_ok_and(|t| t.contains("child_pid\": "))
            })
            .count();
        if running == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the cells did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Only the sweep gets the signal (as from `kill -INT`); it must pass it on to its children.
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the sweep did not stop within 30 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(out.contains("interrupted") && out.contains("1 never started"), "{out}");
    for cell in ["a=1", "a=2"] {
        let s = status_of(&sw, cell);
        assert_eq!(s["state"], "cancelled", "{cell}: {s}");
        let pid = s["child_pid"].as_u64().unwrap();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || cfg!(not(target_os = "linux")),
            "{cell}'s process {pid} still runs"
        );
    }
    let table = text(&medbridge(dir.path()).args(["sweep", "status", "sw"]).output().unwrap());
    assert!(table.contains("2 cancelled, 1 pending"), "{table}");
    let dry = medbridge(dir.path())
        .args(["sweep", "slow.rhai", "--grid", "a=1,2,3", "--out", "sw", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        text(&dry).contains("0 done, 3 to run"),
        "a rerun would start the cancelled and the unstarted cells: {}",
        text(&dry)
    );
}

#[test]
fn dry_run_prints_the_sbatch_script_without_slurm_or_files() {
    let ws = workspace();
    let empty = tempfile::tempdir().unwrap();
    let o = medbridge(ws.path())
        .env("PATH", empty.path())
        .args(["sweep", "tiny_transfer.rhai"])
        .args(GRID)
        .args(["--out", "sw", "--executor", "slurm", "--dry-run", "--device", "cpu", "--set", "k=2"])
        .args([
            "--slurm",
            "gpus=1",
            "--slurm",
            "partition=gpu",
            "--slurm",
            "time=2:00:00",
            "--slurm",
            "parallel=2",
        ])
        .args(["--slurm", "account=lab", "--slurm", "setup=module load cuda", "--slurm", "qos=high"])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let sw = ws.path().join("sw");
    for line in [
        "#!/bin/bash",
        "#SBATCH --array=0-3%2",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=2:00:00",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        &format!("#SBATCH --output={}/slurm/%A_%a.out", sw.display()),
        "#   3: source=pneumoniamnist,seed=1",
        "module load cuda",
        &format!(" sweep cell {} \"$SLURM_ARRAY_TASK_ID\"", sw.display()),
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
    assert!(!sw.exists(), "a dry run writes nothing");

    let local = medbridge(ws.path())
        .args(["sweep", "tiny_transfer.rhai"])
        .args(GRID)
        .args(["--out", "sw", "--dry-run", "--device", "cpu"])
        .output()
        .unwrap();
    let out = text(&local);
    assert!(local.status.success(), "{out}");
    assert!(
        out.contains("--set source=pneumoniamnist --set seed=1 --device=cpu"),
        "each cell's command, flags forwarded: {out}"
    );
    assert!(!sw.exists());
}

#[test]
fn bad_input_is_a_clear_usage_error() {
    let ws = workspace();
    let dir = ws.path();
    let empty_path = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.join("taken")).unwrap();
    std::fs::write(dir.join("taken/notes.txt"), "mine").unwrap();
    let cases: [(&[&str], &str); 12] = [
        (&[], "the grid is empty"),
        (&["--grid", "seed="], "`seed` has no values"),
        (&["--grid", "seed=0", "--grid", "seed=1"], "`seed` is given twice"),
        (&["--grid", "bad-name=1,2"], "is not a valid name"),
        (&["--grid", "seed=0,,1"], "an empty value"),
        (&["--grid", "seed=0,0"], "value `0` is given twice"),
        (&["--grid", "seed=0,1", "--set", "seed=3"], "given both as --grid and as --set"),
        (&["--grid", "seed=0", "--set", "novalue"], "expected name=value"),
        (&["--grid", "seed=0", "--executor", "pbs"], "expected local, local:N"),
        (&["--grid", "seed=0", "--slurm", "time=1:00"], "need --executor slurm"),
        (
            &["--grid", "seed=0", "--executor", "slurm", "--slurm", "array=1"],
            "written by medbridge sweep itself",
        ),
        (&["--grid", "seed=0", "--out", "taken"], "holds files but no sweep.json"),
    ];
    for (args, expected) in cases {
        let o = medbridge(dir).args(["sweep", "tiny_transfer.rhai"]).args(args).output().unwrap();
        let err = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: expected `{expected}` in {err}");
        assert!(!dir.join("sweeps").exists(), "{args:?} created the sweep directory");
    }
    let o = medbridge(dir).args(["sweep", "missing.rhai", "--grid", "seed=0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("script missing.rhai does not exist"), "{}", text(&o));

    let o = medbridge(dir)
        .env("PATH", empty_path.path())
        .args(["sweep", "tiny_transfer.rhai", "--grid", "seed=0", "--executor", "slurm"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("needs Slurm's `sbatch` on PATH"), "{}", text(&o));

    let o = medbridge(dir).args(["sweep", "status", "taken"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("is not a sweep directory"), "{}", text(&o));

    // A resume must be the same sweep.
    std::fs::write(dir.join("ok.rhai"), "print(args.x);\n").unwrap();
    let first =
        medbridge(dir).args(["sweep", "ok.rhai", "--grid", "x=1", "--out", "gather"]).output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    let other =
        medbridge(dir).args(["sweep", "ok.rhai", "--grid", "x=2", "--out", "gather"]).output().unwrap();
    assert_eq!(other.status.code(), Some(2));
    assert!(
        text(&other).contains("holds another sweep: grid `--grid x=1` (now `--grid x=2`)"),
        "{}",
        text(&other)
    );
}
