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

#[test]
fn the_readme_tour_runs_as_written() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("```rhai\n").expect("README has a rhai block") + "```rhai\n".len();
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tour.rhai"), block).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_medbridge"))
        .env("MEDBRIDGE_CACHE", dir.path().join("cache"))
        .args(["run", "tour.rhai", "--quiet", "--out", "run"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("run/support.png").is_file());
}
