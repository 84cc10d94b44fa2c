//! GRPO's reward functions and their weighted sum.
//!
//! - `accuracy`: `task.reward_accuracy`, the same extractor the evaluator uses, so training and
//!   evaluation agree on what counts as correct.
//! - `format`: `task.reward_format`, 1 when the completion follows the task's answer format
//!   (`<think>…</think><answer>…</answer>` for think-answer tasks, `<answer>…</answer>` else).
//! - `consistency`: 1 when the reasoning's stated choice agrees with the answer. The exact rule:
//!   take the text before the first `</think>` (0 when there is none); in it, find the last
//!   option letter that is *named*, i.e. a capital letter of one of the item's options that
//!   stands alone and follows the word `option`, `choice` or `answer` (optionally with `is`
//!   or a colon between, e.g. `option C`, `answer is C`, `answer: C`) or is written `(C)`; the
//!   reward is 1 when that letter is the one the extractor reads from the `<answer>`, else 0
//!   (also 0 when no letter is named or no answer is extracted). Bare capitals are ignored,
//!   since `A` is also an article.
//! - `medbridgerl_accuracy`, `medbridgerl_format`: GRPO-CARE's released rewards
//!   (`task.reward_medbridgerl_*`), for reproducing the paper's run; see `task/preset.rs`.
//! - custom closures `|completion, example| -> f64` ([`RewardKind::Custom`]): the bindings wrap
//!   a script closure in one. It may borrow (the script engine), so a reward set has a lifetime
//!   and need not be `Send`: GRPO scores synchronously on the calling thread.

use crate::error::{Context, Result};
use crate::task::extract::option_letter;
use crate::task::mcq::McqTask;

/// A reward closure: completion text and example index (into the task) to a score.
pub type CustomReward<'a> = Box<dyn Fn(&str, usize) -> Result<f64> + 'a>;

pub enum RewardKind<'a> {
    Accuracy,
    Format,
    Consistency,
    MedbridgeRlAccuracy,
    MedbridgeRlFormat,
    Custom(CustomReward<'a>),
}

impl std::fmt::Debug for RewardKind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RewardKind::Accuracy => f.write_str("Accuracy"),
            RewardKind::Format => f.write_str("Format"),
            RewardKind::Consistency => f.write_str("Consistency"),
            RewardKind::MedbridgeRlAccuracy => f.write_str("MedbridgeRlAccuracy"),
            RewardKind::MedbridgeRlFormat => f.write_str("MedbridgeRlFormat"),
            RewardKind::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// The built-in reward names.
pub const BUILTIN_REWARDS: [&str; 5] =
    ["accuracy", "format", "consistency", "medbridgerl_accuracy", "medbridgerl_format"];

#[derive(Debug)]
pub struct Reward<'a> {
    pub name: String,
    pub weight: f64,
    pub kind: RewardKind<'a>,
}

/// Rewards of one completion: each function's raw score (in [`Rewards`] order) and the
/// weighted total.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardScores {
    pub components: Vec<f64>,
    pub total: f64,
}

/// A weighted set of reward functions.
#[derive(Debug, Default)]
pub struct Rewards<'a> {
    pub rewards: Vec<Reward<'a>>,
}

impl<'a> Rewards<'a> {
    /// Built-in rewards by name with their weights; an unknown name is an error that lists
    /// the known ones.
    pub fn builtin(named: &[(&str, f64)]) -> Result<Self> {
        let mut out = Rewards::default();
        for &(name, weight) in named {
            let kind = match name {
                "accuracy" => RewardKind::Accuracy,
                "format" => RewardKind::Format,
                "consistency" => RewardKind::Consistency,
                "medbridgerl_accuracy" => RewardKind::MedbridgeRlAccuracy,
                "medbridgerl_format" => RewardKind::MedbridgeRlFormat,
                other => crate::bail!(
                    "unknown reward `{other}`: built-in rewards are {}, or pass a closure |completion, example|",
                    BUILTIN_REWARDS.join(", ")
                ),
            };
            out.push(name, weight, kind)?;
        }
        Ok(out)
    }

    pub fn push(&mut self, name: &str, weight: f64, kind: RewardKind<'a>) -> Result<()> {
        if !weight.is_finite() {
            crate::bail!("reward {name}: weight {weight} is not a finite number");
        }
        if self.rewards.iter().any(|r| r.name == name) {
            crate::bail!("reward {name} is listed twice");
        }
        self.rewards.push(Reward { name: name.to_string(), weight, kind });
        Ok(())
    }

    pub fn names(&self) -> Vec<&str> {
        self.rewards.iter().map(|r| r.name.as_str()).collect()
    }

    /// Score the completion of example `i`.
    pub fn score(&self, task: &McqTask, i: usize, completion: &str) -> Result<RewardScores> {
        if self.rewards.is_empty() {
            crate::bail!("no reward functions: name at least one, e.g. accuracy");
        }
        let mut components = Vec::with_capacity(self.rewards.len());
        let mut total = 0.0;
        for r in &self.rewards {
            let value = match &r.kind {
                RewardKind::Accuracy => task.reward_accuracy(i, completion)?,
                RewardKind::Format => task.reward_format(i, completion)?,
                RewardKind::Consistency => consistency(task, i, completion)?,
                RewardKind::MedbridgeRlAccuracy => task.reward_medbridgerl_accuracy(i, completion)?,
                RewardKind::MedbridgeRlFormat => task.reward_medbridgerl_format(i, completion)?,
                RewardKind::Custom(f) => f(completion, i).with_context(|| format!("reward `{}`", r.name))?,
            };
            if !value.is_finite() {
                crate::bail!("reward `{}` returned {value} for example {i}", r.name);
            }
            components.push(value);
            total += r.weight * value;
        }
        Ok(RewardScores { components, total })
    }
}

/// The `consistency` reward; the rule is in the module header.
pub fn consistency(task: &McqTask, i: usize, completion: &str) -> Result<f64> {
    let options = task.item(i)?.options.len();
    let Some((reasoning, _)) = completion.split_once("</think>") else { return Ok(0.0) };
    let stated = last_named_letter(reasoning, options);
    let answered = task.extract(i, completion)?.choice.map(option_letter);
    Ok(f64::from(u8::from(stated.is_some() && stated == answered)))
}

/// The last option letter named in `text` (see the module header for what naming is).
pub fn last_named_letter(text: &str, options: usize) -> Option<char> {
    let chars: Vec<char> = text.chars().collect();
    let is_option = |c: char| c.is_ascii_uppercase() && ((c as u8 - b'A') as usize) < options;
    let alone = |k: usize| {
        let before = k == 0 || !chars[k - 1].is_alphanumeric();
        let after = k + 1 == chars.len() || !chars[k + 1].is_alphanumeric();
        before && after
    };
    let mut found = None;
    for k in 0..chars.len() {
        if !is_option(chars[k]) || !alone(k) {
            continue;
        }
        let parenthesised = k > 0 && chars[k - 1] == '(' && chars.get(k + 1) == Some(&')');
        let prefix: String = chars[..k].iter().collect::<String>().to_lowercase();
        let prefix = prefix.trim_end().trim_end_matches(':').trim_end();
        let prefix = prefix.strip_suffix(" is").map_or(prefix, str::trim_end);
        let keyword = ["option", "choice", "answer"].iter().any(|w| {
            prefix
                .strip_suffix(w)
                .is_some_and(|rest| rest.chars().last().is_none_or(|c| !c.is_alphanumeric()))
        });
        if parenthesised || keyword {
            found = Some(chars[k]);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::sft::tests::synthetic_task;

    #[test]
    fn named_letters_follow_the_documented_rule() {
        assert_eq!(last_named_letter("A cyst, so option B... no, the answer is C.", 4), Some('C'));
        assert_eq!(last_named_letter("I pick (D) over choice: A", 4), Some('A'));
        assert_eq!(last_named_letter("A mass is seen", 4), None);
        assert_eq!(last_named_letter("option E", 4), None);
        assert_eq!(last_named_letter("adoption C", 4), None);
    }

    #[test]
    fn weighted_rewards_and_unknown_names() {
        let task = synthetic_task();
        let gold = option_letter(task.item(0).unwrap().answer);
        let rewards = Rewards::builtin(&[("accuracy", 1.0), ("format", 0.5), ("consistency", 0.25)]).unwrap();
        let agree = format!("<think>It is option {gold}.</think><answer>{gold}</answer>");
        assert_eq!(rewards.score(&task, 0, &agree).unwrap().total, 1.75);
        let wrong = if gold == 'A' { 'B' } else { 'A' };
        let disagree = format!("<think>It is option {gold}.</think><answer>{wrong}</answer>");
        let s = rewards.score(&task, 0, &disagree).unwrap();
        assert_eq!(s.components, vec![0.0, 1.0, 0.0]);
        assert_eq!(rewards.score(&task, 0, "no tags at all").unwrap().total, 0.0);
        let err = Rewards::builtin(&[("acuracy", 1.0)]).unwrap_err().to_string();
        assert!(err.contains("unknown reward `acuracy`") && err.contains("consistency"), "{err}");
        let released =
            Rewards::builtin(&[("medbridgerl_accuracy", 1.0), ("medbridgerl_format", 1.0)]).unwrap();
        let lower = format!("<think>x</think> <answer> {} </answer>", gold.to_ascii_lowercase());
        assert_eq!(released.score(&task, 0, &lower).unwrap().components, vec![1.0, 1.0]);
        let mut custom = Rewards::default();
        custom.push("length", 2.0, RewardKind::Custom(Box::new(|c, _| Ok(c.len() as f64)))).unwrap();
        assert_eq!(custom.score(&task, 0, "abc").unwrap().total, 6.0);
    }
}
