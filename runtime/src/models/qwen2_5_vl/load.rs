//! Loading a checkpoint: from a local directory or a hub id in the Hugging Face cache, single or
//! sharded safetensors, memory-mapped, in either weight-name layout.
//!
//! The network is never used: a hub id resolves through `hf-hub`'s cache only (`HF_HUB_CACHE`,
//! else `HF_HOME/hub`, else `~/.cache/huggingface/hub`). Layouts: the hub's (`model.layers.*`,
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

/// Find a checkpoint: `path_or_id` is a directory, or a hub id looked up in the local cache.
pub fn resolve(path_or_id: &str) -> Result<CheckpointFiles> {
    let dir = Path::new(path_or_id);
    if dir.is_dir() {
        return local_files(dir);
    }
    if dir.exists() {
        crate::bail!("model path {path_or_id} is not a directory");
    }
    cached_files(path_or_id)
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

/// The hub cache directory, honouring `HF_HUB_CACHE` and `HF_HOME`.
fn hub_cache() -> hf_hub::Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => hf_hub::Cache::new(PathBuf::from(dir)),
        None => hf_hub::Cache::from_env(),
    }
}

fn cached_files(id: &str) -> Result<CheckpointFiles> {
    let cache = hub_cache();
    let repo = cache.model(id.to_string());
    let missing = |what: &str| {
        Error::msg(format!(
            "model `{id}` is not a local directory and {what} is not in the Hugging Face cache \
             (searched {} for `{id}`; set HF_HUB_CACHE or HF_HOME to look elsewhere). \
             medbridge never downloads: on a machine with network run `huggingface-cli download {id}` \
             and copy the cache, or pass a local directory",
            cache.path().display(),
        ))
    };
    let config = repo.get("config.json").ok_or_else(|| missing("its config.json"))?;
    let weights = match repo.get("model.safetensors.index.json") {
        Some(index) => shard_names(&index)?
            .into_iter()
            .map(|name| repo.get(&name).ok_or_else(|| missing(&format!("shard {name}"))))
            .collect::<Result<Vec<_>>>()?,
        None => vec![repo.get("model.safetensors").ok_or_else(|| missing("model.safetensors"))?],
    };
    Ok(CheckpointFiles { config, weights })
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
        let run = || -> Result<Self> {
            let files = resolve(path_or_id)?;
            let cfg = Config::from_file(&files.config)?;
            let source = SafetensorsSource::open(&files.weights)?;
            Self::new(&cfg, &Weights::new(&source, dtype, device))
        };
        run().with_context(|| format!("loading model {path_or_id}"))
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
