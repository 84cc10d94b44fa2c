//! The quickstart's claims at reduced size: a run with `--set limit=256` (half the default test
//! questions) must show C1–C3 on the 95% intervals, as `claims.json` records them, and write its
//! report.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_quickstart_shows_c1_to_c3_at_reduced_size() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let result = Command::new(env!("CARGO_BIN_EXE_medbridge"))
        .current_dir(&root)
        .env("MEDBRIDGE_CACHE", out.path().join("cache"))
        .args(["run", "scripts/quickstart.rhai", "--quiet", "--set", "limit=256", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}{}", String::from_utf8_lossy(&result.stderr));
    let claims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("claims.json")).unwrap()).unwrap();
    for claim in [
        "c1_sft_raises_pass",
        "c2_grpo_raises_acc1",
        "c2_grpo_narrows_gap",
        "c3_grpo_from_base_gains_little",
        "c2_grpo_raises_mean_reward",
        "no_support_no_signal",
    ] {
        assert_eq!(claims[claim], serde_json::Value::Bool(true), "{claim} does not hold:\n{stdout}");
    }
    assert!(run.join("report/report.md").is_file());
    assert!(run.join("report/pass_curves.png").is_file());
}
