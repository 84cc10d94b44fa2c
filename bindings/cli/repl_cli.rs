//! `medbridge repl`: rustyline in front of the bindings' line processor, with history in
//! `~/.medbridge_history`, tab completion of functions and variables, and Ctrl-C that cancels
//! the running primitive (or the half-typed entry) instead of leaving.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::rc::Rc;

use medbridge_bindings::repl::{Outcome, Repl};
use medbridge_bindings::script::{open_session, scope_with_args};
use medbridge_bindings::{new_engine_with_limits, Echo};
use medbridge_runtime::run::CancelFlag;
use rhai::Map;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::{Context, Editor, Helper, Highlighter, Hinter, Validator};

use crate::commands::{
    install_cancel_handler, require_fresh_out, session_options, SCRIPT_ERROR, USAGE_ERROR,
};
use crate::RunArgs;

#[derive(Helper, Highlighter, Hinter, Validator)]
struct ReplHelper {
    repl: Rc<RefCell<Repl>>,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos].rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let prefix = &line[start..pos];
        let pairs = self
            .repl
            .borrow()
            .completions(prefix)
            .into_iter()
            .map(|name| Pair { display: name.clone(), replacement: name })
            .collect();
        Ok((start, pairs))
    }
}

pub fn repl(opts: &RunArgs) -> u8 {
    if let Some(code) = crate::commands::refuse_under_mpi("repl") {
        return code;
    }
    if let Err(e) = require_fresh_out(opts.out.as_deref()) {
        eprintln!("error: {e}");
        return USAGE_ERROR;
    }
    let cancel = CancelFlag::new();
    install_cancel_handler(&cancel);
    let session = match open_session(&session_options(None, opts, cancel.clone())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return USAGE_ERROR;
        }
    };
    eprintln!("medbridge {} — `help NAME` for a function, Ctrl-D to leave", env!("CARGO_PKG_VERSION"));
    eprintln!("run directory: {}", session.run.path().display());
    let repl = Rc::new(RefCell::new(Repl::new(
        new_engine_with_limits(session, Echo::Terminal, opts.limits.limits()),
        scope_with_args(Map::new()),
    )));
    let mut editor: Editor<ReplHelper, rustyline::history::DefaultHistory> = match Editor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return USAGE_ERROR;
        }
    };
    editor.set_helper(Some(ReplHelper { repl: repl.clone() }));
    let history = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".medbridge_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    // Piped input is a script in all but name: a failed entry must show in the exit code.
    let mut failed = false;
    loop {
        let prompt = if repl.borrow().is_continuing() { "...> " } else { "mb> " };
        match editor.readline(prompt) {
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                cancel.reset();
                match repl.borrow_mut().feed_line(&line) {
                    Outcome::Incomplete | Outcome::Value(None) => {}
                    Outcome::Value(Some(v)) => println!("=> {v}"),
                    Outcome::Info(text) => println!("{text}"),
                    Outcome::Error(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            Err(ReadlineError::Interrupted) => repl.borrow_mut().cancel_entry(),
            Err(ReadlineError::Eof) => {
                if repl.borrow().is_continuing() {
                    eprintln!("error: the input ended inside an unfinished entry");
                    failed = true;
                }
                break;
            }
            Err(e) => {
                eprintln!("error: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    if failed && !std::io::stdin().is_terminal() {
        SCRIPT_ERROR
    } else {
        0
    }
}
