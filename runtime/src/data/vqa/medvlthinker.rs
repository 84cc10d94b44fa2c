//! The MedVLThinker-Eval parquet: PMC-VQA, MMMU (medical), MedXpertQA-MM, PathVQA, SLAKE and
//! VQA-RAD in one file. Columns: `images` (a list of image bytes or `{bytes, path}` structs),
//! `question`, `options` (a JSON object letter → text, or `A. text` lines), `answer_label` (the
//! letter), `answer` (its text) and `dataset_name`, which becomes each item's task so results
//! break down per benchmark. `McqItem` carries one picture, so a row with several images keeps
//! its first.

use serde_json::Value;

use crate::data::vqa::parquet_rows::{for_each_row, Cell};
use crate::data::vqa::question::{letter_index, Question};
use crate::data::vqa::Shard;
use crate::error::Result;
use crate::task::mcq::McqItem;

const COLUMNS: [&str; 5] = ["images", "question", "options", "answer_label", "dataset_name"];

pub(super) fn load(shard: &Shard) -> Result<(Vec<McqItem>, usize)> {
    let path = shard.path;
    let mut items = Vec::new();
    let rows = for_each_row(path, &COLUMNS, |row, record| {
        let cell = |column| Cell::get(path, row, record, column);
        let options_cell = cell("options")?;
        let options = parse_options(&options_cell.text()?).map_err(|e| {
            crate::error::Error::msg(format!("{}: row {row}, column `options`: {e}", path.display()))
        })?;
        let label_cell = cell("answer_label")?;
        let answer = letter_index(&label_cell.text()?, options.len()).map_err(|e| {
            crate::error::Error::msg(format!("{}: row {row}, column `answer_label`: {e}", path.display()))
        })?;
        let question = Question {
            task: cell("dataset_name")?.text()?,
            split: shard.split,
            row: shard.first_row + row,
            image: cell("images")?.images()?.into_iter().next(),
            question: cell("question")?.text()?,
        };
        items.push(question.choice(options, answer));
        Ok(items.len() < shard.limit)
    })?;
    Ok((items, rows))
}

/// Option texts in letter order from `{"A": "...", "B": "..."}` (a JSON list is accepted too).
fn parse_options(json: &str) -> Result<Vec<String>> {
    let text = |v: &Value| match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    };
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => {
            let mut pairs: Vec<(String, String)> =
                map.iter().map(|(k, v)| (k.trim().to_ascii_uppercase(), text(v))).collect();
            pairs.sort();
            for (k, (letter, _)) in pairs.iter().enumerate() {
                let expected = crate::task::extract::option_letter(k).to_string();
                if *letter != expected {
                    crate::bail!(
                        "option keys must run A, B, C, ...; found {letter:?} where {expected:?} belongs"
                    );
                }
            }
            Ok(pairs.into_iter().map(|(_, v)| v).collect())
        }
        Ok(Value::Array(list)) => Ok(list.iter().map(text).collect()),
        _ => lettered_lines(json),
    }
}

/// Options written one per line as `A. text` (also `A: text`, `(A) text`), the other form this
/// column takes in copies of the eval set.
fn lettered_lines(options: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for line in options.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let letter = crate::task::extract::option_letter(out.len());
        let rest = line.strip_prefix('(').unwrap_or(line);
        let body = rest
            .strip_prefix(letter)
            .and_then(|r| r.strip_prefix(|c: char| ".:)".contains(c)))
            .map(str::trim);
        match body {
            Some(text) => out.push(text.to_string()),
            None => crate::bail!(
                "expected a JSON object of lettered options or lines \"{letter}. text\", found line {line:?}"
            ),
        }
    }
    if out.len() < 2 {
        crate::bail!("fewer than two options in {options:?}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::data::dataset::Split;
    use crate::data::vqa::{load_vqa, VqaKind, VqaOptions};

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/data/vqa/fixtures/medvlthinker").join(name)
    }

    #[test]
    fn reads_every_benchmark_with_its_name_and_modality() {
        let task = load_vqa(VqaKind::MedVlThinker, &fixture("test.parquet"), &VqaOptions::default()).unwrap();
        let tasks: Vec<&str> = task.items().iter().map(|i| i.task.as_str()).collect();
        assert_eq!(tasks, ["PMC-VQA", "VQA-RAD", "PathVQA", "SLAKE"]);
        let first = &task.items()[0];
        assert_eq!(first.options, ["Liver", "Kidney", "Spleen", "Heart"]);
        assert_eq!(first.answer_letter(), Some('B'));
        assert_eq!(first.image.as_ref().map(|i| (i.width(), i.height())), Some((8, 6)));
        assert_eq!(task.items()[2].answer_letter(), Some('C'));
        assert_eq!(task.items()[2].modality, Some(crate::data::Modality::Microscopy));
        assert!(task.prompt(0).unwrap().contains("B. Kidney"));
    }

    #[test]
    fn image_structs_and_limits_are_handled() {
        let opts = VqaOptions { limit: Some(2), ..Default::default() };
        let task = load_vqa(VqaKind::MedVlThinker, &fixture("struct_images.parquet"), &opts).unwrap();
        assert_eq!(task.len(), 2);
        assert_eq!(task.items()[1].image.as_ref().map(|i| i.channels()), Some(1));
    }

    #[test]
    fn broken_files_name_the_file_row_and_column() {
        let err = load_vqa(VqaKind::MedVlThinker, &fixture("missing_column.parquet"), &VqaOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing_column.parquet: no column `answer_label`"), "{err}");
        let err = load_vqa(VqaKind::MedVlThinker, &fixture("bad_label.parquet"), &VqaOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad_label.parquet: row 2, column `answer_label`"), "{err}");
        assert!(err.contains("\"E\""), "{err}");
    }

    #[test]
    fn options_may_be_json_or_lettered_lines() {
        assert_eq!(parse_options(r#"{"B": "two", "A": "one"}"#).unwrap(), ["one", "two"]);
        assert_eq!(parse_options("A. one\nB: two\n(C) three").unwrap(), ["one", "two", "three"]);
        let err = parse_options("A. one\nC. three").unwrap_err().to_string();
        assert!(err.contains("\"B. text\"") && err.contains("C. three"), "{err}");
        assert!(parse_options(r#"{"A": "one", "C": "three"}"#)
            .unwrap_err()
            .to_string()
            .contains("run A, B, C"));
    }

    #[test]
    fn a_folder_finds_the_split_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture("test.parquet"), dir.path().join("test-00000-of-00001.parquet")).unwrap();
        assert_eq!(load_vqa(VqaKind::MedVlThinker, dir.path(), &VqaOptions::default()).unwrap().len(), 4);
        let train = VqaOptions { split: Split::Train, ..Default::default() };
        let err = load_vqa(VqaKind::MedVlThinker, dir.path(), &train).unwrap_err().to_string();
        assert!(err.contains("for split train"), "{err}");
    }
}
