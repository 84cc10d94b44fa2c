//! The primitive families registered into every engine, each a Rhai module with its own doc.
//! `medbridge doc` walks this list, so adding a family here documents it.

use rhai::{exported_module, Module};

pub struct Family {
    pub name: &'static str,
    pub doc: &'static str,
    pub module: Module,
}

/// Every family, in the order a reader meets them.
pub fn families() -> Vec<Family> {
    vec![
        Family {
            name: "tensor",
            doc: "candle tensors: construction, inspection, arithmetic, reductions, .npy/.safetensors files",
            module: exported_module!(crate::tensor::tensor_api),
        },
        Family {
            name: "model",
            doc: "Qwen2.5-VL models: load or build, encode, logits, generate, vision features, LoRA, save",
            module: exported_module!(crate::model::model_api),
        },
        Family {
            name: "data",
            doc: "MedMNIST (real or synthetic) datasets, subsets, and multiple-choice tasks",
            module: {
                let mut m = exported_module!(crate::data::data_api);
                crate::data::register_iterators(&mut m);
                m
            },
        },
        Family {
            name: "sample",
            doc:
                "sampling answers (shared prefills, reproducible per question) and evaluate: Acc@1 vs Pass@k",
            module: exported_module!(crate::sample::sample_api),
        },
        Family {
            name: "metrics",
            doc: "support statistics: Pass@k, support reports with CIs, comparison, the boundary rule",
            module: exported_module!(crate::metrics::metrics_api),
        },
        Family {
            name: "probe",
            doc: "linear probes of frozen vision towers and vision-only baselines, beside published numbers",
            module: exported_module!(crate::probe::probe_api),
        },
        Family {
            name: "report",
            doc: "report figures as PNG and SVG: transfer heatmaps and grouped bar charts",
            module: exported_module!(crate::report::report_api),
        },
        Family {
            name: "train",
            doc: "SFT that bridges support and GRPO that sharpens it (LoRA or full), logged per step",
            module: exported_module!(crate::train::train_api),
        },
        Family {
            name: "run",
            doc: "the run directory, metrics, seeds and sandboxed file access",
            module: exported_module!(crate::run::run_api),
        },
    ]
}
