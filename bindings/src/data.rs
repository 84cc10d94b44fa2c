//! The `data` family: MedMNIST files (real or synthetic), datasets and their subsets, and
//! multiple-choice tasks built from them or from in-memory lists.
//!
//! A dataset item reaches scripts as `#{image, label, labels, flag, modality, split, index}`; a
//! task item as `#{id, question, options, answer, letter, image, task, modality, prompt, target}`.

use medbridge_runtime::data::{
    load_medmnist, BalanceBy, Dataset, Item, MedmnistOptions, Modality, Split, SynthOptions,
};
use medbridge_runtime::image::Image;
use medbridge_runtime::task::{
    AnswerFormat, McqItem, McqOptions, McqTask, OptionCount, TaskPreset, TaskStratum,
};
use rhai::plugin::*;
use rhai::{Array, FnPtr, Map};

use crate::context::{seed_or_next, session};
use crate::convert::as_f64;
use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::options::{
    opt, Absent, Kind, OptionSet, OptionSpec, Opts, COUNT, FLOAT, FRACTION, POSITIVE, SEED, STR,
};

const SPLITS: Kind = Kind::Str(&["train", "val", "valid", "validation", "test"]);
const ANSWER_FORMATS: Kind = Kind::Str(&["letter", "think_answer", "think-answer"]);
/// The task presets' names (`task/preset.rs`).
pub const PRESETS: Kind = Kind::Str(&["default", "medbridgerl"]);

/// `preset` of the task builders: whose prompt, answer parser and rewards the task follows.
const TASK_PRESET: OptionSpec = opt(
    "preset",
    PRESETS,
    Absent::Str("default"),
    "\"medbridgerl\": the paper's released prompt, answer parser and rewards (template and answer_format then unused)",
);

/// The `preset` key of `o`, when given.
pub fn preset_of(o: &Opts) -> ScriptResult<Option<TaskPreset>> {
    o.string("preset")?.map(|p| TaskPreset::parse(&p).script()).transpose()
}

const TEMPLATE: OptionSpec =
    opt("template", STR, Absent::Means("the built-in template"), "prompt template ({question}, {options})");

static MEDMNIST: OptionSet = OptionSet::new(
    "medmnist",
    &[&[
        opt("split", SPLITS, Absent::Str("test"), "which split"),
        opt("size", POSITIVE, Absent::Int(28), "image size in pixels (28, 64, 128 or 224)"),
        opt("limit", COUNT, Absent::Means("every item"), "keep the first (or a stratified) `limit` items"),
        opt("stratified", Kind::Bool, Absent::Bool(false), "take `limit` items balanced across labels"),
        SEED,
        opt("root", STR, Absent::Means("MEDMNIST_ROOT, else ~/.medmnist"), "folder holding the .npz files"),
        opt(
            "download",
            Kind::Bool,
            Absent::Bool(false),
            "fetch the official file into MEDMNIST_ROOT when missing or failing its MD5 (from MEDMNIST_URL, else Zenodo)",
        ),
        opt("md5", STR, Absent::Means("the official checksum"), "the MD5 to expect (a mirror's own file)"),
    ]],
);

static SYNTH_MEDMNIST: OptionSet = OptionSet::new(
    "synth_medmnist",
    &[&[
        opt("tasks", Kind::Strs, Absent::Means("every MedMNIST flag"), "flags to write"),
        opt("size", COUNT, Absent::Int(28), "image size in pixels"),
        opt("n_train", COUNT, Absent::Int(500), "train items per flag"),
        opt("n_val", COUNT, Absent::Int(100), "val items per flag"),
        opt("n_test", COUNT, Absent::Int(200), "test items per flag"),
        opt("difficulty", FLOAT, Absent::Float(0.3), "how much classes overlap"),
        opt(
            "task_difficulty",
            Kind::Map(None),
            Absent::Means("none"),
            "per-flag difficulty: #{flag: number}",
        ),
        SEED,
        opt("out", STR, Absent::Str("synthetic"), "folder inside the run directory"),
    ]],
);

static DATASET_BALANCED: OptionSet = OptionSet::new(
    "balanced",
    &[&[
        opt(
            "by",
            Kind::Str(&["label", "class", "modality", "flag", "task"]),
            Absent::Str("label"),
            "the groups",
        ),
        opt("n", COUNT, Absent::Required, "items in the sample"),
        SEED,
    ]],
)
.on("Dataset");

static DATASET_SPLIT: OptionSet = OptionSet::new(
    "split",
    &[&[opt("val", FRACTION, Absent::Float(0.1), "fraction split off for validation"), SEED]],
);

static TO_MCQ: OptionSet = OptionSet::new(
    "to_mcq",
    &[&[
        opt("options", Kind::Value("\"all\" or an int >= 2"), Absent::Str("all"), "options per question"),
        opt("shuffle", Kind::Bool, Absent::Bool(true), "shuffle the options"),
        SEED,
        TEMPLATE,
        opt("answer_format", ANSWER_FORMATS, Absent::Str("letter"), "what a completion must write"),
        opt("name", STR, Absent::Means("the dataset's flags"), "the task's name"),
        TASK_PRESET,
    ]],
);

static MCQ_TASK: OptionSet = OptionSet::new(
    "mcq_task",
    &[&[
        opt("name", STR, Absent::Str("task"), "the task's name"),
        opt("answer_format", ANSWER_FORMATS, Absent::Str("letter"), "what a completion must write"),
        TEMPLATE,
        TASK_PRESET,
    ]],
);

/// One question of `mcq_task`'s list.
static MCQ_ITEM: OptionSet = OptionSet::new(
    "mcq_task item",
    &[&[
        opt("id", STR, Absent::Means("<name>/<index>"), "question id"),
        opt("image", Kind::Value("an Image"), Absent::Means("no image"), "the picture"),
        opt("question", STR, Absent::Required, "the question text"),
        opt("options", Kind::Strs, Absent::Required, "the option texts"),
        opt(
            "answer",
            Kind::Value("an index, a letter or an option's text"),
            Absent::Required,
            "the right option",
        ),
        opt("task", STR, Absent::Means("the task's name"), "source dataset"),
        opt("modality", STR, Absent::Means("unknown"), "radiology, microscopy or visible_light"),
    ]],
);

static LOAD_VQA: OptionSet = OptionSet::new(
    "load_vqa",
    &[&[
        opt("split", SPLITS, Absent::Str("test"), "which split"),
        opt("closed_only", Kind::Bool, Absent::Bool(true), "keep closed (yes/no, choice) questions only"),
        opt("limit", COUNT, Absent::Means("every question"), "keep the first `limit` questions"),
        TEMPLATE,
        opt("answer_format", ANSWER_FORMATS, Absent::Str("letter"), "what a completion must write"),
        TASK_PRESET,
        opt(
            "revision",
            STR,
            Absent::Str("main"),
            "hub dataset ids: the branch, tag or commit (recorded in run.json)",
        ),
        opt(
            "download",
            Kind::Bool,
            Absent::Bool(true),
            "hub dataset ids: fetch the split's files when the Hugging Face cache lacks them",
        ),
    ]],
);

static TASK_BALANCED: OptionSet = OptionSet::new(
    "balanced",
    &[&[
        opt(
            "by",
            Kind::Str(&[
                "modality",
                "dataset",
                "task",
                "dataset_name",
                "answer",
                "letter",
                "answer_label",
                "class",
                "label",
                "class_name",
            ]),
            Absent::Str("modality"),
            "the strata",
        ),
        opt("n", COUNT, Absent::Required, "questions in the sample"),
        SEED,
    ]],
)
.on("Task");

/// The data family's declared options.
pub static OPTIONS: [&OptionSet; 8] = [
    &MEDMNIST,
    &SYNTH_MEDMNIST,
    &DATASET_BALANCED,
    &DATASET_SPLIT,
    &TO_MCQ,
    &MCQ_TASK,
    &LOAD_VQA,
    &TASK_BALANCED,
];

fn item_map(item: &Item) -> Dynamic {
    let mut m = Map::new();
    m.insert("image".into(), Dynamic::from(item.image.clone()));
    m.insert("label".into(), item.label.map_or(Dynamic::UNIT, |l| Dynamic::from_int(l as i64)));
    m.insert("labels".into(), item.labels.iter().map(|&v| Dynamic::from_int(v)).collect::<Array>().into());
    m.insert("flag".into(), item.flag.to_string().into());
    m.insert("modality".into(), item.modality.as_str().into());
    m.insert("split".into(), item.split.as_str().into());
    m.insert("index".into(), Dynamic::from_int(item.index as i64));
    Dynamic::from_map(m)
}

/// The fields of question `i` that every view of it shares: id, question, options, answer
/// (index), letter, task and modality.
pub(crate) fn question_fields(task: &McqTask, i: usize) -> medbridge_runtime::Result<Map> {
    let item = task.item(i)?;
    let mut m = Map::new();
    m.insert("id".into(), item.id.clone().into());
    m.insert("question".into(), item.question.clone().into());
    m.insert(
        "options".into(),
        item.options.iter().map(|o| Dynamic::from(o.clone())).collect::<Array>().into(),
    );
    m.insert("answer".into(), Dynamic::from_int(item.answer as i64));
    m.insert("letter".into(), item.answer_letter().map_or(Dynamic::UNIT, |c| c.to_string().into()));
    m.insert("task".into(), item.task.clone().into());
    m.insert("modality".into(), item.modality.map_or(Dynamic::UNIT, |x| x.as_str().into()));
    Ok(m)
}

/// `task[i]`: the shared fields plus the image, the rendered prompt and the SFT target.
fn task_item_map(task: &McqTask, i: usize) -> ScriptResult<Dynamic> {
    let mut m = question_fields(task, i).script()?;
    let image = task.item(i).script()?.image.clone();
    m.insert("image".into(), image.map_or(Dynamic::UNIT, Dynamic::from));
    m.insert("prompt".into(), task.prompt(i).script()?.into());
    m.insert("target".into(), task.target(i).script()?.into());
    Ok(Dynamic::from_map(m))
}

fn index(len: usize, i: i64, what: &str) -> ScriptResult<usize> {
    let j = if i < 0 { len as i64 + i } else { i };
    if j < 0 || j >= len as i64 {
        return Err(script_msg(format!("{what} index {i} is out of range for length {len}")));
    }
    Ok(j as usize)
}

fn warn_all(ctx: &NativeCallContext, warnings: &[String]) -> ScriptResult<()> {
    let s = session(ctx)?;
    for w in warnings {
        eprintln!("warning: {w}");
        s.run.log_output(&format!("warning: {w}")).script()?;
    }
    Ok(())
}

/// One item of an in-memory question list `#{image, question, options, answer}`; `answer` is an
/// index, a letter, or the text of an option.
/// An answer given as an index, a letter or an option's text, as the option's index.
pub fn answer_index(what: &str, answer: &Dynamic, options: &[String]) -> ScriptResult<usize> {
    if let Ok(n) = answer.as_int() {
        return usize::try_from(n).map_err(|_| script_msg(format!("{what}: answer {n} is negative")));
    }
    let text = answer.to_string();
    let letter = text.trim().to_ascii_uppercase();
    let by_letter = (letter.len() == 1).then(|| letter.as_bytes()[0].wrapping_sub(b'A') as usize);
    by_letter
        .filter(|&k| k < options.len())
        .or_else(|| options.iter().position(|o| o.trim().eq_ignore_ascii_case(text.trim())))
        .ok_or_else(|| {
            script_msg(format!("{what}: answer {text:?} is neither a letter, an index nor an option"))
        })
}

fn item_from_map(i: usize, map: &Map, name: &str) -> ScriptResult<McqItem> {
    let opts = MCQ_ITEM.parse_as(map, format!("mcq_task: item {i}"))?;
    let what = opts.what();
    let question = opts.string("question")?.ok_or_else(|| opts.missing("question"))?;
    let options = opts.strings("options")?.ok_or_else(|| opts.missing("options"))?;
    let answer = opts.value("answer").ok_or_else(|| opts.missing("answer"))?;
    let answer = answer_index(what, answer, &options)?;
    let image = match opts.value("image") {
        None => None,
        Some(v) if v.is_unit() => None,
        Some(v) => Some(v.clone().try_cast::<Image>().ok_or_else(|| opts.bad_value("image", v))?),
    };
    let modality = opts.string("modality")?.map(|m| Modality::parse(&m)).transpose().script()?;
    Ok(McqItem {
        id: opts.string("id")?.unwrap_or_else(|| format!("{name}/{i}")),
        image,
        question,
        options,
        answer,
        answer_text: None,
        rationale: None,
        class_id: None,
        class_name: None,
        task: opts.string("task")?.unwrap_or_else(|| name.to_string()),
        modality,
    })
}

#[export_module]
pub mod data_api {
    use super::*;

    /// A set of labelled images (MedMNIST items).
    pub type Dataset = medbridge_runtime::data::Dataset;
    /// Multiple-choice questions with their prompt template, answer extractor and rewards.
    pub type Task = medbridge_runtime::task::McqTask;
    /// An 8-bit grey or RGB picture.
    pub type Image = medbridge_runtime::image::Image;

    /// Load a MedMNIST flag's test split at 28 px from `MEDMNIST_ROOT` (default `~/.medmnist`).
    #[rhai_fn(name = "medmnist", return_raw)]
    pub fn medmnist_default(ctx: NativeCallContext, flag: &str) -> Result<Dataset, Box<EvalAltResult>> {
        medmnist(ctx, flag, Map::new())
    }

    /// Load a MedMNIST flag: `medmnist("pathmnist", #{split: "train", size: 28, limit: 500,
    /// stratified: true, seed: 0, root: dir, download: true, md5: "<hex>"})`. Counts that differ
    /// from the official ones are a warning, not an error. `download: true` fetches the official
    /// file into MEDMNIST_ROOT when it is missing or fails its MD5, as the medmnist package does.
    #[rhai_fn(name = "medmnist", return_raw)]
    pub fn medmnist(ctx: NativeCallContext, flag: &str, options: Map) -> Result<Dataset, Box<EvalAltResult>> {
        let o = MEDMNIST.parse(&options)?;
        let size = o.count_or_default("size")?;
        let s = session(&ctx)?;
        let download = o.bool_or_default("download")?;
        let root = match o.string("root")? {
            Some(root) => Some(s.sandbox.resolve_read(&root).script()?),
            None => None,
        };
        // Downloads write only into MEDMNIST_ROOT: a script cannot aim them anywhere else.
        if let (true, Some(root)) = (download, &root) {
            let official = medbridge_runtime::data::medmnist_root();
            if official.canonicalize().ok().as_ref() != Some(root) {
                return Err(script_msg(format!(
                    "medmnist: `download: true` writes only into MEDMNIST_ROOT ({}), not into `root` {}; \
                     drop `root`, or set MEDMNIST_ROOT to that folder",
                    official.display(),
                    root.display()
                )));
            }
        }
        let opts = MedmnistOptions {
            split: Split::parse(&o.string_or_default("split")?).script()?,
            size: u32::try_from(size).map_err(|_| script_msg(format!("medmnist: bad size {size}")))?,
            limit: o.count("limit")?,
            stratified: o.bool_or_default("stratified")?,
            seed: seed_or_next(&ctx, o.int("seed")?)?,
            root,
            download,
            md5: o.string("md5")?,
            net: s.net(),
            ..MedmnistOptions::default()
        };
        let ds = load_medmnist(flag, &opts).script()?;
        warn_all(&ctx, ds.warnings())?;
        Ok(ds)
    }

    /// Write synthetic MedMNIST `.npz` files (the official format, marked `synthetic`) into the
    /// run directory and return that directory, ready for `medmnist(flag, #{root: dir})`:
    /// `synth_medmnist(#{tasks: ["pathmnist"], size: 28, n_train: 500, n_val: 100, n_test: 200,
    /// difficulty: 0.3, task_difficulty: #{pathmnist: 0.6}, seed: 0, out: "synthetic"})`. Under
    /// MPI rank 0 writes them and every rank gets the folder.
    #[rhai_fn(return_raw)]
    pub fn synth_medmnist(ctx: NativeCallContext, options: Map) -> Result<String, Box<EvalAltResult>> {
        let o = SYNTH_MEDMNIST.parse(&options)?;
        let mut opts = SynthOptions::default();
        if let Some(tasks) = o.strings("tasks")? {
            opts.tasks = tasks;
        }
        opts.size = u32::try_from(o.count_or_default("size")?)
            .map_err(|_| script_msg("synth_medmnist: option `size` is too large"))?;
        opts.n_train = o.count_or_default("n_train")?;
        opts.n_val = o.count_or_default("n_val")?;
        opts.n_test = o.count_or_default("n_test")?;
        opts.difficulty = o.float_or_default("difficulty")?;
        if let Some(map) = o.map("task_difficulty")? {
            for (flag, d) in map.iter() {
                let d = as_f64(d).ok_or_else(|| {
                    script_msg(format!("synth_medmnist: difficulty of {flag} must be a number"))
                })?;
                opts.task_difficulty.insert(flag.to_string(), d);
            }
        }
        opts.seed = seed_or_next(&ctx, o.int("seed")?)?;
        let out = o.string_or_default("out")?;
        let s = session(&ctx)?;
        // Under MPI every rank calls this with the same options: rank 0 writes the files and the
        // others wait for them, then read the same folder.
        opts.out_dir = s.sandbox.resolve_collective_write(&out).script()?;
        if s.world.is_root() {
            medbridge_runtime::data::synth_medmnist(&opts).script()?;
        }
        s.world.any("synth_medmnist: rank 0 writing the files", false).script()?;
        Ok(opts.out_dir.display().to_string())
    }

    /// Read an image file (PNG, JPEG, BMP, TIFF, WebP); alpha is composited on white.
    #[rhai_fn(return_raw)]
    pub fn load_image(ctx: NativeCallContext, path: &str) -> Result<Image, Box<EvalAltResult>> {
        let p = session(&ctx)?.sandbox.resolve_read(path).script()?;
        Image::open(&p).script()
    }

    /// Width in pixels.
    #[rhai_fn(name = "width")]
    pub fn image_width(img: &mut Image) -> i64 {
        img.width() as i64
    }

    /// Height in pixels.
    #[rhai_fn(name = "height")]
    pub fn image_height(img: &mut Image) -> i64 {
        img.height() as i64
    }

    /// `Image(28x28 grey)`.
    #[rhai_fn(global, name = "to_string", name = "to_debug")]
    pub fn image_string(img: &mut Image) -> String {
        format!("{img:?}")
    }

    /// Number of items.
    #[rhai_fn(name = "len")]
    pub fn dataset_len(ds: &mut Dataset) -> i64 {
        ds.len() as i64
    }

    /// Item `i` as `#{image, label, labels, flag, modality, split, index}` (negative counts from the end).
    #[rhai_fn(index_get, return_raw)]
    pub fn dataset_get(ds: &mut Dataset, i: i64) -> Result<Dynamic, Box<EvalAltResult>> {
        let j = index(ds.len(), i, "dataset")?;
        Ok(ds.get(j).map(item_map).unwrap_or_default())
    }

    /// A stratified sample of `n` items, as equal as possible across groups:
    /// `ds.balanced(#{by: "modality"|"label"|"flag", n: 8000, seed: 0})`. A group with fewer
    /// items than its share gives all it has, and a warning says so.
    #[rhai_fn(name = "balanced", return_raw)]
    pub fn dataset_balanced(
        ctx: NativeCallContext,
        ds: &mut Dataset,
        options: Map,
    ) -> Result<Dataset, Box<EvalAltResult>> {
        let o = DATASET_BALANCED.parse(&options)?;
        let by = BalanceBy::parse(&o.string_or_default("by")?).script()?;
        let n = o.count("n")?.ok_or_else(|| o.missing("n"))?;
        let sample = ds.balanced(by, n, seed_or_next(&ctx, o.int("seed")?)?);
        warn_all(&ctx, &sample.warnings()[ds.warnings().len()..])?;
        Ok(sample)
    }

    /// Split off a stratified validation part: `ds.split(#{val: 0.1, seed: 0})` → `#{train, val}`.
    #[rhai_fn(name = "split", return_raw)]
    pub fn dataset_split(
        ctx: NativeCallContext,
        ds: &mut Dataset,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let o = DATASET_SPLIT.parse(&options)?;
        let val = o.float_or_default("val")?;
        let (train, val) = ds.split(val, seed_or_next(&ctx, o.int("seed")?)?).script()?;
        Ok(Map::from_iter([("train".into(), Dynamic::from(train)), ("val".into(), Dynamic::from(val))]))
    }

    /// The items for which `keep(item)` returns true: `ds.filter(|x| x.label != 0)`.
    #[rhai_fn(name = "filter", return_raw)]
    pub fn dataset_filter(
        ctx: NativeCallContext,
        ds: &mut Dataset,
        keep: FnPtr,
    ) -> Result<Dataset, Box<EvalAltResult>> {
        let mut failure = None;
        let kept = ds.filter(|item| {
            if failure.is_some() {
                return false;
            }
            match keep.call_within_context::<bool>(&ctx, (item_map(item),)) {
                Ok(b) => b,
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(kept),
        }
    }

    /// Both datasets' items, this one's first.
    #[rhai_fn(name = "concat")]
    pub fn dataset_concat(ds: &mut Dataset, other: Dataset) -> Dataset {
        ds.concat(&other)
    }

    /// Messages about the files (e.g. counts that differ from the official ones).
    #[rhai_fn(name = "warnings")]
    pub fn dataset_warnings(ds: &mut Dataset) -> Array {
        ds.warnings().iter().map(|w| Dynamic::from(w.clone())).collect()
    }

    /// `Dataset(500 items: pathmnist)`.
    #[rhai_fn(global, name = "to_string", name = "to_debug")]
    pub fn dataset_string(ds: &mut Dataset) -> String {
        let flags: Vec<String> = ds.flags().iter().map(|f| f.to_string()).collect();
        format!("Dataset({} items: {})", ds.len(), flags.join(", "))
    }

    /// Turn class labels into lettered multiple-choice questions:
    /// `ds.to_mcq(#{options: "all" | 4, shuffle: true, seed: 0, template: "...",
    /// answer_format: "letter" | "think_answer", name: "path", preset: "default" | "medbridgerl"})`.
    /// chestmnist gives one yes/no question per finding.
    #[rhai_fn(name = "to_mcq", return_raw)]
    pub fn dataset_to_mcq(
        ctx: NativeCallContext,
        ds: &mut Dataset,
        options: Map,
    ) -> Result<Task, Box<EvalAltResult>> {
        let o = TO_MCQ.parse(&options)?;
        let options = match o.value("options") {
            None => OptionCount::All,
            Some(v) if v.to_string() == "all" => OptionCount::All,
            Some(v) => match v.as_int() {
                Ok(n) if n >= 2 => OptionCount::N(n as usize),
                _ => return Err(o.bad_value("options", v)),
            },
        };
        let answer_format = AnswerFormat::parse(&o.string_or_default("answer_format")?).script()?;
        let opts = McqOptions {
            options,
            shuffle: o.bool_or_default("shuffle")?,
            seed: seed_or_next(&ctx, o.int("seed")?)?,
            template: o.string("template")?,
            answer_format,
            name: o.string("name")?,
        };
        let task = ds.to_mcq(&opts).script()?;
        Ok(match preset_of(&o)? {
            Some(p) => task.with_preset(p),
            None => task,
        })
    }

    /// A task from an in-memory list of `#{image, question, options, answer}` maps (answer as
    /// index, letter or option text): `mcq_task(list, #{name: "demo", answer_format: "letter",
    /// preset: "default" | "medbridgerl"})`. Under `medbridgerl` the prompt is the released one and
    /// `extract` reads the released way (letter from `parse_mcq_letter`, `format_ok` = an
    /// `<answer>` tag was found).
    #[rhai_fn(return_raw)]
    pub fn mcq_task(items: Array, options: Map) -> Result<Task, Box<EvalAltResult>> {
        let o = MCQ_TASK.parse(&options)?;
        let name = o.string_or_default("name")?;
        let format = AnswerFormat::parse(&o.string_or_default("answer_format")?).script()?;
        let parsed = items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let map = v
                    .read_lock::<Map>()
                    .ok_or_else(|| script_msg(format!("mcq_task: item {i} is not a map")))?;
                item_from_map(i, &map, &name)
            })
            .collect::<ScriptResult<Vec<_>>>()?;
        let task = McqTask::new(&name, parsed, o.string("template")?.as_deref(), format).script()?;
        Ok(task.with_preset(preset_of(&o)?.unwrap_or_default()))
    }

    /// A VQA benchmark's test split with the default options: `load_vqa("medvlthinker",
    /// "UCSC-VLAA/MedVLThinker-Eval")` (a path, or a hub dataset id fetched into the cache).
    #[rhai_fn(name = "load_vqa", return_raw)]
    pub fn load_vqa_default(
        ctx: NativeCallContext,
        kind: &str,
        path: &str,
    ) -> Result<Task, Box<EvalAltResult>> {
        load_vqa(ctx, kind, path, Map::new())
    }

    /// Load a VQA benchmark as a multiple-choice task: `load_vqa("medvlthinker" | "pmc_vqa" |
    /// "slake" | "vqa_rad" | "path_vqa" | "jsonl", path, #{split: "test", closed_only: true,
    /// limit: 100, template, answer_format, preset: "default" | "medbridgerl", revision, download})`.
    /// `path` is a file, a folder holding the split, or a hub dataset id
    /// (`"UCSC-VLAA/MedVLThinker-Eval"`, `"xmcmic/PMC-VQA"`) whose split files are read from the
    /// Hugging Face cache, downloaded into it first when missing (not with `--offline`);
    /// `"medbridgerl_jsonl"` reads the paper's released JSONL.
    #[rhai_fn(name = "load_vqa", return_raw)]
    pub fn load_vqa(
        ctx: NativeCallContext,
        kind: &str,
        path: &str,
        options: Map,
    ) -> Result<Task, Box<EvalAltResult>> {
        use medbridge_runtime::data::vqa::{VqaKind, VqaOptions};
        let o = LOAD_VQA.parse(&options)?;
        let s = session(&ctx)?;
        let mut opts = VqaOptions {
            split: Split::parse(&o.string_or_default("split")?).script()?,
            closed_only: o.bool_or_default("closed_only")?,
            limit: o.count("limit")?,
            template: o.string("template")?,
            answer_format: AnswerFormat::parse(&o.string_or_default("answer_format")?).script()?,
            preset: preset_of(&o)?.unwrap_or_default(),
            sandbox: Some(s.sandbox.clone()),
            image_dirs: Vec::new(),
        };
        let kind = VqaKind::parse(kind).script()?;
        let source = match s.sandbox.locate_read(path).script()? {
            Some(found) => found,
            // A hub dataset id is `org/name`; a bare name stays a (missing) path.
            None if path.contains('/') && medbridge_runtime::hub::looks_like_repo_id(path) => {
                let (fetched, origin) = medbridge_runtime::data::vqa::hub::fetch_benchmark(
                    kind,
                    path,
                    o.string("revision")?.as_deref(),
                    opts.split,
                    o.bool_or_default("download")?,
                    &medbridge_runtime::hub::HubConfig::for_session(&s),
                )
                .map_err(|e| {
                    script_msg(format!(
                        "load_vqa {} {path}: not a file or folder here, so read as a hub dataset id: {e}",
                        kind.as_str()
                    ))
                })?;
                s.run.record_settings("load_vqa", origin.record(path)).script()?;
                opts.image_dirs = fetched.image_dirs;
                fetched.dir
            }
            // Neither a path nor an id: the sandbox's own message says where it looked.
            None => s.sandbox.resolve_read(path).script()?,
        };
        medbridge_runtime::data::vqa::load_vqa(kind, &source, &opts).script()
    }

    /// Number of questions.
    #[rhai_fn(name = "len")]
    pub fn task_len(task: &mut Task) -> i64 {
        task.len() as i64
    }

    /// Question `i` with its rendered prompt and SFT target.
    #[rhai_fn(index_get, return_raw)]
    pub fn task_get(task: &mut Task, i: i64) -> Result<Dynamic, Box<EvalAltResult>> {
        task_item_map(task, index(task.len(), i, "task")?)
    }

    /// The first `n` questions.
    #[rhai_fn(name = "limit", return_raw)]
    pub fn task_limit(task: &mut Task, n: i64) -> Result<Task, Box<EvalAltResult>> {
        let n =
            usize::try_from(n).map_err(|_| script_msg(format!("limit: n must be an int >= 0, got {n}")))?;
        Ok(task.limit(n))
    }

    /// A stratified sample of `n` questions, as equal as possible across the strata of `by`
    /// (`"modality"`, `"dataset"`, `"answer"` or `"class"`), deterministic by `seed`: the paper's
    /// 8k modality-balanced PMC-VQA subset is
    /// `label_modality(m, pmc, #{}).balanced(#{by: "modality", n: 8000, seed: 0})`.
    /// A stratum with fewer questions than its share gives all it has, and a warning says so.
    #[rhai_fn(name = "balanced", return_raw)]
    pub fn task_balanced(
        ctx: NativeCallContext,
        task: &mut Task,
        options: Map,
    ) -> Result<Task, Box<EvalAltResult>> {
        let o = TASK_BALANCED.parse(&options)?;
        let by = TaskStratum::parse(&o.string_or_default("by")?).script()?;
        let n = o.count("n")?.ok_or_else(|| o.missing("n"))?;
        let (sample, strata) = task.balanced(by, n, seed_or_next(&ctx, o.int("seed")?)?).script()?;
        warn_all(&ctx, &strata.warnings(&format!("{}.balanced by {}", task.name(), by.as_str())))?;
        Ok(sample)
    }

    /// What the task's extractor reads from a completion for question `i`:
    /// `#{choice, letter, format_ok, correct}`.
    #[rhai_fn(name = "extract", return_raw)]
    pub fn task_extract(task: &mut Task, i: i64, completion: &str) -> Result<Map, Box<EvalAltResult>> {
        let i = index(task.len(), i, "task")?;
        let e = task.extract(i, completion).script()?;
        let gold = task.item(i).script()?.answer;
        let mut m = Map::new();
        m.insert("choice".into(), e.choice.map_or(Dynamic::UNIT, |c| Dynamic::from_int(c as i64)));
        m.insert(
            "letter".into(),
            e.choice.map_or(Dynamic::UNIT, |c| medbridge_runtime::task::option_letter(c).to_string().into()),
        );
        m.insert("format_ok".into(), e.format_ok.into());
        m.insert("correct".into(), (e.choice == Some(gold)).into());
        Ok(m)
    }

    /// `Task(pathmnist: 200 questions, letter)`.
    #[rhai_fn(global, name = "to_string", name = "to_debug")]
    pub fn task_string(task: &mut Task) -> String {
        format!("Task({}: {} questions, {:?})", task.name(), task.len(), task.answer_format())
    }
}

/// `for item in ds` yields item maps; `for q in task` yields question maps.
pub fn register_iterators(module: &mut rhai::Module) {
    module.set_iter(std::any::TypeId::of::<Dataset>(), |d: Dynamic| {
        let ds = d.cast::<Dataset>();
        Box::new((0..ds.len()).filter_map(move |i| ds.get(i).map(item_map)))
    });
    module.set_iter_result(std::any::TypeId::of::<McqTask>(), |t: Dynamic| {
        let task = t.cast::<McqTask>();
        Box::new((0..task.len()).map(move |i| task_item_map(&task, i)))
    });
}
