//! `medbridge run` against a loopback hub (`HF_ENDPOINT`) and a loopback Zenodo (`MEDMNIST_URL`),
//! both served in this process on 127.0.0.1: downloads on first use, the cache afterwards,
//! `--offline`, the revision in run.json, and the sandbox around downloads.

#[path = "../runtime/src/hub/test_server.rs"]
mod test_server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use test_server::HubServer;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run a script in `dir` with a private HF_HOME and MEDMNIST_ROOT, the hub at `server`.
fn run(dir: &Path, server: &HubServer, source: &str, extra: &[&str]) -> Output {
    std::fs::write(dir.join("s.rhai"), source).unwrap();
    let out = dir.join(format!("run{}", std::fs::read_dir(dir).unwrap().count()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medbridge"));
    cmd.current_dir(dir).args(["run", "s.rhai", "--quiet", "--out"]).arg(&out).args(extra);
    for var in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "HF_HUB_CACHE"] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HOME", dir.join("hf"))
        .env("HF_ENDPOINT", server.url())
        .env("MEDMNIST_ROOT", dir.join("medmnist"))
        .env("MEDMNIST_URL", format!("{}/mirror", server.url()));
    let output = cmd.output().unwrap();
    std::fs::write(dir.join("last_out"), out.display().to_string()).unwrap();
    output
}

fn last_run_json(dir: &Path) -> serde_json::Value {
    let out = std::fs::read_to_string(dir.join("last_out")).unwrap();
    serde_json::from_str(&std::fs::read_to_string(Path::new(&out).join("run.json")).unwrap()).unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn tiny_server() -> HubServer {
    let server = HubServer::start();
    server.add_repo(
        "org/tiny",
        SHA,
        HubServer::folder_files(&root().join("tests/fixtures/qwen2_5_vl_tiny")),
        None,
    );
    server
}

#[test]
fn load_model_downloads_once_records_the_commit_and_works_offline_after() {
    let server = tiny_server();
    let dir = tempfile::tempdir().unwrap();
    let script = r#"let m = load_model("org/tiny", #{ revision: "main" }); print(m.info().total_params);"#;
    let o = run(dir.path(), &server, script, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let info = last_run_json(dir.path());
    let load = &info["settings"][0];
    assert_eq!(load["function"], "load_model");
    assert_eq!(load["settings"]["repo"], "org/tiny");
    assert_eq!(load["settings"]["revision"], "main");
    assert_eq!(load["settings"]["commit"], SHA);
    assert!(load["settings"]["downloaded"].as_array().unwrap().len() >= 5, "{load}");
    assert!(dir.path().join("hf/hub/models--org--tiny/refs/main").is_file());

    server.clear_log();
    let o = run(dir.path(), &server, script, &["--offline"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    let info = last_run_json(dir.path());
    assert_eq!(info["offline"], true);
    assert_eq!(info["settings"][0]["settings"]["downloaded"], serde_json::json!([]));

    let fresh = tempfile::tempdir().unwrap();
    let o = run(fresh.path(), &server, script, &["--offline"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let msg = text(&o);
    assert!(msg.contains("org/tiny") && msg.contains("--offline") && !msg.contains("panicked"), "{msg}");
    assert!(server.requests().is_empty());
}

#[test]
fn a_missing_model_on_the_hub_is_a_script_error_naming_it() {
    let server = tiny_server();
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &server, r#"load_model("org/nope");"#, &[]);
    assert_eq!(o.status.code(), Some(1));
    let msg = text(&o);
    assert!(msg.contains("org/nope") && msg.contains("404") && !msg.contains("panicked"), "{msg}");
}

#[test]
fn medmnist_downloads_into_medmnist_root_only() {
    let server = tiny_server();
    let dir = tempfile::tempdir().unwrap();
    // A synthetic file made by medbridge itself stands in for the Zenodo one.
    let o = run(
        dir.path(),
        &server,
        r#"let d = synth_medmnist(#{ tasks: ["breastmnist"], n_train: 4, n_val: 2, n_test: 3, seed: 1 }); print(d);"#,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let synth = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string()).join("breastmnist.npz");
    let bytes = std::fs::read(&synth).unwrap();
    server.add_raw("/mirror/breastmnist.npz", bytes.clone());
    let md5: String = {
        use md5::{Digest, Md5};
        Md5::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
    };
    let script =
        format!(r#"let ds = medmnist("breastmnist", #{{ download: true, md5: "{md5}" }}); print(ds.len());"#);
    let o = run(dir.path(), &server, &script, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "3");
    assert_eq!(std::fs::read(dir.path().join("medmnist/breastmnist.npz")).unwrap(), bytes);

    // Offline, a missing file is not fetched.
    let o = run(dir.path(), &server, r#"medmnist("dermamnist", #{ download: true });"#, &["--offline"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--offline"), "{}", text(&o));

    // A download aimed at another folder is refused.
    std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
    let o =
        run(dir.path(), &server, r#"medmnist("breastmnist", #{ download: true, root: "elsewhere" });"#, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("only into MEDMNIST_ROOT"), "{}", text(&o));
    assert!(std::fs::read_dir(dir.path().join("elsewhere")).unwrap().next().is_none());
}

#[test]
fn load_vqa_takes_a_hub_dataset_id() {
    let server = tiny_server();
    let parquet =
        std::fs::read(root().join("runtime/src/data/vqa/fixtures/medvlthinker/test.parquet")).unwrap();
    let files = BTreeMap::from([("data/test-00000-of-00001.parquet".to_string(), parquet)]);
    server.add_repo("datasets/UCSC-VLAA/MedVLThinker-Eval", SHA, files, None);
    let dir = tempfile::tempdir().unwrap();
    let script = r#"let t = load_vqa("medvlthinker", "UCSC-VLAA/MedVLThinker-Eval"); print(t.len());"#;
    let o = run(dir.path(), &server, script, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "4");
    let info = last_run_json(dir.path());
    assert_eq!(info["settings"][0]["settings"]["commit"], SHA);
    assert!(dir.path().join("hf/hub/datasets--UCSC-VLAA--MedVLThinker-Eval/snapshots").is_dir());
}
