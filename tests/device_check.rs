//! The prepared device check (`bench/device/check.sh`) in its CPU dry mode: every stage runs
//! on the tiny preset with this build's binary and check.json holds each result, so the script a
//! GPU session runs cannot rot between the sessions that are lent a GPU. Needs `python3` (the
//! stage runner and the summary are standard-library Python); the transformers and PEFT stages
//! record a skip where torch with a GPU is not importable.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_device_check_runs_dry_on_the_cpu() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("bash")
        .arg(root.join("bench/device/check.sh"))
        .arg("--dry")
        .env("MEDBRIDGE_BIN", env!("CARGO_BIN_EXE_medbridge"))
        .env("MEDBRIDGE_CHECK_OUT", out.path())
        .env("MEDBRIDGE_CACHE", out.path().join("cache"))
        .env_remove("MEDBRIDGE_CHECK_STAGES")
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{said}");
    let check: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("check.json")).unwrap()).unwrap();
    assert_eq!(check["mode"], "dry");
    for stage in ["parity", "sampling", "sampling_hf", "grpo", "grpo_peft"] {
        let s = &check["stages"][stage];
        assert_eq!(s["rc"], 0, "{stage}: {s}\n{said}");
        assert_eq!(s["timed_out"], false, "{stage}");
    }
    assert_eq!(check["parity"]["pass"], true, "{}", check["parity"]);
    let sampling = &check["sampling"]["medbridge"];
    assert_eq!(sampling["complete"], true);
    assert!(sampling["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(check["grpo_step"]["medbridge"]["seconds_per_step"].as_f64().unwrap() > 0.0);
    assert!(check["memory_plan"]["planned_peak_bytes"].as_u64().unwrap() > 0);
    assert!(check["memory_plan"]["measured_peak_bytes"].as_u64().unwrap() > 0);
    // The Python stages either measured or said why not.
    for side in [&check["sampling"]["transformers"], &check["grpo_step"]["pytorch_peft"]] {
        assert!(
            side.get("skipped").is_some()
                || side.get("seconds").is_some()
                || side.get("seconds_per_step").is_some(),
            "{side}"
        );
    }
    assert!(said.contains("== device check (dry)"), "{said}");
}
