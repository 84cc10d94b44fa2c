//! One sample being decoded: its token choices, its random stream and when it ends (a stop
//! token, a stop string, `max_new_tokens`), and the finished [`Sample`] it becomes.

use super::super::generate::{FinishReason, Sample};
use super::super::logits::{choose, LogitsOptions};
use super::super::rng::SampleRng;
use super::blocks::BlockTable;
use crate::error::Result;
use crate::models::vlm::Vlm;

/// What ends a sample.
pub struct Stops<'a> {
    pub token_ids: Vec<u32>,
    pub strings: &'a [String],
    pub max_new_tokens: usize,
}

/// A row of the running set.
pub struct Row {
    pub job: usize,
    pub index: usize,
    pub logits: LogitsOptions,
    pub rng: SampleRng,
    pub table: BlockTable,
    /// The request's M-RoPE delta: position ids are the cached length plus it.
    pub rope_delta: i64,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub finish: Option<FinishReason>,
    /// Set when a stop string ended the row: the text before it.
    pub text: Option<String>,
}

impl Row {
    /// Choose the next token from `values`, the logits after the row's last position, and note
    /// whether that ends the row. `what` names the row for a non-finite-logits error.
    pub fn push(
        &mut self,
        vlm: &Vlm,
        values: &[f32],
        stops: &Stops,
        what: impl Fn() -> String,
    ) -> Result<()> {
        crate::tensor::check_logits_finite(values, "sample", what)?;
        let choice = choose(values, &self.logits, &mut self.rng)?;
        self.tokens.push(choice.token);
        self.logprobs.push(choice.logprob_tempered);
        if stops.token_ids.contains(&choice.token) {
            self.finish = Some(FinishReason::Stop);
        } else if let Some(text) = text_before_stop_string(vlm, &self.tokens, stops.strings)? {
            self.finish = Some(FinishReason::StopString);
            self.text = Some(text);
        } else if self.tokens.len() == stops.max_new_tokens {
            self.finish = Some(FinishReason::Length);
        }
        Ok(())
    }

    /// The finished sample: its text decoded without special tokens (and without its stop token).
    pub fn into_sample(self, vlm: &Vlm) -> Result<Sample> {
        let finish_reason = self.finish.unwrap_or(FinishReason::Length);
        let text = match self.text {
            Some(text) => text,
            None => {
                let shown = if finish_reason == FinishReason::Stop {
                    &self.tokens[..self.tokens.len() - 1]
                } else {
                    &self.tokens[..]
                };
                vlm.processor.decode(shown, true)?
            }
        };
        Ok(Sample { text, token_ids: self.tokens, logprobs: self.logprobs, finish_reason })
    }
}

/// The text before the earliest stop string, once the decoded tokens contain one.
fn text_before_stop_string(vlm: &Vlm, tokens: &[u32], stops: &[String]) -> Result<Option<String>> {
    if stops.is_empty() {
        return Ok(None);
    }
    let text = vlm.processor.decode(tokens, true)?;
    let cut = stops.iter().filter_map(|s| text.find(s.as_str())).min();
    Ok(cut.map(|at| text[..at].to_string()))
}
