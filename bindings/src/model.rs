//! The `model` family: Qwen2.5-VL models in scripts — load a checkpoint or build a preset,
//! encode, score, generate, extract vision features, add LoRA adapters, save them as PEFT
//! adapters or merge them into the weights, save.
//!
//! A `Model` is a [`Vlm`]: weights plus the processor that turns `(image, prompt)` into tokens.
//! `image` arguments take a file path or an `Image` (e.g. `ds[0].image`).

use candle_core::Tensor;
use medbridge_runtime::device::check_dtype;
use medbridge_runtime::hub::HubConfig;
use medbridge_runtime::image::Image;
use medbridge_runtime::models::qwen2_5_vl::load::{parse_dtype, HubSource};
use medbridge_runtime::models::qwen2_5_vl::{Config, LoraConfig, LoraInit};
use medbridge_runtime::models::{RandomInit, Vlm};
use medbridge_runtime::sample::{sample, SampleRequest, SamplerOptions};
use medbridge_runtime::train::adapters::{check_targets, lora_config_of};
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::context::{seed_or_next, session};
use crate::convert::to_json;
use crate::error::{script_error, script_msg, IntoScript, ScriptResult};
use crate::options::{
    opt, Absent, Bound, Kind, OptionSet, OptionSpec, Opts, COUNT, NON_NEGATIVE, POSITIVE, POSITIVE_FLOAT,
    SEED, STR,
};
use crate::sample::TOP_P;
use crate::script_types::type_of;

/// An `image` argument: an `Image` value, a path to read through the sandbox, or `()` for none.
pub fn image_arg(
    ctx: &NativeCallContext,
    value: Option<&Dynamic>,
    what: &str,
) -> ScriptResult<Option<Image>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) if v.is_string() => {
            let path = session(ctx)?.sandbox.resolve_read(&v.to_string()).script()?;
            Image::open(&path).script().map(Some)
        }
        Some(v) => v.clone().try_cast::<Image>().map(Some).ok_or_else(|| {
            script_msg(format!("{what}: `image` must be an Image or a file path, got {}", type_of(v)))
        }),
    }
}

const LORA_KEYS: [OptionSpec; 7] = [
    opt("rank", POSITIVE, Absent::Int(8), "adapter rank r"),
    opt("alpha", POSITIVE_FLOAT, Absent::Means("2 × rank"), "scale alpha (updates are alpha / r · B A)"),
    opt("targets", Kind::Strs, Absent::Means("the seven LM projections"), "module names to adapt"),
    opt(
        "dropout",
        Kind::Float { min: Bound::Incl(0.0), max: Bound::Excl(1.0) },
        Absent::Float(0.0),
        "dropout on the adapter input",
    ),
    opt("init", Kind::Str(&["peft", "random"]), Absent::Str("peft"), "PEFT's init (B = 0) or random B"),
    SEED,
    opt("vision", Kind::Bool, Absent::Bool(false), "adapt the vision tower too"),
];

/// A LoRA map, as `sft` and `grpo` take it under `lora`.
pub static LORA: OptionSet = OptionSet::new("lora", &[&LORA_KEYS]);

static WITH_LORA: OptionSet = OptionSet::new("with_lora", &[&LORA_KEYS]);

/// A LoRA map `#{rank, alpha, targets, dropout, init, seed, vision}` as `with_lora`, `sft` and
/// `grpo` take it; `what` names the caller in messages.
pub fn lora_config(ctx: &NativeCallContext, options: &Map, what: &str) -> ScriptResult<LoraConfig> {
    let o = LORA.parse_as(options, what)?;
    let rank = o.count_or_default("rank")?;
    let alpha = o.float("alpha")?.unwrap_or(2.0 * rank as f64);
    let mut cfg = LoraConfig::new(rank, alpha);
    if let Some(targets) = o.strings("targets")? {
        cfg.targets = targets;
    }
    cfg.dropout = o.float_or_default("dropout")?;
    cfg.init = match o.string_or_default("init")?.as_str() {
        "random" => LoraInit::Random,
        _ => LoraInit::Peft,
    };
    cfg.seed = seed_or_next(ctx, o.int("seed")?)?;
    cfg.vision = o.bool_or_default("vision")?;
    Ok(cfg)
}

/// `image` and `prompt`, as `encode`, `logits` and `generate` take them.
const IMAGE_PROMPT: [OptionSpec; 2] = [
    opt("image", Kind::Value("an Image or a file path"), Absent::Means("no image"), "the picture"),
    opt("prompt", STR, Absent::Required, "the user turn's text"),
];

/// Where and in what precision the weights live; `load_model` and `new_model` share them.
const PLACEMENT: [OptionSpec; 2] = [
    opt("device", STR, Absent::Means("the run's device"), "\"cpu\", \"cuda\" or \"cuda:N\""),
    opt(
        "dtype",
        Kind::Str(&["f32", "float32", "bf16", "bfloat16", "f16", "float16", "f64", "float64"]),
        Absent::Str("f32"),
        "weight dtype",
    ),
];

static LOAD_MODEL: OptionSet = OptionSet::new(
    "load_model",
    &[
        &PLACEMENT,
        &[
            opt("adapter", STR, Absent::Means("none"), "a PEFT adapter directory to apply"),
            opt(
                "revision",
                STR,
                Absent::Str("main"),
                "hub ids: the branch, tag or commit to load (recorded in run.json)",
            ),
            opt(
                "download",
                Kind::Bool,
                Absent::Bool(true),
                "hub ids: fetch what the Hugging Face cache lacks (never with --offline / HF_HUB_OFFLINE=1)",
            ),
        ],
    ],
);

static NEW_MODEL: OptionSet = OptionSet::new(
    "new_model",
    &[
        &PLACEMENT,
        &[
            SEED,
            opt(
                "layers",
                COUNT,
                Absent::Means("the preset's depth"),
                "decoder layers kept (cut for tests and memory probes)",
            ),
            opt("vision_layers", COUNT, Absent::Means("the preset's depth"), "vision blocks kept"),
        ],
    ],
);
static ENCODE: OptionSet = OptionSet::new("encode", &[&IMAGE_PROMPT]);
static LOGITS: OptionSet = OptionSet::new("logits", &[&IMAGE_PROMPT]);
static GENERATE: OptionSet = OptionSet::new(
    "generate",
    &[
        &IMAGE_PROMPT,
        &[
            opt("max_new_tokens", COUNT, Absent::Int(64), "tokens generated at most"),
            opt("temperature", NON_NEGATIVE, Absent::Float(0.0), "0 is greedy; above 0 samples"),
            opt("top_p", TOP_P, Absent::Float(1.0), "nucleus mass kept when sampling"),
            SEED,
        ],
    ],
);

/// The model family's declared options.
pub static OPTIONS: [&OptionSet; 6] = [&LOAD_MODEL, &NEW_MODEL, &ENCODE, &LOGITS, &GENERATE, &WITH_LORA];

/// The `base_model_name_or_path` an adapter directory records, when it is readable.
fn adapter_base(dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("adapter_config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    config.get("base_model_name_or_path")?.as_str().map(str::to_string)
}

/// The `device` option (plain `cuda` being this rank's GPU under MPI), or the run's device.
fn placement_device(ctx: &NativeCallContext, o: &Opts) -> ScriptResult<candle_core::Device> {
    match o.string("device")? {
        Some(d) => {
            let d = medbridge_runtime::dist::rank_device(&d, &session(ctx)?.world);
            medbridge_runtime::device::parse_device(&d).script()
        }
        None => Ok(session(ctx)?.device.clone()),
    }
}

/// `#{image, prompt}` of `encode`, `logits` and `generate`.
fn image_and_prompt(ctx: &NativeCallContext, o: &Opts) -> ScriptResult<(Option<Image>, String)> {
    let prompt = o.string("prompt")?.ok_or_else(|| o.missing("prompt"))?;
    Ok((image_arg(ctx, o.value("image"), o.what())?, prompt))
}

/// A config map: the tiny preset's hub-layout `config.json` with the given keys replaced
/// (`vision_config` keys merge into the preset's vision config).
fn config_from_map(map: &Map) -> ScriptResult<Config> {
    let base = Config::tiny().to_hub_json();
    let mut merged = base.as_object().cloned().unwrap_or_default();
    for (key, value) in map.iter() {
        let value = to_json(value)?;
        match (key.as_str(), value) {
            ("vision_config", serde_json::Value::Object(overrides)) => {
                if let Some(serde_json::Value::Object(vision)) = merged.get_mut("vision_config") {
                    vision.extend(overrides);
                }
            }
            (k, v) => {
                merged.insert(k.to_string(), v);
            }
        }
    }
    Config::from_json_str(&serde_json::Value::Object(merged).to_string())
        .map_err(|e| script_msg(format!("new_model: bad config map: {e}")))
}

#[export_module]
pub mod model_api {
    use super::*;

    /// A Qwen2.5-VL model with its processor.
    pub type Model = medbridge_runtime::models::Vlm;

    /// Load a checkpoint directory or a hub id, in f32 on the run's device. A hub id comes from the
    /// Hugging Face cache, downloaded into it first when missing (not with `--offline`).
    #[rhai_fn(name = "load_model", return_raw)]
    pub fn load_model_default(ctx: NativeCallContext, path_or_id: &str) -> Result<Model, Box<EvalAltResult>> {
        load_model(ctx, path_or_id, Map::new())
    }

    /// Load with options: `load_model("Qwen/Qwen2.5-VL-7B-Instruct", #{device: "cuda", dtype: "bf16",
    /// adapter: "path/to/peft_adapter", revision: "main", download: true})`. A hub id is read from
    /// the Hugging Face cache (`HF_HUB_CACHE`, `HF_HOME`), and what is missing there is downloaded
    /// from `HF_ENDPOINT` with `HF_TOKEN` unless `download: false`, `--offline` or
    /// `HF_HUB_OFFLINE=1`; the commit loaded is recorded in run.json.
    #[rhai_fn(name = "load_model", return_raw)]
    pub fn load_model(
        ctx: NativeCallContext,
        path_or_id: &str,
        options: Map,
    ) -> Result<Model, Box<EvalAltResult>> {
        let o = LOAD_MODEL.parse(&options)?;
        let device = placement_device(&ctx, &o)?;
        let s = session(&ctx)?;
        let dtype = parse_dtype(&o.string_or_default("dtype")?).script()?;
        check_dtype(&device, dtype).script()?;
        // A local directory goes through the sandbox; anything else is a hub id, read from the
        // cache or downloaded into it (the only place outside the run directory a load writes).
        let source = match s.sandbox.locate_read(path_or_id).script()? {
            Some(dir) => dir.display().to_string(),
            None => path_or_id.to_string(),
        };
        let hub = HubSource {
            revision: o.string("revision")?,
            download: o.bool_or_default("download")?,
            hub: HubConfig::for_session(&s),
        };
        let (vlm, origin) = Vlm::load_with(&source, &hub, dtype, &device).script()?;
        s.run.record_settings("load_model", origin.record(path_or_id)).script()?;
        match o.string("adapter")? {
            Some(adapter) => {
                let dir = s.sandbox.resolve_read(&adapter).script()?;
                let adapted = vlm.model.with_adapter(&dir).map_err(|e| match adapter_base(&dir) {
                    Some(base) if base != vlm.source => script_msg(format!(
                        "{e} (the adapter was made for base `{base}`; this model is `{}`)",
                        vlm.source
                    )),
                    _ => script_error(e),
                })?;
                Ok(vlm.with_model(adapted))
            }
            None => Ok(vlm),
        }
    }

    /// A random-initialised model: a preset name (`"qwen2_5_vl_tiny"`, or the hub shapes of
    /// `"qwen2_5_vl_3b"`/`"qwen2_5_vl_7b"`) or a config map of `config.json` keys over the tiny
    /// preset, with the tiny tokenizer: `new_model("qwen2_5_vl_7b", #{seed: 0, dtype: "bf16", layers: 2})`.
    #[rhai_fn(name = "new_model", return_raw)]
    pub fn new_model(
        ctx: NativeCallContext,
        preset: Dynamic,
        options: Map,
    ) -> Result<Model, Box<EvalAltResult>> {
        let o = NEW_MODEL.parse(&options)?;
        let init = RandomInit {
            seed: seed_or_next(&ctx, o.int("seed")?)?,
            dtype: parse_dtype(&o.string_or_default("dtype")?).script()?,
            device: placement_device(&ctx, &o)?,
            layers: o.count("layers")?,
            vision_layers: o.count("vision_layers")?,
        };
        check_dtype(&init.device, init.dtype).script()?;
        if let Some(map) = preset.read_lock::<Map>() {
            return Vlm::new_custom(config_from_map(&map)?, &init).script();
        }
        let name = preset
            .into_string()
            .map_err(|t| script_msg(format!("new_model: expected a preset name or a config map, got {t}")))?;
        Vlm::new_preset_with(&name, &init).script()
    }

    /// A random-initialised preset with the run's next seed.
    #[rhai_fn(name = "new_model", return_raw)]
    pub fn new_model_default(ctx: NativeCallContext, preset: Dynamic) -> Result<Model, Box<EvalAltResult>> {
        new_model(ctx, preset, Map::new())
    }

    /// Token ids of the chat-templated user turn (image + text, default system prompt) with the
    /// generation prompt, image pads expanded: `m.encode(#{image: img, prompt: "Which organ?"})`.
    #[rhai_fn(name = "encode", return_raw)]
    pub fn encode(ctx: NativeCallContext, m: &mut Model, options: Map) -> Result<Array, Box<EvalAltResult>> {
        let o = ENCODE.parse(&options)?;
        let (image, prompt) = image_and_prompt(&ctx, &o)?;
        let enc = m.processor.encode(image.as_ref(), &prompt).script()?;
        Ok(enc.input_ids.into_iter().map(|id| Dynamic::from_int(id as i64)).collect())
    }

    /// Logits `[seq, vocab]` (f32) over exactly the ids `encode` gives.
    #[rhai_fn(name = "logits", return_raw)]
    pub fn logits(ctx: NativeCallContext, m: &mut Model, options: Map) -> Result<Tensor, Box<EvalAltResult>> {
        let o = LOGITS.parse(&options)?;
        let (image, prompt) = image_and_prompt(&ctx, &o)?;
        m.logits(image.as_ref(), &prompt).script()
    }

    /// The decoded continuation: greedy, or sampled when `temperature` > 0 (with `top_p`, `seed`):
    /// `m.generate(#{image, prompt, max_new_tokens: 32, temperature: 0.7, seed: 1})`.
    #[rhai_fn(name = "generate", return_raw)]
    pub fn generate(
        ctx: NativeCallContext,
        m: &mut Model,
        options: Map,
    ) -> Result<String, Box<EvalAltResult>> {
        let o = GENERATE.parse(&options)?;
        let (image, prompt) = image_and_prompt(&ctx, &o)?;
        let max_new = o.count_or_default("max_new_tokens")?;
        let temperature = o.float_or_default("temperature")?;
        let top_p = o.float_or_default("top_p")?;
        // Greedy decoding goes through the sampler too, so it checks the context and the memory
        // budget first and stops at Ctrl-C between tokens; it draws no seed, so scripts replay.
        let s = session(&ctx)?;
        let mut opts =
            SamplerOptions { n: 1, max_new_tokens: max_new, memory: s.memory, ..SamplerOptions::default() };
        opts.logits.temperature = temperature as f32;
        if temperature > 0.0 {
            opts.logits.top_p = top_p as f32;
            opts.seed = seed_or_next(&ctx, o.int("seed")?)?;
        }
        if max_new == 0 {
            return Ok(String::new());
        }
        let request = SampleRequest { question_id: "generate".into(), image, prompt };
        let mut out = sample(m, &[request], &opts, Some(&s.cancel), s.progress).script()?;
        Ok(out.pop().and_then(|mut v| v.pop()).map(|x| x.text).unwrap_or_default())
    }

    /// Merged vision-tower features of one image: `#{tokens: Tensor[n, hidden], pooled: Tensor[hidden]}`.
    #[rhai_fn(name = "vision_features", return_raw)]
    pub fn vision_features(
        ctx: NativeCallContext,
        m: &mut Model,
        image: Dynamic,
    ) -> Result<Map, Box<EvalAltResult>> {
        let img = image_arg(&ctx, Some(&image), "vision_features")?
            .ok_or_else(|| script_msg("vision_features: an image is required"))?;
        let (tokens, pooled) = m.vision_features(&img).script()?;
        Ok(Map::from_iter([
            ("tokens".into(), Dynamic::from(tokens)),
            ("pooled".into(), Dynamic::from(pooled)),
        ]))
    }

    /// A new model with LoRA adapters, sharing this one's frozen base:
    /// `m.with_lora(#{rank: 8, alpha: 16, targets: ["q_proj", "v_proj"]})`.
    #[rhai_fn(name = "with_lora", return_raw)]
    pub fn with_lora(
        ctx: NativeCallContext,
        m: &mut Model,
        options: Map,
    ) -> Result<Model, Box<EvalAltResult>> {
        let cfg = lora_config(&ctx, &options, WITH_LORA.function)?;
        let adapted = m.with_lora(&cfg).script()?;
        check_targets(&adapted.model, &cfg).script()?;
        Ok(adapted)
    }

    /// Save the LoRA adapters as a PEFT adapter directory inside the run directory
    /// (`adapter_config.json` with r, lora_alpha, target_modules, base model and task type, plus
    /// `adapter_model.safetensors` under PEFT's names), which PEFT and
    /// `load_model(base, #{adapter: dir})` load. Returns the directory.
    #[rhai_fn(name = "save_adapter", return_raw)]
    pub fn save_adapter(
        ctx: NativeCallContext,
        m: &mut Model,
        dir: &str,
    ) -> Result<String, Box<EvalAltResult>> {
        let target = session(&ctx)?.sandbox.resolve_write(dir).script()?;
        let lora = lora_config_of(&m.model).script()?;
        m.model.save_adapter(&target, &lora, &m.source).script()?;
        Ok(target.display().to_string())
    }

    /// A new model with the LoRA adapters folded into the base weights (`W + alpha/r · B A`) and
    /// nothing trainable; `m.merge().save(dir)` gives full weights transformers loads. The input
    /// model keeps its adapters.
    #[rhai_fn(name = "merge", return_raw)]
    pub fn merge(m: &mut Model) -> Result<Model, Box<EvalAltResult>> {
        Ok(m.with_model(m.model.merge().script()?))
    }

    /// Save weights (adapters merged) and processor files in the hub layout, inside the run
    /// directory; transformers loads the result. Returns the directory.
    #[rhai_fn(name = "save", return_raw)]
    pub fn save(ctx: NativeCallContext, m: &mut Model, dir: &str) -> Result<String, Box<EvalAltResult>> {
        let target = session(&ctx)?.sandbox.resolve_write(dir).script()?;
        m.save(&target).script()?;
        Ok(target.display().to_string())
    }

    /// Parameter counts, dtype, device and a one-line config summary.
    #[rhai_fn(name = "info", return_raw)]
    pub fn info(m: &mut Model) -> Result<Map, Box<EvalAltResult>> {
        let i = m.info().script()?;
        let mut map = Map::new();
        map.insert("source".into(), m.source.clone().into());
        map.insert("total_params".into(), Dynamic::from_int(i.total_params as i64));
        map.insert("trainable_params".into(), Dynamic::from_int(i.trainable_params as i64));
        map.insert("dtype".into(), i.dtype.into());
        map.insert("device".into(), i.device.into());
        map.insert("summary".into(), i.summary.into());
        Ok(map)
    }

    /// `Model(qwen2_5_vl_tiny, 1.2M params, f32, cpu)`.
    #[rhai_fn(global, name = "to_string", name = "to_debug")]
    pub fn model_string(m: &mut Model) -> String {
        match m.info() {
            Ok(i) => format!(
                "Model({}, {} params, {} trainable, {}, {})",
                m.source, i.total_params, i.trainable_params, i.dtype, i.device
            ),
            Err(_) => format!("Model({})", m.source),
        }
    }
}
