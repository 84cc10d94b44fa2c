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
            Err(e) => Outcome::Error(diagnose(&EvalAltResult::from(e), "<repl>").to_string()),
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
            Err(e) => Outcome::Error(diagnose(&e, "<repl>").to_string()),
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
