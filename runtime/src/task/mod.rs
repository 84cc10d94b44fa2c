//! Tasks: data together with its prompt, its answer extraction and its reward, so evaluation and
//! training can never disagree about what "correct" means (the habit of nanochat's
//! `tasks/common.py`).
//!
//! | file | job |
//! | --- | --- |
//! | `mcq.rs` | `McqItem`/`McqTask`: prompt template, SFT target, extraction, rewards |
//! | `to_mcq.rs` | `Dataset::to_mcq`: class labels to lettered questions (yes/no per chest finding) |
//! | `extract.rs` | the configurable answer extractor shared by evaluation and GRPO |
//! | `medbridgerl.rs` | the paper's released answer parsers and GRPO-CARE rewards, to the character |
//! | `preset.rs` | `TaskPreset`: medbridge's protocol or the paper's released one (prompts, reading, rewards) |
//! | `balanced.rs` | `McqTask::balanced`: stratified question samples (by modality, dataset, answer, class) |

pub mod balanced;
pub mod extract;
pub mod mcq;
pub mod medbridgerl;
pub mod preset;
pub mod to_mcq;

pub use balanced::TaskStratum;
pub use extract::{option_letter, Extraction, Extractor, Rule};
pub use mcq::{AnswerFormat, McqItem, McqTask, Verdict, DEFAULT_TEMPLATE};
pub use preset::TaskPreset;
pub use to_mcq::{McqOptions, OptionCount};
