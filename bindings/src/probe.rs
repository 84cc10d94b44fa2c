//! The `probe` family: how much a frozen vision tower's features say about MedMNIST labels
//! (`linear_probe`), against classifiers trained from scratch on the pixels (`vision_baseline`),
//! beside the published MedMNIST numbers.

use medbridge_runtime::data::{published_results, Dataset};
use medbridge_runtime::probe::{
    probe_datasets, vision_baseline, Arch, BaselineOptions, DatasetProbeOptions, Pool, ProbeOptions,
    VlmFeatures,
};
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::context::{seed_or_next, session};
use crate::convert::as_f64;
use crate::error::IntoScript;
use crate::options::{opt, Absent, Kind, OptionSet, FRACTION, POSITIVE, POSITIVE_FLOAT, SEED};

static LINEAR_PROBE: OptionSet = OptionSet::new(
    "linear_probe",
    &[&[
        opt(
            "pool",
            Kind::Str(&["merger", "mean", "merger-mean", "pre_merger", "pre-merger"]),
            Absent::Str("merger"),
            "which vision features are mean-pooled",
        ),
        opt(
            "l2",
            Kind::Value("a number or an array of numbers"),
            Absent::Means("[1e-4, 1e-3, 1e-2, 0.1, 1, 10]"),
            "L2 strengths tried; the best on the validation part wins",
        ),
        opt("epochs", POSITIVE, Absent::Int(300), "full-batch optimizer steps"),
        opt("val", FRACTION, Absent::Float(0.2), "fraction of train held out to pick l2"),
        SEED,
        opt("batch", POSITIVE, Absent::Int(32), "images per feature-extraction pass"),
        opt("lr", POSITIVE_FLOAT, Absent::Float(0.05), "learning rate"),
    ]],
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
pub static OPTIONS: [&OptionSet; 2] = [&LINEAR_PROBE, &VISION_BASELINE];

/// Features are cached across runs here (`MEDBRIDGE_CACHE`, default `~/.cache/medbridge`).
fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("MEDBRIDGE_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
            home.join(".cache").join("medbridge")
        })
        .join("features")
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

#[export_module]
pub mod probe_api {
    use super::*;

    /// Fit a logistic-regression probe on the model's frozen, mean-pooled vision features
    /// (cached on disk) and score it as MedMNIST's evaluator does:
    /// `linear_probe(m, train, test, #{pool: "merger" | "pre_merger", l2: [1e-3, 1e-2, 0.1],
    /// epochs: 300, val: 0.2, seed: 0, batch: 32})` → `#{acc, auc, l2, val_scores, published, ...}`.
    #[rhai_fn(return_raw)]
    pub fn linear_probe(
        ctx: NativeCallContext,
        model: medbridge_runtime::models::Vlm,
        train: Dataset,
        test: Dataset,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let o = LINEAR_PROBE.parse(&options)?;
        let pool = Pool::parse(&o.string_or_default("pool")?).script()?;
        let mut probe = ProbeOptions::default();
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
        probe.epochs = o.count_or_default("epochs")?;
        probe.lr = o.float_or_default("lr")?;
        probe.val_fraction = o.float_or_default("val")?;
        probe.seed = seed_or_next(&ctx, o.int("seed")?)?;
        let opts = DatasetProbeOptions {
            probe,
            batch: o.count_or_default("batch")?,
            cache_dir: Some(cache_dir()),
            device: session(&ctx)?.device.clone(),
        };
        let source = VlmFeatures::new(&model, pool).script()?;
        let report = probe_datasets(&source, &train, &test, &opts).script()?;
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
        let mut m = Map::new();
        m.insert("flag".into(), flag_of(&test).into());
        m.insert("acc".into(), Dynamic::from_float(report.acc));
        m.insert("auc".into(), Dynamic::from_float(report.auc));
        m.insert("l2".into(), Dynamic::from_float(report.l2_chosen));
        m.insert("val_scores".into(), scores.into());
        m.insert("n_train".into(), Dynamic::from_int(report.n_train as i64));
        m.insert("n_test".into(), Dynamic::from_int(report.n_test as i64));
        m.insert("dim".into(), Dynamic::from_int(report.dim as i64));
        m.insert("published".into(), published(&flag_of(&test)).into());
        Ok(m)
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
        let r = vision_baseline(&train, &test, &opts).script()?;
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
