//! `run` and `check`: open a session, drive the script, and turn failures into exit codes.
//!
//! Under `mpirun` or `srun` (`--features mpi`) every rank runs `run`: rank 0 creates the run
//! directory and the others attach to it; `--device cuda` means `cuda:LOCAL_RANK`; the ranks
//! check they were given the same script and arguments; and a rank that fails ends the whole job
//! (MPI_Abort) after printing its error, since the others would wait for it.

use std::path::{Path, PathBuf};

use medbridge_bindings::script::{
    check_file, open_session, open_session_on, parse_set, read_script, run_file, SessionOptions,
};
use medbridge_bindings::Echo;
use medbridge_runtime::dist::{check_agreement, launcher_size, rank_device, text_fingerprint, World};
use medbridge_runtime::run::CancelFlag;
use rhai::Map;

use crate::{LimitArgs, RunArgs};

pub const SCRIPT_ERROR: u8 = 1;
pub const USAGE_ERROR: u8 = 2;
/// A run or a sweep stopped by Ctrl-C: 128 + SIGINT, as shells report it.
pub const INTERRUPTED: u8 = 130;

pub fn session_options(script: Option<&Path>, opts: &RunArgs, cancel: CancelFlag) -> SessionOptions {
    SessionOptions {
        script: script.map(Path::to_path_buf),
        out: opts.out.clone(),
        device: opts.device.clone(),
        allow_read: opts.allow_read.clone(),
        quiet: opts.quiet,
        offline: opts.offline,
        cancel,
        max_memory: opts.limits.max_memory,
    }
}

/// Ctrl-C sets the flag that long primitives and the engine poll.
pub fn install_cancel_handler(cancel: &CancelFlag) {
    set_cancel_handler(cancel, false);
}

/// As [`install_cancel_handler`], and a second Ctrl-C while the flag is still set ends the
/// process at once with [`INTERRUPTED`], in case something does not poll. For `run` only: the
/// REPL keeps its session, and a sweep stops its cells before it exits.
pub fn install_run_cancel_handler(cancel: &CancelFlag) {
    set_cancel_handler(cancel, true);
}

fn set_cancel_handler(cancel: &CancelFlag, second_stops: bool) {
    let flag = cancel.clone();
    // A second handler (tests calling twice) is not an error worth stopping for.
    let _ = ctrlc::set_handler(move || {
        if second_stops && flag.is_cancelled() {
            eprintln!("error: cancelled by the user (second Ctrl-C)");
            std::process::exit(i32::from(INTERRUPTED));
        }
        flag.cancel();
    });
}

pub fn run(script: &Path, set: &[String], opts: &RunArgs) -> u8 {
    let world = match World::from_launcher() {
        Ok(world) => world,
        Err(e) => {
            eprintln!("error: {e}");
            return USAGE_ERROR;
        }
    };
    let code = run_on(&world, script, set, opts);
    if code != 0 && world.is_distributed() {
        world.abort(i32::from(code));
    }
    code
}

/// A command that cannot be split over ranks (the REPL, a sweep) refuses to start under an MPI
/// launcher of several ranks: each rank would run it whole, writing the same files.
pub fn refuse_under_mpi(command: &str) -> Option<u8> {
    let ranks = launcher_size().filter(|&n| n > 1)?;
    eprintln!(
        "error: `medbridge {command}` is not rank-safe: it was started as one of {ranks} ranks by mpirun \
         or srun; run it as one process (only `medbridge run` splits its work over ranks)"
    );
    Some(USAGE_ERROR)
}

fn run_on(world: &World, script: &Path, set: &[String], opts: &RunArgs) -> u8 {
    // Messages of a rank other than 0 say which rank they come from.
    let who = if world.is_distributed() { format!("rank {}: ", world.rank()) } else { String::new() };
    let mut args = Map::new();
    for pair in set {
        match parse_set(pair) {
            Ok((name, value)) => {
                args.insert(name.into(), value);
            }
            Err(e) => {
                eprintln!("{who}error: {e}");
                return USAGE_ERROR;
            }
        }
    }
    if !script.is_file() {
        eprintln!("{who}error: script {} does not exist", script.display());
        return USAGE_ERROR;
    }
    // Rank 0 creates the folder the others then find there.
    if let Err(e) = require_fresh_out(opts.out.as_deref().filter(|_| world.is_root())) {
        eprintln!("{who}error: {e}");
        return USAGE_ERROR;
    }
    let cancel = CancelFlag::new();
    install_run_cancel_handler(&cancel);
    let rank_opts = RunArgs { device: rank_device(&opts.device, world), ..opts.clone() };
    let session = match open_session_on(&session_options(Some(script), &rank_opts, cancel.clone()), world) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{who}error: {e}");
            return USAGE_ERROR;
        }
    };
    let run = session.clone();
    let run_dir = run.run.path().display().to_string();
    if world.is_root() {
        eprintln!("run directory: {run_dir}");
    }
    if world.is_distributed() {
        if let Err(e) = agree_on_script(world, script, set, &session) {
            eprintln!("{who}error: {e}");
            return USAGE_ERROR;
        }
    }
    match run_file(session, script, args, Echo::Terminal, opts.limits.limits()) {
        Ok(_) => 0,
        Err(d) => {
            eprintln!("{who}{d}");
            // The log is the run's record; a failed run's reason belongs in it too.
            if let Err(e) = run.run.log_output(&format!("{who}{d}")) {
                eprintln!("{who}error: {e}");
            }
            eprintln!("{who}run directory: {run_dir}");
            if cancel.is_cancelled() {
                INTERRUPTED
            } else {
                SCRIPT_ERROR
            }
        }
    }
}

/// Every rank must run the same script with the same `--set` arguments; each says in its log who
/// it is, so a rank's process can be found.
fn agree_on_script(
    world: &World,
    script: &Path,
    set: &[String],
    session: &medbridge_runtime::run::Session,
) -> Result<(), String> {
    let source = read_script(script).map_err(|d| d.to_string())?;
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let line = format!(
        "rank {} of {}: pid {}{}, device {}",
        world.rank(),
        world.size(),
        std::process::id(),
        if host.is_empty() { String::new() } else { format!(" on {host}") },
        medbridge_runtime::device::device_name(&session.device)
    );
    session.run.log_output(&line).map_err(|e| e.to_string())?;
    let digest = text_fingerprint(&format!("{source}\n--set {set:?}"));
    check_agreement(world, "the script and its --set arguments", &digest).map_err(|e| e.to_string())
}

/// `--out` names a new or empty folder: files of an earlier run beside the new ones would be read
/// as this run's.
pub fn require_fresh_out(out: Option<&Path>) -> Result<(), String> {
    let Some(dir) = out else { return Ok(()) };
    let taken = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => dir.exists(),
    };
    if taken {
        let what = if dir.is_dir() { "is not empty" } else { "exists and is not a folder" };
        return Err(format!(
            "--out {} {what}; give a new or empty folder so an earlier run's files are not mixed with this one's",
            dir.display()
        ));
    }
    Ok(())
}

pub fn check(scripts: &[PathBuf], limits: &LimitArgs) -> u8 {
    let scratch = match tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: cannot create a scratch directory: {e}");
            return USAGE_ERROR;
        }
    };
    let mut failed = false;
    for script in scripts {
        let opts = RunArgs {
            out: Some(scratch.join("run")),
            device: "cpu".into(),
            allow_read: vec![],
            quiet: true,
            offline: true,
            limits: limits.clone(),
        };
        let result = open_session(&session_options(Some(script), &opts, CancelFlag::new()))
            .map_err(|e| e.to_string())
            .and_then(|s| check_file(s, script, limits.limits()).map_err(|d| d.to_string()));
        match result {
            Ok(()) => println!("{}: ok", script.display()),
            Err(message) => {
                eprintln!("{message}");
                failed = true;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if failed {
        SCRIPT_ERROR
    } else {
        0
    }
}

fn tempdir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("medbridge-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
