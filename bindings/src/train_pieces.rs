//! GRPO's pieces, callable one at a time so a script can check each against the paper's release
//! (`tests/fixtures/medbridgerl/corpus.json`): a built-in reward on one completion, CARE's
//! consistency bonus on one group, group-relative advantages. Part of the `train` family; each
//! wraps the runtime function `grpo` itself calls, so what a script checks is what trains.

use medbridge_runtime::task::{medbridgerl, AnswerFormat, McqItem, McqTask};
use medbridge_runtime::train::{scaled_group_advantages, CareBonus, GroupStd, Rewards};
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::convert::as_f64;
use crate::data::answer_index;
use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::options::{
    opt, Absent, Kind, OptionSet, OptionSpec, Opts, COUNT, FLOAT, NON_NEGATIVE, POSITIVE, STR,
};

/// The bonus's keys, shared by `care_bonus` and `grpo`'s `care`; absent keys are the release's.
pub const BONUS_KEYS: [OptionSpec; 3] = [
    opt("coefficient", FLOAT, Absent::Float(0.5), "bonus = coefficient × accuracy reward"),
    opt("upper_bound", FLOAT, Absent::Float(0.95), "confidences above it count as it; () for no cap"),
    opt(
        "margin",
        FLOAT,
        Absent::Float(0.01),
        "how far below the accurate samples' mean confidence still earns the bonus; () for 0",
    ),
];

pub static SCORE_REWARD: OptionSet = OptionSet::new(
    "score_reward",
    &[&[
        opt("task", Kind::Value("a Task"), Absent::Means("none"), "score as the task does (any reward)"),
        opt("index", COUNT, Absent::Int(0), "the task's question"),
        opt(
            "solution",
            STR,
            Absent::Means("the answer's letter"),
            "the reference answer, text or letter (`C` or `<answer>C</answer>`), for medbridgerl_*",
        ),
        opt("options", Kind::Strs, Absent::Means("none"), "option texts of a one-question task"),
        opt(
            "answer",
            Kind::Value("an index, a letter or an option's text"),
            Absent::Means("none"),
            "the right option of a one-question task",
        )
        .aliases(&["letter"]),
    ]],
);

pub static CARE_BONUS: OptionSet = OptionSet::new("care_bonus", &[&BONUS_KEYS]);

pub static GROUP_ADVANTAGES: OptionSet = OptionSet::new(
    "group_advantages",
    &[&[
        opt("group", POSITIVE, Absent::Means("all rewards one group"), "completions per prompt"),
        opt(
            "std",
            Kind::Str(&["unbiased", "population"]),
            Absent::Str("unbiased"),
            "the group's standard deviation: torch.std's (as released) or divided by n",
        ),
        opt("eps", NON_NEGATIVE, Absent::Float(1e-4), "added to the standard deviation"),
    ]],
);

/// `upper_bound` or `margin`: `()` is none, absent is `current`.
pub fn optional_float(o: &Opts, key: &str, current: Option<f64>) -> ScriptResult<Option<f64>> {
    match o.either(key) {
        Some(v) if v.is_unit() => Ok(None),
        Some(_) => o.float(key),
        None => Ok(current),
    }
}

/// The bonus keys of `o` over `base`.
pub fn bonus_over(o: &Opts, base: CareBonus) -> ScriptResult<CareBonus> {
    Ok(CareBonus {
        coefficient: o.float("coefficient")?.unwrap_or(base.coefficient),
        upper_bound: optional_float(o, "upper_bound", base.upper_bound)?,
        margin: optional_float(o, "margin", base.margin)?,
    })
}

fn numbers(what: &str, values: &Array) -> ScriptResult<Vec<f64>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| as_f64(v).ok_or_else(|| script_msg(format!("{what}: item {i} is not a number ({v})"))))
        .collect()
}

fn floats(values: Vec<f64>) -> Array {
    values.into_iter().map(Dynamic::from_float).collect()
}

/// The one-question task of `options` and `answer`, letter format, default preset.
fn one_question(o: &Opts) -> ScriptResult<Option<McqTask>> {
    let (Some(options), Some(answer)) = (o.strings("options")?, o.value("answer")) else { return Ok(None) };
    let answer = answer_index("score_reward", answer, &options)?;
    let item = McqItem {
        id: "score_reward/0".into(),
        image: None,
        question: String::new(),
        options,
        answer,
        answer_text: None,
        rationale: None,
        class_id: None,
        class_name: None,
        task: "score_reward".into(),
        modality: None,
    };
    McqTask::new("score_reward", vec![item], None, AnswerFormat::Letter).script().map(Some)
}

#[export_module]
pub mod train_pieces_api {
    use super::*;

    /// One built-in reward of one completion, as GRPO scores it:
    /// `score_reward("medbridgerl_accuracy", "<think>..</think><answer>B</answer>", #{solution: "B"})`.
    /// `example` says what the completion answers:
    /// - `#{task, index}`: the task's question, any reward, under the task's preset;
    /// - `#{solution}`: the release's reference text or letter, for `medbridgerl_accuracy`
    ///   (`medbridgerl_format` needs nothing: `#{}`);
    /// - `#{options, answer}` (or `letter`): a one-question letter task, for `accuracy`, `format`
    ///   and `consistency` (and `medbridgerl_accuracy`, whose solution is then the answer's letter).
    #[rhai_fn(return_raw)]
    pub fn score_reward(name: &str, completion: &str, example: Map) -> Result<f64, Box<EvalAltResult>> {
        let o = SCORE_REWARD.parse(&example)?;
        let rewards = Rewards::builtin(&[(name, 1.0)]).script()?;
        if let Some(task) = o.typed::<McqTask>("task")? {
            let i = o.count_or_default("index")?;
            return Ok(rewards.score(&task, i, completion).script()?.total);
        }
        let task = one_question(&o)?;
        match (name, o.string("solution")?, task) {
            ("medbridgerl_format", ..) => Ok(medbridgerl::format_reward(completion)),
            ("medbridgerl_accuracy", Some(solution), _) => {
                Ok(medbridgerl::accuracy_reward(completion, &solution))
            }
            (_, _, Some(task)) => Ok(rewards.score(&task, 0, completion).script()?.total),
            _ => Err(script_msg(format!(
                "score_reward: `{name}` needs #{{task, index}} or #{{options, answer}}{}",
                if name == "medbridgerl_accuracy" { " or #{solution}" } else { "" }
            ))),
        }
    }

    /// GRPO-CARE's consistency bonus of one group, as released:
    /// `care_bonus([1.0, 0.0, 1.0], [0.9, 0.5, 0.2], #{coefficient: 0.5, upper_bound: 0.95,
    /// margin: 0.01})` → one bonus per sample (`()` for `upper_bound` or `margin` turns it off).
    #[rhai_fn(return_raw)]
    pub fn care_bonus(accuracy: Array, confidence: Array, options: Map) -> Result<Array, Box<EvalAltResult>> {
        let o = CARE_BONUS.parse(&options)?;
        let bonus = bonus_over(&o, CareBonus::default())?;
        let accuracy = numbers("care_bonus accuracy", &accuracy)?;
        let confidence = numbers("care_bonus confidence", &confidence)?;
        Ok(floats(bonus.bonus(&accuracy, &confidence).script()?))
    }

    /// Group-relative advantages `(r − group mean) / (group std + eps)` of consecutive groups:
    /// `group_advantages([1.0, 0.0, 0.5, 1.5], #{group: 2, std: "unbiased", eps: 1e-4})`; the
    /// defaults (unbiased std, eps 1e-4) are the release's and `grpo`'s.
    #[rhai_fn(return_raw)]
    pub fn group_advantages(rewards: Array, options: Map) -> Result<Array, Box<EvalAltResult>> {
        let o = GROUP_ADVANTAGES.parse(&options)?;
        let rewards = numbers("group_advantages", &rewards)?;
        let group = o.count("group")?.unwrap_or(rewards.len());
        let std = GroupStd::parse(&o.string_or_default("std")?).script()?;
        Ok(floats(scaled_group_advantages(&rewards, group, std, o.float_or_default("eps")?).script()?))
    }
}
