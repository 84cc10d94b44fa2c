//! The multiple-choice task: questions with lettered options, together with the prompt template,
//! the SFT target, the answer extractor and the reward, so that `evaluate`, `sft` and `grpo` can
//! never disagree about what a prompt says or what counts as correct.
//!
//! Free-text VQA pairs (for SFT) fit the same type: an item with no options and an `answer_text`.
//!
//! A [`TaskPreset`] swaps the whole protocol at once: under `medbridgerl` the prompts, the answer
//! reading and the two `medbridgerl_*` rewards are the paper's released ones (`preset.rs`).

use std::sync::Arc;

use crate::data::medmnist_info::Modality;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::task::extract::{option_letter, Extraction, Extractor};
use crate::task::medbridgerl;
use crate::task::preset::{medbridgerl_eval_prompt, medbridgerl_train_prompt, TaskPreset};

/// One question.
#[derive(Clone, Debug, PartialEq)]
pub struct McqItem {
    /// Stable identifier, e.g. `dermamnist/test/17` or `chestmnist/test/3/effusion`.
    pub id: String,
    pub image: Option<Image>,
    pub question: String,
    /// Option texts in display order (letter A first); empty for a free-text item.
    pub options: Vec<String>,
    /// Index of the correct option.
    pub answer: usize,
    /// The reference answer of a free-text item.
    pub answer_text: Option<String>,
    /// Reasoning to put inside `<think>` in SFT targets; a short templated one when absent.
    pub rationale: Option<String>,
    /// The class (or chestmnist finding) the question is about, for per-class breakdowns.
    pub class_id: Option<usize>,
    pub class_name: Option<String>,
    /// The flag or benchmark the item comes from.
    pub task: String,
    pub modality: Option<Modality>,
}

impl McqItem {
    pub fn is_free_text(&self) -> bool {
        self.options.is_empty()
    }

    /// The gold letter (`None` for free-text items).
    pub fn answer_letter(&self) -> Option<char> {
        (!self.is_free_text()).then(|| option_letter(self.answer))
    }

    fn check(&self) -> Result<()> {
        if self.is_free_text() {
            if self.answer_text.is_none() {
                crate::bail!("item {}: no options and no answer_text", self.id);
            }
            return Ok(());
        }
        if self.options.len() > 26 {
            crate::bail!("item {}: {} options, at most 26 can be lettered", self.id, self.options.len());
        }
        if self.answer >= self.options.len() {
            crate::bail!("item {}: answer {} but only {} options", self.id, self.answer, self.options.len());
        }
        for (i, o) in self.options.iter().enumerate() {
            if self.options[..i].iter().any(|p| p.trim().eq_ignore_ascii_case(o.trim())) {
                crate::bail!("item {}: option {:?} appears twice", self.id, o);
            }
        }
        Ok(())
    }
}

/// How the model is asked to answer, and so what SFT targets look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerFormat {
    /// `<answer>C</answer>`.
    Letter,
    /// `<think>...</think><answer>C</answer>`.
    ThinkAnswer,
}

impl AnswerFormat {
    pub fn parse(name: &str) -> Result<AnswerFormat> {
        match name.trim().to_ascii_lowercase().as_str() {
            "letter" => Ok(AnswerFormat::Letter),
            "think_answer" | "think-answer" => Ok(AnswerFormat::ThinkAnswer),
            _ => crate::bail!("unknown answer_format {name:?}: expected \"letter\" or \"think_answer\""),
        }
    }

    fn instruction(self, free_text: bool) -> &'static str {
        match (self, free_text) {
            (AnswerFormat::Letter, false) => {
                "Answer with the letter of the correct option inside <answer></answer> tags, for example <answer>A</answer>."
            }
            (AnswerFormat::ThinkAnswer, false) => {
                "First think step by step inside <think></think> tags, then give the letter of the correct option inside <answer></answer> tags."
            }
            (AnswerFormat::Letter, true) => "Give a short answer inside <answer></answer> tags.",
            (AnswerFormat::ThinkAnswer, true) => {
                "First think step by step inside <think></think> tags, then give a short answer inside <answer></answer> tags."
            }
        }
    }
}

/// The default prompt. Placeholders: `{modality}` (radiology / microscopy / visible-light /
/// medical), `{question}`, `{options}` (one `A. text` line each) and `{instruction}` (how to
/// answer, from the answer format).
pub const DEFAULT_TEMPLATE: &str = "This is a {modality} image.\n{question}\n{options}\n{instruction}";

const PLACEHOLDERS: [&str; 4] = ["{modality}", "{question}", "{options}", "{instruction}"];

/// One completion judged against its item, as both evaluation protocols define it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What was read: the option letter, or a free-text item's answer text; empty when nothing was.
    pub pred: String,
    /// The task's format flag (under `medbridgerl`: an answer tag was found).
    pub format_ok: bool,
    pub correct: bool,
}

/// A list of questions with its prompt template, answer format and extractor.
#[derive(Clone, Debug)]
pub struct McqTask {
    name: Arc<str>,
    items: Arc<[McqItem]>,
    template: Arc<str>,
    format: AnswerFormat,
    extractor: Extractor,
    preset: TaskPreset,
}

impl McqTask {
    /// Check every item (answer in range, no duplicate options) and the template (it must hold
    /// `{question}` and `{options}` and no unknown `{...}` placeholder).
    pub fn new(
        name: &str,
        items: Vec<McqItem>,
        template: Option<&str>,
        format: AnswerFormat,
    ) -> Result<Self> {
        let template = template.unwrap_or(DEFAULT_TEMPLATE);
        check_template(template)?;
        for item in &items {
            item.check().map_err(|e| Error::msg(format!("task {name}: {e}")))?;
        }
        let extractor =
            Extractor { require_think: format == AnswerFormat::ThinkAnswer, ..Default::default() };
        Ok(McqTask {
            name: name.into(),
            items: items.into(),
            template: template.into(),
            format,
            extractor,
            preset: TaskPreset::Default,
        })
    }

    /// Follow `preset`'s protocol; under `medbridgerl` the template and extractor are not used.
    pub fn with_preset(mut self, preset: TaskPreset) -> Self {
        self.preset = preset;
        self
    }

    pub fn preset(&self) -> TaskPreset {
        self.preset
    }

    /// Replace the extraction rules (e.g. letters only).
    pub fn with_extractor(mut self, extractor: Extractor) -> Self {
        self.extractor = extractor;
        self
    }

    /// The first `n` items (all of them if there are fewer), with the same template and extractor.
    pub fn limit(&self, n: usize) -> McqTask {
        McqTask { items: self.items[..n.min(self.items.len())].to_vec().into(), ..self.clone() }
    }

    /// Items `range` (clipped to the task), with the same template and extractor: one rank's
    /// share of an evaluation.
    pub fn slice(&self, range: std::ops::Range<usize>) -> McqTask {
        let end = range.end.min(self.items.len());
        let start = range.start.min(end);
        McqTask { items: self.items[start..end].to_vec().into(), ..self.clone() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn items(&self) -> &[McqItem] {
        &self.items
    }

    pub fn answer_format(&self) -> AnswerFormat {
        self.format
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    pub fn extractor(&self) -> &Extractor {
        &self.extractor
    }

    pub fn item(&self, i: usize) -> Result<&McqItem> {
        self.items.get(i).ok_or_else(|| {
            Error::msg(format!("task {}: no item {i} (it has {})", self.name, self.items.len()))
        })
    }

    /// The user prompt of item `i` (the image is passed beside it, not in it).
    pub fn prompt(&self, i: usize) -> Result<String> {
        let item = self.item(i)?;
        if self.preset == TaskPreset::MedbridgeRl {
            return Ok(medbridgerl_eval_prompt(&item.question, &item.options));
        }
        let options: Vec<String> =
            item.options.iter().enumerate().map(|(k, o)| format!("{}. {o}", option_letter(k))).collect();
        let modality = item.modality.map_or("medical", Modality::describe);
        let mut prompt = self.template.replace("{modality}", modality);
        prompt = prompt.replace("{question}", item.question.trim());
        prompt = prompt.replace("{options}", &options.join("\n"));
        prompt = prompt.replace("{instruction}", self.format.instruction(item.is_free_text()));
        Ok(prompt.replace("\n\n\n", "\n\n"))
    }

    /// The GRPO prompt of item `i`: the preset's training template where it has one (GRPO-CARE's
    /// under `medbridgerl`), else the evaluation prompt.
    pub fn training_prompt(&self, i: usize) -> Result<String> {
        match self.preset {
            TaskPreset::MedbridgeRl => {
                let item = self.item(i)?;
                Ok(medbridgerl_train_prompt(&item.question, &item.options))
            }
            TaskPreset::Default => self.prompt(i),
        }
    }

    /// The SFT target of item `i` in the task's answer format.
    pub fn target(&self, i: usize) -> Result<String> {
        let item = self.item(i)?;
        let answer = match &item.answer_text {
            Some(text) if item.is_free_text() => text.trim().to_string(),
            _ => option_letter(item.answer).to_string(),
        };
        Ok(match self.format {
            AnswerFormat::Letter => format!("<answer>{answer}</answer>"),
            AnswerFormat::ThinkAnswer => {
                let rationale = item.rationale.clone().unwrap_or_else(|| default_rationale(item));
                format!("<think>{rationale}</think><answer>{answer}</answer>")
            }
        })
    }

    /// Read the chosen option out of a completion for item `i`. Under `medbridgerl` the choice is
    /// `parse_mcq_letter`'s, `format_ok` is whether `extract_answer_tag` found a tag (for a
    /// free-text item, whether `parse_freeform` read a tag) and `rule` is `None`.
    pub fn extract(&self, i: usize, completion: &str) -> Result<Extraction> {
        let item = self.item(i)?;
        match self.preset {
            TaskPreset::Default => Ok(self.extractor.extract(completion, &item.options)),
            TaskPreset::MedbridgeRl => {
                let letter = medbridgerl::parse_mcq_letter(completion, item.options.len());
                let format_ok = if item.is_free_text() {
                    medbridgerl::parse_freeform(completion).1
                } else {
                    medbridgerl::extract_answer_tag(completion).is_some()
                };
                let choice = letter.map(|c| (c as u8 - b'A') as usize).filter(|_| !item.is_free_text());
                Ok(Extraction { choice, format_ok, rule: None })
            }
        }
    }

    /// Judge the completion of item `i`: what it answered, its format flag and whether it is right.
    /// Under `medbridgerl` this is `inference.py`'s per-sample result: the letter against the gold
    /// label, or `parse_freeform` against `normalize_text` of the reference (never right when
    /// that is empty).
    pub fn judge(&self, i: usize, completion: &str) -> Result<Verdict> {
        let item = self.item(i)?;
        if item.is_free_text() {
            let gold = item.answer_text.as_deref().unwrap_or_default();
            return Ok(match self.preset {
                TaskPreset::MedbridgeRl => {
                    let (pred, format_ok) = medbridgerl::parse_freeform(completion);
                    let gold = medbridgerl::normalize_text(gold);
                    Verdict { correct: !gold.is_empty() && pred == gold, pred, format_ok }
                }
                TaskPreset::Default => {
                    let pred = crate::task::extract::answer_text(completion);
                    let correct = self.reward_accuracy(i, completion)? == 1.0;
                    Verdict { format_ok: !pred.is_empty(), pred, correct }
                }
            });
        }
        let e = self.extract(i, completion)?;
        Ok(Verdict {
            pred: e.choice.map(|c| option_letter(c).to_string()).unwrap_or_default(),
            format_ok: e.format_ok,
            correct: e.choice == Some(item.answer),
        })
    }

    /// 1.0 when the completion picks the right option (or, for free text, says the reference
    /// answer, compared case-insensitively), else 0.0. Under `medbridgerl` it is the evaluator's
    /// verdict ([`McqTask::judge`]); GRPO-CARE's own reward is `reward_medbridgerl_accuracy`.
    pub fn reward_accuracy(&self, i: usize, completion: &str) -> Result<f64> {
        if self.preset == TaskPreset::MedbridgeRl {
            return Ok(f64::from(u8::from(self.judge(i, completion)?.correct)));
        }
        let item = self.item(i)?;
        if item.is_free_text() {
            let said = crate::task::extract::answer_text(completion);
            let gold = item.answer_text.as_deref().unwrap_or_default();
            return Ok(f64::from(u8::from(!said.is_empty() && said.eq_ignore_ascii_case(gold.trim()))));
        }
        Ok(f64::from(u8::from(self.extract(i, completion)?.choice == Some(item.answer))))
    }

    /// 1.0 when the completion follows the answer format, else 0.0 (a GRPO shaping term).
    pub fn reward_format(&self, i: usize, completion: &str) -> Result<f64> {
        Ok(f64::from(u8::from(self.extract(i, completion)?.format_ok)))
    }

    /// GRPO-CARE's accuracy reward against item `i`'s solution: its gold letter, or the reference
    /// text of a free-text item.
    pub fn reward_medbridgerl_accuracy(&self, i: usize, completion: &str) -> Result<f64> {
        let item = self.item(i)?;
        let solution = match item.answer_letter() {
            Some(letter) => letter.to_string(),
            None => item.answer_text.clone().unwrap_or_default(),
        };
        Ok(medbridgerl::accuracy_reward(completion, &solution))
    }

    /// GRPO-CARE's format reward: the whole completion is `<think>…</think>` then `<answer>…</answer>`.
    pub fn reward_medbridgerl_format(&self, _i: usize, completion: &str) -> Result<f64> {
        Ok(medbridgerl::format_reward(completion))
    }
}

fn default_rationale(item: &McqItem) -> String {
    let modality = item.modality.map_or("medical", Modality::describe);
    match (item.options.get(item.answer), item.answer_letter()) {
        (Some(text), Some(letter)) => {
            format!("The {modality} image shows the features of {text}, which is option {letter}.")
        }
        _ => format!("The {modality} image answers the question directly."),
    }
}

fn check_template(template: &str) -> Result<()> {
    for needed in ["{question}", "{options}"] {
        if !template.contains(needed) {
            crate::bail!("template must contain {needed}: {template:?}");
        }
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map(|c| open + c + 1).unwrap_or(rest.len());
        let placeholder = &rest[open..close];
        if !PLACEHOLDERS.contains(&placeholder) {
            crate::bail!(
                "template has unknown placeholder {placeholder:?}; known: {}",
                PLACEHOLDERS.join(", ")
            );
        }
        rest = &rest[close..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(options: &[&str], answer: usize) -> McqItem {
        McqItem {
            id: "derma/0".into(),
            image: None,
            question: "Which lesion is shown?".into(),
            options: options.iter().map(|s| s.to_string()).collect(),
            answer,
            answer_text: None,
            rationale: None,
            class_id: Some(4),
            class_name: Some("melanoma".into()),
            task: "dermamnist".into(),
            modality: Some(Modality::VisibleLight),
        }
    }

    #[test]
    fn prompt_states_modality_question_options_and_how_to_answer() {
        let task =
            McqTask::new("t", vec![item(&["nevus", "melanoma"], 1)], None, AnswerFormat::Letter).unwrap();
        let p = task.prompt(0).unwrap();
        assert_eq!(
            p,
            "This is a visible-light image.\nWhich lesion is shown?\nA. nevus\nB. melanoma\n\
             Answer with the letter of the correct option inside <answer></answer> tags, for example <answer>A</answer>."
        );
        assert_eq!(task.target(0).unwrap(), "<answer>B</answer>");
    }

    #[test]
    fn think_answer_targets_and_rewards_agree() {
        let task = McqTask::new("t", vec![item(&["nevus", "melanoma"], 1)], None, AnswerFormat::ThinkAnswer)
            .unwrap();
        let target = task.target(0).unwrap();
        assert!(target.starts_with("<think>") && target.ends_with("</think><answer>B</answer>"), "{target}");
        assert_eq!(task.reward_accuracy(0, &target).unwrap(), 1.0);
        assert_eq!(task.reward_format(0, &target).unwrap(), 1.0);
        assert_eq!(task.reward_accuracy(0, "<answer>A</answer>").unwrap(), 0.0);
        assert_eq!(task.reward_format(0, "<answer>B</answer>").unwrap(), 0.0, "think is required");
        assert_eq!(task.reward_accuracy(0, "<answer>B</answer>").unwrap(), 1.0);
        assert!(task.prompt(3).unwrap_err().to_string().contains("no item 3"));
        assert_eq!((task.limit(0).len(), task.limit(5).len()), (0, 1));
    }

    #[test]
    fn bad_items_and_templates_are_rejected() {
        let dup = McqTask::new("t", vec![item(&["nevus", "Nevus "], 0)], None, AnswerFormat::Letter);
        assert!(dup.unwrap_err().to_string().contains("appears twice"));
        let out = McqTask::new("t", vec![item(&["a", "b"], 2)], None, AnswerFormat::Letter);
        assert!(out.unwrap_err().to_string().contains("only 2 options"));
        let tpl = McqTask::new("t", vec![], Some("{question} {options} {lang}"), AnswerFormat::Letter);
        assert!(tpl.unwrap_err().to_string().contains("{lang}"));
        assert!(McqTask::new("t", vec![], Some("{question}"), AnswerFormat::Letter).is_err());
    }

    #[test]
    fn free_text_items_use_the_answer_text() {
        let mut free = item(&[], 0);
        free.answer_text = Some("Left lower lobe".into());
        let task = McqTask::new("vqa", vec![free], None, AnswerFormat::Letter).unwrap();
        assert_eq!(task.target(0).unwrap(), "<answer>Left lower lobe</answer>");
        assert_eq!(task.reward_accuracy(0, "<answer>left lower lobe</answer>").unwrap(), 1.0);
        assert_eq!(task.reward_accuracy(0, "right lobe").unwrap(), 0.0);
    }
}
