//! A generic JSONL layout, one question per line:
//! `{"image": "x.png", "question": "...", "options": [...] or {"A": ...}, "answer": ...}`.
//! `image` is a path relative to the file (or absolute, or absent for text-only questions), which
//! with a sandbox must lie under its read roots (`image_path.rs`);
//! `answer` is an option letter, a 0-based option index, or the text of an option.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;

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
    let task = path.file_stem().and_then(|s| s.to_str()).unwrap_or("jsonl").to_string();
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
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| Error::msg(format!("{}: line {}: {e}", path.display(), row + 1)))?;
        let question = match value.get("question") {
            Some(Value::String(q)) => q.clone(),
            _ => crate::bail!("{}: missing or not text", here("question")),
        };
        let options =
            options(value.get("options")).map_err(|e| Error::msg(format!("{}: {e}", here("options"))))?;
        let answer = match value.get("answer") {
            Some(a) => {
                answer_index(a, &options).map_err(|e| Error::msg(format!("{}: {e}", here("answer"))))?
            }
            None => crate::bail!("{}: missing", here("answer")),
        };
        let image = match value.get("image") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => {
                let at_image = |e: Error| Error::msg(format!("{}: {e}", here("image")));
                let file = locate_image(base, name, &[PathBuf::from(name)], sandbox).map_err(at_image)?;
                Some(Image::open(&file).map_err(at_image)?)
            }
            Some(other) => crate::bail!("{}: expected a path, got {other}", here("image")),
        };
        let q = Question { task: task.clone(), split: shard.split, row, image, question };
        items.push(q.choice(options, answer));
    }
    Ok(items)
}

fn options(value: Option<&Value>) -> Result<Vec<String>> {
    let text = |v: &Value| match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    };
    match value {
        Some(Value::Array(list)) if list.len() >= 2 => Ok(list.iter().map(text).collect()),
        Some(Value::Object(map)) if map.len() >= 2 => {
            let mut pairs: Vec<(String, String)> =
                map.iter().map(|(k, v)| (k.to_ascii_uppercase(), text(v))).collect();
            pairs.sort();
            Ok(pairs.into_iter().map(|(_, v)| v).collect())
        }
        _ => crate::bail!("expected a list (or a letter-keyed object) of at least two options"),
    }
}

fn answer_index(answer: &Value, options: &[String]) -> Result<usize> {
    match answer {
        Value::Number(n) => match n.as_u64() {
            Some(i) if (i as usize) < options.len() => Ok(i as usize),
            _ => crate::bail!("index {n} but there are {} options (0-based)", options.len()),
        },
        Value::String(s) => {
            if let Some(i) = options.iter().position(|o| o.trim().eq_ignore_ascii_case(s.trim())) {
                return Ok(i);
            }
            letter_index(s, options.len()).map_err(|_| {
                Error::msg(format!("{s:?} is neither an option letter nor the text of an option"))
            })
        }
        other => crate::bail!("expected a letter, an index or an option's text, got {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::data::vqa::{load_vqa, VqaKind, VqaOptions};

    #[test]
    fn answers_may_be_letters_indices_or_option_text() {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/data/vqa/fixtures/jsonl/test.jsonl");
        let task = load_vqa(VqaKind::Jsonl, &file, &VqaOptions::default()).unwrap();
        let letters: Vec<Option<char>> = task.items().iter().map(|i| i.answer_letter()).collect();
        assert_eq!(letters, [Some('C'), Some('B'), Some('B')]);
        assert_eq!(task.items()[1].options, ["Left", "Right"]);
        assert_eq!(task.items()[0].task, "test");
    }

    #[test]
    fn bad_lines_name_the_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("q.jsonl");
        std::fs::write(&file, "{\"question\": \"q\", \"options\": [\"a\", \"b\"], \"answer\": \"E\"}\n")
            .unwrap();
        let err = load_vqa(VqaKind::Jsonl, &file, &VqaOptions::default()).unwrap_err().to_string();
        assert!(err.contains("line 1, key `answer`"), "{err}");
        std::fs::write(
            &file,
            "{\"image\": \"nope.png\", \"question\": \"q\", \"options\": [\"a\", \"b\"], \"answer\": 0}\n",
        )
        .unwrap();
        let err = load_vqa(VqaKind::Jsonl, &file, &VqaOptions::default()).unwrap_err().to_string();
        assert!(err.contains("line 1, key `image`") && err.contains("nope.png"), "{err}");
    }

    #[test]
    fn an_absolute_image_outside_the_read_roots_is_refused() {
        let outside = crate::data::vqa::image_path::tests::Outside::new();
        let file = outside.data.path().join("q.jsonl");
        let row = serde_json::json!({"image": outside.picture, "question": "q", "options": ["a", "b"],
                                     "answer": 0});
        std::fs::write(&file, format!("{row}\n")).unwrap();
        outside.assert_refused(VqaKind::Jsonl, &file);
    }
}
