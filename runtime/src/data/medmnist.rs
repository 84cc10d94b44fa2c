//! Loads the official MedMNIST `.npz` files as they are downloaded.
//!
//! A file holds `{train,val,test}_{images,labels}`: images `N×H×W` (grey) or `N×H×W×3` `uint8`,
//! labels `N×L` integers. Names are `{flag}.npz` for 28 px and `{flag}_{size}.npz` otherwise, under
//! `MEDMNIST_ROOT` (default `~/.medmnist`, the medmnist package's own default). Only the requested
//! split is read, and rows are streamed out of the archive, so `limit` also bounds memory.
//!
//! Like `medmnist.PathMNIST(download=True)`, `download` fetches a missing file from the MedMNIST v3
//! Zenodo record (or `MEDMNIST_URL`, a mirror: `$MEDMNIST_URL/{file}`) and checks its MD5 against
//! the official table (`medmnist_md5.rs`) or the `md5` option; a present file is checked too and
//! replaced when it does not match. The bytes go to `{file}.part` and are renamed into place only
//! once the MD5 matches, so a file under its real name is always whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::dataset::{pick_positions, proportional_counts, Dataset, Item, Split};
use crate::data::medmnist_info::{
    flag_info, FlagInfo, ModalityTable, TaskType, MEDMNIST_DOI, MEDMNIST_SIZES, MEDMNIST_URL,
};
use crate::data::medmnist_md5::{official_md5, MEDMNIST_FILES_URL};
use crate::data::npz::{IntType, NpzReader};
use crate::error::{Context, Error, Result};
use crate::hub::{file_digest, transfer, Checksum, Net};
use crate::image::Image;

/// How to load one flag.
#[derive(Clone, Debug)]
pub struct MedmnistOptions {
    pub split: Split,
    /// 28, 64, 128 or 224.
    pub size: u32,
    /// Keep at most this many items: the first ones, or a seeded class-proportional sample when
    /// `stratified` is set.
    pub limit: Option<usize>,
    pub stratified: bool,
    pub seed: u64,
    /// Directory of the `.npz` files; `None` means `MEDMNIST_ROOT` or `~/.medmnist`.
    pub root: Option<PathBuf>,
    pub modalities: ModalityTable,
    /// Fetch the file when it is missing or fails its MD5 (into `root`).
    pub download: bool,
    /// The MD5 to expect instead of the official one (a mirror's own file). Given without
    /// `download`, a present file is checked against it.
    pub md5: Option<String>,
    /// Base URL of the files; `None` means `MEDMNIST_URL`, else the Zenodo record.
    pub url: Option<String>,
    pub net: Net,
}

impl Default for MedmnistOptions {
    fn default() -> Self {
        MedmnistOptions {
            split: Split::Test,
            size: 28,
            limit: None,
            stratified: false,
            seed: 0,
            root: None,
            modalities: ModalityTable::default(),
            download: false,
            md5: None,
            url: None,
            net: Net::default(),
        }
    }
}

/// `MEDMNIST_ROOT` if set, else `~/.medmnist`.
pub fn medmnist_root() -> PathBuf {
    if let Some(root) = std::env::var_os("MEDMNIST_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(root);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".medmnist")
}

/// The official file name of a flag at a size: `pathmnist.npz`, `pathmnist_224.npz`.
pub fn medmnist_file_name(flag: &str, size: u32) -> String {
    if size == 28 {
        format!("{flag}.npz")
    } else {
        format!("{flag}_{size}.npz")
    }
}

/// Load one split of one flag.
pub fn load_medmnist(flag: &str, opts: &MedmnistOptions) -> Result<Dataset> {
    let info = flag_info(flag)?;
    if !MEDMNIST_SIZES.contains(&opts.size) {
        crate::bail!(
            "medmnist {}: size {} is not published; use one of 28, 64, 128, 224",
            info.flag,
            opts.size
        );
    }
    let modality = opts.modalities.get(info.flag)?;
    let root = opts.root.clone().unwrap_or_else(medmnist_root);
    let name = medmnist_file_name(info.flag, opts.size);
    let path = root.join(&name);
    let mut warnings = Vec::new();
    if opts.download || opts.md5.is_some() {
        ensure_file(info.flag, opts, &root, &name, &mut warnings)?;
    }
    if !path.is_file() {
        crate::bail!(
            "MedMNIST file not found: {}. Pass `download: true` to fetch it, download {name} from \
             {MEDMNIST_URL} (DOI {MEDMNIST_DOI}) into {}, set MEDMNIST_ROOT to the folder that holds it, \
             or write a synthetic stand-in with synth_medmnist",
            path.display(),
            root.display()
        );
    }
    let ds =
        read_split(&path, info, opts, modality).with_context(|| format!("loading medmnist {}", info.flag))?;
    if warnings.is_empty() {
        return Ok(ds);
    }
    warnings.extend(ds.warnings().iter().cloned());
    Ok(ds.with_warnings(warnings))
}

/// Where `name` is fetched from: `url`, else `MEDMNIST_URL`, else the Zenodo record.
pub fn medmnist_url(url: Option<&str>, name: &str) -> String {
    let base = url
        .map(str::to_string)
        .or_else(|| std::env::var("MEDMNIST_URL").ok())
        .map(|b| b.trim().trim_end_matches('/').to_string())
        .filter(|b| !b.is_empty());
    match base {
        Some(base) => format!("{base}/{name}"),
        None => format!("{MEDMNIST_FILES_URL}/{name}?download=1"),
    }
}

/// Check a present file's MD5 and, with `download`, fetch a missing or mismatching one.
fn ensure_file(
    flag: &str,
    opts: &MedmnistOptions,
    root: &Path,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let path = root.join(name);
    let (expected, origin) = match &opts.md5 {
        Some(m) => (m.trim().to_ascii_lowercase(), "the `md5` option"),
        None => match official_md5(flag, opts.size) {
            Some(m) => (m.to_string(), "the official checksum (medmnist's info.py)"),
            None => crate::bail!("medmnist {flag}: no official MD5 for size {}", opts.size),
        },
    };
    if expected.len() != 32 || !expected.chars().all(|c| c.is_ascii_hexdigit()) {
        crate::bail!("medmnist {flag}: `md5` must be 32 hex digits, got {expected:?}");
    }
    let url = medmnist_url(opts.url.as_deref(), name);
    let stamp = root.join(format!(".{name}.md5"));
    if path.is_file() {
        let actual = checked_md5(&path, &stamp, opts)?;
        if actual == expected {
            return Ok(());
        }
        if !opts.download {
            crate::bail!(
                "{}: MD5 is {actual}, expected {expected} ({origin}): the file is damaged or not the \
                 published one. Pass `download: true` to replace it with a fresh download from {url}, \
                 or delete it",
                path.display()
            );
        }
        warnings.push(format!(
            "{}: MD5 was {actual}, expected {expected}; replaced with a fresh download from {url}",
            path.display()
        ));
        // A file known to be wrong must not stay where a later run would read it.
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        let _ = std::fs::remove_file(&stamp);
    }
    if !opts.download {
        return Ok(());
    }
    if opts.net.offline {
        crate::bail!(
            "MedMNIST file {name} is not in {} and the network is off (--offline or HF_HUB_OFFLINE=1): \
             download it from {url} on a machine with network into MEDMNIST_ROOT",
            root.display()
        );
    }
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let agent = transfer::agent();
    transfer::Transfer {
        agent: &agent,
        url: url.clone(),
        authorization: None,
        dest: path.clone(),
        part: root.join(format!("{name}.part")),
        lock: Some(root.join(format!(".{name}.lock"))),
        size: None,
        checksum: Checksum::Md5(expected.clone()),
        label: name.to_string(),
        what: format!("MedMNIST file {name}"),
    }
    .run(&opts.net)
    .map_err(|e| {
        if opts.md5.is_none() && e.to_string().contains("MD5 is") {
            Error::msg(format!(
                "{e} (the expected MD5 is {origin}; a mirror serving its own build of the file needs \
                 `md5: \"<its checksum>\"`)"
            ))
        } else {
            e
        }
    })?;
    write_stamp(&path, &stamp, &expected);
    Ok(())
}

/// A file's MD5, read from the stamp a download left when the file's size and modification time
/// still match it (hashing a 224 px file takes seconds), else computed.
fn checked_md5(path: &Path, stamp: &Path, opts: &MedmnistOptions) -> Result<String> {
    if let (Ok(text), Some(key)) = (std::fs::read_to_string(stamp), stamp_key(path)) {
        if let Some((md5, rest)) = text.trim().split_once(' ') {
            if rest == key {
                return Ok(md5.to_string());
            }
        }
    }
    let md5 = file_digest(path, &Checksum::Md5(String::new()), opts.net.cancel.as_ref())?;
    if opts.download {
        write_stamp(path, stamp, &md5);
    }
    Ok(md5)
}

fn stamp_key(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(format!("{} {}.{:09}", meta.len(), modified.as_secs(), modified.subsec_nanos()))
}

fn write_stamp(path: &Path, stamp: &Path, md5: &str) {
    if let Some(key) = stamp_key(path) {
        let _ = std::fs::write(stamp, format!("{md5} {key}\n"));
    }
}

fn read_split(
    path: &Path,
    info: &'static FlagInfo,
    opts: &MedmnistOptions,
    modality: crate::data::medmnist_info::Modality,
) -> Result<Dataset> {
    let mut npz = NpzReader::open(path)?;
    let synthetic = npz.has("synthetic");
    let split = opts.split;
    let file = path.display().to_string();

    let (label_rows, width) = read_labels(&mut npz, info, &format!("{split}_labels"), &file)?;
    let n = label_rows.len() / width.max(1);
    let mut warnings = Vec::new();
    let official = match split {
        Split::Train => info.n_samples.train,
        Split::Val => info.n_samples.val,
        Split::Test => info.n_samples.test,
    };
    // Synthetic files choose their own sizes; only a real file with unusual counts is news.
    if n != official && !synthetic {
        warnings.push(format!(
            "{file}: {split} has {n} samples, the official {} split has {official}",
            info.flag
        ));
    }

    let rows = select_rows(&label_rows, width, opts);
    let key = format!("{split}_images");
    let mut images = npz.array(&key)?;
    let header = images.header.clone();
    if header.int_type != Some(IntType::U8) {
        crate::bail!("{file}: {key} has dtype {}, expected uint8 (|u1)", header.descr);
    }
    let (h, w, c) = match header.shape[..] {
        [_, h, w] => (h, w, 1),
        [_, h, w, c] if c == 1 || c == 3 => (h, w, c),
        _ => crate::bail!("{file}: {key} has shape {:?}, expected N×H×W or N×H×W×3", header.shape),
    };
    if header.shape[0] != n {
        crate::bail!("{file}: {key} has {} images but {split}_labels has {n} rows", header.shape[0]);
    }
    if h != opts.size as usize || w != opts.size as usize {
        crate::bail!("{file}: {key} are {h}×{w}, but the file name says {} px", opts.size);
    }
    if c != info.n_channels as usize {
        warnings.push(format!(
            "{file}: {key} have {c} channel(s), the official {} has {}",
            info.flag, info.n_channels
        ));
    }

    let flag: Arc<str> = info.flag.into();
    let row_bytes = h * w * c;
    let mut buf = vec![0u8; row_bytes];
    let mut items = Vec::with_capacity(rows.len());
    let mut next = 0usize;
    for &row in &rows {
        while next <= row {
            images.read_bytes(&mut buf)?;
            next += 1;
        }
        let labels = label_rows[row * width..(row + 1) * width].to_vec();
        let label = (info.task != TaskType::MultiLabel).then(|| labels[0] as usize);
        items.push(Item {
            image: Image::new(w as u32, h as u32, c as u8, buf.clone())?,
            label,
            labels,
            flag: flag.clone(),
            modality,
            split,
            index: row,
        });
    }
    Ok(Dataset::new(items).with_warnings(warnings))
}

/// The label array as flat `i64` rows of `width`, checked against the flag's task.
fn read_labels(npz: &mut NpzReader, info: &FlagInfo, key: &str, file: &str) -> Result<(Vec<i64>, usize)> {
    let mut stream = npz.array(key)?;
    let shape = stream.header.shape.clone();
    let width = match shape[..] {
        [_] => 1,
        [_, l] => l,
        _ => crate::bail!("{file}: {key} has shape {shape:?}, expected N×L"),
    };
    if stream.header.int_type.is_none() {
        crate::bail!("{file}: {key} has dtype {}, expected an integer type", stream.header.descr);
    }
    if width != info.label_width() {
        crate::bail!("{file}: {key} rows have {width} values, {} expects {}", info.flag, info.label_width());
    }
    let values = stream.read_all_ints()?;
    let limit = if info.task == TaskType::MultiLabel { 2 } else { info.n_classes() as i64 };
    if let Some((i, v)) = values.iter().enumerate().find(|(_, &v)| v < 0 || v >= limit) {
        crate::bail!("{file}: {key} row {} holds {v}, outside 0..{limit} for {}", i / width, info.flag);
    }
    Ok((values, width))
}

/// Which rows to keep: all, the first `limit`, or a seeded class-proportional sample.
fn select_rows(labels: &[i64], width: usize, opts: &MedmnistOptions) -> Vec<usize> {
    let n = labels.len() / width.max(1);
    match opts.limit {
        None => (0..n).collect(),
        Some(limit) if !opts.stratified => (0..n.min(limit)).collect(),
        Some(limit) => {
            let mut by_row: std::collections::BTreeMap<&[i64], Vec<usize>> = Default::default();
            for row in 0..n {
                by_row.entry(&labels[row * width..(row + 1) * width]).or_default().push(row);
            }
            let groups: Vec<Vec<usize>> = by_row.into_values().collect();
            let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
            pick_positions(&groups, &proportional_counts(&sizes, limit), opts.seed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::npz::{NpyData, NpzWriter};

    /// Write a file in the official layout with `n` rows per split.
    fn write(dir: &Path, name: &str, n: usize, hw: usize, channels: usize, label_width: usize, classes: i64) {
        let mut w = NpzWriter::create(&dir.join(name)).unwrap();
        for split in ["train", "val", "test"] {
            let mut shape = vec![n, hw, hw];
            if channels == 3 {
                shape.push(3);
            }
            let pixels: Vec<u8> =
                (0..n * hw * hw * channels).map(|i| (i / (hw * hw * channels)) as u8).collect();
            w.add(&format!("{split}_images"), &shape, NpyData::U8(&pixels)).unwrap();
            let labels: Vec<u8> =
                (0..n * label_width).map(|i| ((i / label_width) as i64 % classes) as u8).collect();
            w.add(&format!("{split}_labels"), &[n, label_width], NpyData::U8(&labels)).unwrap();
        }
        w.finish().unwrap();
    }

    fn opts(dir: &Path, size: u32) -> MedmnistOptions {
        MedmnistOptions { root: Some(dir.to_path_buf()), size, ..Default::default() }
    }

    #[test]
    fn grey_and_rgb_files_load_at_every_size() {
        let dir = tempfile::tempdir().unwrap();
        for size in MEDMNIST_SIZES {
            write(dir.path(), &medmnist_file_name("pneumoniamnist", size), 3, size as usize, 1, 1, 2);
            write(dir.path(), &medmnist_file_name("dermamnist", size), 4, size as usize, 3, 1, 7);
            let grey = load_medmnist("pneumoniamnist", &opts(dir.path(), size)).unwrap();
            assert_eq!(grey.len(), 3);
            let item = grey.get(2).unwrap();
            assert_eq!((item.image.width(), item.image.channels(), item.label), (size, 1, Some(0)));
            assert!(item.image.pixels().iter().all(|&p| p == 2), "row 2 is read as row 2");
            let rgb = load_medmnist("dermamnist", &opts(dir.path(), size)).unwrap();
            assert_eq!((rgb.get(3).unwrap().image.channels(), rgb.get(3).unwrap().label), (3, Some(3)));
            assert_eq!(rgb.get(0).unwrap().flag.as_ref(), "dermamnist");
            assert!(rgb.warnings()[0].contains("official dermamnist split has 2005"), "{:?}", rgb.warnings());
        }
        assert!(
            dir.path().join("dermamnist.npz").is_file() && dir.path().join("dermamnist_224.npz").is_file()
        );
    }

    #[test]
    fn files_written_by_numpy_savez_compressed_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/data/fixtures/numpy");
        let grey = load_medmnist("breastmnist", &opts(&root, 28)).unwrap();
        let rgb =
            load_medmnist("dermamnist", &MedmnistOptions { split: Split::Train, ..opts(&root, 64) }).unwrap();
        for (ds, size, channels) in [(&grey, 28usize, 1usize), (&rgb, 64, 3)] {
            assert_eq!(ds.len(), 2);
            let item = ds.get(1).unwrap();
            assert_eq!((item.label, item.image.channels() as usize), (Some(1), channels));
            let (y, x) = (5, 9);
            assert_eq!(item.image.pixels()[(y * size + x) * channels], (40 + y + x) as u8);
        }
    }

    #[test]
    fn chest_items_are_multi_label() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "chestmnist.npz", 5, 28, 1, 14, 2);
        let ds = load_medmnist("chestmnist", &opts(dir.path(), 28)).unwrap();
        let item = ds.get(1).unwrap();
        assert_eq!((item.label, item.labels.len()), (None, 14));
        assert!(item.labels.iter().all(|&v| v == 1));
        assert_eq!(item.modality.as_str(), "radiology");
    }

    #[test]
    fn limits_take_the_first_rows_or_a_stratified_sample() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "octmnist.npz", 40, 28, 1, 1, 4);
        let first =
            load_medmnist("octmnist", &MedmnistOptions { limit: Some(6), ..opts(dir.path(), 28) }).unwrap();
        assert_eq!(first.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
        let o = MedmnistOptions { limit: Some(8), stratified: true, seed: 5, ..opts(dir.path(), 28) };
        let strat = load_medmnist("octmnist", &o).unwrap();
        for class in 0..4 {
            assert_eq!(strat.iter().filter(|i| i.label == Some(class)).count(), 2);
        }
        let again = load_medmnist("octmnist", &o).unwrap();
        assert_eq!(strat.items(), again.items());
        for item in strat.iter() {
            assert!(item.image.pixels().iter().all(|&p| p as usize == item.index));
        }
    }

    #[test]
    fn a_missing_file_names_the_file_and_where_it_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_medmnist("bloodmnist", &opts(dir.path(), 64)).unwrap_err().to_string();
        assert!(err.contains("bloodmnist_64.npz") && err.contains("zenodo"), "{err}");
        assert!(load_medmnist("bloodmnist", &opts(dir.path(), 32))
            .unwrap_err()
            .to_string()
            .contains("size 32"));
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = NpzWriter::create(&dir.path().join("breastmnist.npz")).unwrap();
        w.add("test_labels", &[2, 1], NpyData::U8(&[0, 1])).unwrap();
        w.add("test_images", &[2, 28, 28], NpyData::I64(&vec![0; 2 * 28 * 28])).unwrap();
        w.add("val_labels", &[2, 1], NpyData::U8(&[0, 5])).unwrap();
        w.add("val_images", &[2, 28, 28], NpyData::U8(&[0; 2 * 28 * 28])).unwrap();
        w.finish().unwrap();
        let load = |split| {
            load_medmnist("breastmnist", &MedmnistOptions { split, ..opts(dir.path(), 28) })
                .unwrap_err()
                .to_string()
        };
        let dtype = load(Split::Test);
        assert!(dtype.contains("test_images has dtype <i8, expected uint8"), "{dtype}");
        let missing = load(Split::Train);
        assert!(missing.contains("no array \"train_labels\""), "{missing}");
        let range = load(Split::Val);
        assert!(range.contains("row 1 holds 5"), "{range}");
    }

    #[test]
    fn wrong_rank_and_size_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = NpzWriter::create(&dir.path().join("retinamnist.npz")).unwrap();
        w.add("test_labels", &[1, 1], NpyData::U8(&[0])).unwrap();
        w.add("test_images", &[1, 28], NpyData::U8(&[0; 28])).unwrap();
        w.add("val_labels", &[1, 1, 1], NpyData::U8(&[0])).unwrap();
        w.finish().unwrap();
        write(dir.path(), "retinamnist_64.npz", 1, 28, 3, 1, 5);
        let err = load_medmnist("retinamnist", &opts(dir.path(), 28)).unwrap_err().to_string();
        assert!(err.contains("shape [1, 28]"), "{err}");
        let val = MedmnistOptions { split: Split::Val, ..opts(dir.path(), 28) };
        assert!(load_medmnist("retinamnist", &val).unwrap_err().to_string().contains("expected N×L"));
        let err = load_medmnist("retinamnist", &opts(dir.path(), 64)).unwrap_err().to_string();
        assert!(err.contains("the file name says 64"), "{err}");
    }

    mod download {
        use super::*;
        use crate::hub::test_server::{Fault, HubServer};
        use crate::run::ProgressMode;

        fn md5_hex(bytes: &[u8]) -> String {
            use md5::{Digest, Md5};
            Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
        }

        /// A server holding a synthetic `breastmnist.npz`, and options pointing at it.
        fn served() -> (HubServer, tempfile::TempDir, Vec<u8>, MedmnistOptions) {
            let src = tempfile::tempdir().unwrap();
            write(src.path(), "breastmnist.npz", 6, 28, 1, 1, 2);
            let bytes = std::fs::read(src.path().join("breastmnist.npz")).unwrap();
            let server = HubServer::start();
            server.add_raw("/mirror/breastmnist.npz", bytes.clone());
            let root = tempfile::tempdir().unwrap();
            let opts = MedmnistOptions {
                download: true,
                md5: Some(md5_hex(&bytes)),
                url: Some(format!("{}/mirror/", server.url())),
                net: Net { offline: false, retries: 0, progress: ProgressMode::Quiet, cancel: None },
                ..opts(root.path(), 28)
            };
            (server, root, bytes, opts)
        }

        fn files(dir: &Path) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }

        #[test]
        fn download_fetches_checks_and_then_reads_without_a_request() {
            let (server, root, bytes, o) = served();
            let ds = load_medmnist("breastmnist", &o).unwrap();
            assert_eq!(ds.len(), 6);
            assert_eq!(std::fs::read(root.path().join("breastmnist.npz")).unwrap(), bytes);
            assert!(!files(root.path()).iter().any(|f| f.ends_with(".part")), "{:?}", files(root.path()));
            assert_eq!(server.requests().len(), 1);
            load_medmnist("breastmnist", &o).unwrap();
            assert_eq!(server.requests().len(), 1, "a verified file is not fetched again");
            assert_eq!(medmnist_url(Some("http://m/"), "x.npz"), "http://m/x.npz");
            if std::env::var_os("MEDMNIST_URL").is_none() {
                let official = medmnist_url(None, "pathmnist_224.npz");
                assert_eq!(
                    official,
                    "https://zenodo.org/records/10519652/files/pathmnist_224.npz?download=1"
                );
            }
        }

        #[test]
        fn the_official_md5_rejects_a_mirror_file_and_keeps_nothing() {
            let (_server, root, _, o) = served();
            let official = MedmnistOptions { md5: None, ..o };
            let e = load_medmnist("breastmnist", &official).unwrap_err().to_string();
            assert!(e.contains("breastmnist.npz") && e.contains("750601b1f35ba3300ea97c75c52ff8f6"), "{e}");
            assert!(e.contains("md5:"), "{e}");
            assert!(!root.path().join("breastmnist.npz").exists());
            assert!(!files(root.path()).iter().any(|f| f.ends_with(".part")));
        }

        #[test]
        fn a_present_file_with_a_wrong_md5_is_named_then_replaced_on_download() {
            let (_server, root, bytes, o) = served();
            let path = root.path().join("breastmnist.npz");
            let mut damaged = bytes.clone();
            damaged[100] ^= 1;
            std::fs::write(&path, &damaged).unwrap();
            let check = MedmnistOptions { download: false, ..o.clone() };
            let e = load_medmnist("breastmnist", &check).unwrap_err().to_string();
            let want = o.md5.clone().unwrap();
            assert!(e.contains(&path.display().to_string()) && e.contains(&want), "{e}");
            assert!(e.contains(&md5_hex(&damaged)) && e.contains("download: true"), "{e}");
            // Without `download` or `md5`, the file is read as it is (today's behaviour).
            let plain = MedmnistOptions { download: false, md5: None, ..o.clone() };
            assert!(load_medmnist("breastmnist", &plain).is_ok());

            let ds = load_medmnist("breastmnist", &o).unwrap();
            assert!(ds.warnings().iter().any(|w| w.contains("replaced")), "{:?}", ds.warnings());
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }

        #[test]
        fn a_dropped_connection_resumes_and_a_truncated_file_is_refused() {
            let (server, root, bytes, o) = served();
            server.fault(Fault::Drop { suffix: "breastmnist.npz".into(), after: bytes.len() / 2, times: 1 });
            let e = load_medmnist("breastmnist", &o).unwrap_err().to_string();
            assert!(e.contains("breastmnist.npz") && e.contains("resume"), "{e}");
            assert!(!root.path().join("breastmnist.npz").exists());
            assert_eq!(
                std::fs::metadata(root.path().join("breastmnist.npz.part")).unwrap().len(),
                (bytes.len() / 2) as u64
            );
            load_medmnist("breastmnist", &o).unwrap();
            assert_eq!(std::fs::read(root.path().join("breastmnist.npz")).unwrap(), bytes);
            let last = server.requests().pop().unwrap();
            assert_eq!(last.range, Some(format!("bytes={}-", bytes.len() / 2)));

            let (server, root, _, o) = served();
            server.fault(Fault::Truncate { suffix: "breastmnist.npz".into(), len: 300 });
            let e = load_medmnist("breastmnist", &o).unwrap_err().to_string();
            assert!(e.contains("breastmnist.npz") && e.contains("MD5"), "{e}");
            assert!(!root.path().join("breastmnist.npz").exists());
        }

        #[test]
        fn offline_refuses_to_download() {
            let (server, root, _, mut o) = served();
            o.net.offline = true;
            let e = load_medmnist("breastmnist", &o).unwrap_err().to_string();
            assert!(e.contains("breastmnist.npz") && e.contains("--offline"), "{e}");
            assert!(server.requests().is_empty() && files(root.path()).is_empty());
        }
    }
}
