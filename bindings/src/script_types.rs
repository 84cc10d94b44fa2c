//! One script name per host type. `type_of(x)`, the signatures of `medbridge doc` and the
//! "Function not found: f (Model, Model)" of a wrong call all read their names from this table,
//! so a script author never meets `Vlm` in one place and `Model` in another.

use rhai::{Dynamic, Engine};

/// Declares each host type once with its script name; `register` and `script_name` follow.
macro_rules! script_types {
    ($($ty:ty => $name:literal),* $(,)?) => {
        /// Register every host type under its script name, for `type_of` and Rhai's errors.
        pub fn register(engine: &mut Engine) {
            $(engine.register_type_with_name::<$ty>($name);)*
        }

        /// Every script name, in the order a reader meets the types.
        pub const NAMES: &[&str] = &[$($name),*];

        /// The script name of a type as a signature spells it (`Vlm`, `medbridge_runtime::models::Vlm`
        /// or the family's own alias `Model`), or `None` for a type that is not a host type.
        pub fn script_name(rust: &str) -> Option<&'static str> {
            let last = |path: &str| path.rsplit("::").next().unwrap_or(path).to_string();
            let rust = last(rust);
            [$((last(std::any::type_name::<$ty>()), $name)),*]
                .into_iter()
                .find(|(host, script)| *host == rust || *script == rust)
                .map(|(_, script)| script)
        }
    };
}

/// What `type_of(value)` says, for messages written outside the engine (`Dynamic::type_name`
/// spells host types as Rust paths).
pub fn type_of(value: &Dynamic) -> &'static str {
    type_of_name(value.type_name())
}

/// [`type_of`] for a type name a failed cast reports (`as_int`, `into_string`, ...).
pub fn type_of_name(type_name: &str) -> &str {
    script_name(type_name).unwrap_or(type_name)
}

script_types! {
    candle_core::Tensor => "Tensor",
    medbridge_runtime::models::Vlm => "Model",
    medbridge_runtime::data::Dataset => "Dataset",
    medbridge_runtime::image::Image => "Image",
    medbridge_runtime::task::McqTask => "Task",
    medbridge_runtime::sample::SamplerOptions => "Sampler",
    medbridge_runtime::metrics::SupportReport => "Report",
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::family_docs;
    use crate::script::{open_session, SessionOptions};
    use crate::{new_engine, Echo};
    use medbridge_runtime::run::CancelFlag;
    use std::collections::BTreeSet;

    /// `type_of` of a value of every host type, each made the way a script makes it.
    const TYPE_OF_EACH: &str = r#"
        let data = medmnist("organamnist", #{root: synth_medmnist(#{tasks: ["organamnist"],
            n_train: 2, n_val: 2, n_test: 2, seed: 0})});
        let task = data.to_mcq(#{options: 4, seed: 0});
        let model = new_model("qwen2_5_vl_tiny", #{seed: 0});
        let report = evaluate(model, task, #{n: 2, max_new_tokens: 2, resamples: 10});
        [type_of(zeros([2])), type_of(model), type_of(data), type_of(data[0].image), type_of(task),
         type_of(sampler(#{n: 2})), type_of(report)]
    "#;

    #[test]
    fn type_of_and_doc_signatures_use_one_name_per_type() {
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
        let seen: Vec<String> = engine
            .eval::<rhai::Array>(TYPE_OF_EACH)
            .unwrap()
            .into_iter()
            .map(|name| name.into_string().unwrap())
            .collect();
        assert_eq!(seen, NAMES, "type_of, in the table's order");

        let docs = family_docs();
        let signatures: Vec<&str> =
            docs.iter().flat_map(|f| f.functions.iter().map(|x| x.signature.as_str())).collect();
        let capitalised: BTreeSet<&str> = signatures
            .iter()
            .flat_map(|s| s.split(|c: char| !c.is_alphanumeric() && c != '_'))
            .filter(|word| word.starts_with(|c: char| c.is_ascii_uppercase()))
            .collect();
        assert_eq!(capitalised, NAMES.iter().copied().collect(), "type names in `medbridge doc` signatures");
        let listed: BTreeSet<&str> = docs.iter().flat_map(|f| f.types.iter().map(String::as_str)).collect();
        assert!(listed.iter().all(|t| NAMES.contains(t)), "family type lists: {listed:?}");
    }
}
