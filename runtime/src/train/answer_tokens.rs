//! Which completion tokens are the answer, for CARE's confidence: the span GRPO-CARE's
//! `get_thinking_answer_masks` (`trainer/grpo_trainer_ref_ema.py`) selects, found on our
//! unpadded token ids.
//!
//! As released: scanning back from the end, the first token whose text contains `answer` and
//! whose three-token window (the token before, it, the one after) spells `<answer>` marks the
//! tag; the answer is every token after that one, up to (not including) `max(tag + 1, eos − 3)`,
//! where `eos` is the first `<|im_end|>`. With Qwen's byte-level BPE `<answer>` is `<`, `answer`,
//! `>` (the `>` often merged with what follows, as `>B`) and `</answer><|im_end|>` ends the
//! completion, so the span is the tag's `>` and the answer text. A completion without the tag has no answer tokens (its confidence is then
//! `exp(0) = 1`, capped). Kept quirks of the released scan: a tag token among the last two tokens
//! is not seen (its window slice is empty there), and trailing `<|endoftext|>` (the pad id) is
//! not counted.
//!
//! Differences, both from padding that our rollouts do not have: the scan runs over the
//! completion only (released: prompt and completion, where a tag mentioned in the prompt then
//! counts as "no tag"; the same result, except that our window of a tag at the completion's
//! first token cannot borrow the prompt's last token), and a completion without `<|im_end|>`
//! ends at its own length (released: the batch's padded width, the same for completions that
//! ran to `max_new_tokens`, and past the text into padding otherwise).

use std::ops::Range;

use crate::models::qwen2_5_vl::Processor;

/// The answer tokens of a completion whose tokens read `tokens` (tokenizer strings, as
/// `convert_ids_to_tokens` gives them) and whose first end token is at `eos` (its length when
/// there is none). Indices are into `tokens`.
pub fn answer_span(tokens: &[String], eos: usize) -> Range<usize> {
    let n = tokens.len();
    // The released scan reads the window `tokens[j-1 .. j+2]`, empty for the last two tokens.
    let tag = (0..n.saturating_sub(2)).rev().find(|&j| {
        tokens[j].contains("answer") && tokens[j.saturating_sub(1)..j + 2].concat().contains("<answer>")
    });
    let Some(tag) = tag else { return n..n };
    let end = (tag + 1).max(eos.saturating_sub(3)).min(n);
    tag + 1..end
}

/// [`answer_span`] of `completion_ids` as `processor`'s tokenizer reads them.
pub fn answer_span_of(completion_ids: &[u32], processor: &Processor) -> Range<usize> {
    let special = processor.special_tokens();
    let kept = completion_ids.iter().rposition(|&id| id != special.endoftext).map_or(0, |last| last + 1);
    let ids = &completion_ids[..kept];
    let tokenizer = processor.tokenizer();
    let tokens: Vec<String> = ids.iter().map(|&id| tokenizer.id_to_token(id).unwrap_or_default()).collect();
    let eos = ids.iter().position(|&id| id == special.im_end).unwrap_or(ids.len());
    answer_span(&tokens, eos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::sft::tests::tiny_vlm;

    fn strings(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_span_runs_from_after_the_tag_token_to_three_before_the_end_token() {
        let t = strings(&[
            "<", "think", ">", "x", "</", "think", "><", "answer", ">", "B", "</", "answer", ">", "E",
        ]);
        assert_eq!(answer_span(&t, 13), 8..10, "`>` and `B`");
        // Without an end token the span ends three tokens before the completion's end.
        assert_eq!(answer_span(&t[..13], 13), 8..10);
        // A closing tag alone is no answer tag; nothing found means no answer tokens.
        let t = strings(&["x", "</", "answer", ">", "E"]);
        assert_eq!(answer_span(&t, 4), 5..5);
        // The end-token bound never cuts below the token after the tag.
        let t = strings(&["<", "answer", ">", "B", "C"]);
        assert_eq!(answer_span(&t, 1), 2..2);
        // A tag token among the last two is not seen, as released.
        assert_eq!(answer_span(&strings(&["x", "<", "answer"]), 3), 3..3);
    }

    #[test]
    fn a_tokenized_completion_yields_exactly_its_answer_tokens() {
        let vlm = tiny_vlm();
        let p = &vlm.processor;
        let special = p.special_tokens();
        let mut ids = p.tokenize("<think>it is a cyst</think><answer>", false).unwrap();
        let answer_start = ids.len();
        ids.extend(p.tokenize("B", false).unwrap());
        let answer_end = ids.len();
        ids.extend(p.tokenize("</answer>", false).unwrap());
        ids.push(special.im_end);
        let tokens: Vec<String> = ids.iter().map(|&id| p.tokenizer().id_to_token(id).unwrap()).collect();
        assert_eq!(&tokens[answer_start - 3..answer_start], ["<", "answer", ">"], "{tokens:?}");
        assert_eq!(&tokens[answer_end..], ["</", "answer", ">", "<|im_end|>"], "{tokens:?}");
        // The tag's `>` and the answer, as the released mask selects them.
        let span = answer_span_of(&ids, p);
        assert_eq!(span, answer_start - 1..answer_end);
        assert_eq!(p.decode(&ids[span], false).unwrap(), ">B");
        // Trailing pad ids change nothing; a completion without the tag has no answer tokens.
        let mut padded = ids.clone();
        padded.push(special.endoftext);
        assert_eq!(answer_span_of(&padded, p), answer_start - 1..answer_end);
        let plain = p.tokenize("<think>no tag</think> B", false).unwrap();
        assert!(answer_span_of(&plain, p).is_empty());
    }
}
