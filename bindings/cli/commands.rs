//! `run` and `check`: open a session, drive the script, and turn failures into exit codes.

use std::path::{Path, PathBuf};

use medbridge_bindings::script::{check_file, open_session, parse_set, run_file, SessionOptions};
use medbridge_bindings::Echo;
use medbridge_runtime::run::CancelFlag;
use rhai::Map;

use crate::RunArgs;

pub const SCRIPT_ERROR: u8 = 1;
pub const USAGE_ERROR: u8 = 2;

pub fn session_options(script: Option<&Path>, opts: &RunArgs, cancel: CancelFlag) -> SessionOptions {
    SessionOptions {
        script: script.map(Path::to_path_buf),
        out: opts.out.clone(),
        device: opts.device.clone(),
        allow_read: opts.allow_read.clone(),
        quiet: opts.quiet,
        cancel,
    }
}

/// Ctrl-C sets the flag that long primitives and the engine poll.
pub fn install_cancel_handler(cancel: &CancelFlag) {
    let flag = cancel.clone();
    // A second handler (tests calling twice) is not an error worth stopping for.
    let _ = ctrlc::set_handler(move || flag.cancel());
}

pub fn run(script: &Path, set: &[String], opts: &RunArgs) -> u8 {
    let mut args = Map::new();
    for pair in set {
        match parse_set(pair) {
            Ok((name, value)) => {
                args.insert(name.into(), value);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return USAGE_ERROR;
            }
        }
    }
    if !script.is_file() {
        eprintln!("error: script {} does not exist", script.display());
        return USAGE_ERROR;
    }
    let cancel = CancelFlag::new();
    install_cancel_handler(&cancel);
    let session = match open_session(&session_options(Some(script), opts, cancel)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return USAGE_ERROR;
        }
    };
    let run_dir = session.run.path().display().to_string();
    eprintln!("run directory: {run_dir}");
    match run_file(session, script, args, Echo::Terminal) {
        Ok(_) => 0,
        Err(d) => {
            eprintln!("{d}");
            eprintln!("run directory: {run_dir}");
            SCRIPT_ERROR
        }
    }
}

pub fn check(scripts: &[PathBuf]) -> u8 {
    let scratch = match tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: cannot create a scratch directory: {e}");
            return USAGE_ERROR;
        }
    };
    let mut failed = false;
    for script in scripts {
        let opts =
            RunArgs { out: Some(scratch.join("run")), device: "cpu".into(), allow_read: vec![], quiet: true };
        let result = open_session(&session_options(Some(script), &opts, CancelFlag::new()))
            .map_err(|e| e.to_string())
            .and_then(|s| check_file(s, script).map_err(|d| d.to_string()));
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
