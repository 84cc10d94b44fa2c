//! SLAKE: a JSON list of questions (`img_name`, `question`, `answer`, `q_lang`, `answer_type`) with
//! pictures under `imgs/` beside it (with a sandbox, under its read roots: `image_path.rs`). Only English questions are read. Closed questions with a
//! yes/no answer become two-option questions; other closed questions ("which is bigger, ...") and
//! open ones become free-text items, the open ones only when `closed_only` is off.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::data::vqa::image_path::locate_image;
use crate::data::vqa::question::Question;
use crate::data::vqa::Shard;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::sandbox::Sandbox;
use crate::task::mcq::McqItem;

#[derive(Deserialize)]
struct Entry {
    img_name: String,
    question: String,
    answer: serde_json::Value,
    q_lang: String,
    answer_type: String,
}

pub(super) fn load(shard: &Shard, closed_only: bool, sandbox: Option<&Sandbox>) -> Result<Vec<McqItem>> {
    let path = shard.path;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let entries: Vec<Entry> = serde_json::from_str(&text)
        .map_err(|e| Error::msg(format!("{}: not a SLAKE question list: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut images: HashMap<String, Image> = HashMap::new();
    let mut items = Vec::new();
    for (row, entry) in entries.into_iter().enumerate() {
        if items.len() >= shard.limit {
            break;
        }
        let closed = entry.answer_type.trim().eq_ignore_ascii_case("closed");
        if entry.q_lang.trim() != "en" || (closed_only && !closed) {
            continue;
        }
        let image = match images.get(&entry.img_name) {
            Some(image) => image.clone(),
            None => {
                let at = |e: Error| {
                    Error::msg(format!(
                        "{}: question {row}, img_name {:?}: {e}",
                        path.display(),
                        entry.img_name
                    ))
                };
                let tries: Vec<std::path::PathBuf> = std::iter::once(Path::new(""))
                    .chain(shard.image_dirs.iter().map(|d| d.as_path()))
                    .map(|root| root.join("imgs").join(&entry.img_name))
                    .collect();
                let file = locate_image(base, &entry.img_name, &tries, sandbox).map_err(at)?;
                let image = Image::open(&file).map_err(at)?;
                images.insert(entry.img_name.clone(), image.clone());
                image
            }
        };
        let answer = match &entry.answer {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let question = Question {
            task: "SLAKE".into(),
            split: shard.split,
            row,
            image: Some(image),
            question: entry.question,
        };
        items.push(question.yes_no(&answer).unwrap_or_else(|q| q.free_text(&answer)));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::data::vqa::{load_vqa, VqaKind, VqaOptions};

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/data/vqa/fixtures/slake")
    }

    #[test]
    fn english_closed_questions_become_yes_no() {
        let task = load_vqa(VqaKind::Slake, &fixtures(), &VqaOptions::default()).unwrap();
        let ids: Vec<&str> = task.items().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["SLAKE/test/0", "SLAKE/test/3"], "the Chinese and the open question are dropped");
        assert_eq!(task.items()[0].options, ["yes", "no"]);
        assert_eq!(task.items()[0].answer_letter(), Some('A'));
        assert_eq!(task.items()[1].answer_letter(), Some('B'));
        assert_eq!(task.items()[1].modality, Some(crate::data::Modality::Radiology));
    }

    #[test]
    fn open_questions_are_free_text_when_asked_for() {
        let opts = VqaOptions { closed_only: false, ..Default::default() };
        let task = load_vqa(VqaKind::Slake, &fixtures().join("test.json"), &opts).unwrap();
        assert_eq!(task.len(), 3);
        assert!(task.items()[1].is_free_text());
        assert_eq!(task.items()[1].answer_text.as_deref(), Some("MRI"));
    }

    #[test]
    fn a_missing_picture_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixtures().join("test.json"), dir.path().join("test.json")).unwrap();
        let err = load_vqa(VqaKind::Slake, dir.path(), &VqaOptions::default()).unwrap_err().to_string();
        assert!(err.contains("question 0, img_name \"xmlab1/source.jpg\""), "{err}");
    }

    #[test]
    fn an_absolute_img_name_outside_the_read_roots_is_refused() {
        let outside = crate::data::vqa::image_path::tests::Outside::new();
        let file = outside.data.path().join("test.json");
        let entry = serde_json::json!([{"img_name": outside.picture, "question": "Is this a CT?",
                                        "answer": "Yes", "q_lang": "en", "answer_type": "CLOSED"}]);
        std::fs::write(&file, entry.to_string()).unwrap();
        outside.assert_refused(VqaKind::Slake, &file);
    }
}
