//! Runtime errors become script errors here, and script errors become `file:line:col: message`
//! diagnostics. This is the only place the two error worlds meet.

use std::fmt;

use medbridge_runtime::run::memory::Size;
use medbridge_runtime::Error;
use rhai::{Engine, EvalAltResult, Position};

/// What native functions return to Rhai.
pub type ScriptResult<T> = Result<T, Box<EvalAltResult>>;

/// Convert a runtime result for Rhai; Rhai fills in the calling script's position.
pub trait IntoScript<T> {
    fn script(self) -> ScriptResult<T>;
}

impl<T> IntoScript<T> for medbridge_runtime::Result<T> {
    fn script(self) -> ScriptResult<T> {
        self.map_err(script_error)
    }
}

impl<T> IntoScript<T> for candle_core::Result<T> {
    fn script(self) -> ScriptResult<T> {
        self.map_err(|e| script_error(Error::from(e)))
    }
}

pub fn script_error(e: Error) -> Box<EvalAltResult> {
    let message = if e.is_cancelled() { format!("cancelled: {e}") } else { e.to_string() };
    Box::new(EvalAltResult::ErrorRuntime(message.into(), Position::NONE))
}

/// A script error with a plain message (bad option, bad value).
pub fn script_msg(message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(message.into().into(), Position::NONE))
}

/// A script error located in a file, for terminals and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Locate an error: errors inside functions and modules are followed to the innermost position,
/// and the message keeps the chain of calls that led there. `engine` is the one that raised it,
/// for the limits a size error names.
pub fn diagnose(err: &EvalAltResult, file: &str, engine: &Engine) -> Diagnostic {
    let mut file = file.to_string();
    let mut prefix = Vec::new();
    let mut current = err;
    let mut outer_pos = err.position();
    loop {
        match current {
            EvalAltResult::ErrorInFunctionCall(name, source, inner, pos) => {
                if !pos.is_none() {
                    outer_pos = *pos;
                }
                if !source.is_empty() {
                    file = source.clone();
                }
                if !name.starts_with("anon$") {
                    prefix.push(format!("in `{name}`"));
                }
                current = inner;
            }
            EvalAltResult::ErrorInModule(name, inner, pos) => {
                if !pos.is_none() {
                    outer_pos = *pos;
                }
                file = name.clone();
                prefix.push(format!("in module `{name}`"));
                current = inner;
            }
            _ => break,
        }
    }
    let pos = if current.position().is_none() { outer_pos } else { current.position() };
    let mut message = match current {
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        EvalAltResult::ErrorTerminated(_, _) => "cancelled by the user (Ctrl-C)".to_string(),
        EvalAltResult::ErrorFunctionNotFound(signature, _) => function_not_found(signature),
        EvalAltResult::ErrorDataTooLarge(what, _) => too_large(what, engine),
        other => strip_position(&other.to_string(), other.position()),
    };
    if !prefix.is_empty() {
        message = format!("{}: {message}", prefix.join(": "));
    }
    Diagnostic { file, line: pos.line(), column: pos.position(), message }
}

/// A string, array or map past the engine's limit, with the limit and the flag that raises it.
fn too_large(what: &str, engine: &Engine) -> String {
    let limit = if what.contains("string") {
        format!(
            "a string may hold at most {} ({} bytes); give a larger --max-string-size BYTES to allow more",
            Size(engine.max_string_size() as u64),
            engine.max_string_size()
        )
    } else {
        let (kind, unit) = if what.contains("map") { ("a map", "entries") } else { ("an array", "elements") };
        format!(
            "{kind} may hold at most {} {unit}; give a larger --max-array-size N to allow more",
            engine.max_array_size().max(engine.max_map_size())
        )
    };
    format!("{what} too large: {limit}")
}

/// Rhai names the missing signature; list the ones that exist under that name, both in the
/// type names of `medbridge doc`.
fn function_not_found(signature: &str) -> String {
    let name = signature.split([' ', '(']).next().unwrap_or(signature);
    let signature = script_signature(signature);
    match crate::docs::help(name) {
        Some(known) => {
            let sigs: Vec<&str> = known
                .lines()
                .filter(|l| !l.starts_with(' '))
                .map(|l| l.split("  [").next().unwrap_or(l))
                .collect();
            format!("Function not found: {signature}; available: {}", sigs.join("; "))
        }
        None => format!("Function not found: {signature}"),
    }
}

/// `zeros (&str | ImmutableString | String, i64)` as `zeros (string, int)`.
fn script_signature(signature: &str) -> String {
    let Some((name, args)) = signature.split_once(" (").and_then(|(n, a)| Some((n, a.strip_suffix(')')?)))
    else {
        return signature.to_string();
    };
    let args: Vec<String> = args
        .split(", ")
        .map(|arg| {
            let mut names: Vec<String> = arg.split(" | ").map(crate::docs::script_type).collect();
            names.dedup();
            names.join(" | ")
        })
        .collect();
    format!("{name} ({})", args.join(", "))
}

fn strip_position(text: &str, pos: Position) -> String {
    let suffix = format!(" ({pos})");
    text.strip_suffix(&suffix).unwrap_or(text).to_string()
}
