//! Smoke runs of the paper's scripts: each runs end to end on the tiny parity fixture with
//! synthetic MedMNIST or the committed VQA fixtures, so only the weights and the data differ from
//! the real run. Each must exit 0 and write its report.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `scripts/paper/<name>.rhai` from the repository root with `--set` pairs; returns the run dir.
fn smoke(name: &str, sets: &[&str]) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let script = root().join("scripts/paper").join(format!("{name}.rhai"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medbridge"));
    cmd.current_dir(root()).env("MEDBRIDGE_CACHE", out.path().join("cache")).arg("run").arg(&script);
    cmd.args(["--quiet", "--out"]).arg(out.path().join("run"));
    cmd.args(["--set", "models=tests/fixtures/qwen2_5_vl_tiny"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let result = cmd.output().unwrap();
    assert!(
        result.status.success(),
        "{name}:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

fn report_exists(dir: &Path) {
    let report = dir.join("run/report/report.md");
    assert!(report.is_file(), "no {}", report.display());
}

#[test]
fn probe_vision_towers_smoke() {
    let dir =
        smoke("probe_vision_towers", &["synthetic=true", "limit=32", "flags=pneumoniamnist,dermamnist"]);
    report_exists(dir.path());
    assert!(dir.path().join("run/report/probe_acc.png").is_file());
}

#[test]
fn support_boundary_smoke() {
    let dir = smoke("support_boundary", &["synthetic=true", "limit=6", "k=2", "max_new_tokens=4"]);
    report_exists(dir.path());
    assert!(dir.path().join("run/boundary.json").is_file());
}

#[test]
fn rl_from_base_vs_sft_smoke() {
    let sets = [
        "synthetic=true",
        "limit=6",
        "k=2",
        "sft_steps=1",
        "rl_steps=1",
        "flags=dermamnist",
        "max_new_tokens=4",
    ];
    report_exists(smoke("rl_from_base_vs_sft", &sets).path());
}

#[test]
fn transfer_sweep_smoke() {
    let sets = [
        "synthetic=true",
        "limit=6",
        "k=2",
        "rl_steps=1",
        "max_new_tokens=4",
        "sources=dermamnist,organamnist",
        "targets=dermamnist,organamnist,organcmnist",
    ];
    let dir = smoke("transfer_sweep", &sets);
    report_exists(dir.path());
    assert!(dir.path().join("run/report/transfer_d_acc1.png").is_file());
}

#[test]
fn pmc_vqa_balanced_grpo_smoke() {
    let sets = [
        "pmc=runtime/src/data/vqa/fixtures/pmc_vqa",
        "pmc_split=test",
        "eval_file=runtime/src/data/vqa/fixtures/medvlthinker/test.parquet",
        "n=2",
        "rl_steps=1",
        "k=2",
        "max_new_tokens=4",
    ];
    report_exists(smoke("pmc_vqa_balanced_grpo", &sets).path());
}

#[test]
fn six_benchmarks_smoke() {
    let sets =
        ["eval_file=runtime/src/data/vqa/fixtures/medvlthinker/test.parquet", "k=2", "max_new_tokens=4"];
    report_exists(smoke("six_benchmarks", &sets).path());
}
