//! Building questions out of benchmark rows: answer labels to option indices, yes/no answers to
//! two-option questions, open answers to free-text items, and each benchmark's modality.

use crate::data::dataset::Split;
use crate::data::medmnist_info::Modality;
use crate::error::Result;
use crate::image::Image;
use crate::task::extract::option_letter;
use crate::task::mcq::McqItem;

/// The parts of a question every layout supplies.
pub(super) struct Question {
    pub task: String,
    pub split: Split,
    /// Row (or line) number in the file, for the id.
    pub row: usize,
    pub image: Option<Image>,
    pub question: String,
}

impl Question {
    fn item(self, options: Vec<String>, answer: usize, answer_text: Option<String>) -> McqItem {
        let modality = benchmark_modality(&self.task);
        McqItem {
            id: format!("{}/{}/{}", self.task, self.split, self.row),
            image: self.image,
            question: self.question.trim().to_string(),
            options,
            answer,
            answer_text,
            rationale: None,
            class_id: None,
            class_name: None,
            task: self.task,
            modality,
        }
    }

    /// A lettered question whose answer is option `answer`.
    pub fn choice(self, options: Vec<String>, answer: usize) -> McqItem {
        self.item(options, answer, None)
    }

    /// A question with options "yes" and "no" (always in that order, as the benchmarks print
    /// them) when `answer` is yes or no; else `None`.
    pub fn yes_no(self, answer: &str) -> std::result::Result<McqItem, Question> {
        match answer.trim().to_ascii_lowercase().as_str() {
            "yes" => Ok(self.item(vec!["yes".into(), "no".into()], 0, None)),
            "no" => Ok(self.item(vec!["yes".into(), "no".into()], 1, None)),
            _ => Err(self),
        }
    }

    /// A question without options, graded on its reference text.
    pub fn free_text(self, answer: &str) -> McqItem {
        self.item(Vec::new(), 0, Some(answer.trim().to_string()))
    }
}

/// The option index of an answer label: a letter (`B`, `b`, `(B)`, `B.`) within the options.
pub(super) fn letter_index(label: &str, n_options: usize) -> Result<usize> {
    let letter: String = label.trim().trim_matches(|c: char| "().:".contains(c)).trim().to_ascii_uppercase();
    let index = match letter.as_bytes() {
        [c @ b'A'..=b'Z'] => (c - b'A') as usize,
        _ => crate::bail!("answer label {label:?} is not an option letter"),
    };
    if index >= n_options {
        crate::bail!(
            "answer label {label:?} but the options run A..{} ({n_options} of them)",
            option_letter(n_options.saturating_sub(1))
        );
    }
    Ok(index)
}

/// The modality a benchmark's images share, where they share one: PathVQA is pathology
/// (microscopy); VQA-RAD and SLAKE are radiology. Mixed benchmarks (PMC-VQA, MMMU, MedXpertQA)
/// have none, and their prompts say "medical image".
pub(super) fn benchmark_modality(task: &str) -> Option<Modality> {
    let key: String = task.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_lowercase();
    match key.as_str() {
        "pathvqa" => Some(Modality::Microscopy),
        "vqarad" | "slake" => Some(Modality::Radiology),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_labels_accept_common_spellings_and_name_the_range() {
        assert_eq!(letter_index("B", 4).unwrap(), 1);
        assert_eq!(letter_index(" (c) ", 4).unwrap(), 2);
        assert_eq!(letter_index("D.", 4).unwrap(), 3);
        assert!(letter_index("E", 4).unwrap_err().to_string().contains("A..D"));
        assert!(letter_index("Kidney", 4).unwrap_err().to_string().contains("not an option letter"));
    }

    #[test]
    fn benchmark_names_map_to_modalities() {
        assert_eq!(benchmark_modality("PathVQA"), Some(Modality::Microscopy));
        assert_eq!(benchmark_modality("VQA-RAD"), Some(Modality::Radiology));
        assert_eq!(benchmark_modality("path_vqa"), Some(Modality::Microscopy));
        assert_eq!(benchmark_modality("PMC-VQA"), None);
    }
}
