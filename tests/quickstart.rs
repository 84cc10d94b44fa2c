//! The quickstart at reduced size (`--set limit=256`, half the default test questions) runs to the
//! end and writes every claim's verdict with its paired interval, and its report. It asserts no
//! verdict: a claim at one seed is a story, not a finding (scripts/toy_paper.rhai and
//! tests/toy_paper.rs judge the claims across seeds).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_quickstart_judges_every_claim_and_writes_its_report() {
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
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("claims.json")).unwrap()).unwrap();
    assert_eq!(written["seed"], 0);
    let claims = &written["claims"];
    for claim in [
        "c1_sft_raises_pass",
        "c2_grpo_raises_acc1",
        "c2_grpo_narrows_gap",
        "c2_grpo_raises_mean_reward",
        "c3_grpo_from_base_gains_little",
    ] {
        let c = &claims[claim];
        assert!(c["holds"].is_boolean(), "{claim} has no verdict:\n{stdout}");
        let (value, lo, hi) =
            (c["value"].as_f64().unwrap(), c["lo"].as_f64().unwrap(), c["hi"].as_f64().unwrap());
        assert!(lo <= value && value <= hi, "{claim}: {value} outside its interval [{lo}, {hi}]");
        assert!(c["rule"].as_str().unwrap().starts_with("holds when"), "{claim}: {c}");
    }
    assert!(claims["no_support_no_signal"]["holds"].is_boolean());
    assert!(run.join("report/report.md").is_file());
    assert!(run.join("report/pass_curves.png").is_file());
}
