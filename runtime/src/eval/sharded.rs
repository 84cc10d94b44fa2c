//! `evaluate` over the ranks of an MPI run: each rank answers a contiguous share of the questions,
//! and the per-question records and completions are gathered in question order, so every rank
//! builds the report one process would have (each sample's random stream is keyed by question
//! and sample index, so a question's answers do not depend on which rank decodes it).

use serde::{Deserialize, Serialize};

use super::{answer, evaluate, questions, score, Completions, EvalOptions, EvalRun};
use crate::dist::World;
use crate::error::Result;
use crate::models::vlm::Vlm;
use crate::run::{CancelFlag, ProgressMode};
use crate::sample::{FinishReason, Sample};
use crate::task::McqTask;

/// [`evaluate`] with the questions split over `world`'s ranks; the same result on every rank.
pub fn evaluate_on(
    world: &World,
    vlm: &Vlm,
    task: &McqTask,
    opts: &EvalOptions,
    cancel: Option<&CancelFlag>,
    progress: ProgressMode,
) -> Result<EvalRun> {
    if !world.is_distributed() {
        return evaluate(vlm, task, opts, cancel, progress);
    }
    let described = format!("{opts:?} on task {} of {}", task.name(), task.len());
    crate::dist::check_call(world, "evaluate", &vlm.model, &described)?;
    let task = questions(task, opts)?;
    let share = task.slice(world.shard(task.len()));
    // Each rank answers its share only; the report (and its bootstrap) is built once, from the
    // gathered records.
    let (records, completions) = match share.is_empty() {
        true => (Vec::new(), Vec::new()),
        false => answer(vlm, &share, opts, cancel, progress)?,
    };
    let completions = completions.iter().map(Sent::from).collect();
    let records = world.gather_items("evaluate: the per-question records", records)?;
    let sent: Vec<Sent> = world.gather_items("evaluate: the completions", completions)?;
    let completions = sent.into_iter().map(Sent::into_completions).collect::<Result<_>>()?;
    score(&task, records, completions, opts)
}

/// One question's completions as ranks exchange them.
#[derive(Serialize, Deserialize)]
struct Sent {
    id: String,
    greedy: SentSample,
    samples: Vec<SentSample>,
}

#[derive(Serialize, Deserialize)]
struct SentSample {
    text: String,
    token_ids: Vec<u32>,
    logprobs: Vec<f32>,
    finish_reason: String,
}

impl From<&Completions> for Sent {
    fn from(c: &Completions) -> Self {
        let sample = |s: &Sample| SentSample {
            text: s.text.clone(),
            token_ids: s.token_ids.clone(),
            logprobs: s.logprobs.clone(),
            finish_reason: s.finish_reason.as_str().to_string(),
        };
        Sent { id: c.id.clone(), greedy: sample(&c.greedy), samples: c.samples.iter().map(sample).collect() }
    }
}

impl Sent {
    fn into_completions(self) -> Result<Completions> {
        let sample = |s: SentSample| -> Result<Sample> {
            let finish_reason = match s.finish_reason.as_str() {
                "stop" => FinishReason::Stop,
                "length" => FinishReason::Length,
                "stop_string" => FinishReason::StopString,
                other => crate::bail!("evaluate: a rank sent an unknown finish reason `{other}`"),
            };
            Ok(Sample { text: s.text, token_ids: s.token_ids, logprobs: s.logprobs, finish_reason })
        };
        Ok(Completions {
            id: self.id,
            greedy: sample(self.greedy)?,
            samples: self.samples.into_iter().map(sample).collect::<Result<_>>()?,
        })
    }
}
