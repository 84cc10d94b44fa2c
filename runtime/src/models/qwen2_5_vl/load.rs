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
    cached_files(&hub_cache(), path_or_id)
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

fn cached_files(cache: &hf_hub::Cache, id: &str) -> Result<CheckpointFiles> {
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
    fn hub_ids_resolve_in_the_cache_only() {
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = hf_hub::Cache::new(cache_dir.path().to_path_buf());
        let err = cached_files(&cache, "Qwen/Qwen2.5-VL-7B-Instruct").unwrap_err().to_string();
        assert!(err.contains("Qwen/Qwen2.5-VL-7B-Instruct"), "{err}");
        assert!(err.contains(&cache_dir.path().display().to_string()), "{err}");
        assert!(err.contains("huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct"), "{err}");

        let (dir, _, _) = saved();
        let repo = cache_dir.path().join("models--org--tiny");
        let snapshot = repo.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "abc123").unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(dir.path().join(f), snapshot.join(f)).unwrap();
        }
        let files = cached_files(&cache, "org/tiny").unwrap();
        assert_eq!(files.weights, vec![snapshot.join("model.safetensors")]);
    }

    #[test]
    fn dtype_names_parse() {
        assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
        assert!(parse_dtype("int8").unwrap_err().to_string().contains("unknown dtype"));
    }
}
