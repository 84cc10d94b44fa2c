//! The primitive families registered into every engine, each a Rhai module with its own doc.
//! `medbridge doc` walks this list, so adding a family here documents it.

use rhai::{exported_module, Module};

use crate::options::OptionSet;

pub struct Family {
    pub name: &'static str,
    pub doc: &'static str,
    pub module: Module,
    /// The declared options of its functions that take an options map.
    pub options: &'static [&'static OptionSet],
}

/// Every family, in the order a reader meets them.
pub fn families() -> Vec<Family> {
    vec![
        Family {
            name: "tensor",
            doc: "candle tensors: construction, inspection, arithmetic, reductions, .npy/.safetensors files",
            module: exported_module!(crate::tensor::tensor_api),
            options: &[],
        },
        Family {
            name: "model",
            doc: "Qwen2.5-VL models: load or build, encode, logits, generate, vision features, LoRA, save",
            module: exported_module!(crate::model::model_api),
            options: &crate::model::OPTIONS,
        },
        Family {
            name: "data",
            doc: "MedMNIST (real or synthetic) datasets, subsets, and multiple-choice tasks",
            module: {
                let mut m = exported_module!(crate::data::data_api);
                crate::data::register_iterators(&mut m);
                m
            },
            options: &crate::data::OPTIONS,
        },
        Family {
            name: "sample",
            doc:
                "sampling answers (shared prefills, reproducible per question) and evaluate: Acc@1 vs Pass@k",
            module: exported_module!(crate::sample::sample_api),
            options: &crate::sample::OPTIONS,
        },
        Family {
            name: "metrics",
            doc: "support statistics: Pass@k, support reports with CIs, comparison, the boundary rule",
            module: exported_module!(crate::metrics::metrics_api),
            options: &crate::metrics::OPTIONS,
        },
        Family {
            name: "probe",
            doc: "linear probes of frozen vision towers and vision-only baselines, beside published numbers",
            module: exported_module!(crate::probe::probe_api),
            options: &crate::probe::OPTIONS,
        },
        Family {
            name: "report",
            doc: "report figures as PNG and SVG: transfer heatmaps and grouped bar charts",
            module: exported_module!(crate::report::report_api),
            options: &crate::report::OPTIONS,
        },
        Family {
            name: "train",
            doc: "SFT that bridges support and GRPO that sharpens it (LoRA or full), logged per step; GRPO's pieces (rewards, CARE bonus, advantages) one at a time; memory_plan: a step's memory by part before it runs",
            module: {
                let mut m = exported_module!(crate::train::train_api);
                m.combine_flatten(exported_module!(crate::train_pieces::train_pieces_api));
                m.combine_flatten(exported_module!(crate::train_plan::train_plan_api));
                m
            },
            options: &crate::train::OPTIONS,
        },
        Family {
            name: "run",
            doc: "the run directory, metrics, seeds, sandboxed file access, a sweep's collected cells, and the MPI rank",
            module: exported_module!(crate::run::run_api),
            options: &[],
        },
    ]
}
