//! Running one cell: its `medbridge run` as a child process, output into `logs/<cell>.log`, and
//! its status file written before (running) and after (done, failed or cancelled). Local workers
//! and Slurm array tasks both come through here.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use medbridge_runtime::run::CancelFlag;
use medbridge_runtime::sweep::{host_name, now, CellRecord, CellState, CellStatus, SweepDir, SweepSpec};

use crate::commands::{install_cancel_handler, SCRIPT_ERROR, USAGE_ERROR};

/// How long a child may take to stop after Ctrl-C before it is killed.
const GRACE: Duration = Duration::from_secs(30);
/// Lines of the child's stderr kept as a failed cell's error.
const ERROR_LINES: usize = 20;

/// Where a cell runs: the GPUs it may see (`CUDA_VISIBLE_DEVICES`, set for local workers; Slurm
/// sets its own), its Slurm task, and the threads it may use on a shared CPU.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    pub gpus: Option<String>,
    pub slurm_job: Option<String>,
    pub threads: Option<usize>,
}

/// How many earlier attempts of `cell` were set aside.
pub fn attempts_so_far(dir: &SweepDir, cell: &str) -> u32 {
    std::fs::read_dir(dir.root().join("attempts").join(cell)).map_or(0, |e| e.count() as u32)
}

/// Run `cell` to its end and record it; `cancel` (Ctrl-C) interrupts the child, `terminated`
/// (SIGTERM, as Slurm sends at a time limit) records why the cell stopped.
pub fn run_cell(
    dir: &SweepDir,
    spec: &SweepSpec,
    cell: &CellRecord,
    place: &Placement,
    cancel: &CancelFlag,
    terminated: &AtomicBool,
) -> CellState {
    let mut status = CellStatus {
        state: CellState::Running,
        attempt: attempts_so_far(dir, &cell.name) + 1,
        started: now(),
        ended: None,
        exit_code: None,
        error: None,
        host: host_name(),
        pid: std::process::id(),
        child_pid: None,
        slurm_job: place.slurm_job.clone(),
        gpus: place.gpus.clone().or_else(|| std::env::var("CUDA_VISIBLE_DEVICES").ok()),
    };
    let finish = |mut status: CellStatus, state: CellState, code: Option<i32>, error: Option<String>| {
        status.state = state;
        status.ended = Some(now());
        status.exit_code = code;
        status.error = error;
        if let Err(e) = dir.write_status(&cell.name, &status) {
            eprintln!("error: cell {}: cannot record its status: {e}", cell.name);
        }
        state
    };
    if let Err(e) = dir.write_status(&cell.name, &status) {
        eprintln!("error: cell {}: cannot record its status: {e}", cell.name);
        return CellState::Failed;
    }
    let log_path = dir.log_path(&cell.name);
    let log = log_path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::File::create(&log_path));
    let mut log = match log {
        Ok(f) => f,
        Err(e) => {
            return finish(
                status,
                CellState::Failed,
                None,
                Some(format!("cannot create {}: {e}", log_path.display())),
            )
        }
    };
    let _ = writeln!(log, "# {}", super::plan::shell_words(&cell.command));
    let Some((program, args)) = cell.command.split_first() else {
        return finish(status, CellState::Failed, None, Some("the cell has no command in sweep.json".into()));
    };
    let mut command = Command::new(program);
    command.args(args).current_dir(&spec.cwd).stdin(Stdio::null()).stderr(Stdio::piped());
    match log.try_clone() {
        Ok(out) => command.stdout(out),
        Err(_) => command.stdout(Stdio::null()),
    };
    if let Some(gpus) = &place.gpus {
        command.env("CUDA_VISIBLE_DEVICES", gpus);
    }
    if let (Some(threads), None) = (place.threads, std::env::var_os("RAYON_NUM_THREADS")) {
        command.env("RAYON_NUM_THREADS", threads.to_string());
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return finish(status, CellState::Failed, None, Some(format!("cannot start {program}: {e}")));
        }
    };
    status.child_pid = Some(child.id());
    let _ = dir.write_status(&cell.name, &status);

    // stderr goes to the log and its last lines are kept as the error.
    let stderr = child.stderr.take();
    let tee = std::thread::spawn(move || {
        let mut tail = VecDeque::new();
        if let Some(stderr) = stderr {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.starts_with("run directory: ") {
                    continue;
                }
                tail.push_back(line);
                if tail.len() > ERROR_LINES {
                    tail.pop_front();
                }
            }
        }
        tail
    });

    let mut interrupted_at: Option<Instant> = None;
    let exit = loop {
        match child.try_wait() {
            Ok(Some(exit)) => break Some(exit),
            Ok(None) => {}
            Err(_) => break None,
        }
        if (cancel.is_cancelled() || terminated.load(Ordering::SeqCst)) && interrupted_at.is_none() {
            interrupt(&mut child);
            interrupted_at = Some(Instant::now());
        }
        if interrupted_at.is_some_and(|t| t.elapsed() > GRACE) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let tail: Vec<String> = tee.join().map(Vec::from).unwrap_or_default();
    let stderr_text = tail.join("\n");
    let code = exit.and_then(|e| e.code());
    if exit.is_some_and(|e| e.success()) {
        return finish(status, CellState::Done, code, None);
    }
    if terminated.load(Ordering::SeqCst) {
        let why = "stopped by SIGTERM (a Slurm time limit, scancel or a node shutting down)";
        return finish(status, CellState::Failed, code, Some(join_error(why, &stderr_text)));
    }
    if cancel.is_cancelled() {
        return finish(status, CellState::Cancelled, code, Some("stopped by Ctrl-C".into()));
    }
    let why = match exit {
        None => "its process could not be waited for".to_string(),
        Some(e) => match e.code() {
            Some(c) => format!("exit code {c}"),
            None => signal_text(&e),
        },
    };
    finish(status, CellState::Failed, code, Some(join_error(&why, &stderr_text)))
}

/// The run's own error text, or the exit reason when it printed none.
fn join_error(why: &str, stderr: &str) -> String {
    if stderr.trim().is_empty() {
        why.to_string()
    } else {
        format!("{}\n({why})", stderr.trim_end())
    }
}

#[cfg(unix)]
fn signal_text(e: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    e.signal().map_or_else(|| "it ended abnormally".to_string(), |s| format!("killed by signal {s}"))
}

#[cfg(not(unix))]
fn signal_text(_: &std::process::ExitStatus) -> String {
    "it ended abnormally".to_string()
}

/// Ask the child to stop as Ctrl-C would: it finishes the step it is in and exits.
fn interrupt(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        // SAFETY: kill(2) on the pid of a child we have not reaped; no memory is touched.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
}

static TERMINATED: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATED.store(true, Ordering::SeqCst);
}

/// `medbridge sweep cell DIR INDEX`: one Slurm array task.
pub fn run_slurm_task(dir: &Path, index: usize) -> u8 {
    let dir = SweepDir::new(dir);
    let spec = match dir.read_spec() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return USAGE_ERROR;
        }
    };
    let Some(cell) = spec.cells.iter().find(|c| c.index == index) else {
        eprintln!("error: {} has no cell {index} (it has {})", dir.root().display(), spec.cells.len());
        return USAGE_ERROR;
    };
    let cancel = CancelFlag::new();
    install_cancel_handler(&cancel);
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
    let slurm_job = match (std::env::var("SLURM_ARRAY_JOB_ID"), std::env::var("SLURM_ARRAY_TASK_ID")) {
        (Ok(job), Ok(task)) => Some(format!("{job}_{task}")),
        _ => std::env::var("SLURM_JOB_ID").ok(),
    };
    eprintln!("cell {} ({index}) on {}", cell.name, host_name());
    let place = Placement { gpus: None, slurm_job, threads: None };
    let state = run_cell(&dir, &spec, cell, &place, &cancel, &TERMINATED);
    eprintln!("cell {}: {}", cell.name, state.as_str());
    if state == CellState::Done {
        0
    } else {
        SCRIPT_ERROR
    }
}
