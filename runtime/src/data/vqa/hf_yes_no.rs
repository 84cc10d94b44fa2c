//! VQA-RAD and PathVQA as the hub publishes them: parquet with `image` (a `{bytes, path}` struct),
//! `question` and `answer`. Their closed questions are the ones answered yes or no; they become
//! two-option questions. Open questions become free-text items when `closed_only` is off.

use crate::data::vqa::parquet_rows::{for_each_row, Cell};
use crate::data::vqa::question::Question;
use crate::data::vqa::{Shard, VqaKind};
use crate::error::Result;
use crate::task::mcq::McqItem;

pub(super) fn load(kind: VqaKind, shard: &Shard, closed_only: bool) -> Result<(Vec<McqItem>, usize)> {
    let path = shard.path;
    let task = if kind == VqaKind::PathVqa { "PathVQA" } else { "VQA-RAD" };
    let mut items = Vec::new();
    let rows = for_each_row(path, &["image", "question", "answer"], |row, record| {
        let answer = Cell::get(path, row, record, "answer")?.text()?;
        let is_yes_no = matches!(answer.trim().to_ascii_lowercase().as_str(), "yes" | "no");
        if closed_only && !is_yes_no {
            return Ok(true);
        }
        let question = Question {
            task: task.into(),
            split: shard.split,
            row: shard.first_row + row,
            image: Cell::get(path, row, record, "image")?.images()?.into_iter().next(),
            question: Cell::get(path, row, record, "question")?.text()?,
        };
        items.push(question.yes_no(&answer).unwrap_or_else(|q| q.free_text(&answer)));
        Ok(items.len() < shard.limit)
    })?;
    Ok((items, rows))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::data::vqa::{load_vqa, VqaKind, VqaOptions};

    fn fixtures(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/data/vqa/fixtures").join(name)
    }

    #[test]
    fn yes_no_answers_become_two_option_questions() {
        let task = load_vqa(VqaKind::VqaRad, &fixtures("vqa_rad"), &VqaOptions::default()).unwrap();
        assert_eq!(task.len(), 2, "the open question is dropped");
        assert_eq!(task.items()[0].answer_letter(), Some('B'));
        assert_eq!(task.items()[1].answer_letter(), Some('A'), "\"Yes\" is matched case-insensitively");
        assert_eq!(task.items()[1].id, "VQA-RAD/test/2");
        let path = load_vqa(VqaKind::PathVqa, &fixtures("path_vqa"), &VqaOptions::default()).unwrap();
        assert_eq!(path.items()[0].modality, Some(crate::data::Modality::Microscopy));
    }

    #[test]
    fn open_questions_are_kept_as_free_text_when_asked_for() {
        let opts = VqaOptions { closed_only: false, limit: Some(2), ..Default::default() };
        let task = load_vqa(VqaKind::PathVqa, &fixtures("path_vqa"), &opts).unwrap();
        assert_eq!(task.len(), 2);
        assert_eq!(task.items()[1].answer_text.as_deref(), Some("necrosis"));
    }

    #[test]
    fn every_shard_of_a_split_is_read_with_unique_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        for k in 0..2 {
            let shard = dir.path().join(format!("data/test-0000{k}-of-00002.parquet"));
            std::fs::copy(fixtures("vqa_rad/test-00000-of-00001.parquet"), shard).unwrap();
        }
        let task = load_vqa(VqaKind::VqaRad, dir.path(), &VqaOptions::default()).unwrap();
        let ids: Vec<&str> = task.items().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["VQA-RAD/test/0", "VQA-RAD/test/2", "VQA-RAD/test/3", "VQA-RAD/test/5"]);
        let three = VqaOptions { limit: Some(3), ..Default::default() };
        assert_eq!(load_vqa(VqaKind::VqaRad, dir.path(), &three).unwrap().len(), 3);
    }

    #[test]
    fn a_layout_mismatch_names_the_missing_column() {
        let file = fixtures("medvlthinker/test.parquet");
        let err = load_vqa(VqaKind::VqaRad, &file, &VqaOptions::default()).unwrap_err().to_string();
        assert!(err.contains("no column `image`"), "{err}");
    }
}
