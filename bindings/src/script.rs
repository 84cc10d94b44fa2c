//! Running and checking script files: the session a run gets, `--set` arguments, compilation with
//! imports resolved, and evaluation with errors located as `file:line:col`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use medbridge_runtime::dist::World;
use medbridge_runtime::run::{CancelFlag, MemoryBudget, ProgressMode, RunDir, Session};
use medbridge_runtime::sandbox::Sandbox;
use rhai::{Dynamic, Engine, Map, Scope, AST};
use serde_json::json;

use crate::engine::{new_engine_with_limits, Echo, ScriptLimits};
use crate::error::{diagnose, Diagnostic};

/// Everything `medbridge run` (or the REPL) needs to open a session.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// The script being run, if any (the REPL has none).
    pub script: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub device: String,
    pub allow_read: Vec<PathBuf>,
    pub quiet: bool,
    /// `--offline`: loaders read the caches only, never the network.
    pub offline: bool,
    pub cancel: CancelFlag,
    /// `--max-memory` in bytes; `None` leaves the machine's default budget.
    pub max_memory: Option<u64>,
}

/// Create the run directory and sandbox and select the device.
pub fn open_session(opts: &SessionOptions) -> medbridge_runtime::Result<Arc<Session>> {
    open_session_on(opts, &World::single())
}

/// As [`open_session`] for one rank of `world`: rank 0 creates the run directory and tells the
/// others its path; they attach to it (logging to `rank-N.log`) with a sandbox that refuses
/// writes.
pub fn open_session_on(opts: &SessionOptions, world: &World) -> medbridge_runtime::Result<Arc<Session>> {
    let device = medbridge_runtime::device::parse_device(&opts.device)?;
    let stem = opts
        .script
        .as_ref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repl".to_string());
    let created = world.is_root().then(|| RunDir::create(opts.out.as_deref(), &stem));
    let run = match created {
        Some(created) if !world.is_distributed() => created?,
        created => {
            // Rank 0 sends an empty path when it failed, so the others stop too.
            let path = created.as_ref().map(|c| c.as_ref().map(|r| r.path().display().to_string()));
            let agreed =
                world.broadcast_text("the run directory", &path.and_then(Result::ok).unwrap_or_default())?;
            match created {
                Some(created) => created?,
                None if agreed.is_empty() => {
                    medbridge_runtime::bail!("rank 0 could not create the run directory (its error says why)")
                }
                None => RunDir::attach_rank(Path::new(&agreed), world.rank())?,
            }
        }
    };
    let script_dir = opts
        .script
        .as_ref()
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let (roots, bases) = Sandbox::standard_roots(script_dir.as_deref(), &opts.allow_read);
    let sandbox = Sandbox::new(roots, bases, run.path())?.for_rank(world.rank(), world.size());
    // One set of progress bars: rank 0's.
    let quiet = opts.quiet || !world.is_root();
    let progress = if quiet { ProgressMode::Quiet } else { ProgressMode::Auto };
    let session = Session::new(device, sandbox, run, opts.cancel.clone(), progress)
        .with_offline(opts.offline)
        .with_world(world.clone());
    Ok(Arc::new(match opts.max_memory {
        Some(bytes) => session.with_memory(MemoryBudget::given(bytes)),
        None => session,
    }))
}

/// Parse `--set name=value`: ints, floats and bools when they look like one, else a string.
pub fn parse_set(pair: &str) -> Result<(String, Dynamic), String> {
    let (name, value) = pair.split_once('=').ok_or_else(|| format!("--set `{pair}`: expected name=value"))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(format!("--set `{pair}`: `{name}` is not a valid name (letters, digits, _)"));
    }
    Ok((name.to_string(), parse_value(value)))
}

fn parse_value(text: &str) -> Dynamic {
    if let Ok(i) = text.parse::<i64>() {
        return Dynamic::from_int(i);
    }
    if let Ok(f) = text.parse::<f64>() {
        if text.chars().any(|c| c.is_ascii_digit()) {
            return Dynamic::from_float(f);
        }
    }
    match text {
        "true" => Dynamic::TRUE,
        "false" => Dynamic::FALSE,
        _ => Dynamic::from(text.to_string()),
    }
}

/// A scope holding the constant `args` map.
pub fn scope_with_args(args: Map) -> Scope<'static> {
    let mut scope = Scope::new();
    scope.push_constant("args", args);
    scope
}

/// Compile a script with every import resolved, so unknown imports and undefined variables are
/// reported before anything runs.
pub fn compile(engine: &Engine, scope: &Scope, path: &Path, source: &str) -> Result<AST, Diagnostic> {
    let source = without_bom(source);
    let name = path.display().to_string();
    let mut ast = engine.compile_into_self_contained(scope, source).map_err(|e| {
        let mut d = diagnose(&e, &name, engine);
        if d.line.is_none() {
            if let Some((line, column)) = locate_import(source, &d.message) {
                (d.line, d.column) = (Some(line), Some(column));
            }
        }
        d
    })?;
    ast.set_source(name);
    Ok(ast)
}

/// `source` without a leading UTF-8 byte-order mark, which some Windows editors write and Rhai
/// would read as a stray character.
pub fn without_bom(source: &str) -> &str {
    source.strip_prefix('\u{feff}').unwrap_or(source)
}

/// Rhai resolves imports without positions at compile time; find the `import` statement whose
/// path the message names, as (line, column) of the path string.
fn locate_import(source: &str, message: &str) -> Option<(usize, usize)> {
    source.lines().enumerate().find_map(|(i, line)| {
        let start = line.find("import")?;
        let rest = &line[start..];
        let open = rest.find('"')?;
        let close = rest[open + 1..].find('"')?;
        let path = &rest[open + 1..open + 1 + close];
        message.contains(&format!("`{path}`")).then_some((i + 1, start + open + 1))
    })
}

/// Read a script file, or a diagnostic naming it.
pub fn read_script(path: &Path) -> Result<String, Diagnostic> {
    std::fs::read_to_string(path).map_err(|e| Diagnostic {
        file: path.display().to_string(),
        line: None,
        column: None,
        message: format!("cannot read script: {e}"),
    })
}

/// Compile and run a script in `session`; records the script, args and device in the run dir.
pub fn run_file(
    session: Arc<Session>,
    path: &Path,
    args: Map,
    echo: Echo,
    limits: ScriptLimits,
) -> Result<Dynamic, Diagnostic> {
    let source = read_script(path)?;
    let name = path.display().to_string();
    let record = |e: medbridge_runtime::Error| Diagnostic {
        file: name.clone(),
        line: None,
        column: None,
        message: e.to_string(),
    };
    let sha = session.run.record_script(&source).map_err(record)?;
    let info = json!({
        "script": name,
        "sha256": sha,
        "args": crate::convert::to_json(&Dynamic::from_map(args.clone())).unwrap_or_default(),
        "device": medbridge_runtime::device::device_name(&session.device),
        "medbridge": env!("CARGO_PKG_VERSION"),
        "offline": session.net().offline,
    });
    session.run.record_run(&info).map_err(record)?;
    let mut engine = new_engine_with_limits(session, echo, limits);
    engine.set_strict_variables(true);
    let mut scope = scope_with_args(args);
    let ast = compile(&engine, &scope, path, &source)?;
    engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast).map_err(|e| diagnose(&e, &name, &engine))
}

/// Compile a script without running it.
pub fn check_file(session: Arc<Session>, path: &Path, limits: ScriptLimits) -> Result<(), Diagnostic> {
    let source = read_script(path)?;
    let mut engine = new_engine_with_limits(session, Echo::LogOnly, limits);
    engine.set_strict_variables(true);
    compile(&engine, &scope_with_args(Map::new()), path, &source).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_take_the_type_they_look_like() {
        let v = |s: &str| parse_set(s).unwrap().1;
        assert_eq!(v("n=3").as_int().unwrap(), 3);
        assert_eq!(v("lr=1e-4").as_float().unwrap(), 1e-4);
        assert_eq!(v("x=-0.5").as_float().unwrap(), -0.5);
        assert!(v("quick=true").as_bool().unwrap());
        assert_eq!(
            v("model=Qwen/Qwen2.5-VL-7B-Instruct").into_string().unwrap(),
            "Qwen/Qwen2.5-VL-7B-Instruct"
        );
        assert_eq!(v("s=inf").into_string().unwrap(), "inf");
        assert_eq!(v("eq=a=b").into_string().unwrap(), "a=b");
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("bad-name=1").is_err());
    }
}
