//! `medbridge sweep`: a grid of runs of one script, each cell a `medbridge run` in its own run
//! directory, run by local worker processes or as one Slurm job array, resumable, and gathered
//! by `sweep_results(DIR)` in scripts.
//!
//! - `plan.rs`: the command line into a plan (grid, cells, their commands), a new or resumed
//!   `sweep.json`, and which cells still need to run;
//! - `cell.rs`: running one cell (a child `medbridge run`) and recording its status;
//! - `local.rs`: N worker threads, each running cells one after another; Ctrl-C stops them;
//! - `slurm.rs`: the sbatch array script, `sbatch`, following the array with `squeue`;
//! - `status.rs`: what each cell's state is now, and the table `medbridge sweep status` prints.

mod cell;
mod local;
mod plan;
mod slurm;
mod status;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::commands::USAGE_ERROR;
use crate::RunArgs;

/// `medbridge sweep SCRIPT --grid ...` or `medbridge sweep status DIR`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
#[command(mut_arg("out", |a| a.help("Sweep directory (default: sweeps/<script>); rerun with the same one to resume")))]
pub struct SweepCommand {
    #[command(subcommand)]
    action: Option<SweepAction>,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(Subcommand)]
enum SweepAction {
    /// A table of the sweep's cells: state, runtime, last metric, log (and each failure's error).
    Status { dir: PathBuf },
    /// Run one cell of a sweep directory and record its status (what each Slurm array task runs).
    #[command(hide = true)]
    Cell { dir: PathBuf, index: usize },
}

#[derive(Args)]
pub struct StartArgs {
    /// The script every cell runs.
    #[arg(required = true)]
    script: Option<PathBuf>,
    /// A grid axis, reaching each cell's script as `args.name` like --set; the cells are every
    /// combination of the axes' values (repeatable).
    #[arg(long = "grid", value_name = "NAME=V1,V2,...")]
    grid: Vec<String>,
    /// Script argument every cell gets, as in `medbridge run` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// `local` or `local:N` (N worker processes here; default one per GPU with CUDA, else 1) or
    /// `slurm` (one sbatch job array).
    #[arg(long, default_value = "local", value_name = "local[:N]|slurm")]
    executor: String,
    /// sbatch setting for --executor slurm: gpus=G, time=T, partition=P, account=A, parallel=N
    /// (`--array=...%N`), cpus=C, mem=M, job-name=J, setup=LINE (a shell line before the cell
    /// runs), or any other sbatch option as key=value (repeatable; overrides --config).
    #[arg(long = "slurm", value_name = "KEY=VALUE")]
    slurm: Vec<String>,
    /// A sweep config file whose `[slurm]` section holds `key = value` lines, as --slurm takes.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print what would run (the sbatch script, or each cell's command) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --executor slurm: submit and return instead of following the array until it ends.
    #[arg(long)]
    no_follow: bool,
    /// Once every cell is done, run the script once more with `--set collect=DIR` in
    /// DIR/collected/ (the script gathers the cells with `sweep_results(args.collect)`).
    #[arg(long)]
    collect: bool,
    #[command(flatten)]
    opts: RunArgs,
}

/// The ids of `medbridge sweep`'s own arguments; every other argument given on the command line
/// (`--device`, `--allow-read`, the limits, and any flag `medbridge run` gains) is forwarded to
/// each cell's `medbridge run`.
const OWN_ARGS: [&str; 12] = [
    "script",
    "grid",
    "set",
    "executor",
    "slurm",
    "config",
    "dry_run",
    "no_follow",
    "collect",
    "out",
    "help",
    "version",
];

pub fn main(cmd: SweepCommand) -> u8 {
    if let Some(code) = crate::commands::refuse_under_mpi("sweep") {
        return code;
    }
    match cmd.action {
        Some(SweepAction::Status { dir }) => status::print_status(&dir),
        Some(SweepAction::Cell { dir, index }) => cell::run_slurm_task(&dir, index),
        None => match plan::Plan::new(&cmd.start, forwarded_flags(std::env::args_os())) {
            Ok(plan) => plan.execute(&cmd.start),
            Err(e) => {
                eprintln!("error: {e}");
                USAGE_ERROR
            }
        },
    }
}

/// The flags to hand each cell's `medbridge run`: every argument of `medbridge sweep` given on
/// the command line that is not the sweep's own, as `--name=value` (or `--name` for switches).
/// Read from clap's own view of the command line, so a flag added to `medbridge run`'s options
/// is forwarded without a change here.
fn forwarded_flags<I, T>(argv: I) -> Vec<String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::parser::ValueSource;
    use clap::{ArgAction, CommandFactory};

    let mut command = crate::Cli::command();
    command.build();
    let Ok(matches) = command.clone().try_get_matches_from(argv) else { return vec![] };
    let (Some(sweep), Some(given)) = (command.find_subcommand("sweep"), matches.subcommand_matches("sweep"))
    else {
        return vec![];
    };
    let mut out = Vec::new();
    for arg in sweep.get_arguments() {
        let id = arg.get_id().as_str();
        if OWN_ARGS.contains(&id) || arg.is_positional() {
            continue;
        }
        if given.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => out.push(format!("--{long}")),
            ArgAction::Count => {
                let n = given.get_count(id);
                out.extend((0..n).map(|_| format!("--{long}")));
            }
            _ => {
                if let Ok(Some(values)) = given.try_get_raw(id) {
                    out.extend(values.map(|v| format!("--{long}={}", v.to_string_lossy())));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_are_forwarded_and_the_sweeps_own_are_not() {
        let argv = "medbridge sweep s.rhai --grid a=1,2 --set k=1 --out d --executor local:2 --device cpu \
                    --allow-read /x --quiet --allow-read /y --max-string-size 100 --collect";
        let flags = forwarded_flags(argv.split_whitespace());
        assert_eq!(
            flags,
            ["--device=cpu", "--allow-read=/x", "--allow-read=/y", "--quiet", "--max-string-size=100"]
        );
        assert!(forwarded_flags("medbridge sweep s.rhai --grid a=1".split_whitespace()).is_empty());
    }
}
