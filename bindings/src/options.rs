//! Script options declared once. Each registered function that takes an options map has one
//! [`OptionSet`]: its keys with type, range, what an absent key means and a one-line doc. From it
//! come the unknown-key check, the typed accessors and their error messages, and the options
//! `medbridge doc` lists, so the three cannot drift apart (they did when written by hand).
//!
//! Accessors look their key up in the set: asking for a key the set does not declare, or with an
//! accessor of another kind, is a programming error and panics (the script tests reach them).

use rhai::{Array, Dynamic, FnPtr, Map};
use serde::Serialize;

use crate::convert::as_f64;
use crate::error::{script_msg, ScriptResult};

/// One end of a float range.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Open,
    Incl(f64),
    Excl(f64),
}

/// What a key's value must be.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// An int `>= min`.
    Int {
        min: i64,
    },
    /// A finite number (ints are accepted) within the bounds.
    Float {
        min: Bound,
        max: Bound,
    },
    Bool,
    /// A string; one of `choices` unless empty.
    Str(&'static [&'static str]),
    /// An array of non-negative ints.
    Ints,
    /// An array of strings.
    Strs,
    /// A map, with its own declared keys when given.
    Map(Option<&'static OptionSet>),
    /// A closure (`|...| ...`).
    Closure,
    /// A value the function reads itself, described for authors (`"a Task"`, `"an Image or a
    /// file path"`).
    Value(&'static str),
}

/// A count, a size, a step number.
pub const COUNT: Kind = Kind::Int { min: 0 };
/// At least one.
pub const POSITIVE: Kind = Kind::Int { min: 1 };
/// Any finite number.
pub const FLOAT: Kind = Kind::Float { min: Bound::Open, max: Bound::Open };
/// A finite number `>= 0`.
pub const NON_NEGATIVE: Kind = Kind::Float { min: Bound::Incl(0.0), max: Bound::Open };
/// A finite number `> 0`.
pub const POSITIVE_FLOAT: Kind = Kind::Float { min: Bound::Excl(0.0), max: Bound::Open };
/// A finite number in `[0, 1]`.
pub const FRACTION: Kind = Kind::Float { min: Bound::Incl(0.0), max: Bound::Incl(1.0) };
/// Any string.
pub const STR: Kind = Kind::Str(&[]);

/// What leaving a key out means.
#[derive(Debug, Clone, Copy)]
pub enum Absent {
    /// The call fails without it.
    Required,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'static str),
    /// Said in words (`"the run's next seed"`, `"all"`).
    Means(&'static str),
}

/// One option key.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub key: &'static str,
    /// Other accepted spellings, e.g. `"eval"` for `eval_options` (a Rhai keyword, so quoted).
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    pub absent: Absent,
    pub doc: &'static str,
}

/// A key without aliases.
pub const fn opt(key: &'static str, kind: Kind, absent: Absent, doc: &'static str) -> OptionSpec {
    OptionSpec { key, aliases: &[], kind, absent, doc }
}

impl OptionSpec {
    pub const fn aliases(self, aliases: &'static [&'static str]) -> Self {
        OptionSpec { aliases, ..self }
    }
}

/// `seed`, shared by everything random.
pub const SEED: OptionSpec =
    opt("seed", COUNT, Absent::Means("the run's next seed"), "random seed; same seed, same result");

/// The options of one function (or of one nested map such as `lora`), as groups of specs so
/// that families can share groups (`sft` and `grpo` share their training options).
#[derive(Debug)]
pub struct OptionSet {
    /// The function as messages name it (`"generate"`, `"lora"` for a nested map).
    pub function: &'static str,
    /// For a method whose name another type also registers (`Dataset` vs `Task` `balanced`).
    pub receiver: Option<&'static str>,
    pub groups: &'static [&'static [OptionSpec]],
}

impl OptionSet {
    pub const fn new(function: &'static str, groups: &'static [&'static [OptionSpec]]) -> Self {
        OptionSet { function, receiver: None, groups }
    }

    pub const fn on(self, receiver: &'static str) -> Self {
        OptionSet { receiver: Some(receiver), ..self }
    }

    pub fn specs(&self) -> impl Iterator<Item = &'static OptionSpec> + '_ {
        self.groups.iter().flat_map(|g| g.iter())
    }

    /// Every accepted name: keys and their aliases, in declaration order.
    pub fn accepted(&self) -> Vec<&'static str> {
        self.specs().flat_map(|s| std::iter::once(s.key).chain(s.aliases.iter().copied())).collect()
    }

    fn spec(&self, key: &str) -> &'static OptionSpec {
        self.specs()
            .find(|s| s.key == key)
            .unwrap_or_else(|| panic!("{}: option `{key}` is read but not declared", self.function))
    }

    /// Check `map`'s keys against the set; errors name `self.function`.
    pub fn parse<'a>(&'static self, map: &'a Map) -> ScriptResult<Opts<'a>> {
        self.parse_as(map, self.function)
    }

    /// As [`parse`](Self::parse), with messages naming `what` (`"sft lora"`, `"sample request 3"`).
    pub fn parse_as<'a>(&'static self, map: &'a Map, what: impl Into<String>) -> ScriptResult<Opts<'a>> {
        let what = what.into();
        let accepted = self.accepted();
        if let Some(bad) = map.keys().find(|k| !accepted.contains(&k.as_str())) {
            return Err(script_msg(format!(
                "{what}: unknown option `{bad}`; known options: {}",
                accepted.join(", ")
            )));
        }
        for spec in self.specs() {
            let given: Vec<&str> = std::iter::once(spec.key)
                .chain(spec.aliases.iter().copied())
                .filter(|k| map.contains_key(*k))
                .collect();
            if given.len() > 1 {
                return Err(script_msg(format!(
                    "{what}: give `{}` or its alias, not both ({})",
                    spec.key,
                    given.join(", ")
                )));
            }
        }
        Ok(Opts { map, set: self, what })
    }
}

/// An options map checked against its set; typed, range-checked access by key.
pub struct Opts<'a> {
    map: &'a Map,
    set: &'static OptionSet,
    what: String,
}

impl Opts<'_> {
    /// Who messages name.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The raw value under the key or one of its aliases.
    fn raw(&self, key: &str) -> (&'static OptionSpec, Option<&Dynamic>) {
        let spec = self.set.spec(key);
        let value =
            std::iter::once(spec.key).chain(spec.aliases.iter().copied()).find_map(|k| self.map.get(k));
        (spec, value)
    }

    fn wrong(&self, spec: &OptionSpec, value: &Dynamic) -> Box<rhai::EvalAltResult> {
        script_msg(format!(
            "{}: option `{}` must be {}, got {}",
            self.what,
            spec.key,
            expected(&spec.kind),
            shown(value)
        ))
    }

    fn out_of_range(&self, spec: &OptionSpec, shown: impl std::fmt::Display) -> Box<rhai::EvalAltResult> {
        script_msg(format!(
            "{}: option `{}` must be {}, got {shown}",
            self.what,
            spec.key,
            expected(&spec.kind)
        ))
    }

    /// The error for a required key left out.
    pub fn missing(&self, key: &str) -> Box<rhai::EvalAltResult> {
        script_msg(format!("{}: option `{}` is required", self.what, self.set.spec(key).key))
    }

    /// An `Int` key.
    pub fn int(&self, key: &str) -> ScriptResult<Option<i64>> {
        let (spec, value) = self.raw(key);
        let Kind::Int { min } = spec.kind else { panic!("{}: `{key}` is not an int", self.what) };
        let Some(v) = value else { return Ok(None) };
        let n = v.as_int().map_err(|_| self.wrong(spec, v))?;
        if n < min {
            return Err(self.out_of_range(spec, n));
        }
        Ok(Some(n))
    }

    /// An `Int` key with a minimum of 0 or more, as a size.
    pub fn count(&self, key: &str) -> ScriptResult<Option<usize>> {
        Ok(self.int(key)?.map(|n| usize::try_from(n).expect("declared non-negative")))
    }

    /// A `Float` key (ints are accepted), finite and within its bounds.
    pub fn float(&self, key: &str) -> ScriptResult<Option<f64>> {
        let (spec, value) = self.raw(key);
        let Kind::Float { min, max } = spec.kind else { panic!("{}: `{key}` is not a float", self.what) };
        let Some(v) = value else { return Ok(None) };
        let x = as_f64(v).ok_or_else(|| self.wrong(spec, v))?;
        let above = match min {
            Bound::Open => true,
            Bound::Incl(lo) => x >= lo,
            Bound::Excl(lo) => x > lo,
        };
        let below = match max {
            Bound::Open => true,
            Bound::Incl(hi) => x <= hi,
            Bound::Excl(hi) => x < hi,
        };
        if !(x.is_finite() && above && below) {
            return Err(self.out_of_range(spec, x));
        }
        Ok(Some(x))
    }

    pub fn bool(&self, key: &str) -> ScriptResult<Option<bool>> {
        let (spec, value) = self.raw(key);
        let Kind::Bool = spec.kind else { panic!("{}: `{key}` is not a bool", self.what) };
        value.map(|v| v.as_bool().map_err(|_| self.wrong(spec, v))).transpose()
    }

    /// A `Str` key, one of its choices when it has some.
    pub fn string(&self, key: &str) -> ScriptResult<Option<String>> {
        let (spec, value) = self.raw(key);
        let Kind::Str(choices) = spec.kind else { panic!("{}: `{key}` is not a string", self.what) };
        let Some(v) = value else { return Ok(None) };
        let s = v.clone().into_string().map_err(|_| self.wrong(spec, v))?;
        // Case and surrounding blanks are the runtime parsers' business; most ignore them.
        if !choices.is_empty() && !choices.iter().any(|c| c.eq_ignore_ascii_case(s.trim())) {
            return Err(self.out_of_range(spec, format!("{s:?}")));
        }
        Ok(Some(s))
    }

    /// An `Ints` key: every element an int `>= 0`.
    pub fn ints(&self, key: &str) -> ScriptResult<Option<Vec<u64>>> {
        let (spec, value) = self.raw(key);
        let Kind::Ints = spec.kind else { panic!("{}: `{key}` is not an int array", self.what) };
        let Some(v) = value else { return Ok(None) };
        let list = v.read_lock::<Array>().ok_or_else(|| self.wrong(spec, v))?;
        list.iter()
            .enumerate()
            .map(|(i, x)| match x.as_int() {
                Ok(n) if n >= 0 => Ok(n as u64),
                _ => Err(self.element(spec, i, x)),
            })
            .collect::<ScriptResult<_>>()
            .map(Some)
    }

    /// A `Strs` key: every element a string.
    pub fn strings(&self, key: &str) -> ScriptResult<Option<Vec<String>>> {
        let (spec, value) = self.raw(key);
        let Kind::Strs = spec.kind else { panic!("{}: `{key}` is not a string array", self.what) };
        let Some(v) = value else { return Ok(None) };
        let list = v.read_lock::<Array>().ok_or_else(|| self.wrong(spec, v))?;
        list.iter()
            .enumerate()
            .map(|(i, x)| x.clone().into_string().map_err(|_| self.element(spec, i, x)))
            .collect::<ScriptResult<_>>()
            .map(Some)
    }

    fn element(&self, spec: &OptionSpec, i: usize, x: &Dynamic) -> Box<rhai::EvalAltResult> {
        script_msg(format!(
            "{}: option `{}` must be {}, got {} at index {i}",
            self.what,
            spec.key,
            expected(&spec.kind),
            shown(x)
        ))
    }

    /// A `Map` key.
    pub fn map(&self, key: &str) -> ScriptResult<Option<Map>> {
        let (spec, value) = self.raw(key);
        let Kind::Map(_) = spec.kind else { panic!("{}: `{key}` is not a map", self.what) };
        value.map(|v| v.read_lock::<Map>().map(|m| m.clone()).ok_or_else(|| self.wrong(spec, v))).transpose()
    }

    /// A `Closure` key.
    pub fn closure(&self, key: &str) -> ScriptResult<Option<FnPtr>> {
        let (spec, value) = self.raw(key);
        let Kind::Closure = spec.kind else { panic!("{}: `{key}` is not a closure", self.what) };
        value.map(|v| v.clone().try_cast::<FnPtr>().ok_or_else(|| self.wrong(spec, v))).transpose()
    }

    /// A `Value` key holding a registered type (`Task`, `Sampler`).
    pub fn typed<T: std::any::Any + Clone>(&self, key: &str) -> ScriptResult<Option<T>> {
        let (spec, value) = self.raw(key);
        let Kind::Value(_) = spec.kind else { panic!("{}: `{key}` is not a typed value", self.what) };
        value.map(|v| v.clone().try_cast::<T>().ok_or_else(|| self.wrong(spec, v))).transpose()
    }

    /// A `Value` key the function reads itself (an image, `"all"` or an int).
    pub fn value(&self, key: &str) -> Option<&Dynamic> {
        let (spec, value) = self.raw(key);
        let Kind::Value(_) = spec.kind else { panic!("{}: `{key}` is not a free-form value", self.what) };
        value
    }

    /// Whether the key (or an alias) is given, whatever its kind: under a preset only given keys
    /// override it.
    pub fn given(&self, key: &str) -> bool {
        self.raw(key).1.is_some()
    }

    /// The value of a key that accepts more than its kind says: `()` for none (`upper_bound`) or
    /// `false` besides a map (`care`). The caller reads the declared kind with its accessor.
    pub fn either(&self, key: &str) -> Option<&Dynamic> {
        self.raw(key).1
    }

    /// The error for a `Value` key whose value the function could not read.
    pub fn bad_value(&self, key: &str, value: &Dynamic) -> Box<rhai::EvalAltResult> {
        self.wrong(self.set.spec(key), value)
    }

    /// `count`, or the declared `Absent::Int` default.
    pub fn count_or_default(&self, key: &str) -> ScriptResult<usize> {
        Ok(match self.count(key)? {
            Some(n) => n,
            None => match self.set.spec(key).absent {
                Absent::Int(n) => n as usize,
                other => panic!("{}: `{key}` has no int default ({other:?})", self.what),
            },
        })
    }

    /// `float`, or the declared `Absent::Float` default.
    pub fn float_or_default(&self, key: &str) -> ScriptResult<f64> {
        Ok(match self.float(key)? {
            Some(x) => x,
            None => match self.set.spec(key).absent {
                Absent::Float(x) => x,
                other => panic!("{}: `{key}` has no float default ({other:?})", self.what),
            },
        })
    }

    /// `bool`, or the declared `Absent::Bool` default.
    pub fn bool_or_default(&self, key: &str) -> ScriptResult<bool> {
        Ok(match self.bool(key)? {
            Some(b) => b,
            None => match self.set.spec(key).absent {
                Absent::Bool(b) => b,
                other => panic!("{}: `{key}` has no bool default ({other:?})", self.what),
            },
        })
    }

    /// `string`, or the declared `Absent::Str` default.
    pub fn string_or_default(&self, key: &str) -> ScriptResult<String> {
        Ok(match self.string(key)? {
            Some(s) => s,
            None => match self.set.spec(key).absent {
                Absent::Str(s) => s.to_string(),
                other => panic!("{}: `{key}` has no string default ({other:?})", self.what),
            },
        })
    }
}

/// A value as a message shows it, with its type as scripts name it: `"x" (string)`, `3 (int)`.
fn shown(value: &Dynamic) -> String {
    let text = if value.is_string() { format!("{value:?}") } else { value.to_string() };
    let type_name = match value.type_name() {
        "i64" => "int",
        "f64" => "float",
        _ => crate::script_types::type_of(value),
    };
    format!("{text} ({type_name})")
}

/// A positional int argument checked like an `Int` option: `pass_at: `k` must be an int >= 1, got 0`.
pub fn int_arg(what: &str, name: &str, value: i64, min: i64) -> ScriptResult<usize> {
    if value < min {
        return Err(script_msg(format!(
            "{what}: `{name}` must be {}, got {value}",
            expected(&Kind::Int { min })
        )));
    }
    Ok(usize::try_from(value).expect("checked against a non-negative minimum"))
}

fn bound(b: Bound, below: bool) -> Option<String> {
    match (b, below) {
        (Bound::Open, _) => None,
        (Bound::Incl(x), true) => Some(format!(">= {x}")),
        (Bound::Excl(x), true) => Some(format!("> {x}")),
        (Bound::Incl(x), false) => Some(format!("<= {x}")),
        (Bound::Excl(x), false) => Some(format!("< {x}")),
    }
}

/// The value range in words: `>= 0`, `in (0, 1]`, `"a" | "b"`; `None` when any value of the type goes.
pub fn range(kind: &Kind) -> Option<String> {
    match *kind {
        Kind::Int { min } => Some(format!(">= {min}")),
        Kind::Ints => Some("each >= 0".into()),
        Kind::Float { min: Bound::Open, max: Bound::Open } => Some("finite".into()),
        Kind::Float { min, max: Bound::Open } => bound(min, true),
        Kind::Float { min: Bound::Open, max } => bound(max, false),
        Kind::Float { min, max } => {
            let lo = match min {
                Bound::Incl(x) => format!("[{x}"),
                Bound::Excl(x) => format!("({x}"),
                Bound::Open => unreachable!(),
            };
            let hi = match max {
                Bound::Incl(x) => format!("{x}]"),
                Bound::Excl(x) => format!("{x})"),
                Bound::Open => unreachable!(),
            };
            Some(format!("in {lo}, {hi}"))
        }
        Kind::Str(choices) if !choices.is_empty() => {
            Some(choices.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(" | "))
        }
        _ => None,
    }
}

/// The type's short name as `medbridge doc` shows it.
pub fn type_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Int { .. } => "int",
        Kind::Float { .. } => "float",
        Kind::Bool => "bool",
        Kind::Str(_) => "string",
        Kind::Ints => "array of ints",
        Kind::Strs => "array of strings",
        Kind::Map(_) => "map",
        Kind::Closure => "closure",
        Kind::Value(t) => t.trim_start_matches("an ").trim_start_matches("a "),
    }
}

/// What a message says a value must be: `an int >= 0`, `a finite number in (0, 1]`.
fn expected(kind: &Kind) -> String {
    match (kind, range(kind)) {
        (Kind::Int { min }, _) => format!("an int >= {min}"),
        (Kind::Float { min: Bound::Open, max: Bound::Open }, _) => "a finite number".into(),
        (Kind::Float { .. }, Some(r)) => format!("a finite number {r}"),
        (Kind::Bool, _) => "true or false".into(),
        (Kind::Str(_), Some(r)) => format!("one of {r}"),
        (Kind::Ints, _) => "an array of ints >= 0".into(),
        (Kind::Strs, _) => "an array of strings".into(),
        (Kind::Closure, _) => "a closure".into(),
        (Kind::Value(t), _) => t.to_string(),
        (k, _) => format!("a {}", type_name(k)),
    }
}

/// One option as `medbridge doc` lists it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct OptionDoc {
    pub key: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    pub default: String,
    pub doc: String,
    /// A nested map's own keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<OptionDoc>,
}

/// The set's keys as documentation, nested maps included.
pub fn docs(set: &OptionSet) -> Vec<OptionDoc> {
    set.specs()
        .map(|s| OptionDoc {
            key: s.key.to_string(),
            aliases: s.aliases.iter().map(|a| a.to_string()).collect(),
            type_name: type_name(&s.kind).to_string(),
            range: match s.kind {
                Kind::Float { min: Bound::Open, max: Bound::Open } => None,
                ref k => range(k),
            },
            default: match s.absent {
                Absent::Required => "required".into(),
                Absent::Int(n) => n.to_string(),
                Absent::Float(x) => format!("{x:?}"),
                Absent::Bool(b) => b.to_string(),
                Absent::Str(t) => format!("{t:?}"),
                Absent::Means(words) => words.to_string(),
            },
            doc: s.doc.to_string(),
            options: match s.kind {
                Kind::Map(Some(inner)) => docs(inner),
                _ => Vec::new(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    static DEMO: OptionSet = OptionSet::new(
        "demo",
        &[&[
            opt("n", COUNT, Absent::Int(3), "how many"),
            opt(
                "p",
                Kind::Float { min: Bound::Excl(0.0), max: Bound::Incl(1.0) },
                Absent::Float(1.0),
                "mass",
            ),
            opt("mode", Kind::Str(&["a", "b"]), Absent::Str("a"), "which"),
            opt("ids", Kind::Ints, Absent::Means("none"), "ids"),
            opt("eval_options", Kind::Map(None), Absent::Means("none"), "sub").aliases(&["eval"]),
        ]],
    );

    fn map(source: &str) -> Map {
        rhai::Engine::new().eval::<Map>(source).unwrap()
    }

    fn error(source: &str, read: impl Fn(&Opts) -> ScriptResult<()>) -> String {
        let m = map(source);
        match DEMO.parse(&m) {
            Err(e) => e.to_string(),
            Ok(o) => read(&o).unwrap_err().to_string(),
        }
    }

    #[test]
    fn messages_name_function_key_value_and_expectation() {
        let e = error("#{n: -3}", |o| o.count("n").map(drop));
        assert!(e.contains("demo: option `n` must be an int >= 0, got -3"), "{e}");
        let e = error(r#"#{n: "x"}"#, |o| o.count("n").map(drop));
        assert!(e.contains(r#"demo: option `n` must be an int >= 0, got "x" (string)"#), "{e}");
        let e = error("#{p: 0.0}", |o| o.float("p").map(drop));
        assert!(e.contains("option `p` must be a finite number in (0, 1], got 0"), "{e}");
        let e = error(r#"#{mode: "c"}"#, |o| o.string("mode").map(drop));
        assert!(e.contains(r#"option `mode` must be one of "a" | "b", got "c""#), "{e}");
        let e = error(r#"#{ids: [1, "x"]}"#, |o| o.ints("ids").map(drop));
        assert!(
            e.contains(r#"option `ids` must be an array of ints >= 0, got "x" (string) at index 1"#),
            "{e}"
        );
        let e = error("#{m: 1}", |_| Ok(()));
        assert!(
            e.contains("demo: unknown option `m`; known options: n, p, mode, ids, eval_options, eval"),
            "{e}"
        );
        let e = error(r#"#{"eval": #{}, eval_options: #{}}"#, |_| Ok(()));
        assert!(e.contains("give `eval_options` or its alias, not both"), "{e}");
    }

    #[test]
    fn non_finite_floats_are_rejected() {
        let mut m = Map::new();
        m.insert("p".into(), Dynamic::from_float(f64::NAN));
        let e = DEMO.parse(&m).unwrap().float("p").unwrap_err().to_string();
        assert!(e.contains("got NaN"), "{e}");
    }

    #[test]
    fn aliases_and_defaults_read_through_the_declaration() {
        let m = map(r#"#{"eval": #{a: 1}}"#);
        let o = DEMO.parse(&m).unwrap();
        assert!(o.map("eval_options").unwrap().unwrap().contains_key("a"));
        assert_eq!(o.count_or_default("n").unwrap(), 3);
        assert_eq!(o.float_or_default("p").unwrap(), 1.0);
        assert_eq!(o.string_or_default("mode").unwrap(), "a");
    }

    #[test]
    #[should_panic(expected = "not declared")]
    fn reading_an_undeclared_key_is_a_programming_error() {
        let m = Map::new();
        let _ = DEMO.parse(&m).unwrap().count("steps");
    }
}
