//! Synthetic MedMNIST: writes `.npz` files in the official layout (same keys, dtypes, shapes and
//! file names, plus a `synthetic` key holding `[1]`), so every script and the loader run unchanged
//! on machines without the real data.
//!
//! Each flag gets class-conditional pictures in its modality's look (see `synth_draw.rs`). A class
//! is a point (`Look`) in an eight-number parameter space; an image draws its parameters around
//! its class's point. `difficulty` (0 easy .. 1 hard) shrinks the distance between class points
//! and widens the spread around them. On top of that, every third class (2, 5, 8, ...) is a near
//! twin of the class before it, so each multi-class task has pairs that stay confusable even when
//! easy; retinamnist's grades lie on a line, so neighbouring grades are close; chestmnist draws
//! each finding as an independent opacity. The three organ flags are views of the same organs and
//! share their class looks up to a per-view offset, so within-modality transfer has something to
//! find. Everything is a pure function of the seed: the same
//! options write byte-identical files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::dataset::Split;
use crate::data::medmnist::{medmnist_file_name, medmnist_root};
use crate::data::medmnist_info::{flag_info, FlagInfo, TaskType, MEDMNIST_2D, MEDMNIST_SIZES};
use crate::data::npz::{NpyData, NpzReader, NpzWriter};
use crate::data::synth_draw::{render, Look, Style};
use crate::error::{Context, Result};

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    /// Flags to write; empty means all twelve.
    pub tasks: Vec<String>,
    pub size: u32,
    pub n_train: usize,
    pub n_val: usize,
    pub n_test: usize,
    /// 0 (strong class signal) to 1 (signal barely above the nuisances).
    pub difficulty: f64,
    /// Per-flag difficulty, overriding `difficulty`, so support can differ across tasks.
    pub task_difficulty: BTreeMap<String, f64>,
    pub seed: u64,
    pub out_dir: PathBuf,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            tasks: Vec::new(),
            size: 28,
            n_train: 500,
            n_val: 100,
            n_test: 200,
            difficulty: 0.3,
            task_difficulty: BTreeMap::new(),
            seed: 0,
            out_dir: medmnist_root().join("synthetic"),
        }
    }
}

/// Write one file per task into `out_dir`; returns the paths written. Refuses to overwrite a file
/// that is not itself synthetic, so a real download is never clobbered.
pub fn synth_medmnist(opts: &SynthOptions) -> Result<Vec<PathBuf>> {
    if !MEDMNIST_SIZES.contains(&opts.size) {
        crate::bail!("synth_medmnist: size {} is not a MedMNIST size; use 28, 64, 128 or 224", opts.size);
    }
    let infos: Vec<&'static FlagInfo> = if opts.tasks.is_empty() {
        MEDMNIST_2D.iter().collect()
    } else {
        opts.tasks.iter().map(|t| flag_info(t)).collect::<Result<_>>()?
    };
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| crate::error::Error::io(&opts.out_dir, e))?;
    let mut written = Vec::new();
    for info in infos {
        let difficulty = opts.task_difficulty.get(info.flag).copied().unwrap_or(opts.difficulty);
        if !(0.0..=1.0).contains(&difficulty) {
            crate::bail!("synth_medmnist: difficulty for {} must be in [0, 1], got {difficulty}", info.flag);
        }
        let path = opts.out_dir.join(medmnist_file_name(info.flag, opts.size));
        refuse_real_file(&path)?;
        write_task(info, difficulty as f32, opts, &path)
            .with_context(|| format!("synth_medmnist {}", info.flag))?;
        written.push(path);
    }
    Ok(written)
}

fn refuse_real_file(path: &Path) -> Result<()> {
    if path.exists() && !NpzReader::open(path).map(|r| r.has("synthetic")).unwrap_or(false) {
        crate::bail!("synth_medmnist: refusing to overwrite {}: it is not a synthetic file", path.display());
    }
    Ok(())
}

/// The class points of one task and how often each label occurs.
struct TaskModel {
    style: Style,
    task: TaskType,
    looks: Vec<Look>,
    mean: Look,
    /// Class weights (single-label) or finding prevalences (multi-label).
    rates: Vec<f64>,
}

fn flag_seed(seed: u64, flag: &str) -> u64 {
    flag.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn random_look(rng: &mut ChaCha8Rng) -> Look {
    std::array::from_fn(|_| rng.random::<f32>())
}

/// How far each view of the shared organ classes moves a class look (per look parameter, ±half).
const VIEW_SHIFT: f32 = 0.3;

/// organamnist, organcmnist and organsmnist are axial, coronal and sagittal views of the same
/// eleven organs, so their class looks come from one shared draw, each view moved by its own
/// offset: a model that learnt one view has partial, imperfect support on the others.
fn shared_looks_name(flag: &str) -> &str {
    match flag {
        "organamnist" | "organcmnist" | "organsmnist" => "organmnist",
        _ => flag,
    }
}

fn task_model(info: &FlagInfo, seed: u64) -> TaskModel {
    let n = info.n_classes();
    let shared = shared_looks_name(info.flag);
    let mut rng = ChaCha8Rng::seed_from_u64(flag_seed(seed, shared));
    let mut looks = class_looks(info, &mut rng);
    if shared != info.flag {
        rng = ChaCha8Rng::seed_from_u64(flag_seed(seed, info.flag));
        for look in &mut looks {
            look.iter_mut()
                .for_each(|v| *v = (*v + (rng.random::<f32>() - 0.5) * VIEW_SHIFT).clamp(0.0, 1.0));
        }
    }
    let mean = std::array::from_fn(|k| looks.iter().map(|l| l[k]).sum::<f32>() / n as f32);
    let rates = if info.task == TaskType::MultiLabel {
        (0..n).map(|_| 0.04 + 0.2 * rng.random::<f64>()).collect()
    } else {
        (0..n).map(|_| 0.5 + rng.random::<f64>()).collect()
    };
    TaskModel { style: Style::for_flag(info.flag), task: info.task, looks, mean, rates }
}

fn class_looks(info: &FlagInfo, rng: &mut ChaCha8Rng) -> Vec<Look> {
    let n = info.n_classes();
    match info.task {
        TaskType::OrdinalRegression => {
            let (a, b) = (random_look(rng), random_look(rng));
            (0..n)
                .map(|g| std::array::from_fn(|k| a[k] + (b[k] - a[k]) * g as f32 / (n - 1) as f32))
                .collect()
        }
        _ => {
            let mut looks: Vec<Look> = Vec::with_capacity(n);
            for c in 0..n {
                let look = if info.task == TaskType::MultiClass && c % 3 == 2 {
                    let twin = looks[c - 1];
                    std::array::from_fn(|k| (twin[k] + (rng.random::<f32>() - 0.5) * 0.24).clamp(0.0, 1.0))
                } else {
                    random_look(rng)
                };
                looks.push(look);
            }
            looks
        }
    }
}

fn write_task(info: &FlagInfo, difficulty: f32, opts: &SynthOptions, path: &Path) -> Result<()> {
    let model = task_model(info, opts.seed);
    let size = opts.size as usize;
    let mut npz = NpzWriter::create(path)?;
    for (split, n) in [(Split::Train, opts.n_train), (Split::Val, opts.n_val), (Split::Test, opts.n_test)] {
        let base = flag_seed(opts.seed, info.flag) ^ ((split as u64 + 1) << 56);
        let labels = sample_labels(&model, n, &mut ChaCha8Rng::seed_from_u64(base));
        let width = info.label_width();
        let mut pixels = Vec::with_capacity(n * size * size * info.n_channels as usize);
        for (i, row) in labels.chunks(width).enumerate() {
            let mut rng =
                ChaCha8Rng::seed_from_u64(base ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            draw(&model, row, difficulty, size, &mut rng).to_bytes(info.n_channels as usize, &mut pixels);
        }
        let mut shape = vec![n, size, size];
        if info.n_channels == 3 {
            shape.push(3);
        }
        npz.add(&format!("{split}_images"), &shape, NpyData::U8(&pixels))?;
        npz.add(&format!("{split}_labels"), &[n, width], NpyData::U8(&labels))?;
    }
    npz.add("synthetic", &[1], NpyData::U8(&[1]))?;
    npz.finish()
}

/// Flat label rows: one class id each, or one 0/1 per finding.
fn sample_labels(model: &TaskModel, n: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    if model.task == TaskType::MultiLabel {
        return (0..n * model.rates.len())
            .map(|i| (rng.random::<f64>() < model.rates[i % model.rates.len()]) as u8)
            .collect();
    }
    let total: f64 = model.rates.iter().sum();
    (0..n)
        .map(|_| {
            let mut u = rng.random::<f64>() * total;
            let mut class = model.rates.len() - 1;
            for (c, w) in model.rates.iter().enumerate() {
                if u < *w {
                    class = c;
                    break;
                }
                u -= w;
            }
            class as u8
        })
        .collect()
}

fn draw(
    model: &TaskModel,
    row: &[u8],
    difficulty: f32,
    size: usize,
    rng: &mut ChaCha8Rng,
) -> crate::data::synth_draw::Canvas {
    let strength = 1.0 - 0.6 * difficulty;
    let spread = 0.03 + 0.25 * difficulty;
    let nuisance = 0.3 + 0.7 * difficulty;
    let centre = if model.task == TaskType::MultiLabel { model.mean } else { model.looks[row[0] as usize] };
    let look: Look = std::array::from_fn(|k| {
        let noise = (rng.random::<f32>() + rng.random::<f32>() - 1.0) * 2.0 * spread;
        (model.mean[k] + (centre[k] - model.mean[k]) * strength + noise).clamp(0.0, 1.0)
    });
    let mut canvas = render(model.style, &look, nuisance, size, rng);
    if model.task == TaskType::MultiLabel {
        for (finding, _) in row.iter().enumerate().filter(|(_, &present)| present == 1) {
            let f = &model.looks[finding];
            let (x, y) = (0.25 + 0.5 * f[0], 0.2 + 0.6 * f[1]);
            let bright = 0.35 + 0.6 * f[5];
            canvas.ellipse(
                x,
                y,
                0.05 + 0.1 * f[2],
                0.05 + 0.1 * f[3],
                f[4] * 3.0,
                0.1,
                [bright; 3],
                0.7 * strength,
            );
        }
    }
    canvas
}

/// The train and test splits of one synthetic flag written into `dir`, for tests that need a
/// small labelled dataset.
#[cfg(test)]
pub(crate) fn synthetic_splits(
    dir: &Path,
    flag: &str,
    (n_train, n_test): (usize, usize),
    difficulty: f64,
    seed: u64,
) -> (crate::data::Dataset, crate::data::Dataset) {
    use crate::data::medmnist::{load_medmnist, MedmnistOptions};
    let opts = SynthOptions {
        tasks: vec![flag.into()],
        n_train,
        n_val: 2,
        n_test,
        difficulty,
        seed,
        out_dir: dir.to_path_buf(),
        ..Default::default()
    };
    synth_medmnist(&opts).unwrap();
    let load = |split| {
        load_medmnist(flag, &MedmnistOptions { split, root: Some(dir.into()), ..Default::default() }).unwrap()
    };
    (load(Split::Train), load(Split::Test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::medmnist::{load_medmnist, MedmnistOptions};
    use crate::data::Dataset;

    fn opts(dir: &Path, tasks: &[&str], difficulty: f64, seed: u64) -> SynthOptions {
        SynthOptions {
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            n_train: 300,
            n_val: 20,
            n_test: 150,
            difficulty,
            seed,
            out_dir: dir.to_path_buf(),
            ..Default::default()
        }
    }

    #[test]
    fn the_organ_views_share_class_looks_and_other_flags_do_not() {
        let looks = |flag: &str| task_model(flag_info(flag).unwrap(), 0).looks;
        let distance = |a: &[Look], b: &[Look]| -> f32 {
            let pairs = a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y));
            pairs.map(|(u, v)| (u - v).abs()).sum::<f32>() / (a.len() * 8) as f32
        };
        let (axial, coronal) = (looks("organamnist"), looks("organcmnist"));
        let views = distance(&axial, &coronal);
        assert!(views <= VIEW_SHIFT / 2.0, "views differ by {views}");
        let unrelated = distance(
            &axial,
            &looks("bloodmnist")[..8].iter().chain(&looks("pathmnist")[..3]).copied().collect::<Vec<_>>(),
        );
        assert!(unrelated > 2.0 * views, "unrelated {unrelated} vs views {views}");
    }

    #[test]
    fn same_seed_writes_identical_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let tasks = ["dermamnist", "chestmnist", "bloodmnist"];
        let pa = synth_medmnist(&opts(a.path(), &tasks, 0.5, 9)).unwrap();
        let pb = synth_medmnist(&opts(b.path(), &tasks, 0.5, 9)).unwrap();
        for (x, y) in pa.iter().zip(&pb) {
            assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap(), "{}", x.display());
        }
        let c = tempfile::tempdir().unwrap();
        let pc = synth_medmnist(&opts(c.path(), &tasks, 0.5, 10)).unwrap();
        assert_ne!(std::fs::read(&pa[0]).unwrap(), std::fs::read(&pc[0]).unwrap());
    }

    #[test]
    fn the_loader_reads_every_synthetic_flag_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let o = SynthOptions { size: 64, ..opts(dir.path(), &[], 0.3, 1) };
        let paths = synth_medmnist(&o).unwrap();
        assert_eq!(paths.len(), 12);
        for info in &MEDMNIST_2D {
            let lo = MedmnistOptions {
                root: Some(dir.path().into()),
                size: 64,
                split: Split::Val,
                ..Default::default()
            };
            let ds = load_medmnist(info.flag, &lo).unwrap();
            assert_eq!(ds.len(), 20);
            assert_eq!(ds.get(0).unwrap().image.channels(), info.n_channels);
            assert!(ds.warnings().is_empty(), "synthetic sizes are not news: {:?}", ds.warnings());
        }
    }

    #[test]
    fn a_real_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = NpzWriter::create(&dir.path().join("pathmnist.npz")).unwrap();
        w.add("test_labels", &[1, 1], NpyData::U8(&[0])).unwrap();
        w.finish().unwrap();
        let err = synth_medmnist(&opts(dir.path(), &["pathmnist"], 0.1, 0)).unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
    }

    /// Nearest-centroid accuracy on raw pixels: a crude probe of how much class signal there is.
    fn centroid_accuracy(train: &Dataset, test: &Dataset, classes: usize) -> f64 {
        let dim = train.get(0).unwrap().image.pixels().len();
        let mut sums = vec![vec![0f64; dim]; classes];
        let mut counts = vec![0usize; classes];
        for item in train {
            let c = item.label.unwrap();
            counts[c] += 1;
            sums[c].iter_mut().zip(item.image.pixels()).for_each(|(s, &p)| *s += p as f64);
        }
        let centroids: Vec<Vec<f64>> =
            sums.iter().zip(&counts).map(|(s, &n)| s.iter().map(|v| v / n.max(1) as f64).collect()).collect();
        let hits = test
            .iter()
            .filter(|item| {
                let dist = |c: &Vec<f64>| {
                    c.iter().zip(item.image.pixels()).map(|(a, &b)| (a - b as f64).powi(2)).sum::<f64>()
                };
                let best = (0..classes)
                    .min_by(|&a, &b| dist(&centroids[a]).total_cmp(&dist(&centroids[b])))
                    .unwrap();
                Some(best) == item.label
            })
            .count();
        hits as f64 / test.len() as f64
    }

    #[test]
    fn difficulty_controls_the_class_signal() {
        for flag in ["organamnist", "dermamnist"] {
            let mut acc = Vec::new();
            for difficulty in [0.0, 1.0] {
                let dir = tempfile::tempdir().unwrap();
                synth_medmnist(&opts(dir.path(), &[flag], difficulty, 4)).unwrap();
                let load = |split| {
                    load_medmnist(
                        flag,
                        &MedmnistOptions { root: Some(dir.path().into()), split, ..Default::default() },
                    )
                    .unwrap()
                };
                let classes = flag_info(flag).unwrap().n_classes();
                acc.push(centroid_accuracy(&load(Split::Train), &load(Split::Test), classes));
            }
            assert!(acc[0] > 0.6 && acc[0] > acc[1] + 0.15, "{flag}: easy {} vs hard {}", acc[0], acc[1]);
        }
    }
}
