//! The `medbridge` binary as a user meets it: checking every shipped script, the bad-script
//! corpus, exit codes, `--set` arguments, the sandbox, determinism and the generated docs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn medbridge(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medbridge")).args(args).current_dir(cwd).output().expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn rhai_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(rhai_files(&p));
        } else if p.extension().is_some_and(|e| e == "rhai") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Write `source` as a script in a fresh directory and run it there.
fn run_source(source: &str, extra: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.rhai"), source).unwrap();
    let mut args = vec!["run", "s.rhai", "--quiet", "--out", "run"];
    args.extend_from_slice(extra);
    (medbridge(&args, dir.path()), dir)
}

#[test]
fn every_script_and_stdlib_module_passes_check() {
    let mut files = rhai_files(&root().join("scripts"));
    files.extend(rhai_files(&root().join("stdlib")));
    assert!(!files.is_empty());
    for f in files {
        let out = medbridge(&["check", f.to_str().unwrap()], &root());
        assert!(out.status.success(), "{}: {}", f.display(), stderr(&out));
    }
}

/// Address space one corpus case may map (`ulimit -v`, in KiB): 4 GiB, about ten times the
/// 0.37 GB a tiny-model run maps at its peak on two cores (`VmPeak` of an evaluate, a probe, a
/// plot and a generate), and far below what the corpus provokes (tens of GiB to terabytes). Under
/// it the default memory budget is 3 GiB. CUDA maps far more address space, so the CUDA build runs
/// the corpus without it.
const CORPUS_ADDRESS_SPACE_KIB: u64 = 4 << 20;

/// Wall-clock bound on one corpus case (the slowest, a string or array doubling to its limit in
/// a debug build, takes a few seconds).
const CORPUS_SECONDS: u64 = 120;

/// Run the binary under an address-space limit (when given) and a wall-clock limit; past the
/// time limit the process is killed and the test fails.
fn medbridge_bounded(args: &[&str], cwd: &Path, address_space_kib: Option<u64>, limit: Duration) -> Output {
    let bin = env!("CARGO_BIN_EXE_medbridge");
    let mut cmd = match address_space_kib {
        Some(kib) => {
            let mut sh = Command::new("sh");
            sh.arg("-c").arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\"")).arg(bin);
            sh
        }
        None => Command::new(bin),
    };
    cmd.args(args).current_dir(cwd).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("binary runs");
    wait_bounded(child, limit, &format!("{args:?}")).0
}

/// Wait for `child` at most `limit`, reading its output on the side so a full pipe cannot stall
/// it; also returns how long it took.
fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> (Output, Duration) {
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    (Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }, took)
}

/// Every case of `tests/bad_scripts/` fails as its `// expect:` header says (exit code 1, the
/// position and a message naming the culprit), under an address-space limit and a time limit,
/// without a panic, an abort or an overflow: the issue-20 defects among them (allocations that
/// aborted, a canvas that overflowed, an import cycle that overflowed the stack) stay errors.
#[test]
fn bad_scripts_fail_with_file_line_col_and_exit_1() {
    let corpus = rhai_files(&root().join("tests/bad_scripts"));
    assert!(corpus.len() >= 5);
    let address_space = (!cfg!(feature = "cuda")).then_some(CORPUS_ADDRESS_SPACE_KIB);
    let bounded =
        |args: &[&str]| medbridge_bounded(args, &root(), address_space, Duration::from_secs(CORPUS_SECONDS));
    for f in corpus {
        let text = std::fs::read_to_string(&f).unwrap();
        let header = text.lines().next().unwrap().strip_prefix("// expect: ").expect("corpus header");
        let mut parts = header.splitn(3, ' ');
        let (via, at, message) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let out_dir = dir.path().join("run");
        let path = f.to_str().unwrap();
        let args: Vec<&str> = match via {
            "check" => vec!["check", path],
            _ => vec!["run", path, "--quiet", "--out", out_dir.to_str().unwrap()],
        };
        let out = bounded(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", f.display());
        assert!(err.contains(&format!("{path}:{at}: ")), "{}: expected {at} in {err}", f.display());
        assert!(err.contains(message), "{}: expected `{message}` in {err}", f.display());
        for crash in ["panicked", "abort", "overflow"] {
            assert!(!err.contains(crash) && !stdout(&out).contains(crash), "{}: {err}", f.display());
        }
        if via == "check" {
            // Errors a compile can see are also reported before a run starts anything.
            let run = bounded(&["run", path, "--quiet", "--out", out_dir.to_str().unwrap()]);
            assert_eq!(run.status.code(), Some(1));
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.rhai"), "print(1);").unwrap();
    let cases: [&[&str]; 4] = [
        &["run", "s.rhai", "--set", "no_equals_sign"],
        &["run", "missing.rhai"],
        &["run", "s.rhai", "--device", "tpu"],
        &["frobnicate"],
    ];
    for args in cases {
        let out = medbridge(args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_how_to_build() {
    let (out, _dir) = run_source("print(1);", &["--device", "cuda"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--features cuda"), "{}", stderr(&out));
}

#[test]
fn set_arguments_reach_the_script_typed() {
    let script =
        r#"print(`${type_of(args.n)} ${type_of(args.lr)} ${type_of(args.quick)} ${type_of(args.model)}`);"#;
    let (out, _dir) =
        run_source(script, &["--set", "n=3", "--set", "lr=0.5", "--set", "quick=true", "--set", "model=a/b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "i64 f64 bool string");
}

#[test]
fn the_run_directory_records_script_args_metrics_and_output() {
    let (out, dir) = run_source("log_metric(\"x\", 1.5); print(\"hello\");", &["--set", "k=2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = dir.path().join("run");
    assert!(stderr(&out).contains(&format!("run directory: {}", run.canonicalize().unwrap().display())));
    assert_eq!(
        std::fs::read_to_string(run.join("script.rhai")).unwrap(),
        "log_metric(\"x\", 1.5); print(\"hello\");"
    );
    assert!(std::fs::read_to_string(run.join("script.sha256")).unwrap().len() > 64);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["args"]["k"], 2);
    assert_eq!(info["device"], "cpu");
    let metric: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().trim()).unwrap();
    assert_eq!(
        (metric["name"].as_str(), metric["value"].as_f64(), metric["step"].as_u64()),
        (Some("x"), Some(1.5), Some(0))
    );
    assert_eq!(std::fs::read_to_string(run.join("output.log")).unwrap(), "hello\n");
}

/// `medbridge run s.rhai | head`: once the reader has gone, printing must not panic or end the
/// run; the run directory's output.log still holds every line.
#[test]
fn a_closed_stdout_does_not_end_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.rhai"), "for i in 0..2000 { print(`line ${i}`); }").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_medbridge"))
        .args(["run", "s.rhai", "--quiet", "--out", "run"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let log = std::fs::read_to_string(dir.path().join("run/output.log")).unwrap();
    assert_eq!(log.lines().count(), 2000);
}

/// Without `MEDBRIDGE_CACHE`, `linear_probe`'s feature cache lands in the run directory and
/// nowhere else (not in `~/.cache`).
#[test]
fn the_probe_cache_defaults_to_the_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let script = r#"
        let m = new_model("qwen2_5_vl_tiny", #{seed: 0});
        let data = synth_medmnist(#{tasks: ["pathmnist"], n_train: 8, n_val: 2, n_test: 4, seed: 0, out: "synth"});
        let train = medmnist("pathmnist", #{root: data, split: "train"});
        let test = medmnist("pathmnist", #{root: data});
        linear_probe(m, train, test, #{epochs: 1});
    "#;
    std::fs::write(dir.path().join("s.rhai"), script).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_medbridge"))
        .args(["run", "s.rhai", "--quiet", "--out", "run"])
        .current_dir(dir.path())
        .env_remove("MEDBRIDGE_CACHE")
        .env("HOME", &home)
        .output()
        .expect("binary runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let features = dir.path().join("run/cache/features");
    let cached = std::fs::read_dir(&features).map(|d| d.count()).unwrap_or(0);
    assert!(cached > 0, "no cached features in {}", features.display());
    assert!(!home.join(".cache").exists(), "nothing is written to ~/.cache");
}

/// A preset run says what it ran with: `run.json` lists the resolved settings of `grpo` (the
/// release's, with the keys the script gave over them), of `evaluate` and of `linear_probe` under
/// the preset.
#[test]
fn run_json_records_the_resolved_settings_of_preset_calls() {
    let script = r#"
        let task = mcq_task([#{question: "q", options: ["a", "b"], answer: 0}], #{preset: "medbridgerl"});
        let m = new_model("qwen2_5_vl_tiny", #{seed: 0});
        let r = evaluate(m, task, #{preset: "medbridgerl", n: 2, max_new_tokens: 4});
        let rl = grpo(m, task, #{preset: "medbridgerl", steps: 1, group: 2, batch: 1, max_new_tokens: 4});
        let dir = synth_medmnist(#{tasks: ["pathmnist"], n_train: 16, n_val: 4, n_test: 8, seed: 0});
        let train = medmnist("pathmnist", #{root: dir, split: "train"});
        let test = medmnist("pathmnist", #{root: dir});
        let p = linear_probe(m, train, test, #{preset: "medbridgerl", epochs: 2, sgd_batch: 8});
    "#;
    let (out, dir) = run_source(script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = dir.path().join("run");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["device"], "cpu", "the run's own fields stay");
    let settings = info["settings"].as_array().unwrap();
    let functions: Vec<&str> = settings.iter().map(|s| s["function"].as_str().unwrap()).collect();
    assert_eq!(functions, ["evaluate", "grpo", "linear_probe"]);
    let eval = &settings[0]["settings"];
    assert_eq!(
        (eval["preset"].as_str(), eval["n"].as_u64(), eval["seed"].as_u64()),
        (Some("medbridgerl"), Some(2), Some(123))
    );
    assert_eq!(eval["top_k"], 0);
    let grpo = &settings[1]["settings"];
    assert_eq!(
        (grpo["lr"].as_f64(), grpo["group"].as_u64(), grpo["steps"].as_u64()),
        (Some(5e-7), Some(2), Some(1))
    );
    assert_eq!(grpo["care"]["ema_decay"], 0.995);
    assert_eq!(grpo["rewards"][0]["name"], "medbridgerl_accuracy");
    let probe = &settings[2]["settings"];
    assert_eq!(
        (
            probe["method"].as_str(),
            probe["epochs"].as_u64(),
            probe["sgd_batch"].as_u64(),
            probe["lr"].as_f64()
        ),
        (Some("bn_linear"), Some(2), Some(8), Some(0.1))
    );
    assert!(!run.join(".run.json.tmp").exists());
}

/// `log` was renamed `log_metric`; for one release the old name still records, warning once per run.
#[test]
fn deprecated_log_still_records_and_warns_once() {
    let (out, dir) = run_source("log(\"x\", 1.5); log(\"x\", 2.5, 7); log_metric(\"x\", 3.5);", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = dir.path().join("run");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let recorded: Vec<(f64, u64)> =
        lines.iter().map(|m| (m["value"].as_f64().unwrap(), m["step"].as_u64().unwrap())).collect();
    assert_eq!(recorded, [(1.5, 0), (2.5, 7), (3.5, 8)]);
    let says_use_log_metric = |text: &str| text.matches("use `log_metric(name, value)`").count();
    assert_eq!(says_use_log_metric(&stderr(&out)), 1, "{}", stderr(&out));
    assert_eq!(says_use_log_metric(&std::fs::read_to_string(run.join("output.log")).unwrap()), 1);
}

/// The stdlib modules read `eval_options` (as `sft` and `grpo` do) or its alias `evaluate`; both
/// at once is an error rather than a silent choice.
#[test]
fn stdlib_eval_options_and_their_alias_are_not_both_given() {
    for (module, call) in [
        ("recipe", "recipe::run(0, #{measure: 1"),
        ("sweep", "sweep::transfer(0, #{sources: #{}, targets: #{}"),
    ] {
        let source =
            format!("import \"{module}\" as {module}; {call}, eval_options: #{{}}, evaluate: #{{}}}});");
        let (out, _dir) = run_source(&source, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("give `eval_options` or its alias `evaluate`, not both"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn sandbox_escapes_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let secret = outside.path().join("secret.txt");
    let escapes = [
        format!("read_text(\"{}\")", secret.display()),
        "read_text(\"../../../../../../../../etc/hostname\")".to_string(),
        "read_text(\"link.txt\")".to_string(),
        "write_text(\"../escape.txt\", \"x\")".to_string(),
        format!("write_text(\"{}\", \"x\")", outside.path().join("w.txt").display()),
        format!("exists(\"{}\")", secret.display()),
    ];
    for body in escapes {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("link.txt")).unwrap();
        std::fs::write(dir.path().join("s.rhai"), format!("{body};")).unwrap();
        let out = medbridge(&["run", "s.rhai", "--quiet", "--out", "run"], dir.path());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{body}: {err}");
        assert!(err.contains("refused"), "{body}: {err}");
    }
    assert!(!outside.path().join("w.txt").exists());
}

#[test]
fn allow_read_opens_a_directory() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("data.txt"), "42").unwrap();
    let script = format!("print(read_text(\"{}\"));", outside.path().join("data.txt").display());
    let (out, _dir) = run_source(&script, &["--allow-read", outside.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "42");
}

#[test]
fn the_same_seeded_script_gives_identical_metrics() {
    let values = |dir: &Path| -> Vec<(String, String)> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["name"].to_string(), format!("{}@{}", v["value"], v["step"])))
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = root().join("scripts/spine_demo.rhai");
    let mut runs = Vec::new();
    for name in ["a", "b"] {
        let out_dir = dir.path().join(name);
        let out = medbridge(
            &[
                "run",
                demo.to_str().unwrap(),
                "--quiet",
                "--set",
                "seed=7",
                "--set",
                "n=5",
                "--out",
                out_dir.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        runs.push(values(&out_dir));
    }
    assert_eq!(runs[0].len(), 5);
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn doc_json_covers_the_tensor_surface_with_docs() {
    let out = medbridge(&["doc", "--format", "json"], &root());
    assert!(out.status.success());
    let families: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tensor = families.as_array().unwrap().iter().find(|f| f["name"] == "tensor").expect("tensor family");
    let names: Vec<&str> =
        tensor["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    for expected in [
        "tensor",
        "zeros",
        "ones",
        "randn",
        "shape",
        "dtype",
        "device",
        "to_array",
        "+",
        "-",
        "*",
        "/",
        "matmul",
        "sum",
        "mean",
        "max",
        "argmax",
        "softmax",
        "to_device",
        "save_npy",
        "load_npy",
        "load_safetensors",
        "to_string",
    ] {
        assert!(names.contains(&expected), "doc misses `{expected}`");
    }
    for f in tensor["functions"].as_array().unwrap() {
        assert!(!f["doc"].as_str().unwrap().is_empty(), "undocumented: {}", f["signature"]);
    }
    let md = medbridge(&["doc"], &root());
    assert!(stdout(&md).contains("`Tensor.matmul(b: Tensor) -> Tensor`"), "{}", stdout(&md));
}

#[test]
fn tensor_files_round_trip_through_the_run_directory() {
    let script = r#"
        let t = tensor([[1.5, 2], [3, 4]]);
        let p = t.save_npy("t.npy");
        let back = load_npy(p);
        print((back - t).sum());
        print(back.to_array());
    "#;
    let (out, _dir) = run_source(script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0.0\n[[1.5, 2.0], [3.0, 4.0]]\n");
}

#[test]
fn bench_reports_forward_speed_as_json() {
    let out = medbridge(
        &[
            "bench",
            "--repeats",
            "1",
            "--questions",
            "3",
            "--k",
            "2",
            "--max-new-tokens",
            "4",
            "--only",
            "forward,sampling",
        ],
        &root(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let inference = &report["inference"];
    assert!(inference["medbridge"]["checkpoint"]["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(inference["medbridge"]["checkpoint"]["tokens"], 133);
    assert_eq!(inference["medbridge"]["sampling"]["identical_tokens"], true);
    assert!(inference["transformers"].is_null() && inference["forward_ratio"].is_null());
    assert!(report["training"].is_null(), "--only leaves training out");
}

#[test]
fn bench_times_training_steps_alone() {
    let out = medbridge(&["bench", "--repeats", "2", "--only", "training"], &root());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = &report["training"]["medbridge"]["checkpoint"];
    assert!(steps["sft_seconds_per_step"].as_f64().unwrap() > 0.0);
    assert!(steps["grpo_seconds_per_step"].as_f64().unwrap() > 0.0);
    assert!(report["inference"].is_null() && report["training"]["sft_speedup"].is_null());
}

#[test]
fn out_must_be_a_new_or_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.rhai"), "print(1);").unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let fresh = medbridge(&["run", "s.rhai", "--quiet", "--out", "empty"], dir.path());
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    let again = medbridge(&["run", "s.rhai", "--quiet", "--out", "empty"], dir.path());
    let err = stderr(&again);
    assert_eq!(again.status.code(), Some(2), "{err}");
    assert!(err.contains("--out empty is not empty"), "{err}");
    let log = std::fs::read_to_string(dir.path().join("empty/output.log")).unwrap();
    assert_eq!(log.trim(), "1", "the refused run wrote nothing");
    let repl = medbridge(&["repl", "--out", "empty"], dir.path());
    assert_eq!(repl.status.code(), Some(2), "{}", stderr(&repl));
}

#[test]
fn a_failed_runs_error_is_in_its_output_log() {
    let (out, dir) = run_source("print(\"before\");\nthrow \"boom\";", &[]);
    assert_eq!(out.status.code(), Some(1));
    let log = std::fs::read_to_string(dir.path().join("run/output.log")).unwrap();
    assert!(log.contains("before") && log.contains("s.rhai:2:1: ") && log.contains("boom"), "{log}");
}

#[test]
fn piped_repl_input_with_a_failed_entry_exits_1() {
    use std::io::Write;
    let repl = |input: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_medbridge"))
            .args(["repl", "--quiet", "--out", "run"])
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let good = repl("let x = 1 + 1;\nx\n");
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    for input in ["bad syntax(\nlet y = 2;\n", "let y = 2;\nundefined_fn(1)\n", "let z = (1 +\n"] {
        let bad = repl(input);
        assert_eq!(bad.status.code(), Some(1), "{input:?}: {}", stderr(&bad));
    }
}

#[test]
fn a_leading_byte_order_mark_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("helper.rhai"), "\u{feff}fn twice(x) { x * 2 }").unwrap();
    std::fs::write(dir.path().join("s.rhai"), "\u{feff}import \"helper\" as h;\nprint(h::twice(21));")
        .unwrap();
    let check = medbridge(&["check", "s.rhai"], dir.path());
    assert!(check.status.success(), "{}", stderr(&check));
    let run = medbridge(&["run", "s.rhai", "--quiet", "--out", "run"], dir.path());
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout(&run).trim(), "42");
}

/// A long `generate` (4,000 greedy tokens of the tiny model: tens of seconds in a debug build)
/// and a long `linear_probe` (a hundred million epochs).
const LONG_PRIMITIVES: [(&str, &str); 2] = [
    (
        "generate",
        r#"let m = new_model("qwen2_5_vl_tiny", #{seed: 0});
           print("started");
           m.generate(#{prompt: "Which organ?", max_new_tokens: 4000});"#,
    ),
    (
        "linear_probe",
        r#"let m = new_model("qwen2_5_vl_tiny", #{seed: 0});
           let data = synth_medmnist(#{tasks: ["pathmnist"], n_train: 16, n_val: 4, n_test: 8, seed: 0});
           let train = medmnist("pathmnist", #{root: data, split: "train"});
           let test = medmnist("pathmnist", #{root: data});
           print("started");
           linear_probe(m, train, test, #{epochs: 100000000});"#,
    ),
];

/// Read `child`'s stdout until a line equal to `marker`, at most `limit`; the rest of the output
/// keeps flowing to the returned receiver.
fn wait_for_line(child: &mut Child, marker: &str, limit: Duration) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    loop {
        let left = limit.checked_sub(start.elapsed()).unwrap_or_else(|| panic!("no `{marker}` in {limit:?}"));
        match rx.recv_timeout(left) {
            Ok(line) if line == marker => return rx,
            Ok(_) => {}
            Err(e) => panic!("waiting for `{marker}`: {e}"),
        }
    }
}

fn interrupt(child: &Child) {
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -INT failed");
}

/// Ctrl-C reaches the primitive that is running: `run` stops within 2 s with exit code 130,
/// saying where it stopped, on screen and in `output.log`.
#[test]
fn ctrl_c_stops_a_long_generate_and_a_long_linear_probe_within_two_seconds() {
    for (what, body) in LONG_PRIMITIVES {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.rhai"), body).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_medbridge"))
            .args(["run", "s.rhai", "--quiet", "--out", "run"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _rest = wait_for_line(&mut child, "started", Duration::from_secs(120));
        // Let the primitive get into its loop (decoding, or extracting and fitting).
        std::thread::sleep(Duration::from_millis(500));
        interrupt(&child);
        let (out, took) = wait_bounded(child, Duration::from_secs(30), what);
        let err = stderr(&out);
        assert!(took < Duration::from_secs(2), "{what}: stopped {took:?} after Ctrl-C: {err}");
        assert_eq!(out.status.code(), Some(130), "{what}: {err}");
        assert!(err.contains("cancelled by the user"), "{what}: {err}");
        let log = std::fs::read_to_string(dir.path().join("run/output.log")).unwrap();
        assert!(log.contains("cancelled by the user"), "{what}: {log}");
    }
}

/// In the REPL, Ctrl-C stops the running entry and the next one runs within a second; the
/// session goes on (piped input still counts the cancelled entry as failed when it exits).
#[test]
fn ctrl_c_in_the_repl_returns_to_the_prompt_within_a_second() {
    use std::io::Write;
    for (what, body) in LONG_PRIMITIVES {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_medbridge"))
            .args(["repl", "--quiet", "--out", "run"])
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // One entry per line: the REPL runs each as it arrives.
        let entry = body.lines().map(str::trim).collect::<Vec<_>>().join(" ");
        writeln!(stdin, "{entry}\nprint(\"back\");").unwrap();
        let rest = wait_for_line(&mut child, "started", Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(500));
        interrupt(&child);
        let sent = Instant::now();
        let line = rest.recv_timeout(Duration::from_secs(30)).expect("the REPL goes on");
        let took = sent.elapsed();
        assert_eq!(line, "back", "{what}");
        assert!(took < Duration::from_secs(1), "{what}: the next entry ran {took:?} after Ctrl-C");
        drop(stdin);
        let (out, _) = wait_bounded(child, Duration::from_secs(30), what);
        assert!(stderr(&out).contains("cancelled"), "{what}: {}", stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{what}");
    }
}

/// `--max-memory` is the budget every sampling primitive checks before it starts: `evaluate`,
/// `sample`, `generate` and `grpo`'s rollouts are refused under a tiny one with an error naming
/// the flag, and run under the default. A size that does not parse is a usage error.
#[test]
fn max_memory_bounds_every_sampling_primitive() {
    let setup = r#"let task = mcq_task([#{question: "q", options: ["a", "b"], answer: 0}], #{});
                   let m = new_model("qwen2_5_vl_tiny", #{seed: 0});"#;
    let calls = [
        "evaluate(m, task, #{n: 2, max_new_tokens: 4})",
        "sample(m, [#{prompt: \"q\"}], sampler(#{n: 2, max_new_tokens: 4}))",
        "m.generate(#{prompt: \"q\", max_new_tokens: 4})",
        "grpo(m, task, #{steps: 1, batch: 1, group: 2, max_new_tokens: 2})",
    ];
    for call in calls {
        let source = format!("{setup}\n{call};");
        let (out, _dir) = run_source(&source, &["--max-memory", "64KiB"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{call}: {err}");
        assert!(err.contains("more than the memory budget of 64.0 KiB (--max-memory)"), "{call}: {err}");
        assert!(
            err.contains("or raise the budget with --max-memory (e.g. --max-memory 1GiB)"),
            "{call}: {err}"
        );
        let (out, _dir) = run_source(&source, &["--max-memory", "1GiB"]);
        assert!(out.status.success(), "{call}: {}", stderr(&out));
    }
    let (out, _dir) = run_source("print(1);", &["--max-memory", "8 parsecs"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown unit `parsecs`"), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.rhai"), "print(1);").unwrap();
    assert!(medbridge(&["check", "s.rhai", "--max-memory", "512MiB"], dir.path()).status.success());
}
