//! The paper's released evaluation export (`export_eval_data_to_jsonl.py` in GitHub
//! `armenjeddi/medbridgerl`): `data.jsonl` beside an `images/` folder, one row a line with
//! `dataset_name`, `dataset_index`, `image_paths` (a list, or one string), `question`, `options`
//! (texts in letter order) and `options_dict`, `answer_label` (the letter) and `answer` (text).
//!
//! A row is multiple-choice when it has options and an `answer_label`, as `inference.py`'s
//! `is_mcq` decides; otherwise it is free-form, graded on `answer`. Option texts are kept
//! unstripped, since the released prompt prints them as they are. A row with `options_dict` but
//! no `options` (the exporter always writes both) takes its options from the dict, ordered as the
//! exporter orders them (single letters A–Z first, then the other keys).
//!
//! The exporter writes image paths as `{out_dir}/images/<name>` relative to where it ran, so a
//! relative path is looked up against the file's folder and then as `images/<name>` there. An
//! absolute path is read where it points. With a sandbox every image must lie under its read
//! roots (`image_path.rs`). `McqItem` carries one picture, so a row with several keeps its first
//! (the release passes them all); a row without any is refused, as `inference.py` refuses it.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::data::vqa::image_path::locate_image;
use crate::data::vqa::question::{letter_index, Question};
use crate::data::vqa::Shard;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::sandbox::Sandbox;
use crate::task::mcq::McqItem;

pub(super) fn load(shard: &Shard, sandbox: Option<&Sandbox>) -> Result<Vec<McqItem>> {
    let path = shard.path;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut items = Vec::new();
    for (row, line) in std::io::BufReader::new(file).lines().enumerate() {
        if items.len() >= shard.limit {
            break;
        }
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let here = |key: &str| format!("{}: line {}, key `{key}`", path.display(), row + 1);
        let at = |key: &'static str| move |e: Error| Error::msg(format!("{}: {e}", here(key)));
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| Error::msg(format!("{}: line {}: {e}", path.display(), row + 1)))?;
        let field = |key: &str| value.get(key).filter(|v| !v.is_null());
        let image_path = first_image(field("image_paths")).map_err(at("image_paths"))?;
        let image_file = resolve(base, &image_path, sandbox).map_err(at("image_paths"))?;
        let image = Image::open(&image_file).map_err(at("image_paths"))?;
        let raw_question = field("question").map(text).unwrap_or_default();
        let question = Question {
            task: field("dataset_name").map_or_else(|| "ALL".to_string(), text),
            split: shard.split,
            row,
            image: Some(image),
            question: raw_question.clone(),
        };
        let options = match (field("options"), field("options_dict")) {
            (Some(list), _) => Some(option_list(list).map_err(at("options"))?),
            (None, Some(Value::Object(dict))) => Some(ordered_dict(dict)),
            (None, Some(other)) => crate::bail!("{}: expected an object, got {other}", here("options_dict")),
            (None, None) => None,
        };
        let mut item = match (options, field("answer_label")) {
            (Some(options), Some(label)) => {
                if options.is_empty() {
                    crate::bail!("{}: an answer label but no options", here("options"));
                }
                let answer = letter_index(&text(label), options.len()).map_err(at("answer_label"))?;
                question.choice(options, answer)
            }
            _ => question.free_text(&field("answer").map(text).unwrap_or_default()),
        };
        // Unstripped: the released prompt strips it itself, the Python way (`task/preset.rs`).
        item.question = raw_question;
        items.push(item);
    }
    Ok(items)
}

/// Python's `str()` of a JSON value, as the release formats fields.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn option_list(v: &Value) -> Result<Vec<String>> {
    match v {
        Value::Array(list) => Ok(list.iter().map(text).collect()),
        other => crate::bail!("expected a list of option texts, got {other}"),
    }
}

/// The exporter's `parse_options_field` order: one-letter keys by letter, then the rest by name.
fn ordered_dict(dict: &Map<String, Value>) -> Vec<String> {
    let rank = |k: &str| {
        let key = k.trim().to_uppercase();
        let letter = key.len() == 1 && key.as_bytes()[0].is_ascii_uppercase();
        (!letter, key)
    };
    let mut pairs: Vec<(&String, &Value)> = dict.iter().collect();
    pairs.sort_by_key(|(k, _)| rank(k));
    pairs.into_iter().map(|(_, v)| text(v)).collect()
}

fn first_image(v: Option<&Value>) -> Result<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Array(list)) => match list.first() {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => crate::bail!("expected image paths, got {other}"),
            None => crate::bail!("the row has no image_paths"),
        },
        None | Some(Value::String(_)) => crate::bail!("the row has no image_paths"),
        Some(other) => crate::bail!("expected a list of image paths or one path, got {other}"),
    }
}

/// Where an image path points (module header).
fn resolve(base: &Path, raw: &str, sandbox: Option<&Sandbox>) -> Result<PathBuf> {
    let mut tries = vec![PathBuf::from(raw)];
    if let Some(name) = Path::new(raw).file_name() {
        tries.push(Path::new("images").join(name));
    }
    locate_image(base, raw, &tries, sandbox)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::data::vqa::{load_vqa, VqaKind, VqaOptions};
    use crate::sandbox::{ReadRoot, Sandbox};
    use crate::task::TaskPreset;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/data/vqa/fixtures/medbridgerl_jsonl")
    }

    #[test]
    fn rows_become_lettered_or_free_form_items() {
        let opts = VqaOptions { preset: TaskPreset::MedbridgeRl, ..Default::default() };
        let task = load_vqa(VqaKind::MedbridgeRlJsonl, &fixture(), &opts).unwrap();
        assert_eq!(task.preset(), TaskPreset::MedbridgeRl);
        let items = task.items();
        let tasks: Vec<&str> = items.iter().map(|i| i.task.as_str()).collect();
        assert_eq!(tasks, ["PMC-VQA", "SLAKE", "VQA-RAD", "MMMU"]);
        assert_eq!(items[0].id, "PMC-VQA/test/0");
        assert_eq!((items[0].options.len(), items[0].answer_letter()), (3, Some('B')));
        assert_eq!(
            (items[1].options.clone(), items[1].answer_letter()),
            (vec!["yes".into(), "no".into()], Some('A'))
        );
        assert!(items[2].is_free_text() && items[2].answer_text.as_deref() == Some("Left lung"));
        assert!(items.iter().all(|i| i.image.is_some()));
        assert_eq!(items[3].question, "  Which stain is used?\n");
        assert_eq!(
            task.prompt(3).unwrap(),
            "Which stain is used?\n\nOptions:\nA. H&E\nB. PAS\nC. Gram\nFirst output the thinking process in \
             <think> </think> tags,Then output the final answer in <answer> </answer> tags.\nIMPORTANT: In \
             <answer>, output ONLY the single option letter, for example <answer>A</answer>"
        );
        assert!(task.prompt(2).unwrap().starts_with("Where is the mass?\n\nFirst output"));
        assert!(task.judge(2, "<think>x</think><answer>Left Lung.</answer>").unwrap().correct);
        assert!(task.judge(0, "<answer>b</answer>").unwrap().correct);
        let two =
            load_vqa(VqaKind::MedbridgeRlJsonl, &fixture(), &VqaOptions { limit: Some(2), ..opts }).unwrap();
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn images_outside_the_sandbox_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::copy(fixture().join("images/MMMU_0_0.png"), outside.path().join("x.png")).unwrap();
        let file = dir.path().join("data.jsonl");
        let row = serde_json::json!({"image_paths": [outside.path().join("x.png")], "question": "q",
                                     "options": ["a", "b"], "answer_label": "A"});
        std::fs::write(&file, format!("{row}\n")).unwrap();
        let roots = vec![ReadRoot { path: dir.path().to_path_buf(), origin: "the data folder".into() }];
        let sandbox = Sandbox::new(roots, vec![dir.path().to_path_buf()], dir.path()).unwrap();
        let opts = VqaOptions { sandbox: Some(sandbox), ..Default::default() };
        let err = load_vqa(VqaKind::MedbridgeRlJsonl, &file, &opts).unwrap_err().to_string();
        assert!(err.contains("line 1, key `image_paths`") && err.contains("is refused"), "{err}");
        assert!(load_vqa(VqaKind::MedbridgeRlJsonl, &file, &VqaOptions::default()).is_ok());
    }

    #[test]
    fn bad_rows_name_the_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.jsonl");
        let cases = [
            (
                serde_json::json!({"question": "q", "options": ["a", "b"], "answer_label": "A"}),
                "`image_paths`",
            ),
            (serde_json::json!({"image_paths": ["nope.png"], "question": "q"}), "nope.png"),
        ];
        for (row, expected) in cases {
            std::fs::write(&file, format!("{row}\n")).unwrap();
            let err =
                load_vqa(VqaKind::MedbridgeRlJsonl, &file, &VqaOptions::default()).unwrap_err().to_string();
            assert!(err.contains("line 1") && err.contains(expected), "{err}");
        }
    }
}
