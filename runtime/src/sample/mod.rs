//! Sampling: the per-token choice from logits and the per-sample random streams that make every
//! sample reproducible from (seed, question id, sample index).

pub mod logits;
pub mod rng;

pub use logits::{choose, choose_batch, sampling_distribution, LogitsOptions, TokenChoice};
pub use rng::SampleRng;
