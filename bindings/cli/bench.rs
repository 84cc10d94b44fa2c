//! `medbridge bench`: the model's forward speed on the parity fixture and the tiny preset, and
//! — when Python with transformers is available — transformers on the same checkpoint and
//! inputs in the same run, reported as a ratio.

use std::path::{Path, PathBuf};
use std::process::Command;

use medbridge_runtime::bench::{bench_forward, bench_tiny, fixture_inputs};
use medbridge_runtime::models::Vlm;
use serde_json::{json, Value};

use crate::commands::USAGE_ERROR;

pub struct BenchArgs {
    pub checkpoint: PathBuf,
    pub python: Option<String>,
    pub threads: usize,
    pub repeats: usize,
}

pub fn bench(args: &BenchArgs) -> u8 {
    // Both sides get the same CPU threads: candle's through rayon, torch's through its flag.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    match run(args) {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            USAGE_ERROR
        }
    }
}

fn run(args: &BenchArgs) -> medbridge_runtime::Result<Value> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2_5_vl_tiny");
    let inputs = fixture_inputs(&fixture)?;
    let vlm = Vlm::load(
        &args.checkpoint.display().to_string(),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    let ours = bench_forward(&vlm, &inputs, args.repeats)?;
    let tiny = bench_tiny(&inputs, args.repeats)?;
    eprintln!(
        "medbridge forward: {:.0} tokens/s on {} ({} tokens)",
        ours.tokens_per_s, ours.model, ours.tokens
    );
    eprintln!("medbridge forward: {:.0} tokens/s on the tiny preset", tiny.tokens_per_s);
    let reference = args
        .python
        .as_deref()
        .map(|py| transformers_reference(py, &args.checkpoint, args.threads, args.repeats));
    let ratio = match &reference {
        Some(Ok(r)) => r["forward"]["tokens_per_s"].as_f64().map(|t| ours.tokens_per_s / t),
        _ => None,
    };
    if let Some(r) = ratio {
        eprintln!("forward speed ratio medbridge / transformers: {r:.2}x");
    }
    Ok(json!({
        "threads": args.threads,
        "repeats": args.repeats,
        "medbridge": {"checkpoint": ours, "tiny_preset": tiny},
        "transformers": match reference {
            Some(Ok(r)) => r,
            Some(Err(e)) => json!({"error": e}),
            None => json!(null),
        },
        "forward_ratio": ratio,
    }))
}

/// Run the committed Python benchmark and parse its JSON.
fn transformers_reference(
    python: &str,
    checkpoint: &Path,
    threads: usize,
    repeats: usize,
) -> Result<Value, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench_transformers.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(checkpoint)
        .args(["--threads", &threads.to_string(), "--repeats", &repeats.to_string()])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{python} {} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable benchmark output: {e}"))
}
