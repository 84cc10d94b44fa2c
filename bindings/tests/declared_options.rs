//! Every registered function that takes an options map declares its options once, and what it
//! documents is what it accepts. Checked from the outside: each such function is called from a
//! script with a misspelt key, and the "known options" its error lists must equal the declared
//! keys, which must equal the keys `medbridge doc` shows for it.

use medbridge_bindings::docs::{family_docs, option_set, script_type};
use medbridge_bindings::families::families;
use medbridge_bindings::script::{open_session, scope_with_args, SessionOptions};
use medbridge_bindings::{new_engine, Echo};
use medbridge_runtime::run::CancelFlag;
use rhai::{Engine, Scope};
use serde_json::Value;

/// Values of every type an options-taking function wants besides its map, tiny and quick.
const FIXTURES: &str = r#"
let m = new_model("qwen2_5_vl_tiny", #{seed: 0});
let dir = synth_medmnist(#{tasks: ["pneumoniamnist"], n_train: 2, n_val: 1, n_test: 2, seed: 0});
let ds = medmnist("pneumoniamnist", #{root: dir});
let task = ds.to_mcq(#{seed: 0});
let rep = evaluate(m, task, #{n: 1, max_new_tokens: 1, limit: 1, seed: 0});
let s = sampler(#{});
"#;

const UNKNOWN: &str = "zz_not_an_option";

fn argument(script_type: &str) -> &'static str {
    match script_type {
        "map" => "#{zz_not_an_option: 1}",
        "Model" | "Vlm" => "m",
        "Task" | "McqTask" => "task",
        "Dataset" => "ds",
        "Report" | "SupportReport" => "rep",
        "Sampler" | "SamplerOptions" => "s",
        "string" => "\"x\"",
        "array" => "[]",
        "int" => "1",
        "float" => "1.0",
        "any" => "()",
        other => panic!("no fixture for a parameter of type {other}"),
    }
}

fn metadata(module: rhai::Module) -> Value {
    let mut engine = Engine::new_raw();
    engine.register_global_module(module.into());
    serde_json::from_str(&engine.gen_fn_metadata_to_json(false).unwrap()).unwrap()
}

#[test]
fn documented_options_are_exactly_the_accepted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let session = open_session(&SessionOptions {
        script: None,
        out: Some(dir.path().join("run")),
        device: "cpu".into(),
        allow_read: vec![],
        quiet: true,
        offline: false,
        cancel: CancelFlag::new(),
        max_memory: None,
    })
    .unwrap();
    let engine = new_engine(session, Echo::LogOnly);
    let mut scope: Scope = scope_with_args(rhai::Map::new());
    engine.run_with_scope(&mut scope, FIXTURES).unwrap();

    let docs = family_docs();
    let mut checked = 0;
    for family in families() {
        let sets = family.options;
        let meta = metadata(family.module);
        let family_doc = docs.iter().find(|d| d.name == family.name).unwrap();
        let mut used = vec![false; sets.len()];
        for f in meta["functions"].as_array().unwrap() {
            let name = f["name"].as_str().unwrap();
            let types: Vec<String> = f["params"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| script_type(p["type"].as_str().unwrap_or("?")))
                .collect();
            if !types.iter().any(|t| t == "map") {
                continue;
            }
            let set = option_set(f, sets).unwrap_or_else(|| {
                panic!("{}: `{name}({types:?})` takes a map but declares no options", family.name)
            });
            used[sets.iter().position(|s| std::ptr::eq(*s, set)).unwrap()] = true;
            let accepted = set.accepted();

            // The doc lists exactly the declared keys (aliases included).
            let signature_params = types.iter().map(|t| t.as_str()).collect::<Vec<_>>();
            let documented: Vec<&str> = family_doc
                .functions
                .iter()
                .filter(|d| d.name == name && d.options.is_some())
                .filter(|d| signature_params.iter().all(|t| d.signature.contains(t)))
                .flat_map(|d| d.options.as_ref().unwrap())
                .flat_map(|o| std::iter::once(o.key.as_str()).chain(o.aliases.iter().map(String::as_str)))
                .collect();
            assert_eq!(documented, accepted, "{name}: documented options differ from declared ones");

            // Calling it with a misspelt key lists exactly the declared keys.
            let args: Vec<&str> = types.iter().map(|t| argument(t)).collect();
            let call = format!("{name}({})", args.join(", "));
            let err = engine
                .eval_with_scope::<rhai::Dynamic>(&mut scope, &call)
                .map(|_| ())
                .expect_err(&format!("{call} accepted an unknown option"))
                .to_string();
            let expected = format!(
                "{}: unknown option `{UNKNOWN}`; known options: {}",
                set.function,
                accepted.join(", ")
            );
            assert!(err.contains(&expected), "{call}:\n  got      {err}\n  expected {expected}");
            checked += 1;
        }
        for (set, used) in sets.iter().zip(used) {
            assert!(used, "{}: option set `{}` belongs to no registered function", family.name, set.function);
        }
    }
    assert!(checked >= 25, "only {checked} functions with options found");
}
