//! Loading a checkpoint: from a local directory or a hub id in the Hugging Face cache, single or
//! sharded safetensors, memory-mapped, in either weight-name layout.
//!
//! A hub id resolves through the Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`) and, when a file is missing and downloads are allowed, through the
//! hub (`crate::hub`) into that same cache. Layouts: the hub's (`model.layers.*`,
//! `visual.*`) and transformers 5's (`model.language_model.*`, `model.visual.*`), detected from
//! the tensor names; modules always ask for hub names and this file translates.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::config::Config;
use super::weights::{Init, WeightSource, Weights};
use super::Qwen25VL;
use crate::error::{Context, Error, Result};
use crate::hub::{self, Hub, HubConfig, RepoKind, RepoRef};

/// Where a checkpoint's files are.
#[derive(Debug, Clone)]
pub struct CheckpointFiles {
    pub config: PathBuf,
    pub weights: Vec<PathBuf>,
}

/// How tensors are named in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `model.layers.*`, `model.embed_tokens`, `model.norm`, `visual.*`, `lm_head`.
    Hub,
    /// `model.language_model.*`, `model.visual.*`, `lm_head`.
    Transformers5,
}

impl Layout {
    /// The stored name of a hub-layout name.
    fn stored(self, hub_name: &str) -> String {
        match self {
            Layout::Hub => hub_name.to_string(),
            Layout::Transformers5 => {
                if let Some(rest) = hub_name.strip_prefix("visual.") {
                    format!("model.visual.{rest}")
                } else if let Some(rest) = hub_name.strip_prefix("model.") {
                    format!("model.language_model.{rest}")
                } else {
                    hub_name.to_string()
                }
            }
        }
    }
}

/// Find a checkpoint: `path_or_id` is a directory, or a hub id looked up in the local cache
/// (never the network; [`resolve_with`] downloads).
pub fn resolve(path_or_id: &str) -> Result<CheckpointFiles> {
    let source = HubSource { revision: None, download: false, hub: HubConfig::from_env() };
    resolve_with(path_or_id, &source).map(|(files, _)| files)
}

/// How a hub id is found: which revision, and whether a missing file may be downloaded.
#[derive(Clone, Debug)]
pub struct HubSource {
    /// A branch, tag or commit hash; `None` is `main`.
    pub revision: Option<String>,
    pub download: bool,
    pub hub: HubConfig,
}

impl HubSource {
    /// `main`, downloads allowed, configured from the environment.
    pub fn from_env() -> Self {
        HubSource { revision: None, download: true, hub: HubConfig::from_env() }
    }
}

pub use crate::hub::Origin;

/// Files the loader and the processor read, fetched when the repo has them (`config.json` and
/// the weights are required; `Processor::from_dir` needs the tokenizer and preprocessor files).
const CHECKPOINT_FILES: [&str; 7] = [
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.json",
    "chat_template.jinja",
];

/// The files without which a cached snapshot is not a usable checkpoint.
const REQUIRED_PROCESSOR_FILES: [&str; 2] = ["tokenizer.json", "preprocessor_config.json"];

const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";

/// Like [`resolve`], for a hub id: the cache first (no request when the revision's snapshot holds
/// a whole checkpoint), then, when allowed, the hub (config, processor files, every shard the
/// index names) into the same cache.
pub fn resolve_with(path_or_id: &str, source: &HubSource) -> Result<(CheckpointFiles, Origin)> {
    let dir = Path::new(path_or_id);
    if dir.is_dir() {
        return Ok((local_files(dir)?, Origin::default()));
    }
    if dir.exists() {
        crate::bail!("model path {path_or_id} is not a directory");
    }
    let repo = RepoRef::new(RepoKind::Model, path_or_id, source.revision.as_deref());
    let cfg = &source.hub;
    let mut origin =
        Origin { repo: Some(repo.id.clone()), revision: Some(repo.revision.clone()), ..Origin::default() };
    let cached = hub::cached_snapshot(&cfg.cache_dir, &repo);
    if let Some(snapshot) = &cached {
        if let Ok(files) = complete_snapshot(&snapshot.dir) {
            origin.commit = Some(snapshot.commit.clone());
            return Ok((files, origin));
        }
    }
    if cfg.net.offline || !source.download || !hub::looks_like_repo_id(path_or_id) {
        let what = match &cached {
            None => "it".to_string(),
            Some(s) => format!("a whole checkpoint (snapshot {})", s.commit),
        };
        if !hub::looks_like_repo_id(path_or_id) {
            crate::bail!("model `{path_or_id}` is neither a local directory nor a hub id (`org/name`)");
        }
        return Err(hub::not_cached(cfg, &repo, &what, !source.download));
    }
    let hub = Hub::new(cfg)?;
    let remote = hub.info(&repo)?;
    let commit = remote.commit.clone();
    let files_before =
        hub::cached_snapshot(&cfg.cache_dir, &RepoRef::new(RepoKind::Model, &repo.id, Some(&commit)));
    let had = |name: &str| files_before.as_ref().is_some_and(|s| s.has(name));
    let mut fetch = |name: &str| -> Result<PathBuf> {
        if !had(name) {
            origin.downloaded.push(name.to_string());
        }
        hub.fetch(&repo, &commit, name)
    };
    if !remote.files.contains("config.json") {
        crate::bail!(
            "{} (commit {commit}) has no config.json: it is not a transformers checkpoint",
            repo.describe()
        );
    }
    let mut config = None;
    for name in CHECKPOINT_FILES.iter().filter(|n| remote.files.contains(**n)) {
        let path = fetch(name)?;
        if *name == "config.json" {
            config = Some(path);
        }
    }
    let weights = if remote.files.contains(INDEX) {
        let index = fetch(INDEX)?;
        let shards = shard_names(&index)?;
        if let Some(missing) = shards.iter().find(|s| !remote.files.contains(*s)) {
            crate::bail!(
                "{INDEX} of {} (commit {commit}) names shard {missing}, which the repo does not have: \
                 the upload is incomplete; pin a revision whose shards are all there with `revision`",
                repo.describe()
            );
        }
        shards.iter().map(|name| fetch(name)).collect::<Result<Vec<_>>>()?
    } else if remote.files.contains(SINGLE) {
        vec![fetch(SINGLE)?]
    } else {
        crate::bail!(
            "{} (commit {commit}) has neither {SINGLE} nor {INDEX}: no safetensors weights to load \
             (medbridge does not read .bin checkpoints)",
            repo.describe()
        );
    };
    hub.finish(&repo, &commit)?;
    origin.commit = Some(commit);
    let config = config.with_context(|| "config.json was not fetched".to_string())?;
    Ok((CheckpointFiles { config, weights }, origin))
}

/// The checkpoint in a cached snapshot, when it is whole (config, every shard, and the files the
/// processor cannot do without).
fn complete_snapshot(dir: &Path) -> Result<CheckpointFiles> {
    let files = local_files(dir)?;
    if let Some(name) = REQUIRED_PROCESSOR_FILES.iter().find(|n| !dir.join(n).is_file()) {
        crate::bail!("{}: no {name}", dir.display());
    }
    Ok(files)
}

fn local_files(dir: &Path) -> Result<CheckpointFiles> {
    let config = dir.join("config.json");
    if !config.is_file() {
        crate::bail!("{}: no config.json in this model directory", dir.display());
    }
    let index = dir.join("model.safetensors.index.json");
    let weights = if index.is_file() {
        shard_names(&index)?
            .into_iter()
            .map(|name| {
                let path = dir.join(&name);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(Error::msg(format!(
                        "{}: shard {name} is missing from {}",
                        index.display(),
                        dir.display()
                    )))
                }
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        let single = dir.join("model.safetensors");
        if !single.is_file() {
            crate::bail!(
                "{}: neither model.safetensors nor model.safetensors.index.json is present",
                dir.display()
            );
        }
        vec![single]
    };
    Ok(CheckpointFiles { config, weights })
}

/// The distinct shard file names an index refers to, in a stable order.
fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| index.display().to_string())?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{}: no `weight_map` object", index.display()))?;
    let names: BTreeSet<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
    if names.is_empty() {
        crate::bail!("{}: `weight_map` names no shard", index.display());
    }
    Ok(names.into_iter().collect())
}

/// Memory-mapped safetensors files with a name -> file routing table.
pub struct SafetensorsSource {
    files: Vec<(PathBuf, MmapedSafetensors)>,
    routes: HashMap<String, usize>,
    layout: Layout,
}

impl SafetensorsSource {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut routes = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            // SAFETY: the file is mapped read-only; medbridge never writes a checkpoint while
            // reading it, and safetensors validates the header against the mapped length.
            let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
                Error::msg(format!(
                    "{}: not a readable safetensors file (truncated or corrupt?): {e}",
                    path.display()
                ))
            })?;
            for (name, _) in st.tensors() {
                routes.insert(name, i);
            }
            files.push((path.clone(), st));
        }
        let layout = if routes.keys().any(|n| n.starts_with("model.language_model.")) {
            Layout::Transformers5
        } else {
            Layout::Hub
        };
        Ok(Self { files, routes, layout })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }
}

impl WeightSource for SafetensorsSource {
    fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        _init: Init,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let stored = self.layout.stored(name);
        let Some(&i) = self.routes.get(&stored) else {
            let files: Vec<String> = self.files.iter().map(|(p, _)| p.display().to_string()).collect();
            crate::bail!("tensor {stored} is missing from {} ({:?} layout)", files.join(", "), self.layout);
        };
        let (path, st) = &self.files[i];
        let view = st.get(&stored).with_context(|| format!("{}: tensor {stored}", path.display()))?;
        if view.shape() != shape {
            crate::bail!(
                "{}: tensor {stored} has shape {:?}, expected {shape:?}",
                path.display(),
                view.shape()
            );
        }
        let t = st.load(&stored, device).with_context(|| format!("{}: tensor {stored}", path.display()))?;
        Ok(t.to_dtype(dtype)?)
    }
}

impl Qwen25VL {
    /// Load a checkpoint from a directory or a cached hub id, in `dtype` on `device`.
    pub fn load(path_or_id: &str, dtype: DType, device: &Device) -> Result<Self> {
        let run = || Self::load_files(&resolve(path_or_id)?, dtype, device);
        run().with_context(|| format!("loading model {path_or_id}"))
    }

    /// Load resolved checkpoint files.
    pub fn load_files(files: &CheckpointFiles, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = Config::from_file(&files.config)?;
        let source = SafetensorsSource::open(&files.weights)?;
        Self::new(&cfg, &Weights::new(&source, dtype, device))
    }
}

/// Parse a dtype name as scripts give it.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        "f64" | "float64" => Ok(DType::F64),
        other => crate::bail!("unknown dtype `{other}`: use f32, bf16 or f16"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_diff, pixels, prompt, tiny, GRID};
    use super::*;
    use candle_core::safetensors::{load as load_file, save};

    /// Save the tiny model and return its directory and weights.
    fn saved() -> (tempfile::TempDir, Qwen25VL, HashMap<String, Tensor>) {
        let m = tiny(DType::F32, &Device::Cpu);
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        let weights = load_file(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
        (dir, m, weights)
    }

    fn load_err(dir: &Path) -> String {
        Qwen25VL::load(dir.to_str().unwrap(), DType::F32, &Device::Cpu).unwrap_err().to_string()
    }

    /// Rewrite the checkpoint as two shards with an index, optionally renaming tensors.
    fn shard(dir: &Path, weights: &HashMap<String, Tensor>, rename: impl Fn(&str) -> String) {
        std::fs::remove_file(dir.join("model.safetensors")).unwrap();
        let (mut a, mut b, mut map) = (HashMap::new(), HashMap::new(), serde_json::Map::new());
        for (i, (name, t)) in weights.iter().enumerate() {
            let (file, part) = if i % 2 == 0 {
                ("model-00001-of-00002.safetensors", &mut a)
            } else {
                ("model-00002-of-00002.safetensors", &mut b)
            };
            part.insert(rename(name), t.clone());
            map.insert(rename(name), file.into());
        }
        save(&a, dir.join("model-00001-of-00002.safetensors")).unwrap();
        save(&b, dir.join("model-00002-of-00002.safetensors")).unwrap();
        let index = serde_json::json!({"metadata": {}, "weight_map": map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }

    fn to_transformers5(name: &str) -> String {
        Layout::Transformers5.stored(name)
    }

    #[test]
    fn both_layouts_sharded_give_identical_logits() {
        let (dir, m, weights) = saved();
        let ids = Tensor::new(prompt(m.config()), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let pv = pixels(DType::F32, &Device::Cpu);
        let expected = m.forward(&ids, Some(&pv), &[GRID]).unwrap();
        for rename in [str::to_string as fn(&str) -> String, to_transformers5] {
            let fresh = tempfile::tempdir().unwrap();
            std::fs::copy(dir.path().join("config.json"), fresh.path().join("config.json")).unwrap();
            std::fs::copy(dir.path().join("model.safetensors"), fresh.path().join("model.safetensors"))
                .unwrap();
            shard(fresh.path(), &weights, rename);
            let files = resolve(fresh.path().to_str().unwrap()).unwrap();
            let source = SafetensorsSource::open(&files.weights).unwrap();
            assert_eq!(source.layout() == Layout::Transformers5, rename("visual.x") == "model.visual.x");
            let loaded = Qwen25VL::load(fresh.path().to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
            assert_eq!(max_diff(&loaded.forward(&ids, Some(&pv), &[GRID]).unwrap(), &expected), 0.0);
        }
        let half = Qwen25VL::load(dir.path().to_str().unwrap(), DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(half.dtype(), DType::BF16);
        assert!(
            max_diff(
                &half.forward(&ids, Some(&pv.to_dtype(DType::BF16).unwrap()), &[GRID]).unwrap(),
                &expected
            ) < 0.1
        );
    }

    #[test]
    fn missing_and_misshaped_tensors_are_named_with_their_file() {
        let (dir, _, mut weights) = saved();
        let file = dir.path().join("model.safetensors");
        weights.remove("model.norm.weight");
        save(&weights, &file).unwrap();
        let err = load_err(dir.path());
        assert!(
            err.contains("tensor model.norm.weight is missing") && err.contains("model.safetensors"),
            "{err}"
        );

        weights.insert("model.norm.weight".into(), Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap());
        save(&weights, &file).unwrap();
        let err = load_err(dir.path());
        assert!(err.contains("tensor model.norm.weight has shape [7], expected [64]"), "{err}");
    }

    #[test]
    fn truncated_file_and_missing_shard_are_errors() {
        let (dir, _, weights) = saved();
        let file = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_err(dir.path());
        assert!(err.contains("truncated or corrupt") && err.contains("model.safetensors"), "{err}");

        std::fs::write(&file, &bytes).unwrap();
        shard(dir.path(), &weights, str::to_string);
        std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
        let err = load_err(dir.path());
        assert!(err.contains("shard model-00002-of-00002.safetensors is missing"), "{err}");
    }

    #[test]
    fn unknown_model_type_is_an_error() {
        let (dir, _, _) = saved();
        let path = dir.path().join("config.json");
        let text = std::fs::read_to_string(&path).unwrap().replace("\"qwen2_5_vl\"", "\"qwen3_vl\"");
        std::fs::write(&path, text).unwrap();
        let err = load_err(dir.path());
        assert!(err.contains("unsupported model_type `qwen3_vl`") && err.contains("config.json"), "{err}");
    }

    #[test]
    fn hub_ids_resolve_in_the_cache_without_download() {
        let cache_dir = tempfile::tempdir().unwrap();
        let hub = HubConfig {
            endpoint: "http://127.0.0.1:9".into(),
            cache_dir: cache_dir.path().to_path_buf(),
            token: None,
            net: crate::hub::Net { offline: false, ..Default::default() },
        };
        let source = HubSource { revision: None, download: false, hub };
        let err = resolve_with("Qwen/Qwen2.5-VL-7B-Instruct", &source).unwrap_err().to_string();
        assert!(err.contains("Qwen/Qwen2.5-VL-7B-Instruct"), "{err}");
        assert!(err.contains(&cache_dir.path().display().to_string()), "{err}");
        assert!(err.contains("huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct"), "{err}");
        assert!(err.contains("download: false"), "{err}");

        let (dir, _, _) = saved();
        let repo = cache_dir.path().join("models--org--tiny");
        let snapshot = repo.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "abc123").unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
            std::fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
        }
        // Weights alone are not a checkpoint the processor can use.
        assert!(resolve_with("org/tiny", &source).is_err());
        for f in REQUIRED_PROCESSOR_FILES {
            std::fs::write(snapshot.join(f), "{}").unwrap();
        }
        let (files, origin) = resolve_with("org/tiny", &source).unwrap();
        assert_eq!(files.weights, vec![snapshot.join("model.safetensors")]);
        assert_eq!(origin.commit.as_deref(), Some("abc123"));
        assert!(origin.downloaded.is_empty());
    }

    #[test]
    fn dtype_names_parse() {
        assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
        assert!(parse_dtype("int8").unwrap_err().to_string().contains("unknown dtype"));
    }
}
