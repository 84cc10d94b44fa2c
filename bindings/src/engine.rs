//! Building the engine a script runs in: the families, the script names of host types, the session
//! tag, stdlib/file imports, printing into the run log, and Ctrl-C cancellation.

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

/// An engine with every medbridge family registered, bound to `session`.
pub fn new_engine(session: Arc<Session>, echo: Echo) -> Engine {
    let mut engine = Engine::new();
    for family in families() {
        engine.register_global_module(family.module.into());
    }
    script_types::register(&mut engine);
    engine.set_default_tag(SessionHandle(session.clone()).into_tag());
    engine.set_module_resolver(Resolver::new(session.sandbox.clone()));
    engine.set_max_expr_depths(256, 256);

    let out = session.clone();
    engine.on_print(move |text| {
        if echo == Echo::Terminal {
            println!("{text}");
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
            eprintln!("{line}");
        }
        let _ = dbg.run.log_output(&line);
    });
    let cancel = session.cancel.clone();
    engine.on_progress(move |_| cancel.is_cancelled().then(|| Dynamic::from("cancelled")));
    engine
}
