//! The `data` family: MedMNIST files (real or synthetic), datasets and their subsets, and
//! multiple-choice tasks built from them or from in-memory lists.
//!
//! A dataset item reaches scripts as `#{image, label, labels, flag, modality, split, index}`; a
//! task item as `#{id, question, options, answer, letter, image, task, modality, prompt, target}`.

use medbridge_runtime::data::{
    load_medmnist, BalanceBy, Dataset, Item, MedmnistOptions, Modality, Split, SynthOptions,
};
use medbridge_runtime::image::Image;
use medbridge_runtime::task::{AnswerFormat, McqItem, McqOptions, McqTask, OptionCount, TaskStratum};
use rhai::plugin::*;
use rhai::{Array, FnPtr, Map};

use crate::context::{seed_or_next, session};
use crate::convert::{as_f64, Options};
use crate::error::{script_msg, IntoScript, ScriptResult};

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
fn item_from_map(i: usize, map: &Map, name: &str) -> ScriptResult<McqItem> {
    let what = format!("{name} item {i}");
    let opts =
        Options::new(map, &what, &["id", "image", "question", "options", "answer", "task", "modality"])?;
    let question =
        opts.string("question")?.ok_or_else(|| script_msg(format!("{what}: `question` is required")))?;
    let options: Vec<String> = match opts.get("options") {
        Some(v) => v
            .read_lock::<Array>()
            .ok_or_else(|| script_msg(format!("{what}: `options` must be an array of strings")))?
            .iter()
            .map(|o| o.to_string())
            .collect(),
        None => return Err(script_msg(format!("{what}: `options` is required"))),
    };
    let answer = opts.get("answer").ok_or_else(|| script_msg(format!("{what}: `answer` is required")))?;
    let answer = if let Ok(n) = answer.as_int() {
        usize::try_from(n).map_err(|_| script_msg(format!("{what}: answer {n} is negative")))?
    } else {
        let text = answer.to_string();
        let letter = text.trim().to_ascii_uppercase();
        let by_letter = (letter.len() == 1).then(|| letter.as_bytes()[0].wrapping_sub(b'A') as usize);
        by_letter
            .filter(|&k| k < options.len())
            .or_else(|| options.iter().position(|o| o.trim().eq_ignore_ascii_case(text.trim())))
            .ok_or_else(|| {
                script_msg(format!("{what}: answer {text:?} is neither a letter, an index nor an option"))
            })?
    };
    let image = match opts.get("image") {
        None => None,
        Some(v) if v.is_unit() => None,
        Some(v) => Some(v.clone().try_cast::<Image>().ok_or_else(|| {
            script_msg(format!("{what}: `image` must be an Image (use load_image(path) or a dataset item)"))
        })?),
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
    /// stratified: true, seed: 0, root: dir})`. Counts that differ from the official ones are a
    /// warning, not an error.
    #[rhai_fn(name = "medmnist", return_raw)]
    pub fn medmnist(ctx: NativeCallContext, flag: &str, options: Map) -> Result<Dataset, Box<EvalAltResult>> {
        let o =
            Options::new(&options, "medmnist", &["split", "size", "limit", "stratified", "seed", "root"])?;
        let mut opts = MedmnistOptions::default();
        if let Some(s) = o.string("split")? {
            opts.split = Split::parse(&s).script()?;
        }
        if let Some(size) = o.int("size")? {
            opts.size = u32::try_from(size).map_err(|_| script_msg(format!("medmnist: bad size {size}")))?;
        }
        opts.limit = o.int("limit")?.map(|n| n.max(0) as usize);
        opts.stratified = o.bool("stratified")?.unwrap_or(false);
        opts.seed = seed_or_next(&ctx, o.int("seed")?)?;
        if let Some(root) = o.string("root")? {
            opts.root = Some(session(&ctx)?.sandbox.resolve_read(&root).script()?);
        }
        let ds = load_medmnist(flag, &opts).script()?;
        warn_all(&ctx, ds.warnings())?;
        Ok(ds)
    }

    /// Write synthetic MedMNIST `.npz` files (the official format, marked `synthetic`) into the
    /// run directory and return that directory, ready for `medmnist(flag, #{root: dir})`:
    /// `synth_medmnist(#{tasks: ["pathmnist"], size: 28, n_train: 500, n_val: 100, n_test: 200,
    /// difficulty: 0.3, task_difficulty: #{pathmnist: 0.6}, seed: 0, out: "synthetic"})`.
    #[rhai_fn(return_raw)]
    pub fn synth_medmnist(ctx: NativeCallContext, options: Map) -> Result<String, Box<EvalAltResult>> {
        let known =
            ["tasks", "size", "n_train", "n_val", "n_test", "difficulty", "task_difficulty", "seed", "out"];
        let o = Options::new(&options, "synth_medmnist", &known)?;
        let mut opts = SynthOptions::default();
        if let Some(tasks) = o.get("tasks") {
            let list = tasks
                .read_lock::<Array>()
                .ok_or_else(|| script_msg("synth_medmnist: `tasks` must be an array of flags"))?;
            opts.tasks = list.iter().map(|t| t.to_string()).collect();
        }
        let count = |key: &str, default: usize| -> ScriptResult<usize> {
            Ok(o.int(key)?.map_or(default, |n| n.max(0) as usize))
        };
        opts.size = count("size", 28)? as u32;
        opts.n_train = count("n_train", opts.n_train)?;
        opts.n_val = count("n_val", opts.n_val)?;
        opts.n_test = count("n_test", opts.n_test)?;
        opts.difficulty = o.float("difficulty")?.unwrap_or(opts.difficulty);
        if let Some(per_task) = o.get("task_difficulty") {
            let map = per_task
                .read_lock::<Map>()
                .ok_or_else(|| script_msg("synth_medmnist: `task_difficulty` must be a map"))?;
            for (flag, d) in map.iter() {
                let d = as_f64(d).ok_or_else(|| {
                    script_msg(format!("synth_medmnist: difficulty of {flag} must be a number"))
                })?;
                opts.task_difficulty.insert(flag.to_string(), d);
            }
        }
        opts.seed = seed_or_next(&ctx, o.int("seed")?)?;
        let out = o.string("out")?.unwrap_or_else(|| "synthetic".to_string());
        opts.out_dir = session(&ctx)?.sandbox.resolve_write(&out).script()?;
        medbridge_runtime::data::synth_medmnist(&opts).script()?;
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
        let o = Options::new(&options, "balanced", &["by", "n", "seed"])?;
        let by = BalanceBy::parse(&o.string("by")?.unwrap_or_else(|| "label".into())).script()?;
        let n = o.count("n")?.ok_or_else(|| script_msg("balanced: option `n` is required"))?;
        let (sample, strata) = ds.balanced_sample(by, n, seed_or_next(&ctx, o.int("seed")?)?);
        warn_all(&ctx, &strata.warnings(&format!("balanced by {by:?}").to_lowercase()))?;
        Ok(sample)
    }

    /// Split off a stratified validation part: `ds.split(#{val: 0.1, seed: 0})` → `#{train, val}`.
    #[rhai_fn(name = "split", return_raw)]
    pub fn dataset_split(
        ctx: NativeCallContext,
        ds: &mut Dataset,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let o = Options::new(&options, "split", &["val", "seed"])?;
        let val = o.float("val")?.unwrap_or(0.1);
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
    /// answer_format: "letter" | "think_answer", name: "path"})`. chestmnist gives one yes/no
    /// question per finding.
    #[rhai_fn(name = "to_mcq", return_raw)]
    pub fn dataset_to_mcq(
        ctx: NativeCallContext,
        ds: &mut Dataset,
        options: Map,
    ) -> Result<Task, Box<EvalAltResult>> {
        let o = Options::new(
            &options,
            "to_mcq",
            &["options", "shuffle", "seed", "template", "answer_format", "name"],
        )?;
        let options = match o.get("options") {
            None => OptionCount::All,
            Some(v) if v.to_string() == "all" => OptionCount::All,
            Some(v) => match v.as_int() {
                Ok(n) if n >= 2 => OptionCount::N(n as usize),
                _ => {
                    return Err(script_msg(format!(
                        "to_mcq: `options` must be \"all\" or an int ≥ 2, got {v}"
                    )))
                }
            },
        };
        let answer_format = match o.string("answer_format")? {
            Some(f) => AnswerFormat::parse(&f).script()?,
            None => AnswerFormat::Letter,
        };
        let opts = McqOptions {
            options,
            shuffle: o.bool("shuffle")?.unwrap_or(true),
            seed: seed_or_next(&ctx, o.int("seed")?)?,
            template: o.string("template")?,
            answer_format,
            name: o.string("name")?,
        };
        ds.to_mcq(&opts).script()
    }

    /// A task from an in-memory list of `#{image, question, options, answer}` maps (answer as
    /// index, letter or option text): `mcq_task(list, #{name: "demo", answer_format: "letter"})`.
    #[rhai_fn(return_raw)]
    pub fn mcq_task(items: Array, options: Map) -> Result<Task, Box<EvalAltResult>> {
        let o = Options::new(&options, "mcq_task", &["name", "answer_format", "template"])?;
        let name = o.string("name")?.unwrap_or_else(|| "task".to_string());
        let format =
            AnswerFormat::parse(&o.string("answer_format")?.unwrap_or_else(|| "letter".into())).script()?;
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
        McqTask::new(&name, parsed, o.string("template")?.as_deref(), format).script()
    }

    /// Load a VQA benchmark as a multiple-choice task: `load_vqa("medvlthinker" | "pmc_vqa" |
    /// "slake" | "vqa_rad" | "path_vqa" | "jsonl", path, #{split: "test", closed_only: true,
    /// limit: 100, template, answer_format})`. `path` is a file or a folder holding the split.
    #[rhai_fn(return_raw)]
    pub fn load_vqa(
        ctx: NativeCallContext,
        kind: &str,
        path: &str,
        options: Map,
    ) -> Result<Task, Box<EvalAltResult>> {
        use medbridge_runtime::data::vqa::{VqaKind, VqaOptions};
        let o = Options::new(
            &options,
            "load_vqa",
            &["split", "closed_only", "limit", "template", "answer_format"],
        )?;
        let mut opts = VqaOptions::default();
        if let Some(s) = o.string("split")? {
            opts.split = Split::parse(&s).script()?;
        }
        opts.closed_only = o.bool("closed_only")?.unwrap_or(opts.closed_only);
        opts.limit = o.int("limit")?.map(|n| n.max(0) as usize);
        opts.template = o.string("template")?;
        if let Some(f) = o.string("answer_format")? {
            opts.answer_format = AnswerFormat::parse(&f).script()?;
        }
        let source = session(&ctx)?.sandbox.resolve_read(path).script()?;
        medbridge_runtime::data::vqa::load_vqa(VqaKind::parse(kind).script()?, &source, &opts).script()
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
    #[rhai_fn(name = "limit")]
    pub fn task_limit(task: &mut Task, n: i64) -> Task {
        task.limit(n.max(0) as usize)
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
        let o = Options::new(&options, "balanced", &["by", "n", "seed"])?;
        let by = TaskStratum::parse(&o.string("by")?.unwrap_or_else(|| "modality".into())).script()?;
        let n = o.count("n")?.ok_or_else(|| script_msg("balanced: option `n` is required"))?;
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
