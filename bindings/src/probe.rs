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
use crate::convert::{as_f64, Options};
use crate::error::{script_msg, IntoScript};

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
        let o =
            Options::new(&options, "linear_probe", &["pool", "l2", "epochs", "val", "seed", "batch", "lr"])?;
        let pool = Pool::parse(&o.string("pool")?.unwrap_or_else(|| "merger".into())).script()?;
        let mut probe = ProbeOptions::default();
        match o.get("l2") {
            None => {}
            Some(v) => {
                probe.l2 = match v.read_lock::<Array>() {
                    Some(list) => list.iter().filter_map(as_f64).collect(),
                    None => vec![as_f64(v)
                        .ok_or_else(|| script_msg("linear_probe: `l2` must be a number or an array"))?],
                }
            }
        }
        if let Some(e) = o.int("epochs")? {
            probe.epochs = e.max(1) as usize;
        }
        if let Some(lr) = o.float("lr")? {
            probe.lr = lr;
        }
        if let Some(v) = o.float("val")? {
            probe.val_fraction = v;
        }
        probe.seed = seed_or_next(&ctx, o.int("seed")?)?;
        let opts = DatasetProbeOptions {
            probe,
            batch: o.int("batch")?.unwrap_or(32).max(1) as usize,
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
        let o = Options::new(&options, "vision_baseline", &["arch", "epochs", "lr", "batch", "seed"])?;
        let mut opts = BaselineOptions { device: session(&ctx)?.device.clone(), ..Default::default() };
        if let Some(a) = o.string("arch")? {
            opts.arch = Arch::parse(&a).script()?;
        }
        if let Some(e) = o.int("epochs")? {
            opts.epochs = e.max(1) as usize;
        }
        if let Some(lr) = o.float("lr")? {
            opts.lr = lr;
        }
        if let Some(b) = o.int("batch")? {
            opts.batch = b.max(1) as usize;
        }
        opts.seed = seed_or_next(&ctx, o.int("seed")?)?;
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
