//! Medical VQA benchmarks in the formats their publishers ship, read into the same `McqTask` that
//! `Dataset::to_mcq` builds, so `evaluate`, `sft` and `grpo` take either.
//!
//! | file | layout |
//! | --- | --- |
//! | `medvlthinker.rs` | MedVLThinker-Eval parquet: six benchmarks in one file, `dataset_name` per row |
//! | `pmc_vqa.rs` | PMC-VQA CSV (`Choice A`..`Choice D`, "A:text" choices) plus its image folder |
//! | `slake.rs` | SLAKE JSON list plus `imgs/` (English questions only) |
//! | `hf_yes_no.rs` | VQA-RAD and PathVQA as parquet on the hub: closed = yes/no answers |
//! | `jsonl.rs` | generic JSONL `{image, question, options, answer}` |
//! | `medbridgerl_jsonl.rs` | the paper's released eval export: `data.jsonl` + `images/`, MCQ and free-form rows |
//! | `hub.rs` | a benchmark by hub dataset id: the split's files (and image archive) into the HF cache |
//! | `image_path.rs` | image paths written in a data file: relative to the file, checked against the sandbox |
//! | `parquet_rows.rs` | row-by-row parquet reading with file/row/column errors |
//! | `question.rs` | answer labels, yes/no questions, free-text items, benchmark modalities |
//!
//! A path is either one file or a folder, in which the split's file is looked up by its published
//! name (`test.json`, `test_2.csv`, `test-00000-of-00001.parquet`, ...; every parquet shard of the
//! split is read, in name order; the release's export is `data.jsonl` whatever the split).

mod hf_yes_no;
pub mod hub;
mod image_path;
mod jsonl;
mod medbridgerl_jsonl;
mod medvlthinker;
mod parquet_rows;
mod pmc_vqa;
mod question;
mod slake;

use std::path::{Path, PathBuf};

use crate::data::dataset::Split;
use crate::error::{Context, Error, Result};
use crate::sandbox::Sandbox;
use crate::task::mcq::{AnswerFormat, McqItem, McqTask};
use crate::task::preset::TaskPreset;

/// The file layouts `load_vqa` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VqaKind {
    MedVlThinker,
    PmcVqa,
    Slake,
    VqaRad,
    PathVqa,
    Jsonl,
    MedbridgeRlJsonl,
}

impl VqaKind {
    pub const ALL: [VqaKind; 7] = [
        VqaKind::MedVlThinker,
        VqaKind::PmcVqa,
        VqaKind::Slake,
        VqaKind::VqaRad,
        VqaKind::PathVqa,
        VqaKind::Jsonl,
        VqaKind::MedbridgeRlJsonl,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VqaKind::MedVlThinker => "medvlthinker",
            VqaKind::PmcVqa => "pmc_vqa",
            VqaKind::Slake => "slake",
            VqaKind::VqaRad => "vqa_rad",
            VqaKind::PathVqa => "path_vqa",
            VqaKind::Jsonl => "jsonl",
            VqaKind::MedbridgeRlJsonl => "medbridgerl_jsonl",
        }
    }

    pub fn parse(name: &str) -> Result<VqaKind> {
        let wanted: String =
            name.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_lowercase();
        let found = VqaKind::ALL.into_iter().find(|k| k.as_str().replace('_', "") == wanted);
        found.ok_or_else(|| {
            let known: Vec<&str> = VqaKind::ALL.iter().map(|k| k.as_str()).collect();
            Error::msg(format!("unknown VQA kind {name:?}: expected one of {}", known.join(", ")))
        })
    }
}

/// What to load.
#[derive(Clone, Debug)]
pub struct VqaOptions {
    /// Which file to pick when the path is a folder.
    pub split: Split,
    /// Keep only closed questions: yes/no answers (VQA-RAD, PathVQA), `answer_type` CLOSED
    /// (SLAKE). Multiple-choice layouts are closed already. Open questions, when kept, become
    /// free-text items.
    pub closed_only: bool,
    /// Keep at most this many questions (the first ones, after filtering).
    pub limit: Option<usize>,
    pub template: Option<String>,
    pub answer_format: AnswerFormat,
    /// The protocol the task follows (`task/preset.rs`).
    pub preset: TaskPreset,
    /// Image paths read out of a data file must lie under its read roots, whichever layout wrote
    /// them (`image_path.rs`); `None` reads them unchecked.
    pub sandbox: Option<Sandbox>,
    /// More folders to look for pictures in, after the data file's own (an image archive
    /// unpacked from the hub: `hub.rs`).
    pub image_dirs: Vec<PathBuf>,
}

impl Default for VqaOptions {
    fn default() -> Self {
        VqaOptions {
            split: Split::Test,
            closed_only: true,
            limit: None,
            template: None,
            answer_format: AnswerFormat::Letter,
            preset: TaskPreset::Default,
            sandbox: None,
            image_dirs: Vec::new(),
        }
    }
}

/// Read one benchmark file (or the split's files in a folder) into a multiple-choice task.
pub fn load_vqa(kind: VqaKind, path: &Path, opts: &VqaOptions) -> Result<McqTask> {
    let load = || -> Result<McqTask> {
        let files = split_files(kind, path, opts.split)?;
        let limit = opts.limit.unwrap_or(usize::MAX);
        let sandbox = opts.sandbox.as_ref();
        let mut items: Vec<McqItem> = Vec::new();
        // Rows are numbered across the shards of a split, so ids stay unique.
        let mut first_row = 0;
        for file in &files {
            let left = limit - items.len();
            if left == 0 {
                break;
            }
            let shard =
                Shard { path: file, first_row, split: opts.split, limit: left, image_dirs: &opts.image_dirs };
            let (mut part, rows) = match kind {
                VqaKind::MedVlThinker => medvlthinker::load(&shard)?,
                VqaKind::VqaRad | VqaKind::PathVqa => hf_yes_no::load(kind, &shard, opts.closed_only)?,
                VqaKind::PmcVqa => (pmc_vqa::load(&shard, sandbox)?, 0),
                VqaKind::Slake => (slake::load(&shard, opts.closed_only, sandbox)?, 0),
                VqaKind::Jsonl => (jsonl::load(&shard, sandbox)?, 0),
                VqaKind::MedbridgeRlJsonl => (medbridgerl_jsonl::load(&shard, sandbox)?, 0),
            };
            items.append(&mut part);
            first_row += rows;
        }
        if items.is_empty() {
            crate::bail!("no questions left (split {}, closed_only {})", opts.split, opts.closed_only);
        }
        Ok(McqTask::new(kind.as_str(), items, opts.template.as_deref(), opts.answer_format)?
            .with_preset(opts.preset))
    };
    load().with_context(|| format!("load_vqa {} {}", kind.as_str(), path.display()))
}

/// One file of a split, and where its rows start in the split's numbering.
pub(super) struct Shard<'a> {
    pub path: &'a Path,
    pub first_row: usize,
    pub split: Split,
    /// Questions still wanted.
    pub limit: usize,
    /// Extra picture folders ([`VqaOptions::image_dirs`]).
    pub image_dirs: &'a [PathBuf],
}

/// The files to read: `path` itself, or the split's file(s) inside the folder `path` (every
/// parquet shard of the split, in name order).
fn split_files(kind: VqaKind, path: &Path, split: Split) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        crate::bail!("no such file or folder");
    }
    let names: &[&str] = match split {
        Split::Train => &["train"],
        Split::Val => &["validation", "validate", "val", "valid", "dev"],
        Split::Test => &["test"],
    };
    let found: Vec<PathBuf> = match kind {
        VqaKind::MedVlThinker | VqaKind::VqaRad | VqaKind::PathVqa => {
            let mut found = Vec::new();
            for dir in [path.to_path_buf(), path.join("data")] {
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                let mut files: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                        name.ends_with(".parquet") && names.iter().any(|s| name.starts_with(s))
                    })
                    .collect();
                files.sort();
                found.extend(files);
            }
            found
        }
        VqaKind::PmcVqa => names
            .iter()
            .flat_map(|s| [path.join(format!("{s}_2.csv")), path.join(format!("{s}.csv"))])
            .filter(|p| p.is_file())
            .take(1)
            .collect(),
        VqaKind::Slake => {
            names.iter().map(|s| path.join(format!("{s}.json"))).filter(|p| p.is_file()).take(1).collect()
        }
        VqaKind::Jsonl => {
            names.iter().map(|s| path.join(format!("{s}.jsonl"))).filter(|p| p.is_file()).take(1).collect()
        }
        VqaKind::MedbridgeRlJsonl => std::iter::once("data")
            .chain(names.iter().copied())
            .map(|s| path.join(format!("{s}.jsonl")))
            .filter(|p| p.is_file())
            .take(1)
            .collect(),
    };
    if found.is_empty() {
        crate::bail!("is a folder with no {} file for split {split}; pass the file itself", kind.as_str());
    }
    Ok(found)
}
