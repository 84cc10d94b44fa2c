//! Script-level tests: each `tests/scripts/*.rhai` exercises one family the way users write
//! scripts and `throw`s on a failed expectation, so a failure reads as `file:line:col: message`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn every_script_test_passes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty());
    for script in scripts {
        let out_dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_medbridge"))
            .env("MEDBRIDGE_CACHE", out_dir.path().join("cache"))
            .args(["run", script.to_str().unwrap(), "--quiet", "--out"])
            .arg(out_dir.path().join("run"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
