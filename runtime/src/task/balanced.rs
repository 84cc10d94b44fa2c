//! `McqTask::balanced`: a stratified sample of questions, e.g. the paper's modality-balanced 8k
//! subset of PMC-VQA, taken after `label_modality` has tagged each item. The sampling itself is
//! the one `Dataset::balanced` uses (`data::dataset_stratify`).

use crate::data::dataset_stratify::{stratified_sample, StratifiedSample};
use crate::error::Result;
use crate::task::extract::option_letter;
use crate::task::mcq::{McqItem, McqTask};

/// What a question sample equalises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStratum {
    /// The item's imaging modality; every item must have one (see `label_modality`).
    Modality,
    /// The benchmark or flag the item comes from (`dataset_name` in MedVLThinker-Eval).
    Dataset,
    /// The gold option letter (or the reference text of a free-text item), against position bias.
    Answer,
    /// The class or chest finding the question is about (MedMNIST tasks).
    Class,
}

impl TaskStratum {
    pub fn parse(name: &str) -> Result<TaskStratum> {
        match name.trim().to_ascii_lowercase().as_str() {
            "modality" => Ok(TaskStratum::Modality),
            "dataset" | "task" | "dataset_name" => Ok(TaskStratum::Dataset),
            "answer" | "letter" | "answer_label" => Ok(TaskStratum::Answer),
            "class" | "label" | "class_name" => Ok(TaskStratum::Class),
            _ => crate::bail!(
                "unknown balance key {name:?} for questions: expected modality, dataset, answer or class"
            ),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStratum::Modality => "modality",
            TaskStratum::Dataset => "dataset",
            TaskStratum::Answer => "answer",
            TaskStratum::Class => "class",
        }
    }

    fn key(self, item: &McqItem) -> Result<String> {
        Ok(match self {
            TaskStratum::Modality => match item.modality {
                Some(m) => m.as_str().to_string(),
                None => crate::bail!(
                    "balanced by modality: question {} has no modality; tag the task with \
                     label_modality first",
                    item.id
                ),
            },
            TaskStratum::Dataset => item.task.clone(),
            TaskStratum::Answer => match &item.answer_text {
                Some(text) if item.is_free_text() => text.trim().to_ascii_lowercase(),
                _ => option_letter(item.answer).to_string(),
            },
            TaskStratum::Class => match (&item.class_name, item.class_id) {
                (Some(name), _) => name.clone(),
                (None, Some(id)) => id.to_string(),
                (None, None) => crate::bail!(
                    "balanced by class: question {} has no class; use modality, dataset or answer",
                    item.id
                ),
            },
        })
    }
}

impl McqTask {
    /// `n` questions spread as evenly as possible over the strata of `by` (a short stratum gives
    /// all it has), in the task's order, with the same template and extractor. The returned
    /// sample says what each stratum had and gave; `sample.warnings(..)` words the shortfalls.
    pub fn balanced(&self, by: TaskStratum, n: usize, seed: u64) -> Result<(McqTask, StratifiedSample)> {
        let keys = self.items().iter().map(|item| by.key(item)).collect::<Result<Vec<String>>>()?;
        let sample = stratified_sample(&keys, n, seed);
        let items: Vec<McqItem> = sample.positions.iter().map(|&i| self.items()[i].clone()).collect();
        let task = McqTask::new(self.name(), items, Some(self.template()), self.answer_format())?
            .with_extractor(self.extractor().clone());
        Ok((task, sample))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::medmnist_info::Modality;
    use crate::task::AnswerFormat;

    fn question(i: usize, modality: Option<Modality>, task: &str) -> McqItem {
        McqItem {
            id: format!("q{i}"),
            image: None,
            question: format!("question {i}?"),
            options: vec!["yes".into(), "no".into(), "maybe".into()],
            answer: i % 3,
            answer_text: None,
            rationale: None,
            class_id: None,
            class_name: None,
            task: task.into(),
            modality,
        }
    }

    /// 60 radiology, 30 microscopy and 5 visible-light questions, as a tagged PMC-VQA might be.
    fn tagged() -> McqTask {
        let items = (0..95)
            .map(|i| {
                let m = match i {
                    0..60 => Modality::Radiology,
                    60..90 => Modality::Microscopy,
                    _ => Modality::VisibleLight,
                };
                question(i, Some(m), if i % 2 == 0 { "pmc_vqa" } else { "slake" })
            })
            .collect();
        McqTask::new("pmc", items, None, AnswerFormat::ThinkAnswer).unwrap()
    }

    fn count(task: &McqTask, m: Modality) -> usize {
        task.items().iter().filter(|i| i.modality == Some(m)).count()
    }

    #[test]
    fn modality_balance_takes_all_of_a_short_stratum_and_says_so() {
        let (b, sample) = tagged().balanced(TaskStratum::Modality, 45, 3).unwrap();
        assert_eq!(b.len(), 45);
        assert_eq!(count(&b, Modality::VisibleLight), 5);
        assert_eq!(count(&b, Modality::Radiology), 20);
        assert_eq!(count(&b, Modality::Microscopy), 20);
        let w = sample.warnings("balanced by modality");
        assert!(w.len() == 1 && w[0].contains("visible_light"), "{w:?}");
        assert_eq!(b.answer_format(), AnswerFormat::ThinkAnswer);
        assert_eq!(b.template(), tagged().template());
    }

    #[test]
    fn equal_strata_need_no_warning_and_the_seed_fixes_the_sample() {
        let task = tagged();
        let (b, sample) = task.balanced(TaskStratum::Modality, 15, 1).unwrap();
        assert!(sample.warnings("x").is_empty());
        let ids = |t: &McqTask| t.items().iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&b), ids(&task.balanced(TaskStratum::Modality, 15, 1).unwrap().0));
        assert_ne!(ids(&b), ids(&task.balanced(TaskStratum::Modality, 15, 2).unwrap().0));
    }

    #[test]
    fn dataset_and_answer_keys_stratify_too() {
        let task = tagged();
        let (by_ds, _) = task.balanced(TaskStratum::Dataset, 20, 0).unwrap();
        assert_eq!(by_ds.items().iter().filter(|i| i.task == "slake").count(), 10);
        let (by_answer, _) = task.balanced(TaskStratum::Answer, 30, 0).unwrap();
        for k in 0..3 {
            assert_eq!(by_answer.items().iter().filter(|i| i.answer == k).count(), 10);
        }
    }

    #[test]
    fn untagged_questions_and_unknown_keys_are_named() {
        let items = vec![question(0, Some(Modality::Radiology), "a"), question(1, None, "a")];
        let task = McqTask::new("t", items, None, AnswerFormat::Letter).unwrap();
        let e = task.balanced(TaskStratum::Modality, 1, 0).unwrap_err().to_string();
        assert!(e.contains("q1") && e.contains("label_modality"), "{e}");
        assert!(task.balanced(TaskStratum::Class, 1, 0).unwrap_err().to_string().contains("no class"));
        assert!(TaskStratum::parse("colour").unwrap_err().to_string().contains("modality, dataset"));
        assert_eq!(TaskStratum::parse("dataset_name").unwrap(), TaskStratum::Dataset);
    }
}
