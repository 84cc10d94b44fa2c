//! Task presets: a whole protocol (prompts, answer reading, rewards) chosen by one name, so a
//! reproduction cannot mix the paper's prompt with medbridge's extractor by accident.
//!
//! - `default`: medbridge's own template, extractor and rewards (`mcq.rs`, `extract.rs`).
//! - `medbridgerl`: the paper's released code (GitHub `armenjeddi/medbridgerl`). Evaluation
//!   prompts are `inference.py`'s `build_prompt_with_tags`; answers are read with
//!   `parse_mcq_letter` / `parse_freeform` (`medbridgerl.rs`), a sample's format flag being
//!   whether `extract_answer_tag` found a tag. GRPO prompts are GRPO-CARE's `QUESTION_TEMPLATE`
//!   (`src/open_r1/grpo.py`) and its rewards are named `medbridgerl_accuracy`/`medbridgerl_format`.
//!
//! The release does not ship the PMC-VQA jsonl its GRPO run read, so what fills GRPO-CARE's
//! `{Question}` is not known; we put the question and its options there exactly as the
//! evaluation prompt writes them (`{question}\n\nOptions:\nA. …`), and the solution the accuracy
//! reward compares with is the gold letter (the reference text for free-text items).
//! `inference.py` renders its chat template with `add_generation_prompt=False` (the model must open
//! the assistant turn itself); medbridge's processor always appends the assistant header, for
//! evaluation as for training. The README's "Deviations" lists this with the others.

use crate::error::Result;
use crate::task::extract::option_letter;
use crate::task::medbridgerl::py_strip;

/// Which protocol a task follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TaskPreset {
    #[default]
    Default,
    MedbridgeRl,
}

impl TaskPreset {
    pub const ALL: [TaskPreset; 2] = [TaskPreset::Default, TaskPreset::MedbridgeRl];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskPreset::Default => "default",
            TaskPreset::MedbridgeRl => "medbridgerl",
        }
    }

    pub fn parse(name: &str) -> Result<TaskPreset> {
        let wanted: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>();
        match TaskPreset::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(&wanted)) {
            Some(p) => Ok(p),
            None => crate::bail!("unknown task preset {name:?}: expected \"default\" or \"medbridgerl\""),
        }
    }
}

/// `inference.py`'s instruction after a multiple-choice question (two sentences joined by a
/// comma without a space, as released).
const MCQ_INSTRUCTION: &str = "First output the thinking process in <think> </think> tags,\
Then output the final answer in <answer> </answer> tags.\n\
IMPORTANT: In <answer>, output ONLY the single option letter, for example <answer>A</answer>";

/// `inference.py`'s instruction after a question without options.
const FREE_INSTRUCTION: &str = "First output the thinking process in <think> </think> tags.\n\
Then output the final answer in <answer> </answer> tags.\n\
IMPORTANT: In <answer>, output ONLY the short final answer, no extra words.";

/// GRPO-CARE's `QUESTION_TEMPLATE` after `{Question}` (one space before "First").
const GRPO_CARE_INSTRUCTION: &str = " First think about the reasoning process in the mind and then provide the user with the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>";

/// The question stripped as Python strips it, then (with options) the lettered option lines.
fn question_block(question: &str, options: &[String]) -> String {
    let q = py_strip(question);
    if options.is_empty() {
        return q.to_string();
    }
    let lines: Vec<String> =
        options.iter().enumerate().map(|(i, o)| format!("{}. {o}", option_letter(i))).collect();
    format!("{q}\n\nOptions:\n{}", lines.join("\n"))
}

/// `build_prompt_with_tags(question, options)`: the evaluation prompt of the release.
pub fn medbridgerl_eval_prompt(question: &str, options: &[String]) -> String {
    let block = question_block(question, options);
    if options.is_empty() {
        format!("{block}\n\n{FREE_INSTRUCTION}")
    } else {
        format!("{block}\n{MCQ_INSTRUCTION}")
    }
}

/// GRPO-CARE's `QUESTION_TEMPLATE.format(Question=...)`, with the question block described in the
/// module header as `{Question}`.
pub fn medbridgerl_train_prompt(question: &str, options: &[String]) -> String {
    format!("{}{GRPO_CARE_INSTRUCTION}", question_block(question, options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::medbridgerl::normalize_text;
    use crate::task::{AnswerFormat, McqItem, McqTask};

    fn corpus_prompts() -> Vec<serde_json::Value> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/medbridgerl/corpus.json");
        let corpus: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        corpus["prompts"].as_array().unwrap().clone()
    }

    /// Every prompt the released `build_prompt_with_tags` built for the corpus, byte for byte.
    #[test]
    fn eval_prompts_match_the_released_builder() {
        let cases = corpus_prompts();
        assert!(cases.len() >= 4);
        for case in cases {
            let question = case["question"].as_str().unwrap();
            let options: Vec<String> = case["options"]
                .as_array()
                .map(|a| a.iter().map(|o| o.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            assert_eq!(medbridgerl_eval_prompt(question, &options), case["prompt"].as_str().unwrap());
        }
    }

    fn item(question: &str, options: Vec<String>, answer: usize, answer_text: Option<&str>) -> McqItem {
        McqItem {
            id: "q".into(),
            image: None,
            question: question.into(),
            options,
            answer,
            answer_text: answer_text.map(str::to_string),
            rationale: None,
            class_id: None,
            class_name: None,
            task: "PMC-VQA".into(),
            modality: None,
        }
    }

    fn task(items: Vec<McqItem>) -> McqTask {
        McqTask::new("t", items, None, AnswerFormat::Letter).unwrap().with_preset(TaskPreset::MedbridgeRl)
    }

    /// `McqTask::prompt` under the preset is the released prompt (and the default is untouched).
    #[test]
    fn task_prompts_follow_the_preset() {
        for case in corpus_prompts().iter().filter(|c| c["options"].as_array().is_some_and(|a| !a.is_empty()))
        {
            let options: Vec<String> =
                case["options"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_string()).collect();
            let t = task(vec![item(case["question"].as_str().unwrap(), options, 0, None)]);
            assert_eq!(t.prompt(0).unwrap(), case["prompt"].as_str().unwrap());
            assert!(t.training_prompt(0).unwrap().ends_with("<answer> answer here </answer>"));
            let plain = McqTask::new("t", t.items().to_vec(), None, AnswerFormat::Letter).unwrap();
            assert_eq!(plain.preset(), TaskPreset::Default);
            assert!(plain.prompt(0).unwrap().starts_with("This is a medical image."));
            assert_eq!(plain.training_prompt(0).unwrap(), plain.prompt(0).unwrap());
            assert_eq!(t.limit(1).preset(), TaskPreset::MedbridgeRl);
        }
    }

    /// On every corpus completion, `extract` and `judge` give what `inference.py` computes per
    /// sample: the letter of `parse_mcq_letter`, the tag flag, and correctness; for free text,
    /// `parse_freeform` against the normalised reference.
    #[test]
    fn extraction_matches_the_released_code_on_the_corpus() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/medbridgerl/corpus.json");
        let corpus: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for case in corpus["completions"].as_array().unwrap() {
            let text = case["completion"].as_str().unwrap();
            let n = case["num_options"].as_u64().unwrap() as usize;
            let solution = case["solution"].as_str().unwrap();
            let options: Vec<String> = (0..n).map(|k| format!("option {k}")).collect();
            let gold = match solution.as_bytes() {
                [c @ b'A'..=b'Z'] if ((c - b'A') as usize) < n => (c - b'A') as usize,
                _ => 1,
            };
            let mcq = task(vec![item("q?", options, gold, None)]);
            let released = case["parse_mcq_letter"].as_str().map(|l| l.chars().next().unwrap());
            let e = mcq.extract(0, text).unwrap();
            assert_eq!(e.choice.map(option_letter), released, "{text:?}");
            assert_eq!(e.format_ok, !case["extract_answer_tag"].is_null(), "{text:?}");
            let v = mcq.judge(0, text).unwrap();
            assert_eq!(v.pred, released.map(String::from).unwrap_or_default(), "{text:?}");
            assert_eq!(
                (v.format_ok, v.correct),
                (e.format_ok, released == Some(option_letter(gold))),
                "{text:?}"
            );

            let free = task(vec![item("q?", Vec::new(), 0, Some(solution))]);
            let v = free.judge(0, text).unwrap();
            let (pred, tagged) =
                (case["parse_freeform"][0].as_str().unwrap(), case["parse_freeform"][1].as_bool());
            assert_eq!((v.pred.as_str(), Some(v.format_ok)), (pred, tagged), "{text:?}");
            assert_eq!(v.correct, pred == normalize_text(solution), "{text:?}");
            assert_eq!(free.reward_accuracy(0, text).unwrap(), f64::from(u8::from(v.correct)));
            let released_reward = case["accuracy_reward"].as_f64().unwrap();
            assert_eq!(free.reward_medbridgerl_accuracy(0, text).unwrap(), released_reward, "{text:?}");
            assert_eq!(
                free.reward_medbridgerl_format(0, text).unwrap(),
                case["format_reward"].as_f64().unwrap()
            );
            assert_eq!(free.extract(0, text).unwrap().choice, None);
        }
    }

    #[test]
    fn an_empty_reference_is_never_matched() {
        let free = task(vec![item("q?", Vec::new(), 0, Some("..."))]);
        assert!(!free.judge(0, "<answer></answer>").unwrap().correct);
        assert!(!free.judge(0, "").unwrap().correct);
    }

    #[test]
    fn train_prompt_is_the_grpo_care_template() {
        let p = medbridgerl_train_prompt(" Which organ? ", &["liver".into(), "lung".into()]);
        assert_eq!(
            p,
            "Which organ?\n\nOptions:\nA. liver\nB. lung First think about the reasoning process in the mind \
             and then provide the user with the answer. The reasoning process and answer are enclosed within \
             <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here \
             </think><answer> answer here </answer>"
        );
    }

    #[test]
    fn names_parse_both_ways() {
        for p in TaskPreset::ALL {
            assert_eq!(TaskPreset::parse(p.as_str()).unwrap(), p);
        }
        assert_eq!(TaskPreset::parse("MedBridgeRL").unwrap(), TaskPreset::MedbridgeRl);
        assert_eq!(TaskPreset::parse("medbridge_rl").unwrap(), TaskPreset::MedbridgeRl);
        assert!(TaskPreset::parse("paper").unwrap_err().to_string().contains("medbridgerl"));
    }
}
