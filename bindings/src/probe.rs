//! The `probe` family: how much a frozen vision tower's features say about MedMNIST labels
//! (`linear_probe`: logistic or the paper's BatchNorm + linear; `knn_probe`: the paper's kNN),
//! against classifiers trained from scratch on the pixels (`vision_baseline`),
//! beside the published MedMNIST numbers.

use medbridge_runtime::data::{published_results, Dataset};
use medbridge_runtime::probe::{
    probe_inputs, vision_baseline, Arch, BaselineOptions, BnLinearOptions, KnnMetric, KnnOptions, Pool,
    ProbeMethod, ProbeOptions, ProbeReport, VlmFeatures,
};
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::context::{seed_or_next, session};
use crate::convert::as_f64;
use crate::error::{script_msg, IntoScript, ScriptResult};
use crate::options::{
    opt, Absent, Kind, OptionSet, OptionSpec, Opts, FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_FLOAT, SEED,
};

/// How features are taken from the tower, shared by every probe of a model.
const FEATURES: [OptionSpec; 2] = [
    opt(
        "pool",
        Kind::Str(&["merger", "mean", "merger-mean", "pre_merger", "pre-merger"]),
        Absent::Str("merger"),
        "which vision features are mean-pooled",
    ),
    opt("batch", POSITIVE, Absent::Int(32), "images per feature-extraction pass"),
];

/// `linear_probe` keys that every method reads. `epochs` and `lr` mean the same to both methods,
/// with each method's own default.
const LINEAR_COMMON: [OptionSpec; 5] = [
    opt(
        "method",
        Kind::Str(&["logistic", "bn_linear"]),
        Absent::Means("\"logistic\"; \"bn_linear\" under preset \"medbridgerl\""),
        "logistic regression (medbridge's own) or the paper's BatchNorm + linear SGD (linprobe.py)",
    ),
    opt(
        "preset",
        Kind::Str(&["default", "medbridgerl"]),
        Absent::Str("default"),
        "\"medbridgerl\": method bn_linear with linprobe.py's schedule (keys given still win)",
    ),
    opt(
        "epochs",
        POSITIVE,
        Absent::Means("300 (logistic, full-batch steps), 20 (bn_linear)"),
        "passes over train",
    ),
    opt(
        "lr",
        POSITIVE_FLOAT,
        Absent::Means("0.05 (logistic), 0.1 (bn_linear, cosine per epoch)"),
        "learning rate",
    ),
    SEED,
];

/// Keys only the logistic probe reads.
const LOGISTIC_ONLY: [OptionSpec; 2] = [
    opt(
        "l2",
        Kind::Value("a number or an array of numbers"),
        Absent::Means("[1e-4, 1e-3, 1e-2, 0.1, 1, 10]"),
        "L2 strengths tried; the best on the validation part wins",
    ),
    opt("val", FRACTION, Absent::Float(0.2), "fraction of train held out to pick l2"),
];

/// Keys only the BatchNorm + linear probe reads (`batch` is already the extraction batch).
const BN_LINEAR_ONLY: [OptionSpec; 3] = [
    opt("sgd_batch", POSITIVE, Absent::Int(1024), "rows per SGD step"),
    opt("momentum", FRACTION, Absent::Float(0.9), "SGD momentum"),
    opt("weight_decay", NON_NEGATIVE, Absent::Float(0.0), "SGD weight decay"),
];

static LINEAR_PROBE: OptionSet =
    OptionSet::new("linear_probe", &[&FEATURES, &LINEAR_COMMON, &LOGISTIC_ONLY, &BN_LINEAR_ONLY]);

static KNN_PROBE: OptionSet = OptionSet::new(
    "knn_probe",
    &[
        &FEATURES,
        &[
            opt("k", POSITIVE, Absent::Int(20), "neighbours per test row (at most the training rows)"),
            opt("metric", Kind::Str(&["cosine"]), Absent::Str("cosine"), "how neighbours are ranked"),
            opt(
                "released_view",
                Kind::Bool,
                Absent::Bool(false),
                "fold each feature into the mean of its quarters, as knn.py's pooling does as released",
            ),
        ],
    ],
);

static VISION_BASELINE: OptionSet = OptionSet::new(
    "vision_baseline",
    &[&[
        opt(
            "arch",
            Kind::Str(&["small_cnn", "small-cnn", "smallcnn", "cnn", "resnet18", "resnet_18", "resnet-18"]),
            Absent::Str("small_cnn"),
            "the classifier",
        ),
        opt("epochs", POSITIVE, Absent::Int(10), "passes over train"),
        opt("lr", POSITIVE_FLOAT, Absent::Float(1e-3), "learning rate"),
        opt("batch", POSITIVE, Absent::Int(128), "images per step"),
        SEED,
    ]],
);

/// The probe family's declared options.
pub static OPTIONS: [&OptionSet; 3] = [&LINEAR_PROBE, &KNN_PROBE, &VISION_BASELINE];

/// Features are cached in `MEDBRIDGE_CACHE` when it names a folder (shared across runs), else in
/// the run directory's `cache/`: never anywhere the sandbox does not document.
fn cache_dir(ctx: &NativeCallContext) -> ScriptResult<std::path::PathBuf> {
    let root = match std::env::var_os("MEDBRIDGE_CACHE").filter(|v| !v.is_empty()) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => session(ctx)?.run.path().join("cache"),
    };
    Ok(root.join("features"))
}

fn published(flag: &str) -> Array {
    published_results(flag)
        .into_iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("model".into(), r.model.into());
            m.insert("size".into(), Dynamic::from_int(i64::from(r.size)));
            m.insert("acc".into(), Dynamic::from_float(r.acc));
            m.insert("auc".into(), r.auc.map_or(Dynamic::UNIT, Dynamic::from_float));
            m.insert("source".into(), r.source.into());
            Dynamic::from_map(m)
        })
        .collect()
}

fn flag_of(ds: &Dataset) -> String {
    ds.flags().first().map(|f| f.to_string()).unwrap_or_default()
}

/// The `linear_probe` method a script asked for, with its options; a key another method reads
/// is an error naming both, since silently ignoring it would probe with settings not asked for.
fn linear_method(ctx: &NativeCallContext, o: &Opts, given: &Map) -> ScriptResult<ProbeMethod> {
    let preset = o.string_or_default("preset")?;
    let method = match (o.string("method")?, preset.as_str()) {
        (Some(m), "medbridgerl") if m != "bn_linear" => {
            return Err(script_msg(format!(
                "linear_probe: preset \"medbridgerl\" is the bn_linear probe, not method \"{m}\""
            )))
        }
        (Some(m), _) => m,
        (None, "medbridgerl") => "bn_linear".to_string(),
        (None, _) => "logistic".to_string(),
    };
    let foreign: &[OptionSpec] = if method == "logistic" { &BN_LINEAR_ONLY } else { &LOGISTIC_ONLY };
    if let Some(spec) = foreign.iter().find(|s| given.contains_key(s.key)) {
        return Err(script_msg(format!(
            "linear_probe: option `{}` is not read by method \"{method}\" (it belongs to \"{}\")",
            spec.key,
            if method == "logistic" { "bn_linear" } else { "logistic" }
        )));
    }
    let seed = seed_or_next(ctx, o.int("seed")?)?;
    if method == "bn_linear" {
        let d = BnLinearOptions::default();
        return Ok(ProbeMethod::BnLinear(BnLinearOptions {
            epochs: o.count("epochs")?.unwrap_or(d.epochs),
            batch: o.count_or_default("sgd_batch")?,
            lr: o.float("lr")?.unwrap_or(d.lr),
            momentum: o.float_or_default("momentum")?,
            weight_decay: o.float_or_default("weight_decay")?,
            seed,
            ..d
        }));
    }
    let d = ProbeOptions::default();
    let mut probe = ProbeOptions {
        epochs: o.count("epochs")?.unwrap_or(d.epochs),
        lr: o.float("lr")?.unwrap_or(d.lr),
        val_fraction: o.float_or_default("val")?,
        seed,
        ..d
    };
    if let Some(v) = o.value("l2") {
        let finite = |x: &Dynamic| as_f64(x).filter(|x| x.is_finite());
        probe.l2 = match v.read_lock::<Array>() {
            Some(list) => list
                .iter()
                .map(|x| finite(x).ok_or_else(|| o.bad_value("l2", x)))
                .collect::<Result<_, _>>()?,
            None => vec![finite(v).ok_or_else(|| o.bad_value("l2", v))?],
        }
    }
    Ok(ProbeMethod::Logistic(probe))
}

/// The resolved `bn_linear` settings a preset run records in `run.json`.
fn bn_linear_settings(preset: &str, bn: &BnLinearOptions) -> serde_json::Value {
    serde_json::json!({
        "preset": preset,
        "method": "bn_linear",
        "epochs": bn.epochs,
        "sgd_batch": bn.batch,
        "lr": bn.lr,
        "schedule": "cosine, stepped per epoch",
        "momentum": bn.momentum,
        "weight_decay": bn.weight_decay,
        "bn_eps": bn.bn_eps,
        "bn_momentum": bn.bn_momentum,
        "seed": bn.seed,
    })
}

/// Extract `model`'s features of `train` and `test` (cached) as `o`'s `pool` and `batch` say,
/// run `method` on them and return the map every probe returns.
fn probe_map(
    ctx: &NativeCallContext,
    o: &Opts,
    model: &medbridge_runtime::models::Vlm,
    train: &Dataset,
    test: &Dataset,
    method: &ProbeMethod,
) -> ScriptResult<Map> {
    let pool = Pool::parse(&o.string_or_default("pool")?).script()?;
    let source = VlmFeatures::new(model, pool).script()?;
    let s = session(ctx)?;
    let cache = cache_dir(ctx)?;
    let batch = o.count_or_default("batch")?;
    let inputs =
        probe_inputs(&source, train, test, batch, Some(&cache), &s.device, Some(&s.cancel)).script()?;
    let report = method.run(&inputs, Some(&s.cancel)).script()?;
    Ok(report_map(&report, &flag_of(test)))
}

fn report_map(report: &ProbeReport, flag: &str) -> Map {
    let scores: Array = report
        .val_scores
        .iter()
        .map(|s| {
            let mut m = Map::new();
            m.insert("l2".into(), Dynamic::from_float(s.l2));
            m.insert("val_loss".into(), Dynamic::from_float(s.val_loss));
            m.insert("val_acc".into(), Dynamic::from_float(s.val_acc));
            Dynamic::from_map(m)
        })
        .collect();
    let floats = |xs: &[f64]| xs.iter().map(|&x| Dynamic::from_float(x)).collect::<Array>();
    let mut m = Map::new();
    m.insert("method".into(), report.method.into());
    m.insert("flag".into(), flag.into());
    m.insert("acc".into(), Dynamic::from_float(report.acc));
    m.insert("auc".into(), Dynamic::from_float(report.auc));
    m.insert("top5".into(), report.top5.map_or(Dynamic::UNIT, Dynamic::from_float));
    m.insert("l2".into(), Dynamic::from_float(report.l2_chosen));
    m.insert("val_scores".into(), scores.into());
    m.insert("train_loss".into(), floats(&report.train_loss).into());
    m.insert("n_train".into(), Dynamic::from_int(report.n_train as i64));
    m.insert("n_test".into(), Dynamic::from_int(report.n_test as i64));
    m.insert("dim".into(), Dynamic::from_int(report.dim as i64));
    m.insert("hits".into(), floats(&report.hits).into());
    m.insert("published".into(), published(flag).into());
    m
}

#[export_module]
pub mod probe_api {
    use super::*;

    /// Fit a probe on the model's frozen, mean-pooled vision features (cached on disk) and score
    /// it as MedMNIST's evaluator does. `method: "logistic"` (default) picks an L2 strength on a
    /// validation split; `"bn_linear"` (or `preset: "medbridgerl"`) is the paper's `linprobe.py`,
    /// BatchNorm + linear trained by SGD (20 epochs, batches of 1,024, lr 0.1 cosine, momentum 0.9):
    /// `linear_probe(m, train, test, #{method: "bn_linear", pool: "merger", seed: 0})` →
    /// `#{method, acc, auc, top5, l2, val_scores, train_loss, n_train, n_test, dim, hits, published}`,
    /// `hits` holding each test item's share of ACC (for `paired_diff` between two probes).
    #[rhai_fn(return_raw)]
    pub fn linear_probe(
        ctx: NativeCallContext,
        model: medbridge_runtime::models::Vlm,
        train: Dataset,
        test: Dataset,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let o = LINEAR_PROBE.parse(&options)?;
        let method = linear_method(&ctx, &o, &options)?;
        if let (Some(preset), ProbeMethod::BnLinear(bn)) = (o.string("preset")?, &method) {
            session(&ctx)?.run.record_settings("linear_probe", bn_linear_settings(&preset, bn)).script()?;
        }
        probe_map(&ctx, &o, &model, &train, &test, &method)
    }

    /// The paper's kNN probe (`knn.py`): each test row's `k` most cosine-similar training rows
    /// vote, unweighted, on frozen mean-pooled features (cached on disk):
    /// `knn_probe(m, train, test, #{k: 20, metric: "cosine", released_view: false})` → the map
    /// `linear_probe` returns (`method: "knn"`; ACC and AUC from the vote fractions).
    #[rhai_fn(return_raw)]
    pub fn knn_probe(
        ctx: NativeCallContext,
        model: medbridge_runtime::models::Vlm,
        train: Dataset,
        test: Dataset,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let o = KNN_PROBE.parse(&options)?;
        let method = ProbeMethod::Knn(KnnOptions {
            k: o.count_or_default("k")?,
            metric: KnnMetric::parse(&o.string_or_default("metric")?).script()?,
            released_view: o.bool_or_default("released_view")?,
        });
        probe_map(&ctx, &o, &model, &train, &test, &method)
    }

    /// Train a vision-only classifier from scratch for comparison:
    /// `vision_baseline(train, test, #{arch: "small_cnn" | "resnet18", epochs: 10, lr: 1e-3,
    /// batch: 128, seed: 0})` → `#{arch, acc, auc, train_loss, n_params, seconds, published}`.
    #[rhai_fn(name = "vision_baseline", return_raw)]
    pub fn baseline(
        ctx: NativeCallContext,
        train: Dataset,
        test: Dataset,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let o = VISION_BASELINE.parse(&options)?;
        let opts = BaselineOptions {
            arch: Arch::parse(&o.string_or_default("arch")?).script()?,
            epochs: o.count_or_default("epochs")?,
            lr: o.float_or_default("lr")?,
            batch: o.count_or_default("batch")?,
            seed: seed_or_next(&ctx, o.int("seed")?)?,
            device: session(&ctx)?.device.clone(),
        };
        let r = vision_baseline(&train, &test, &opts, Some(&session(&ctx)?.cancel)).script()?;
        let mut m = Map::new();
        m.insert("arch".into(), r.arch.as_str().into());
        m.insert("flag".into(), r.flag.clone().into());
        m.insert("acc".into(), Dynamic::from_float(r.acc));
        m.insert("auc".into(), Dynamic::from_float(r.auc));
        m.insert(
            "train_loss".into(),
            r.train_loss.iter().map(|&l| Dynamic::from_float(l)).collect::<Array>().into(),
        );
        m.insert("n_params".into(), Dynamic::from_int(r.n_params as i64));
        m.insert("seconds".into(), Dynamic::from_float(r.seconds));
        m.insert("published".into(), published(&r.flag).into());
        Ok(m)
    }

    /// The published test rows for a flag, each `#{model, size, acc, auc, source}`: MedMNIST v2's
    /// Table 3 (ResNet-18/50, auto-sklearn, AutoKeras, Google AutoML Vision) and MedViT V2
    /// (`auc` is `()` where the source gives only accuracy):
    /// `published_baselines("pathmnist").filter(|r| r.model == "ResNet-18")`.
    #[rhai_fn(name = "published_baselines")]
    pub fn published_baselines(flag: &str) -> Array {
        published(flag)
    }
}
