//! medbridge-bindings: the runtime's primitives registered into a Rhai engine.
//!
//! One module per primitive family (`families.rs` lists them), the engine a script runs in,
//! script/REPL drivers, import resolution and generated docs. `src/README.md` maps the files.

pub mod context;
pub mod convert;
pub mod data;
pub mod docs;
pub mod engine;
pub mod error;
pub mod families;
pub mod metrics;
pub mod model;
pub mod options;
pub mod probe;
pub mod repl;
pub mod report;
pub mod resolver;
pub mod run;
pub mod sample;
pub mod script;
pub mod script_types;
pub mod tensor;
pub mod train;
pub mod train_pieces;
pub mod train_plan;

pub use engine::{new_engine, new_engine_with_limits, Echo, ScriptLimits};
pub use error::Diagnostic;
