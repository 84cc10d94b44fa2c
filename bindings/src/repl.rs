//! The REPL's line processing, independent of any terminal: a scope and function definitions
//! that persist between entries, multi-line input, `help NAME`, completion candidates, and errors
//! that never end the session. `medbridge repl` puts rustyline in front of it.

use rhai::{Dynamic, Engine, EvalAltResult, ParseErrorType, Scope, AST};

use crate::error::diagnose;

/// What one line of input produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The entry is not finished (an open block, call or string): read another line.
    Incomplete,
    /// Evaluated; the value to show, if not `()`.
    Value(Option<String>),
    /// Text for the user (help).
    Info(String),
    /// The entry failed; the session goes on.
    Error(String),
}

pub struct Repl {
    engine: Engine,
    scope: Scope<'static>,
    functions: AST,
    pending: String,
    names: Vec<String>,
}

impl Repl {
    pub fn new(engine: Engine, scope: Scope<'static>) -> Self {
        let mut names: Vec<String> = engine
            .gen_fn_signatures(false)
            .iter()
            .filter_map(|s| s.split('(').next())
            .map(|n| n.trim().to_string())
            .filter(|n| n.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_'))
            .collect();
        names.sort();
        names.dedup();
        Repl { engine, scope, functions: AST::empty(), pending: String::new(), names }
    }

    /// True while lines are being collected for an unfinished entry.
    pub fn is_continuing(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Feed one line; an entry runs once it parses as complete.
    pub fn feed_line(&mut self, line: &str) -> Outcome {
        if self.pending.is_empty() {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                return Outcome::Value(None);
            }
            if let Some(name) = trimmed.strip_prefix("help") {
                if name.is_empty() || name.starts_with(' ') {
                    return Outcome::Info(self.help(name.trim()));
                }
            }
        }
        self.pending.push_str(line);
        self.pending.push('\n');
        let entry = std::mem::take(&mut self.pending);
        match self.engine.compile_with_scope(&self.scope, &entry) {
            Err(e) if is_unfinished(e.err_type()) => {
                self.pending = entry;
                Outcome::Incomplete
            }
            Err(e) => Outcome::Error(diagnose(&EvalAltResult::from(e), "<repl>", &self.engine).to_string()),
            Ok(ast) => self.run(ast),
        }
    }

    /// Drop a half-typed entry (Ctrl-C at the prompt).
    pub fn cancel_entry(&mut self) {
        self.pending.clear();
    }

    fn run(&mut self, ast: AST) -> Outcome {
        let program = self.functions.merge(&ast);
        match self.engine.eval_ast_with_scope::<Dynamic>(&mut self.scope, &program) {
            Ok(value) => {
                self.functions = program;
                self.functions.clear_statements();
                Outcome::Value((!value.is_unit()).then(|| value.to_string()))
            }
            Err(e) => Outcome::Error(diagnose(&e, "<repl>", &self.engine).to_string()),
        }
    }

    fn help(&self, name: &str) -> String {
        if name.is_empty() {
            return "help NAME shows a function's signatures and doc; `medbridge doc` lists everything.\n\
                    Variables persist between entries; an open block continues on the next line; Ctrl-C \
                    cancels a running primitive, Ctrl-D leaves."
                .to_string();
        }
        crate::docs::help(name).unwrap_or_else(|| format!("no function named `{name}`"))
    }

    /// Functions and scope variables starting with `prefix`.
    pub fn completions(&self, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .names
            .iter()
            .cloned()
            .chain(self.scope.iter().map(|(name, _, _)| name.to_string()))
            .chain(self.functions.iter_functions().map(|f| f.name.to_string()))
            .filter(|n| n.starts_with(prefix))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn is_unfinished(err: &ParseErrorType) -> bool {
    match err {
        ParseErrorType::UnexpectedEOF => true,
        ParseErrorType::MissingToken(token, _) => matches!(token.as_str(), "}" | ")" | "]"),
        ParseErrorType::UnknownOperator(_) | ParseErrorType::BadInput(_) => false,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{open_session, scope_with_args, SessionOptions};
    use crate::{new_engine, Echo};
    use medbridge_runtime::run::CancelFlag;

    fn repl(dir: &std::path::Path, cancel: CancelFlag) -> Repl {
        let opts = SessionOptions {
            script: None,
            out: Some(dir.join("run")),
            device: "cpu".into(),
            allow_read: vec![],
            quiet: true,
            offline: false,
            cancel,
            max_memory: None,
        };
        let session = open_session(&opts).unwrap();
        Repl::new(new_engine(session, Echo::LogOnly), scope_with_args(rhai::Map::new()))
    }

    #[test]
    fn scope_and_functions_persist_between_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = repl(dir.path(), CancelFlag::new());
        assert_eq!(r.feed_line("let x = zeros([2, 3]);"), Outcome::Value(None));
        assert_eq!(r.feed_line("fn double(v) { v * 2 }"), Outcome::Value(None));
        assert_eq!(r.feed_line("double(x.shape()[1])"), Outcome::Value(Some("6".into())));
    }

    #[test]
    fn open_blocks_continue_on_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = repl(dir.path(), CancelFlag::new());
        assert_eq!(r.feed_line("let total = 0;"), Outcome::Value(None));
        assert_eq!(r.feed_line("for i in 0..4 {"), Outcome::Incomplete);
        assert!(r.is_continuing());
        assert_eq!(r.feed_line("  total += i;"), Outcome::Incomplete);
        assert_eq!(r.feed_line("}"), Outcome::Value(None));
        assert_eq!(r.feed_line("total"), Outcome::Value(Some("6".into())));
    }

    #[test]
    fn errors_do_not_end_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = repl(dir.path(), CancelFlag::new());
        r.feed_line("let a = ones([2]);");
        let Outcome::Error(e) = r.feed_line("a + ones([3])") else { panic!("expected an error") };
        assert!(e.contains("<repl>:1:3") && e.contains("shapes [2] and [3]"), "{e}");
        assert!(matches!(r.feed_line("let = ;"), Outcome::Error(_)));
        assert_eq!(r.feed_line("a.sum()"), Outcome::Value(Some("2.0".into())));
    }

    #[test]
    fn help_and_completion_come_from_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = repl(dir.path(), CancelFlag::new());
        let Outcome::Info(text) = r.feed_line("help randn") else { panic!("expected help") };
        assert!(text.contains("randn(shape: array, seed: int) -> Tensor") && text.contains("seed"), "{text}");
        r.feed_line("let randomness = 1;");
        let c = r.completions("rand");
        assert!(c.contains(&"randn".to_string()) && c.contains(&"randomness".to_string()), "{c:?}");
    }

    #[test]
    fn cancellation_stops_the_running_entry_only() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancelFlag::new();
        let mut r = repl(dir.path(), cancel.clone());
        cancel.cancel();
        let Outcome::Error(e) = r.feed_line("loop { }") else { panic!("expected cancellation") };
        assert!(e.contains("cancelled"), "{e}");
        cancel.reset();
        assert_eq!(r.feed_line("1 + 1"), Outcome::Value(Some("2".into())));
    }
}
