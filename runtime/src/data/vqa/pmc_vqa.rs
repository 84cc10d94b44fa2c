//! PMC-VQA's CSV files (`train_2.csv`, `test_2.csv`, ...): `Figure_path`, `Question`,
//! `Choice A`..`Choice D` (written " A:text"; the letter prefix is stripped) and `Answer_label`.
//! Figures are looked up next to the CSV, in `images/` (where the published `images.zip` unpacks)
//! or in `figures/`; with a sandbox they must lie under its read roots (`image_path.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::vqa::image_path::locate_image;
use crate::data::vqa::question::{letter_index, Question};
use crate::data::vqa::Shard;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::sandbox::Sandbox;
use crate::task::mcq::McqItem;

const CHOICES: [&str; 4] = ["Choice A", "Choice B", "Choice C", "Choice D"];
const IMAGE_DIRS: [&str; 3] = ["", "images", "figures"];

pub(super) fn load(shard: &Shard, sandbox: Option<&Sandbox>) -> Result<Vec<McqItem>> {
    let path = shard.path;
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let headers = reader.headers().map_err(|e| Error::msg(format!("{}: {e}", path.display())))?.clone();
    let column = |name: &str| -> Result<usize> {
        match headers.iter().position(|h| h.trim() == name) {
            Some(i) => Ok(i),
            None => crate::bail!(
                "{}: no column `{name}` (the file has: {})",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            ),
        }
    };
    let figure = column("Figure_path")?;
    let question = column("Question")?;
    let label = column("Answer_label")?;
    let choices = CHOICES.iter().map(|c| column(c)).collect::<Result<Vec<usize>>>()?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut images: HashMap<String, Image> = HashMap::new();
    let mut items = Vec::new();
    for (row, record) in reader.records().enumerate() {
        if items.len() >= shard.limit {
            break;
        }
        let here = |column: &str| format!("{}: row {row}, column `{column}`", path.display());
        let record = record.map_err(|e| Error::msg(format!("{}: row {row}: {e}", path.display())))?;
        let cell = |i: usize| record.get(i).unwrap_or_default().trim().to_string();
        let options: Vec<String> =
            choices.iter().enumerate().map(|(k, &i)| strip_letter(&cell(i), k)).collect();
        let answer = letter_index(&cell(label), options.len())
            .map_err(|e| Error::msg(format!("{}: {e}", here("Answer_label"))))?;
        let name = cell(figure);
        let image = match images.get(&name) {
            Some(image) => image.clone(),
            None => {
                let tries: Vec<PathBuf> = std::iter::once(Path::new(""))
                    .chain(shard.image_dirs.iter().map(PathBuf::as_path))
                    .flat_map(|root| IMAGE_DIRS.iter().map(move |d| root.join(d)))
                    .map(|d| d.join(&name))
                    .collect();
                let file = locate_image(base, &name, &tries, sandbox)
                    .map_err(|e| Error::msg(format!("{}: {e}", here("Figure_path"))))?;
                let image =
                    Image::open(&file).map_err(|e| Error::msg(format!("{}: {e}", here("Figure_path"))))?;
                images.insert(name.clone(), image.clone());
                image
            }
        };
        let q = Question {
            task: "PMC-VQA".into(),
            split: shard.split,
            row,
            image: Some(image),
            question: cell(question),
        };
        items.push(q.choice(options, answer));
    }
    Ok(items)
}

/// " B:CT" → "CT" for the option at index `k`; text without that prefix is kept as it is.
fn strip_letter(choice: &str, k: usize) -> String {
    let letter = crate::task::extract::option_letter(k);
    let trimmed = choice.trim();
    let mut chars = trimmed.chars();
    match (chars.next(), chars.next()) {
        (Some(c), Some(':')) if c.eq_ignore_ascii_case(&letter) => chars.as_str().trim().to_string(),
        _ => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::vqa::{load_vqa, VqaKind, VqaOptions};

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/data/vqa/fixtures/pmc_vqa")
    }

    #[test]
    fn choices_lose_their_letter_prefix_and_images_are_found() {
        let task = load_vqa(VqaKind::PmcVqa, &fixtures(), &VqaOptions::default()).unwrap();
        assert_eq!(task.len(), 2);
        assert_eq!(task.items()[0].options, ["MRI", "CT", "PET", "Ultrasound"]);
        assert_eq!(task.items()[1].options[0], "A tumour, benign");
        assert_eq!(task.items()[1].answer_letter(), Some('B'));
        assert!(task.items().iter().all(|i| i.image.is_some() && i.task == "PMC-VQA"));
    }

    #[test]
    fn a_missing_figure_names_the_row_and_where_it_looked() {
        let err = load_vqa(VqaKind::PmcVqa, &fixtures().join("missing_image.csv"), &VqaOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing_image.csv: row 1, column `Figure_path`"), "{err}");
        assert!(err.contains("PMC9_missing.jpg") && err.contains("images"), "{err}");
    }

    #[test]
    fn an_absolute_figure_outside_the_read_roots_is_refused() {
        let outside = crate::data::vqa::image_path::tests::Outside::new();
        let file = outside.data.path().join("test_2.csv");
        let csv = format!(
            "Figure_path,Question,Choice A,Choice B,Choice C,Choice D,Answer_label\n{},q?, A:a, B:b, C:c, D:d,B\n",
            outside.picture.display()
        );
        std::fs::write(&file, csv).unwrap();
        outside.assert_refused(VqaKind::PmcVqa, &file);
    }

    #[test]
    fn strip_letter_only_removes_the_matching_prefix() {
        assert_eq!(strip_letter(" C:PET ", 2), "PET");
        assert_eq!(strip_letter("c: lower", 2), "lower");
        assert_eq!(strip_letter("B:text", 0), "B:text");
        assert_eq!(strip_letter("Plain", 1), "Plain");
    }
}
