//! From the command line to a plan: the grid checked and expanded, the sweep directory created or
//! resumed, each cell's `medbridge run` command, and which cells still have to run.

use std::path::{Path, PathBuf};

use medbridge_bindings::script::parse_set;
use medbridge_runtime::sweep::{
    expand, now, CellRecord, GridAxis, GridCell, SweepDir, SweepSpec, SWEEP_FORMAT,
};
use serde_json::Value;

use super::status::{observe_all, print_table, Observed};
use super::{local, slurm, StartArgs};
use crate::commands::{SCRIPT_ERROR, USAGE_ERROR};

/// Exit code of a sweep stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

pub enum Executor {
    /// Worker processes on this machine; `None`: one per GPU when CUDA is present, else 1.
    Local(Option<usize>),
    Slurm,
}

impl Executor {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "local" => Ok(Executor::Local(None)),
            "slurm" => Ok(Executor::Slurm),
            other => match other.strip_prefix("local:").map(str::parse::<usize>) {
                Some(Ok(n)) if n >= 1 => Ok(Executor::Local(Some(n))),
                _ => Err(format!("--executor `{other}`: expected local, local:N (N ≥ 1 workers) or slurm")),
            },
        }
    }
}

pub struct Plan {
    pub dir: SweepDir,
    pub spec: SweepSpec,
    pub executor: Executor,
    pub slurm: slurm::Settings,
    /// Whether `sweep.json` was there already (a resume).
    pub resumed: bool,
    /// The device cells run on (`--device`, else `--set device=`, else cpu): decides the GPUs per
    /// worker and per Slurm task.
    pub device: String,
}

impl Plan {
    pub fn new(args: &StartArgs, run_flags: Vec<String>) -> Result<Plan, String> {
        let executor = Executor::parse(&args.executor)?;
        let script = args
            .script
            .as_deref()
            .ok_or("give the script every cell runs: medbridge sweep SCRIPT --grid name=v1,v2")?;
        if !script.is_file() {
            return Err(format!("script {} does not exist", script.display()));
        }
        let script = script.canonicalize().map_err(|e| format!("{}: {e}", script.display()))?;

        let axes = args
            .grid
            .iter()
            .map(|g| GridAxis::parse(g).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let cells = expand(&axes).map_err(|e| e.to_string())?;
        let mut set_names = Vec::new();
        for pair in &args.set {
            set_names.push(parse_set(pair)?.0);
        }
        for axis in &axes {
            if set_names.contains(&axis.name) {
                return Err(format!(
                    "`{}` is given both as --grid and as --set; a cell takes it from the grid, so drop the --set",
                    axis.name
                ));
            }
        }
        let records = cells.iter().map(record_of).collect::<Result<Vec<_>, _>>()?;

        let slurm = slurm::Settings::from_sources(args.config.as_deref(), &args.slurm)?;
        if !matches!(executor, Executor::Slurm) && (args.config.is_some() || !args.slurm.is_empty()) {
            return Err(
                "--slurm and --config describe the Slurm job array; they need --executor slurm".into()
            );
        }
        if matches!(executor, Executor::Slurm) && !args.dry_run {
            for tool in ["sbatch", "squeue"] {
                if find_on_path(tool).is_none() {
                    return Err(format!(
                        "--executor slurm needs Slurm's `{tool}` on PATH, and it is not there; run on a login \
                         node of the cluster, use --executor local, or --dry-run to only see the sbatch script"
                    ));
                }
            }
        }
        if args.no_follow && !matches!(executor, Executor::Slurm) {
            return Err("--no-follow is for --executor slurm (local workers always run to the end)".into());
        }

        let stem =
            script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into());
        let root = args.opts.out.clone().unwrap_or_else(|| PathBuf::from("sweeps").join(&stem));
        let root = std::path::absolute(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let dir = SweepDir::new(&root);
        let cwd = std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?;
        let fresh = SweepSpec {
            format: SWEEP_FORMAT,
            script,
            cwd,
            grid: axes,
            set: args.set.clone(),
            run_flags,
            executor: args.executor.clone(),
            command: std::env::args().collect(),
            created: now(),
            updated: now(),
            cells: records,
            slurm: vec![],
        };
        let (spec, resumed) = if dir.exists() {
            let old = dir.read_spec().map_err(|e| e.to_string())?;
            (resume(old, fresh, &root)?, true)
        } else {
            if folder_has_files(&root) {
                return Err(format!(
                    "--out {} holds files but no sweep.json; give a new or empty folder, or the folder of an \
                     earlier sweep to resume it",
                    root.display()
                ));
            }
            (fresh, false)
        };
        // The device the cells compute on: `--device` when given, else the paper scripts' `--set
        // device=`, else the CPU.
        let device = if spec.run_flags.iter().any(|f| f.starts_with("--device=")) {
            args.opts.device.clone()
        } else {
            spec.set.iter().find_map(|p| p.strip_prefix("device=")).unwrap_or("cpu").to_string()
        };
        let mut plan = Plan { dir, spec, executor, slurm, resumed, device };
        plan.refresh_commands()?;
        Ok(plan)
    }

    /// Each cell's `medbridge run` command, from the current flags (a resume may change
    /// `--device` or the limits; the grid and `--set` are fixed).
    fn refresh_commands(&mut self) -> Result<(), String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the medbridge executable: {e}"))?;
        let exe = exe.display().to_string();
        let cells = expand(&self.spec.grid).map_err(|e| e.to_string())?;
        for (record, cell) in self.spec.cells.iter_mut().zip(cells) {
            let mut cmd = vec![
                exe.clone(),
                "run".to_string(),
                self.spec.script.display().to_string(),
                "--out".to_string(),
                self.dir.cell_dir(&record.name).display().to_string(),
            ];
            for pair in &self.spec.set {
                cmd.extend(["--set".to_string(), pair.clone()]);
            }
            for (name, value) in cell.values {
                cmd.extend(["--set".to_string(), format!("{name}={value}")]);
            }
            cmd.extend(self.spec.run_flags.iter().cloned());
            record.command = cmd;
        }
        Ok(())
    }

    pub fn execute(mut self, args: &StartArgs) -> u8 {
        let observed = observe_all(&self.dir, &self.spec);
        let to_run: Vec<usize> =
            observed.iter().enumerate().filter(|(_, o)| o.state.needs_run()).map(|(i, _)| i).collect();
        let busy = observed.iter().filter(|o| o.state.is_active()).count();
        let done = observed.iter().filter(|o| o.state == Observed::Done).count();
        let n = self.spec.cells.len();
        println!(
            "sweep {}: {n} cells{}; {done} done, {} to run{}",
            self.dir.root().display(),
            if self.resumed { " (resumed)" } else { "" },
            to_run.len(),
            if busy > 0 { format!(", {busy} still queued or running (left alone)") } else { String::new() }
        );

        if args.dry_run {
            return self.dry_run(&to_run);
        }
        if let Err(e) = std::fs::create_dir_all(self.dir.root()) {
            eprintln!("error: cannot create {}: {e}", self.dir.root().display());
            return USAGE_ERROR;
        }
        for &i in &to_run {
            let name = self.spec.cells[i].name.clone();
            let previous = match self.dir.read_status(&name) {
                Ok(Some(status)) => status.attempt,
                _ => super::cell::attempts_so_far(&self.dir, &name) + 1,
            };
            match self.dir.archive_attempt(&name, previous) {
                Ok(Some(to)) => println!("  {name}: its earlier attempt moved to {}", to.display()),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("error: cannot set aside {name}'s earlier attempt: {e}");
                    return USAGE_ERROR;
                }
            }
            self.spec.cells[i].slurm_job = None;
        }
        self.spec.executor = args.executor.clone();
        self.spec.updated = now();
        for (cell, o) in self.spec.cells.iter_mut().zip(&observed) {
            cell.state = o.state.as_str().to_string();
        }
        if let Err(e) = self.save() {
            eprintln!("error: {e}");
            return USAGE_ERROR;
        }

        let code = if to_run.is_empty() {
            let held: Vec<usize> = (0..n).filter(|&i| observed[i].state.is_active()).collect();
            let jobs = slurm::jobs_of(&self.spec, &observed, &held);
            if matches!(self.executor, Executor::Slurm) && !args.no_follow && !jobs.is_empty() {
                println!("nothing to start; following the cells Slurm still holds");
                slurm::follow(&mut self, &jobs, &held)
            } else {
                if busy > 0 {
                    println!("nothing to start: the remaining cells are still queued or running");
                }
                0
            }
        } else {
            match self.executor {
                Executor::Local(workers) => local::run(&mut self, &to_run, workers),
                Executor::Slurm => slurm::submit(&mut self, &to_run, !args.no_follow),
            }
        };
        if code == INTERRUPTED
            || (matches!(self.executor, Executor::Slurm) && args.no_follow && !to_run.is_empty())
        {
            return code;
        }
        let observed = observe_all(&self.dir, &self.spec);
        self.record_states(&observed);
        println!();
        print_table(&self.dir, &self.spec, &observed);
        let all_done = observed.iter().all(|o| o.state == Observed::Done);
        if !all_done {
            println!("\nrerun the same command to rerun the failed cells (finished ones are kept)");
            return SCRIPT_ERROR;
        }
        if args.collect {
            return self.collect();
        }
        code
    }

    /// Copy the states seen now into `sweep.json`.
    pub fn record_states(&mut self, observed: &[super::status::CellView]) {
        for (cell, o) in self.spec.cells.iter_mut().zip(observed) {
            cell.state = o.state.as_str().to_string();
        }
        self.spec.updated = now();
        if let Err(e) = self.save() {
            eprintln!("warning: {e}");
        }
    }

    pub fn save(&self) -> Result<(), String> {
        self.dir.write_spec(&self.spec).map_err(|e| format!("cannot write sweep.json: {e}"))
    }

    fn dry_run(&self, to_run: &[usize]) -> u8 {
        match self.executor {
            _ if to_run.is_empty() => println!("dry run: nothing would run"),
            Executor::Slurm => {
                let script = slurm::render(self, to_run, self.spec.slurm.len() + 1);
                println!("dry run: would write this sbatch script and submit it with `sbatch --parsable`:\n");
                print!("{script}");
            }
            Executor::Local(workers) => {
                let (n, _) = local::workers(workers, &self.device);
                println!("dry run: would run these with {n} local worker{}:", if n == 1 { "" } else { "s" });
                for &i in to_run {
                    println!("  {}", shell_words(&self.spec.cells[i].command));
                }
            }
        }
        0
    }

    /// The script once more, with `--set collect=DIR`, in DIR/collected/.
    fn collect(&self) -> u8 {
        let out = self.dir.root().join("collected");
        if out.exists() {
            if let Err(e) = std::fs::remove_dir_all(&out) {
                eprintln!("error: cannot clear {}: {e}", out.display());
                return USAGE_ERROR;
            }
        }
        let Ok(exe) = std::env::current_exe() else {
            eprintln!("error: cannot find the medbridge executable");
            return USAGE_ERROR;
        };
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("run").arg(&self.spec.script).arg("--out").arg(&out);
        for pair in &self.spec.set {
            cmd.arg("--set").arg(pair);
        }
        cmd.arg("--set").arg(format!("collect={}", self.dir.root().display()));
        cmd.arg("--allow-read").arg(self.dir.root());
        cmd.args(&self.spec.run_flags).current_dir(&self.spec.cwd);
        println!(
            "\ncollecting: {}",
            shell_words(
                &std::iter::once("medbridge".to_string())
                    .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
            )
        );
        match cmd.status() {
            Ok(s) if s.success() => 0,
            Ok(s) => s.code().map_or(SCRIPT_ERROR, |c| c.clamp(1, 255) as u8),
            Err(e) => {
                eprintln!("error: cannot start the collecting run: {e}");
                SCRIPT_ERROR
            }
        }
    }
}

/// A cell as `sweep.json` records it, with its grid values typed as `--set` types them (which
/// also checks that each is a valid `--set` pair).
fn record_of(cell: &GridCell) -> Result<CellRecord, String> {
    let mut args = serde_json::Map::new();
    for (name, value) in &cell.values {
        let (name, typed) = parse_set(&format!("{name}={value}")).map_err(|e| format!("--grid: {e}"))?;
        let json = medbridge_bindings::convert::to_json(&typed).map_err(|e| e.to_string())?;
        args.insert(name, json);
    }
    Ok(CellRecord {
        index: cell.index,
        name: cell.name.clone(),
        args: Value::Object(args),
        dir: SweepDir::cell_rel(&cell.name),
        log: SweepDir::log_rel(&cell.name),
        state: Observed::Pending.as_str().to_string(),
        slurm_job: None,
        command: vec![],
    })
}

/// The earlier sweep in this directory, checked to be the same sweep, with this invocation's
/// flags and command.
fn resume(mut old: SweepSpec, fresh: SweepSpec, root: &Path) -> Result<SweepSpec, String> {
    let mut differ = Vec::new();
    if old.script != fresh.script {
        differ.push(format!("script {} (now {})", old.script.display(), fresh.script.display()));
    }
    if old.grid != fresh.grid {
        let show = |g: &[GridAxis]| {
            g.iter()
                .map(|a| format!("--grid {}={}", a.name, a.values.join(",")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        differ.push(format!("grid `{}` (now `{}`)", show(&old.grid), show(&fresh.grid)));
    }
    if old.set != fresh.set {
        differ.push(format!("--set {:?} (now {:?})", old.set, fresh.set));
    }
    if !differ.is_empty() {
        return Err(format!(
            "{} holds another sweep: {}; resume it with the same script, --grid and --set, or give a new --out",
            root.display(),
            differ.join("; ")
        ));
    }
    old.run_flags = fresh.run_flags;
    old.command = fresh.command;
    old.cwd = fresh.cwd;
    Ok(old)
}

fn folder_has_files(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(_) => dir.exists(),
    }
}

/// Where `tool` is on PATH, if anywhere.
pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// A command line as a shell would need it typed.
pub fn shell_words(words: &[String]) -> String {
    words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
}

pub fn shell_quote(word: &str) -> String {
    let plain =
        !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executors_parse() {
        assert!(matches!(Executor::parse("local"), Ok(Executor::Local(None))));
        assert!(matches!(Executor::parse("local:3"), Ok(Executor::Local(Some(3)))));
        assert!(matches!(Executor::parse("slurm"), Ok(Executor::Slurm)));
        for bad in ["local:0", "local:x", "pbs", ""] {
            assert!(Executor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shell_quoting_keeps_plain_words_plain() {
        assert_eq!(shell_words(&["a=1,b=2".into(), "it's".into(), "x y".into()]), "a=1,b=2 'it'\\''s' 'x y'");
    }
}
