//! `medbridge bench`: the model's forward, sampling and training-step (SFT, GRPO with LoRA)
//! speed on the parity fixture and the tiny preset, and — when Python with transformers is
//! available — transformers (+ PEFT, TRL for training) on the same checkpoint and inputs in the
//! same run, reported as ratios.

use std::path::{Path, PathBuf};
use std::process::Command;

use medbridge_runtime::bench::training::{bench_task, bench_training, fixture_image_files, TrainingWorkload};
use medbridge_runtime::bench::{
    bench_forward, bench_sampling_questions, bench_tiny, bench_variable_length_questions, fixture_inputs,
};
use medbridge_runtime::image::Image;
use medbridge_runtime::models::Vlm;
use serde_json::{json, Value};

use crate::commands::USAGE_ERROR;

pub struct BenchArgs {
    pub checkpoint: PathBuf,
    pub python: Option<String>,
    pub threads: usize,
    pub repeats: usize,
    /// Samples per question and new tokens per sample for the sampling benchmark.
    pub questions: usize,
    pub k: usize,
    pub max_new_tokens: usize,
    /// Which benchmarks to run.
    pub parts: Vec<BenchPart>,
}

/// One benchmark of `medbridge bench`; forward and sampling share one transformers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchPart {
    Forward,
    Sampling,
    Training,
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
    let mut report = json!({"threads": args.threads, "repeats": args.repeats});
    if args.parts.contains(&BenchPart::Forward) || args.parts.contains(&BenchPart::Sampling) {
        report["inference"] = inference(args, &vlm, &inputs)?;
    }
    if args.parts.contains(&BenchPart::Training) {
        report["training"] = training(args, &vlm, &inputs, &fixture)?;
    }
    Ok(report)
}

/// Forward and K-sample generation, beside transformers' forward and `generate`.
fn inference(args: &BenchArgs, vlm: &Vlm, inputs: &[(Image, String)]) -> medbridge_runtime::Result<Value> {
    let ours = bench_forward(vlm, inputs, args.repeats)?;
    let tiny = bench_tiny(inputs, args.repeats)?;
    eprintln!(
        "medbridge forward: {:.0} tokens/s on {} ({} tokens)",
        ours.tokens_per_s, ours.model, ours.tokens
    );
    eprintln!("medbridge forward: {:.0} tokens/s on the tiny preset", tiny.tokens_per_s);
    let sampling =
        bench_sampling_questions(vlm, inputs, args.questions, args.k, args.max_new_tokens, args.repeats)?;
    eprintln!(
        "medbridge sampling K={} x {} questions: {:.0} tokens/s shared prefill, {:.0} tokens/s separate, {:.2}x",
        args.k,
        args.questions,
        sampling.tokens_per_s_shared_prefill,
        sampling.tokens_per_s_separate_prefills,
        sampling.speedup
    );
    // Samples ending at very different lengths, four times as long at most, four questions' rows
    // at once: continuous batching against fixed batches of the same size.
    let variable = bench_variable_length_questions(
        vlm,
        inputs,
        args.questions,
        args.k,
        4 * args.max_new_tokens,
        4 * args.k,
        args.repeats,
    )?;
    eprintln!(
        "medbridge variable lengths ({}..{} tokens, {} rows at once): {:.0} tokens/s continuous, {:.0} tokens/s fixed batches, {:.2}x",
        variable.shortest,
        variable.longest,
        variable.max_seqs,
        variable.tokens_per_s_continuous,
        variable.tokens_per_s_fixed_batches,
        variable.speedup
    );
    let reference = args.python.as_deref().map(|py| transformers_reference(py, args));
    let ratio = |ours: f64, key: &str| match &reference {
        Some(Ok(r)) => r[key]["tokens_per_s"].as_f64().map(|t| ours / t),
        _ => None,
    };
    let forward_ratio = ratio(ours.tokens_per_s, "forward");
    let sampling_ratio = ratio(sampling.tokens_per_s_shared_prefill, "generate");
    let sampling_ratio_batched = ratio(sampling.tokens_per_s_shared_prefill, "generate_batched");
    if let (Some(f), Some(s)) = (forward_ratio, sampling_ratio) {
        eprintln!(
            "medbridge / transformers: forward {f:.2}x, sampling {s:.2}x (one question per generate call)"
        );
    }
    if let Some(b) = sampling_ratio_batched {
        eprintln!("medbridge / transformers: sampling {b:.2}x (all questions in one generate call)");
    }
    Ok(json!({
        "medbridge": {
            "checkpoint": ours,
            "tiny_preset": tiny,
            "sampling": {
                "k": args.k,
                "questions": args.questions,
                "max_new_tokens": args.max_new_tokens,
                "tokens": sampling.tokens,
                "tokens_per_s_shared_prefill": sampling.tokens_per_s_shared_prefill,
                "tokens_per_s_separate_prefills": sampling.tokens_per_s_separate_prefills,
                "prefix_sharing_speedup": sampling.speedup,
                "identical_tokens": sampling.identical,
            },
            "variable_lengths": variable,
        },
        "transformers": reference_json(reference),
        "forward_ratio": forward_ratio,
        "sampling_ratio": sampling_ratio,
        "sampling_ratio_batched": sampling_ratio_batched,
    }))
}

/// SFT and GRPO steps with LoRA, beside transformers + PEFT and TRL's `GRPOTrainer`.
fn training(
    args: &BenchArgs,
    vlm: &Vlm,
    inputs: &[(Image, String)],
    fixture: &Path,
) -> medbridge_runtime::Result<Value> {
    let task = bench_task(inputs)?;
    let workload = TrainingWorkload::default();
    let training = bench_training(vlm, &task, &workload, args.repeats)?;
    let tiny_vlm = Vlm::new_preset("qwen2_5_vl_tiny", 0, &candle_core::Device::Cpu)?;
    let tiny_training = bench_training(&tiny_vlm, &task, &workload, args.repeats)?;
    for t in [&training, &tiny_training] {
        eprintln!(
            "medbridge training on {}: SFT {:.1} ms/step, GRPO {:.1} ms/step",
            t.model,
            t.sft_seconds_per_step * 1e3,
            t.grpo_seconds_per_step * 1e3
        );
    }
    let workload_json = workload.to_json(&task, &fixture_image_files(fixture))?;
    let reference = args.python.as_deref().map(|py| training_baseline(py, args, &workload_json));
    let step_ratio = |ours: f64, key: &str| match &reference {
        Some(Ok(r)) => r[key]["seconds_per_step"].as_f64().map(|theirs| theirs / ours),
        _ => None,
    };
    let sft_ratio = step_ratio(training.sft_seconds_per_step, "sft");
    let grpo_ratio = step_ratio(training.grpo_seconds_per_step, "grpo");
    match (&reference, sft_ratio, grpo_ratio) {
        (_, Some(s), Some(g)) => eprintln!(
            "medbridge speed-up per step over transformers + PEFT (SFT) and TRL (GRPO): SFT {s:.2}x, GRPO {g:.2}x"
        ),
        (Some(Ok(r)), ..) => eprintln!(
            "training baseline skipped: {}",
            r["skipped"].as_str().unwrap_or("no timings in the Python output")
        ),
        (Some(Err(e)), ..) => eprintln!("training baseline failed: {e}"),
        (None, ..) => {}
    }
    Ok(json!({
        "workload": workload,
        "medbridge": {"checkpoint": training, "tiny_preset": tiny_training},
        "transformers_peft_trl": reference_json(reference),
        "sft_speedup": sft_ratio,
        "grpo_speedup": grpo_ratio,
    }))
}

/// Run `bench_training.py` on the same checkpoint and `workload` and parse its JSON.
fn training_baseline(python: &str, args: &BenchArgs, workload: &Value) -> Result<Value, String> {
    let path = std::env::temp_dir().join(format!("medbridge-bench-workload-{}.json", std::process::id()));
    std::fs::write(&path, workload.to_string())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let out =
        run_python(python, "bench_training.py", args, &["--workload".into(), path.display().to_string()]);
    // Best effort: a leftover file in the temp directory is harmless.
    let _ = std::fs::remove_file(&path);
    out
}

/// Run `bench_transformers.py` on the same checkpoint and workload and parse its JSON.
fn transformers_reference(python: &str, args: &BenchArgs) -> Result<Value, String> {
    let extra = [("--k", args.k), ("--questions", args.questions), ("--max-new-tokens", args.max_new_tokens)]
        .iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect::<Vec<_>>();
    run_python(python, "bench_transformers.py", args, &extra)
}

/// Run the committed Python benchmark `script` on the checkpoint with the shared thread and
/// repeat counts and `extra` arguments, and parse the JSON it prints.
fn run_python(python: &str, script: &str, args: &BenchArgs, extra: &[String]) -> Result<Value, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(script);
    let out = Command::new(python)
        .arg(&script)
        .arg(&args.checkpoint)
        .args(["--threads", &args.threads.to_string(), "--repeats", &args.repeats.to_string()])
        .args(extra)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{python} {} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable output of {}: {e}", script.display()))
}

/// A reference run in the report: its JSON, its error, or null when none was asked for.
fn reference_json(reference: Option<Result<Value, String>>) -> Value {
    match reference {
        Some(Ok(r)) => r,
        Some(Err(e)) => json!({"error": e}),
        None => json!(null),
    }
}
