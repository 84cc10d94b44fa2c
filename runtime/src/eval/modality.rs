//! `label_modality`: tag each question's image with its imaging modality by asking the model a
//! constrained multiple-choice question — the paper's way of splitting PMC-VQA into radiology,
//! microscopy and visible-light before taking a modality-balanced subset.
//!
//! Constrained means the answer is read from the logits of the option letters at the first
//! generated position, so every image gets exactly one of the offered labels.

use crate::data::Modality;
use crate::error::{Context, Result};
use crate::models::Vlm;
use crate::run::CancelFlag;
use crate::task::{option_letter, McqTask};

/// The question asked about every image, followed by the lettered labels.
pub const MODALITY_QUESTION: &str = "Which imaging modality produced this image?";

/// The offered labels, in the order they are lettered.
pub const DEFAULT_LABELS: [Modality; 3] = [Modality::Radiology, Modality::Microscopy, Modality::VisibleLight];

/// A copy of `task` whose items carry the modality the model chose among `labels`.
/// Items without an image keep the modality they had.
pub fn label_modality(
    vlm: &Vlm,
    task: &McqTask,
    labels: &[Modality],
    cancel: Option<&CancelFlag>,
) -> Result<McqTask> {
    if labels.len() < 2 {
        crate::bail!("label_modality: give at least two labels, got {}", labels.len());
    }
    let letter_ids = labels
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let ids = vlm.processor.tokenize(&option_letter(i).to_string(), false)?;
            match ids.as_slice() {
                [id] => Ok(*id),
                _ => crate::bail!("label_modality: option letter {} is not a single token", option_letter(i)),
            }
        })
        .collect::<Result<Vec<u32>>>()?;
    let options: String =
        labels.iter().enumerate().map(|(i, m)| format!("{}. {}\n", option_letter(i), m.describe())).collect();
    let prompt = format!("{MODALITY_QUESTION}\n{options}Answer with the letter only.");
    let mut items = task.items().to_vec();
    for item in &mut items {
        if let Some(c) = cancel {
            c.check(|| format!("label_modality at {}", item.id))?;
        }
        let Some(image) = &item.image else { continue };
        let logits =
            vlm.logits(Some(image), &prompt).with_context(|| format!("label_modality: {}", item.id))?;
        let last = logits.get(logits.dim(0)? - 1)?;
        let scores: Vec<f32> = letter_ids
            .iter()
            .map(|&id| last.get(id as usize)?.to_scalar::<f32>())
            .collect::<candle_core::Result<_>>()?;
        let best = scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
        item.modality = Some(labels[best]);
    }
    Ok(McqTask::new(task.name(), items, Some(task.template()), task.answer_format())?
        .with_extractor(task.extractor().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Image;
    use crate::task::{AnswerFormat, McqItem};
    use candle_core::Device;

    fn item(i: usize, image: Option<Image>) -> McqItem {
        McqItem {
            id: format!("q{i}"),
            image,
            question: "What is shown?".into(),
            options: vec!["yes".into(), "no".into()],
            answer: 0,
            answer_text: None,
            rationale: None,
            class_id: None,
            class_name: None,
            task: "vqa".into(),
            modality: None,
        }
    }

    #[test]
    fn every_image_gets_one_offered_label_and_the_rest_is_kept() {
        let vlm = Vlm::new_preset("qwen2_5_vl_tiny", 0, &Device::Cpu).unwrap();
        let images: Vec<Image> =
            (0..4u8).map(|i| Image::new(28, 28, 1, vec![60 * i; 28 * 28]).unwrap()).collect();
        let mut items: Vec<McqItem> =
            images.into_iter().enumerate().map(|(i, im)| item(i, Some(im))).collect();
        items.push(item(9, None));
        let task = McqTask::new("vqa", items, None, AnswerFormat::Letter).unwrap();
        let labels = [Modality::Radiology, Modality::Microscopy];
        let tagged = label_modality(&vlm, &task, &labels, None).unwrap();
        assert_eq!(tagged.len(), 5);
        for it in &tagged.items()[..4] {
            assert!(labels.contains(&it.modality.unwrap()), "{:?}", it.modality);
        }
        assert_eq!(tagged.items()[4].modality, None);
        assert_eq!(tagged.prompt(4).unwrap(), task.prompt(4).unwrap());
        assert!(label_modality(&vlm, &task, &labels[..1], None).is_err());
    }
}
