//! `medbridge doc`: the script surface, generated from the engine's own metadata (names,
//! signatures and `///` comments of registered functions), never from a hand-kept list, and,
//! for a function taking an options map, from its declared `OptionSet` (see `options.rs`).

use rhai::Engine;
use serde::Serialize;
use serde_json::Value;

use crate::families::families;
use crate::options::{self, OptionDoc, OptionSet};
use crate::script_types;

#[derive(Serialize)]
pub struct FunctionDoc {
    pub name: String,
    pub signature: String,
    pub doc: String,
    /// Every key its options map accepts; absent for a function without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<OptionDoc>>,
}

#[derive(Serialize)]
pub struct FamilyDoc {
    pub name: String,
    pub doc: String,
    pub types: Vec<String>,
    pub functions: Vec<FunctionDoc>,
}

/// One entry per family, from a raw engine holding only that family's module.
pub fn family_docs() -> Vec<FamilyDoc> {
    families()
        .into_iter()
        .map(|family| {
            let mut engine = Engine::new_raw();
            engine.register_global_module(family.module.into());
            let meta: Value = engine
                .gen_fn_metadata_to_json(false)
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or(Value::Null);
            FamilyDoc {
                name: family.name.to_string(),
                doc: family.doc.to_string(),
                types: meta["customTypes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["displayName"].as_str().map(str::to_string))
                    .collect(),
                functions: functions(&meta, family.options),
            }
        })
        .collect()
}

/// The declared options of a registered function: the set with its name (and, where two types
/// register the name, its receiver's type), for a function with a `map` parameter.
pub fn option_set(f: &Value, sets: &[&'static OptionSet]) -> Option<&'static OptionSet> {
    let name = f["name"].as_str().unwrap_or_default();
    let types: Vec<String> = f["params"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| script_type(p["type"].as_str().unwrap_or("?")))
        .collect();
    if !types.iter().any(|t| t == "map") {
        return None;
    }
    sets.iter()
        .copied()
        .find(|s| s.function == name && s.receiver.is_none_or(|r| types.first().is_some_and(|t| t == r)))
}

fn functions(meta: &Value, sets: &[&'static OptionSet]) -> Vec<FunctionDoc> {
    let mut out: Vec<FunctionDoc> = meta["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| FunctionDoc {
            name: f["name"].as_str().unwrap_or_default().to_string(),
            signature: signature(f),
            options: option_set(f, sets).map(options::docs),
            doc: f["docComments"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(strip_comment)
                .collect::<Vec<_>>()
                .join("\n"),
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.signature).cmp(&(&b.name, &b.signature)));
    out
}

/// A signature as a script author reads it: `Tensor.sum(dim: int) -> Tensor`, `Tensor + float`.
fn signature(f: &Value) -> String {
    let name = f["name"].as_str().unwrap_or_default();
    let params: Vec<(String, String, bool)> = f["params"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let rust = p["type"].as_str().unwrap_or("?");
            (p["name"].as_str().unwrap_or("_").to_string(), script_type(rust), rust.starts_with("&mut"))
        })
        .collect();
    let ret = script_type(f["returnType"].as_str().unwrap_or("()"));
    let arrow = if ret == "()" { String::new() } else { format!(" -> {ret}") };
    let is_operator = !name.starts_with(|c: char| c.is_alphabetic() || c == '_');
    match params.as_slice() {
        [(_, a, _), (_, b, _)] if is_operator => format!("{a} {name} {b}{arrow}"),
        [(_, a, _)] if is_operator => format!("{name}{a}{arrow}"),
        [(_, this, true), rest @ ..] => format!("{this}.{name}({}){arrow}", list(rest)),
        all => format!("{name}({}){arrow}", list(all)),
    }
}

fn list(params: &[(String, String, bool)]) -> String {
    params.iter().map(|(n, t, _)| format!("{n}: {t}")).collect::<Vec<_>>().join(", ")
}

/// Rust parameter types as scripts name them: host types by their one script name (`Vlm` and the
/// family alias `Model` both read `Model`), Rhai's own types as `int`, `float`, `string`, ...
pub fn script_type(rust: &str) -> String {
    let t = rust.trim().trim_start_matches("&mut ").trim_start_matches('&').trim();
    if let Some(inner) = t.strip_prefix("Result<").and_then(|r| r.rsplit_once(',')).map(|(ok, _)| ok) {
        return script_type(inner);
    }
    let t = t.rsplit("::").next().unwrap_or(t);
    if let Some(name) = script_types::script_name(t) {
        return name.to_string();
    }
    match t {
        "i64" | "INT" => "int",
        "f64" | "FLOAT" => "float",
        "str" | "String" | "ImmutableString" => "string",
        "Array" => "array",
        "Map" => "map",
        "Dynamic" => "any",
        "FnPtr" | "Fn" => "function",
        other => other,
    }
    .to_string()
}

fn strip_comment(line: &str) -> String {
    line.lines()
        .map(|l| {
            l.trim_start().trim_start_matches("///").trim_start_matches("/**").trim_end_matches("*/").trim()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The whole surface as JSON.
pub fn json() -> String {
    serde_json::to_string_pretty(&family_docs()).unwrap_or_else(|_| "[]".to_string())
}

/// The whole surface as Markdown: a section per family, a line per signature with its doc.
pub fn markdown() -> String {
    let mut out = String::from(
        "# medbridge script surface\n\nGenerated by `medbridge doc` from the engine's metadata.\n",
    );
    for family in family_docs() {
        out += &format!("\n## {}\n\n{}\n", family.name, family.doc);
        if !family.types.is_empty() {
            out += &format!("\nTypes: {}\n", family.types.join(", "));
        }
        out += "\n";
        for f in &family.functions {
            out += &format!("- `{}`", f.signature);
            if !f.doc.is_empty() {
                out += &format!(" — {}", f.doc);
            }
            out += "\n";
            option_lines(&mut out, f.options.as_deref().unwrap_or_default(), 1);
        }
    }
    out
}

/// One indented line per option: `` `key` (type, range; default: x) — doc``, nested maps below.
fn option_lines(out: &mut String, options: &[OptionDoc], depth: usize) {
    for o in options {
        let mut head = format!("`{}`", o.key);
        for a in &o.aliases {
            head += &format!(" (alias `{a}`)");
        }
        let range = o.range.as_ref().map(|r| format!(", {r}")).unwrap_or_default();
        *out += &format!(
            "{}- {head} ({}{range}; default: {}) — {}\n",
            "  ".repeat(depth),
            o.type_name,
            o.default,
            o.doc
        );
        option_lines(out, &o.options, depth + 1);
    }
}

/// Signatures and docs of every function called `name` (for the REPL's `help`).
pub fn help(name: &str) -> Option<String> {
    let lines: Vec<String> = family_docs()
        .iter()
        .flat_map(|family| {
            family.functions.iter().filter(|f| f.name == name).map(move |f| (family.name.clone(), f))
        })
        .map(|(family, f)| {
            format!("{}  [{family}]\n    {}", f.signature, if f.doc.is_empty() { "(no doc)" } else { &f.doc })
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The per-family docs must list exactly what a full engine registers beyond Rhai's own
    /// standard library, so nothing registered can go undocumented.
    #[test]
    fn docs_list_every_registered_function() {
        let mut engine = Engine::new_raw();
        for family in families() {
            engine.register_global_module(family.module.into());
        }
        let meta: Value = serde_json::from_str(&engine.gen_fn_metadata_to_json(false).unwrap()).unwrap();
        let registered: BTreeSet<String> = meta["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect();
        let documented: BTreeSet<String> =
            family_docs().iter().flat_map(|f| f.functions.iter().map(|x| x.name.clone())).collect();
        assert_eq!(registered, documented);
        assert!(documented.contains("load_safetensors") && documented.contains("write_json"));
    }

    #[test]
    fn signatures_read_as_script_types() {
        let md = markdown();
        assert!(md.contains("`Tensor.sum(dim: int) -> Tensor`"), "{md}");
        assert!(md.contains("`Tensor + float -> Tensor`"), "{md}");
        assert!(md.contains("`read_text(path: string) -> string`"), "{md}");
        assert!(!md.contains("EvalAltResult") && !md.contains("&mut"), "{md}");
    }
}
