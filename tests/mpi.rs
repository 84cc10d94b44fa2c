//! Data parallelism under `mpirun -np 2` against one process, on the tiny preset
//! (`tests/fixtures/mpi/data_parallel.rhai`): SFT and GRPO losses and final weights (and optimiser
//! state) within 1e-5, checkpoints of either resumable by the other, `evaluate` on two ranks
//! equal to one exactly; and the failures: a rank that leaves early or is killed ends the run
//! with an error naming it, ranks given different scripts or models are told so, and writes that
//! are not rank-safe are refused.
//!
//! These need the binary built with `--features mpi` and OpenMPI's `mpirun` (Debian:
//! `apt-get install libopenmpi-dev openmpi-bin libclang-dev clang`). CI runs
//! `cargo test --release --features mpi --test mpi` with `MEDBRIDGE_TEST_MPI=require`, and then
//! a missing piece fails the tests; without it they print why they skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/mpi").join(name)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Whether this binary has MPI and `mpirun` is here. Under `MEDBRIDGE_TEST_MPI` (CI) a missing
/// piece is a failure; otherwise the test says why it skips.
fn mpi_available() -> bool {
    let required = std::env::var_os("MEDBRIDGE_TEST_MPI").is_some();
    let version = Command::new("mpirun").arg("--version").output().map(|o| text(&o)).unwrap_or_default();
    let why = if !cfg!(feature = "mpi") {
        "the binary was built without MPI (cargo test --release --features mpi --test mpi)"
    } else if !version.contains("Open MPI") {
        "OpenMPI's mpirun is not on PATH (apt-get install libopenmpi-dev openmpi-bin libclang-dev clang)"
    } else {
        return true;
    };
    assert!(!required, "MEDBRIDGE_TEST_MPI is set, so this test needs MPI, but {why}");
    eprintln!("skipping the MPI test: {why}");
    false
}

/// `medbridge run` of `script` in `cwd`, as one process (`ranks == 1`) or under `mpirun -np ranks`.
fn medbridge(cwd: &Path, ranks: usize, script: &Path, out: &str, sets: &[&str]) -> Command {
    let exe = env!("CARGO_BIN_EXE_medbridge");
    let mut cmd = if ranks == 1 {
        Command::new(exe)
    } else {
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string(), exe]);
        c
    };
    cmd.current_dir(cwd).args(["run", script.to_str().unwrap(), "--quiet", "--out", out]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.env("MEDBRIDGE_CACHE", cwd.join("cache"));
    cmd
}

fn run_ok(cwd: &Path, ranks: usize, out: &str, sets: &[&str]) -> Value {
    let o = medbridge(cwd, ranks, &fixture("data_parallel.rhai"), out, sets).output().unwrap();
    assert!(o.status.success(), "{ranks} rank(s) {sets:?}:\n{}", text(&o));
    read_json(&cwd.join(out).join("result.json"))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|x| x.as_f64().unwrap()).collect()
}

fn assert_close(what: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{what}: {a:?} vs {b:?}");
    }
}

/// Every tensor of every `.safetensors` file of two checkpoints within 1e-5.
fn assert_same_checkpoint(a: &Path, b: &Path) {
    let files: Vec<PathBuf> = std::fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    assert!(files.len() >= 2, "weights and optimiser state in {}", a.display());
    for file in files {
        let load = |dir: &Path| -> HashMap<String, Tensor> {
            candle_core::safetensors::load(dir.join(file.file_name().unwrap()), &Device::Cpu).unwrap()
        };
        let (x, y) = (load(a), load(b));
        assert_eq!(x.len(), y.len(), "{}", file.display());
        for (name, t) in &x {
            let diff = (t - &y[name]).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            let diff = diff.to_dtype(candle_core::DType::F32).unwrap().to_scalar::<f32>().unwrap();
            assert!(diff <= 1e-5, "{name} in {}: max difference {diff}", file.display());
        }
    }
}

/// `mode` trained for 3 steps by one process and by two ranks: the same curves and final
/// checkpoint; then each one's step-1 checkpoint resumed by the other repeats the last 2 steps.
fn same_as_one_process(mode: &str, curves: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let set = [&format!("mode={mode}")[..], "steps=3"];
    let one = run_ok(cwd, 1, "one", &set);
    let two = run_ok(cwd, 2, "two", &set);
    assert_eq!((one["ranks"].as_i64(), two["ranks"].as_i64()), (Some(1), Some(2)));
    for curve in curves {
        assert_close(&format!("{mode} {curve}"), &floats(&one[*curve]), &floats(&two[*curve]));
    }
    let last = |run: &str| cwd.join(run).join(format!("checkpoints/{mode}/checkpoint-3"));
    assert_same_checkpoint(&last("one"), &last("two"));
    assert!(
        cwd.join("two/rank-1.log").is_file()
            && !cwd.join("two/checkpoints").join(format!("{mode}-2")).exists()
    );
    let metrics = std::fs::read_to_string(cwd.join("two/metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches(&format!("\"{mode}/loss\"")).count(), 3, "rank 0 alone logs metrics");

    for (from, ranks, out) in [("one", 2, "two-from-one"), ("two", 1, "one-from-two")] {
        let ckpt = cwd.join(from).join(format!("checkpoints/{mode}/checkpoint-1"));
        let resume = format!("resume={}", ckpt.display());
        let resumed = run_ok(cwd, ranks, out, &[set[0], set[1], &resume]);
        for curve in curves {
            let whole = floats(&one[*curve]);
            assert_close(
                &format!("{mode} {curve} resumed from {from}"),
                &whole[1..],
                &floats(&resumed[*curve]),
            );
        }
        assert_same_checkpoint(&last("one"), &last(out));
    }
}

#[test]
fn sft_on_two_ranks_equals_one_process_and_resumes_either_way() {
    if mpi_available() {
        same_as_one_process("sft", &["losses", "grad_norms", "token_accuracy"]);
    }
}

#[test]
fn grpo_on_two_ranks_equals_one_process_and_resumes_either_way() {
    if mpi_available() {
        same_as_one_process("grpo", &["losses", "rewards", "kl", "prompts_drawn", "zero_variance"]);
    }
}

#[test]
fn evaluate_on_two_ranks_equals_one_process_exactly() {
    if !mpi_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let one = run_ok(cwd, 1, "one", &["mode=evaluate"]);
    let two = run_ok(cwd, 2, "two", &["mode=evaluate"]);
    assert_eq!((&one["acc1"], &one["pass"]), (&two["acc1"], &two["pass"]));
    for file in ["report.json", "questions.csv"] {
        let read = |run: &str| std::fs::read_to_string(cwd.join(run).join("report").join(file)).unwrap();
        assert_eq!(read("one"), read("two"), "{file}");
    }
    let csv = std::fs::read_to_string(cwd.join("one/report/questions.csv")).unwrap();
    assert_eq!(csv.lines().count(), 8, "7 questions and a header:\n{csv}");
}

/// A paper script written for one process (`scripts/paper/support_boundary.rhai`, its smoke-run
/// settings) runs unchanged on two ranks: its evaluations shard, rank 0 alone writes the results
/// (`report::write` and the script's guarded writes), and they equal one process's.
#[test]
fn a_paper_script_runs_unchanged_on_two_ranks() {
    if !mpi_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = root().join("scripts/paper/support_boundary.rhai");
    let sets =
        ["models=tests/fixtures/qwen2_5_vl_tiny", "synthetic=true", "limit=6", "k=2", "max_new_tokens=4"];
    for (ranks, out) in [(1, "one"), (2, "two")] {
        let out = dir.path().join(out);
        let mut cmd = medbridge(&root(), ranks, &script, out.to_str().unwrap(), &sets);
        let o = cmd.env("MEDBRIDGE_CACHE", dir.path().join("cache")).output().unwrap();
        assert!(o.status.success(), "{ranks} rank(s):\n{}", text(&o));
    }
    let read = |run: &str, file: &str| std::fs::read_to_string(dir.path().join(run).join(file)).unwrap();
    assert_eq!(read("one", "boundary.json"), read("two", "boundary.json"));
    assert_eq!(read("one", "report/report.md"), read("two", "report/report.md"));
    assert!(dir.path().join("two/rank-1.log").is_file());
}

/// Run `cmd` to its end, failing the test if that takes longer than `limit`.
fn finish_within(mut cmd: Command, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("still running after {limit:?}: {}", text(&child.wait_with_output().unwrap()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

#[test]
fn a_rank_that_leaves_early_ends_the_run_with_an_error_naming_it() {
    if !mpi_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd =
        medbridge(dir.path(), 2, &fixture("data_parallel.rhai"), "run", &["mode=sft", "steps=3", "leave=1"]);
    cmd.env("MEDBRIDGE_RANK_TIMEOUT", "5");
    let (o, took) = finish_within(cmd, Duration::from_secs(120));
    let said = text(&o);
    assert!(!o.status.success(), "{said}");
    assert!(said.contains("rank 0 of 2: rank 1 did not arrive") && said.contains("within 5 s"), "{said}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let log = std::fs::read_to_string(dir.path().join("run/output.log")).unwrap();
    assert!(log.contains("rank 1 did not arrive"), "the error is in the run's log:\n{log}");
}

#[test]
fn a_killed_rank_ends_the_run_and_is_named() {
    if !mpi_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd =
        medbridge(dir.path(), 2, &fixture("data_parallel.rhai"), "run", &["mode=grpo", "steps=200"]);
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Rank 1 says its pid in its log once it has started.
    let log = dir.path().join("run/rank-1.log");
    let pid = loop {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(pid) =
            said.split("pid ").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        {
            if !pid.is_empty() {
                break pid.to_string();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "rank 1 never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(2));
    let killed = Command::new("kill").args(["-9", &pid]).status().unwrap();
    assert!(killed.success());
    let stopped = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if stopped.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("rank 0 kept running after rank 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    let said = text(&o);
    assert!(!o.status.success(), "{said}");
    assert!(said.contains("rank 1") && said.contains("signal 9"), "{said}");
}

#[test]
fn ranks_given_different_scripts_or_models_are_told_which() {
    if !mpi_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let exe = env!("CARGO_BIN_EXE_medbridge");
    let script = fixture("unsafe.rhai");
    let rank = |set: &str| format!("{exe} run {} --quiet --set what={set}", script.display());
    // Two programs under one mpirun (`a : b`), one `--set` apart.
    let line = format!(
        "mpirun --allow-run-as-root --oversubscribe -np 1 {} --out {o} : -np 1 {} --out {o}",
        rank("model"),
        rank("write"),
        o = cwd.join("differ").display()
    );
    let o = Command::new("sh").args(["-c", &line]).current_dir(cwd).output().unwrap();
    let said = text(&o);
    assert!(!o.status.success(), "{said}");
    assert!(
        said.contains("ranks disagree about the script and its --set arguments: rank 1 differs from rank 0"),
        "{said}"
    );

    let run = |what: &str| {
        let o = medbridge(cwd, 2, &script, what, &[&format!("what={what}")]).output().unwrap();
        assert!(!o.status.success(), "{what}: {}", text(&o));
        text(&o)
    };
    let said = run("model");
    assert!(
        said.contains("ranks disagree about the model given to sft: rank 1 differs from rank 0"),
        "{said}"
    );
    let said = run("write");
    assert!(said.contains("writing `notes.txt` is not rank-safe") && said.contains("rank 1 of 2"), "{said}");

    for command in [&["repl"][..], &["sweep", "x.rhai", "--grid", "a=1"]] {
        let mut cmd = Command::new("mpirun");
        cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", "2", exe]).args(command).current_dir(cwd);
        let o = cmd.stdin(Stdio::null()).output().unwrap();
        let said = text(&o);
        assert!(!o.status.success(), "{said}");
        assert!(said.contains(&format!("`medbridge {}` is not rank-safe", command[0])), "{said}");
    }
}
