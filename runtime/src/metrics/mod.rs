//! Support metrics: how often the default (greedy) answer is right against how often the right
//! answer is reachable by sampling, computed from plain per-question records.
//!
//! `pass_at_k` is the estimator; `record` the per-question data; `bootstrap` the intervals;
//! `support` the report; `statistic` the per-question statistics by name; `paired` the paired
//! bootstrap of a change on the same questions; `mean_interval` the t interval across seeds;
//! `boundary` the rule that reads a report as "bridge", "sharpen" or "saturated"; `save` and
//! `compare` write and tabulate reports.

pub mod bootstrap;
pub mod boundary;
pub mod compare;
pub mod mean_interval;
pub mod paired;
pub mod pass_at_k;
pub mod record;
pub mod save;
pub mod statistic;
pub mod support;

pub use bootstrap::{BootstrapOptions, Estimate};
pub use boundary::{boundary, BoundaryOptions, BoundaryRow, Regime};
pub use compare::{compare, Comparison};
pub use mean_interval::{mean_interval, MeanInterval};
pub use paired::{paired_contrast, paired_difference, PairedTerm};
pub use pass_at_k::{pass_at_k, pass_at_k_curve};
pub use record::{option_letter, QuestionRecord};
pub use save::Summary;
pub use statistic::Statistic;
pub use support::{AnswerEntropy, CurvePoint, FormatFailures, SupportReport};
