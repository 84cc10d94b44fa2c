//! `medbridge`: run, check and document experiment scripts, or explore in a REPL.
//!
//! Exit codes: 0 success, 1 script error, 2 usage error (bad flag, bad device, unreadable file),
//! 130 a run stopped by Ctrl-C.

mod bench;
mod commands;
mod repl_cli;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "medbridge", version, about = "Rhai-scripted post-training experiments for medical VLMs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by `run` and `repl`.
#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// Run directory (default: runs/<script>-<UTC timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Let scripts read under this path too (repeatable).
    #[arg(long = "allow-read", value_name = "PATH")]
    allow_read: Vec<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Never use the network: hub ids and MedMNIST files must already be in their caches
    /// (the same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

/// How large a script's strings and arrays, and a sampling call's memory, may grow (`run`, `repl`,
/// `check`).
#[derive(clap::Args, Clone)]
pub struct LimitArgs {
    /// Largest string a script may build, in bytes (default 64 MiB).
    #[arg(long = "max-string-size", value_name = "BYTES")]
    max_string_size: Option<usize>,
    /// Most elements in one script array or map (default 10,000,000).
    #[arg(long = "max-array-size", value_name = "N")]
    max_array_size: Option<usize>,
    /// Memory one evaluate/sample/generate/grpo call may use, e.g. 8GiB or 512MiB (default 75% of
    /// the memory this process may use).
    #[arg(long = "max-memory", value_name = "SIZE", value_parser = medbridge_runtime::run::memory::parse_size)]
    max_memory: Option<u64>,
}

impl LimitArgs {
    pub fn limits(&self) -> medbridge_bindings::ScriptLimits {
        let default = medbridge_bindings::ScriptLimits::default();
        medbridge_bindings::ScriptLimits {
            max_string_size: self.max_string_size.unwrap_or(default.max_string_size),
            max_array_size: self.max_array_size.unwrap_or(default.max_array_size),
            ..default
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a script in a fresh run directory.
    Run {
        script: PathBuf,
        /// Script argument, reaching the script as `args.name` (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        opts: RunArgs,
    },
    /// Interactive session with a persistent scope.
    Repl {
        #[command(flatten)]
        opts: RunArgs,
    },
    /// Compile scripts without running them.
    Check {
        #[arg(required = true)]
        scripts: Vec<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Forward, sampling and training-step speed on the parity fixture and the tiny preset,
    /// beside transformers (+ PEFT, TRL) when `--python` points at a Python that has them.
    Bench {
        /// Checkpoint to time (default: the committed parity fixture).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Python interpreter for the transformers reference (e.g. python3).
        #[arg(long)]
        python: Option<String>,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Questions in the sampling benchmark.
        #[arg(long, default_value_t = 32)]
        questions: usize,
        /// Samples per question in the sampling benchmark.
        #[arg(long, default_value_t = 16)]
        k: usize,
        #[arg(long = "max-new-tokens", default_value_t = 32)]
        max_new_tokens: usize,
        /// Run only these benchmarks (comma-separated; default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<bench::BenchPart>,
    },
    /// Run a script over a grid of `--set` values, each cell its own run directory, by local
    /// worker processes or as a Slurm job array; rerun to resume. `sweep status DIR` shows it.
    Sweep(sweep::SweepCommand),
    /// Every registered function, type and method, from the engine's metadata.
    Doc {
        #[arg(long, value_enum, default_value_t = DocFormat::Md)]
        format: DocFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DocFormat {
    Md,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { script, set, opts } => commands::run(&script, &set, &opts),
        Command::Repl { opts } => repl_cli::repl(&opts),
        Command::Check { scripts, limits } => commands::check(&scripts, &limits),
        Command::Bench { checkpoint, python, threads, repeats, questions, k, max_new_tokens, only } => {
            bench::bench(&bench::BenchArgs {
                checkpoint: checkpoint.unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2_5_vl_tiny")
                }),
                python,
                threads,
                repeats,
                questions,
                k,
                max_new_tokens,
                parts: if only.is_empty() {
                    vec![bench::BenchPart::Forward, bench::BenchPart::Sampling, bench::BenchPart::Training]
                } else {
                    only
                },
            })
        }
        Command::Sweep(cmd) => sweep::main(cmd),
        Command::Doc { format } => {
            match format {
                DocFormat::Md => print!("{}", medbridge_bindings::docs::markdown()),
                DocFormat::Json => println!("{}", medbridge_bindings::docs::json()),
            }
            0
        }
    };
    ExitCode::from(code)
}
