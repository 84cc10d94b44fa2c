//! Writing a support report: a JSON summary (every metric with its interval, the whole curve, and
//! the per-class, per-task and per-modality breakdowns) and a CSV with one row per question, from
//! which the whole report can be recomputed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::bootstrap::{BootstrapOptions, Estimate};
use super::record::option_letter;
use super::support::{AnswerEntropy, CurvePoint, FormatFailures, SupportReport, GROUP_KEYS};
use crate::error::{Error, Result};

/// The JSON summary of a report; `k` is the report's n and the `*_at_k` fields are taken there
/// (absent when no samples were drawn).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub questions: usize,
    pub n: usize,
    pub k: usize,
    pub acc1: Estimate,
    pub mean_at_n: Estimate,
    pub pass_at_k: Option<Estimate>,
    pub gap: Option<Estimate>,
    pub maj_at_k: Option<f64>,
    pub format_failures: FormatFailures,
    pub entropy: AnswerEntropy,
    pub bootstrap: BootstrapOptions,
    pub curve: Vec<CurvePoint>,
    /// key ("class", "task", "modality") -> group name -> that group's summary (without groups).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, BTreeMap<String, Summary>>,
}

impl SupportReport {
    /// The summary with its breakdowns.
    pub fn summary(&self) -> Result<Summary> {
        let mut summary = self.flat_summary();
        for key in GROUP_KEYS {
            let groups = self.by(key)?.iter().map(|(name, r)| (name.clone(), r.flat_summary())).collect();
            summary.groups.insert(key.to_string(), groups);
        }
        Ok(summary)
    }

    fn flat_summary(&self) -> Summary {
        let last = self.curve().last();
        Summary {
            questions: self.questions(),
            n: self.n(),
            k: self.n(),
            acc1: self.acc1(),
            mean_at_n: self.mean_at_n(),
            pass_at_k: last.map(|p| p.pass),
            gap: last.map(|p| p.gap),
            maj_at_k: last.map(|p| p.maj),
            format_failures: self.format_failures(),
            entropy: self.entropy(),
            bootstrap: *self.bootstrap(),
            curve: self.curve().to_vec(),
            groups: BTreeMap::new(),
        }
    }

    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(&self.summary()?)?)
    }

    /// One row per question: id, task, modality, class, gold letter, greedy letter (empty on a
    /// format failure), how many samples chose each letter, format failures, correct samples,
    /// samples that followed the format.
    pub fn to_csv(&self) -> String {
        let options = self.records().iter().map(|r| r.n_options).max().unwrap_or(0);
        let mut out = String::from("id,task,modality,class,gold,greedy");
        for i in 0..options {
            let _ = write!(out, ",count_{}", option_letter(i));
        }
        out.push_str(",failures,correct,formatted\n");
        for r in self.records() {
            let greedy = r.greedy.map(option_letter).unwrap_or_default();
            let fields = [&r.id, &r.task, &r.modality, &r.class, &option_letter(r.gold), &greedy];
            out.push_str(&fields.map(|f| csv_field(f)).join(","));
            let counts = r.answer_counts();
            for i in 0..options {
                let _ = write!(out, ",{}", counts.get(i).copied().unwrap_or(0));
            }
            let _ = writeln!(out, ",{},{},{}", r.sample_failures(), r.correct_count(), r.formatted_samples());
        }
        out
    }

    /// Writes the JSON summary and the per-question CSV. A path ending in `.json` names the summary
    /// and the CSV goes beside it with the `.csv` extension; any other path is a directory that
    /// receives `report.json` and `questions.csv`. Returns the files written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let path = path.as_ref();
        let (json, csv) = if path.extension().is_some_and(|e| e == "json") {
            (path.to_path_buf(), path.with_extension("csv"))
        } else {
            (path.join("report.json"), path.join("questions.csv"))
        };
        if let Some(dir) = json.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::write(&json, self.to_json()?).map_err(|e| Error::io(&json, e))?;
        std::fs::write(&csv, self.to_csv()).map_err(|e| Error::io(&csv, e))?;
        Ok(vec![json, csv])
    }
}

/// Quotes a CSV field when it holds a comma, quote or line break (RFC 4180).
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::support::tests::record;

    fn report() -> SupportReport {
        let mut records = vec![
            record("1", "path", 0, Some(0), &[Some(0), Some(1), Some(0)]),
            record("2", "derma", 1, None, &[None, Some(1), Some(3)]),
        ];
        records[1].id = "say \"hi\", twice".into();
        SupportReport::new(records, BootstrapOptions { resamples: 50, ..Default::default() }).unwrap()
    }

    #[test]
    fn csv_has_one_row_per_question_with_counts() {
        let csv = report().to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "id,task,modality,class,gold,greedy,count_A,count_B,count_C,count_D,failures,correct,formatted"
        );
        assert_eq!(lines[1], "1,path,path-modality,class0,A,A,2,1,0,0,0,2,3");
        assert_eq!(lines[2], "\"say \"\"hi\"\", twice\",derma,derma-modality,class1,B,,0,1,0,1,1,1,2");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn save_writes_summary_and_csv_to_a_directory_or_json_path() {
        let dir = tempfile::tempdir().unwrap();
        let r = report();
        let written = r.save(dir.path().join("run1")).unwrap();
        assert_eq!(written, [dir.path().join("run1/report.json"), dir.path().join("run1/questions.csv")]);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&written[0]).unwrap()).unwrap();
        assert_eq!(json["questions"], 2);
        assert_eq!(json["k"], 3);
        assert_eq!(json["curve"].as_array().unwrap().len(), 3);
        assert_eq!(json["acc1"]["value"], 0.5);
        assert_eq!(json["format_failures"]["questions"], 0.0);
        assert_eq!(json["entropy"]["unique_answers"], 2.0);
        assert!(json["pass_at_k"]["lo"].is_number());
        assert_eq!(json["groups"]["task"]["derma"]["questions"], 1);
        assert!(json["groups"]["task"]["derma"].get("groups").is_none());
        let written = r.save(dir.path().join("summary.json")).unwrap();
        assert_eq!(written[1], dir.path().join("summary.csv"));
        assert!(written.iter().all(|p| p.exists()));
    }

    #[test]
    fn unwritable_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let err = report().save(blocker.join("sub")).unwrap_err().to_string();
        assert!(err.contains("file/sub"), "{err}");
    }
}
