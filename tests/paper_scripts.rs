//! Smoke runs of the paper's scripts: each runs end to end on the tiny parity fixture with
//! synthetic MedMNIST or the committed VQA fixtures, so only the weights and the data differ from
//! the real run. Each must exit 0 and write its report.
//!
//! The arguments are the script's own `//! Smoke run (CI): `--set a=b ...`` header line, read
//! here and run exactly as written, so the header a reader copies and the run CI checks cannot
//! drift apart.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const SMOKE_MARKER: &str = "Smoke run (CI):";

/// The `--set` pairs of a script's smoke-run header: the code span after `Smoke run (CI):`, which
/// may wrap onto the following `//!` lines. Anything in it other than `--set a=b` is an error, so
/// the header cannot say more than the test runs.
fn smoke_sets(script: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(script).map_err(|e| format!("{}: {e}", script.display()))?;
    let mut lines = text.lines().skip_while(|l| !(l.starts_with("//!") && l.contains(SMOKE_MARKER)));
    let first =
        lines.next().ok_or_else(|| format!("{}: no `//! {SMOKE_MARKER}` header line", script.display()))?;
    let mut header = first.split_once(SMOKE_MARKER).map_or("", |(_, rest)| rest).to_string();
    for line in lines.map_while(|l| l.strip_prefix("//!")) {
        if header.matches('`').count() >= 2 {
            break;
        }
        header += " ";
        header += line;
    }
    if header.matches('`').count() < 2 {
        return Err(format!("{}: the smoke-run line needs a closing backtick", script.display()));
    }
    let span = header.split('`').nth(1).unwrap_or_default();
    let words: Vec<&str> = span.split_whitespace().collect();
    words
        .chunks(2)
        .map(|pair| match pair {
            ["--set", set] if set.contains('=') => Ok(set.to_string()),
            other => {
                Err(format!("{}: expected `--set a=b` in the smoke run, got {other:?}", script.display()))
            }
        })
        .collect()
}

/// Run `scripts/paper/<name>.rhai` from the repository root with its header's smoke-run
/// arguments; returns the directory holding the run dir.
fn smoke(name: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let script = root().join("scripts/paper").join(format!("{name}.rhai"));
    let sets = smoke_sets(&script).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medbridge"));
    cmd.current_dir(root()).env("MEDBRIDGE_CACHE", out.path().join("cache")).arg("run").arg(&script);
    cmd.args(["--quiet", "--out"]).arg(out.path().join("run"));
    for s in &sets {
        cmd.args(["--set", s]);
    }
    let result = cmd.output().unwrap();
    assert!(
        result.status.success(),
        "{name} {sets:?}:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

/// The scripts with a smoke test below; a paper script missing here fails `every_paper_script...`.
const SMOKE_TESTED: [&str; 6] = [
    "pmc_vqa_balanced_grpo",
    "probe_vision_towers",
    "rl_from_base_vs_sft",
    "six_benchmarks",
    "support_boundary",
    "transfer_sweep",
];

#[test]
fn every_paper_script_declares_its_smoke_run_and_has_a_test() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root().join("scripts/paper")).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rhai") {
            let sets = smoke_sets(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                sets.iter().any(|s| s == "models=tests/fixtures/qwen2_5_vl_tiny"),
                "{}: the smoke run must use the tiny fixture, got {sets:?}",
                path.display()
            );
            names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    names.sort();
    assert_eq!(names, SMOKE_TESTED, "each paper script needs a smoke test below");
}

#[test]
fn smoke_lines_may_wrap_and_hold_only_set_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let write = |text: &str| {
        let p = dir.path().join("s.rhai");
        std::fs::write(&p, text).unwrap();
        smoke_sets(&p)
    };
    let wrapped = "//! x\n//! Smoke run (CI): `--set a=1\n//! --set b=x,y`.\n\nlet z = 1;\n";
    assert_eq!(write(wrapped).unwrap(), ["a=1", "b=x,y"]);
    assert!(write("//! no smoke line\n").unwrap_err().contains("no `//! Smoke run (CI):`"));
    assert!(write("//! Smoke run (CI): `--set a=1 --quick`.\n").unwrap_err().contains("--quick"));
    assert!(write("//! Smoke run (CI): `--set a=1\nlet z = 1;\n").unwrap_err().contains("closing backtick"));
}

fn report_exists(dir: &Path) {
    let report = dir.join("run/report/report.md");
    assert!(report.is_file(), "no {}", report.display());
}

#[test]
fn probe_vision_towers_smoke() {
    let dir = smoke("probe_vision_towers");
    report_exists(dir.path());
    assert!(dir.path().join("run/report/probe_acc.png").is_file());
}

#[test]
fn support_boundary_smoke() {
    let dir = smoke("support_boundary");
    report_exists(dir.path());
    assert!(dir.path().join("run/boundary.json").is_file());
}

#[test]
fn rl_from_base_vs_sft_smoke() {
    report_exists(smoke("rl_from_base_vs_sft").path());
}

#[test]
fn transfer_sweep_smoke() {
    let dir = smoke("transfer_sweep");
    report_exists(dir.path());
    assert!(dir.path().join("run/report/transfer_d_acc1.png").is_file());
}

#[test]
fn pmc_vqa_balanced_grpo_smoke() {
    report_exists(smoke("pmc_vqa_balanced_grpo").path());
}

#[test]
fn six_benchmarks_smoke() {
    report_exists(smoke("six_benchmarks").path());
}
