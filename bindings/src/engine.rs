//! Building the engine a script runs in: the families, the script names of host types, the session
//! tag, stdlib/file imports, printing into the run log, and Ctrl-C cancellation.

use std::io::Write;
use std::sync::Arc;

use medbridge_runtime::run::Session;
use rhai::{Dynamic, Engine};

use crate::context::SessionHandle;
use crate::families::families;
use crate::resolver::Resolver;
use crate::script_types;

/// Where `print` and `debug` output goes besides the run's `output.log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// Print to stdout/stderr too (the CLI).
    Terminal,
    /// Only the run log (tests, embedding).
    LogOnly,
}

/// How large a script's own values and nesting may grow before the engine stops it with an error
/// (instead of the process running out of stack or memory). `--max-string-size` and
/// `--max-array-size` raise the two a real experiment can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptLimits {
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Elements in one array (and entries in one map).
    pub max_array_size: usize,
    /// Nested function calls.
    pub max_call_levels: usize,
    /// Modules one script may import, directly or not.
    pub max_modules: usize,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits {
            max_string_size: 64 << 20,
            max_array_size: 10_000_000,
            max_call_levels: 64,
            max_modules: 256,
        }
    }
}

/// An engine with every medbridge family registered, bound to `session`, under the default limits.
pub fn new_engine(session: Arc<Session>, echo: Echo) -> Engine {
    new_engine_with_limits(session, echo, ScriptLimits::default())
}

/// An engine with every medbridge family registered, bound to `session`, under `limits`.
pub fn new_engine_with_limits(session: Arc<Session>, echo: Echo, limits: ScriptLimits) -> Engine {
    let mut engine = Engine::new();
    for family in families() {
        engine.register_global_module(family.module.into());
    }
    script_types::register(&mut engine);
    engine.set_default_tag(SessionHandle(session.clone()).into_tag());
    engine.set_module_resolver(Resolver::new(session.sandbox.clone()));
    engine.set_max_expr_depths(256, 256);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_modules(limits.max_modules);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_array_size);

    let out = session.clone();
    engine.on_print(move |text| {
        if echo == Echo::Terminal {
            // A closed stdout (`medbridge run ... | head`) must not abort the run either: the
            // run directory's output.log below still records every line.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        }
        // A full disk must not abort the script; the terminal still shows the output.
        let _ = out.run.log_output(text);
    });
    let dbg = session.clone();
    engine.on_debug(move |text, source, pos| {
        let line = match source {
            Some(src) => format!("[{src}:{pos}] {text}"),
            None => format!("[{pos}] {text}"),
        };
        if echo == Echo::Terminal {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
        let _ = dbg.run.log_output(&line);
    });
    let cancel = session.cancel.clone();
    engine.on_progress(move |_| cancel.is_cancelled().then(|| Dynamic::from("cancelled")));
    engine
}
