//! A benchmark named by its hub dataset id (`load_vqa("medvlthinker", "UCSC-VLAA/MedVLThinker-Eval")`):
//! the split's files come from the Hugging Face cache, downloaded first through the same hub
//! client as checkpoints (`repo_type = dataset`) when they are not there.
//!
//! | layout | files fetched |
//! | --- | --- |
//! | parquet (`medvlthinker`, `vqa_rad`, `path_vqa`) | every `{split}*.parquet` at the top or under `data/` |
//! | `pmc_vqa` | `{split}_2.csv` (else `{split}.csv`) and the matching `images_2.zip` / `images.zip` |
//! | `slake` | `{split}.json` and `imgs.zip` |
//! | `jsonl`, `medbridgerl_jsonl` | `{split}.jsonl` (`data.jsonl`); pictures by their own paths |
//!
//! An image archive is unpacked once into `extracted/<commit>/<archive name>/` inside the repo's
//! cache folder (beside `blobs/` and `snapshots/`), through a temporary folder and a rename, so a
//! folder under that name is always complete.

use std::path::{Path, PathBuf};

use crate::data::dataset::Split;
use crate::data::vqa::VqaKind;
use crate::error::{Error, Result};
use crate::hub::{self, Hub, HubConfig, Origin, RepoKind, RepoRef};

/// What the loader reads: the snapshot folder and the unpacked image folders.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub dir: PathBuf,
    pub image_dirs: Vec<PathBuf>,
}

/// The split's files of dataset `id` at `revision`, from the cache or (with `download`) the hub.
pub fn fetch_benchmark(
    kind: VqaKind,
    id: &str,
    revision: Option<&str>,
    split: Split,
    download: bool,
    cfg: &HubConfig,
) -> Result<(Fetched, Origin)> {
    let repo = RepoRef::new(RepoKind::Dataset, id, revision);
    let mut origin =
        Origin { repo: Some(id.to_string()), revision: Some(repo.revision.clone()), ..Origin::default() };
    if let Some(snapshot) = hub::cached_snapshot(&cfg.cache_dir, &repo) {
        let files: Vec<String> = local_files(&snapshot.dir);
        if let Ok(plan) = plan(kind, split, &files) {
            let folder = repo.cache_folder(&cfg.cache_dir);
            let image_dirs: Vec<PathBuf> =
                plan.archives.iter().map(|a| extracted_dir(&folder, &snapshot.commit, a)).collect();
            if plan.files.iter().all(|f| snapshot.has(f)) && image_dirs.iter().all(|d| d.is_dir()) {
                origin.commit = Some(snapshot.commit.clone());
                return Ok((Fetched { dir: snapshot.dir, image_dirs }, origin));
            }
        }
    }
    if cfg.net.offline || !download {
        return Err(hub::not_cached(
            cfg,
            &repo,
            &format!("its {} files for split {split}", kind.as_str()),
            !download,
        ));
    }
    let hub = Hub::new(cfg)?;
    let remote = hub.info(&repo)?;
    let names: Vec<String> = remote.files.iter().cloned().collect();
    let plan = plan(kind, split, &names).map_err(|e| {
        let listing: Vec<&str> = names.iter().take(20).map(String::as_str).collect();
        Error::msg(format!(
            "{} (commit {}): {e}; the repo has {}{}",
            repo.describe(),
            remote.commit,
            listing.join(", "),
            if names.len() > 20 { ", ..." } else { "" }
        ))
    })?;
    let commit = remote.commit.clone();
    let folder = repo.cache_folder(&cfg.cache_dir);
    let before = hub::cached_snapshot(&cfg.cache_dir, &RepoRef::new(RepoKind::Dataset, id, Some(&commit)));
    let had = |f: &str| before.as_ref().is_some_and(|s| s.has(f));
    for file in plan.files.iter().chain(&plan.archives) {
        if !had(file) {
            origin.downloaded.push(file.clone());
        }
    }
    for file in &plan.files {
        hub.fetch(&repo, &commit, file)?;
    }
    let mut image_dirs = Vec::new();
    for archive in &plan.archives {
        let zip = hub.fetch(&repo, &commit, archive)?;
        let target = extracted_dir(&folder, &commit, archive);
        unpack(&zip, &target, cfg)?;
        image_dirs.push(target);
    }
    hub.finish(&repo, &commit)?;
    origin.commit = Some(commit.clone());
    Ok((Fetched { dir: folder.join("snapshots").join(&commit), image_dirs }, origin))
}

/// The files (relative to the snapshot) and image archives a layout's split needs.
struct Plan {
    files: Vec<String>,
    archives: Vec<String>,
}

fn split_names(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &["train"],
        Split::Val => &["validation", "validate", "val", "valid", "dev"],
        Split::Test => &["test"],
    }
}

fn plan(kind: VqaKind, split: Split, files: &[String]) -> Result<Plan> {
    let names = split_names(split);
    let has = |f: &str| files.iter().any(|x| x == f);
    let first = |candidates: Vec<String>| candidates.into_iter().find(|c| has(c));
    let plan = match kind {
        VqaKind::MedVlThinker | VqaKind::VqaRad | VqaKind::PathVqa => {
            let parquet: Vec<String> = files
                .iter()
                .filter(|f| {
                    let (dir, name) = f.rsplit_once('/').unwrap_or(("", f));
                    (dir.is_empty() || dir == "data")
                        && name.ends_with(".parquet")
                        && names.iter().any(|s| name.starts_with(s))
                })
                .cloned()
                .collect();
            Plan { files: parquet, archives: vec![] }
        }
        VqaKind::PmcVqa => {
            let csv = first(names.iter().flat_map(|s| [format!("{s}_2.csv"), format!("{s}.csv")]).collect());
            let archive = match &csv {
                Some(c) if c.ends_with("_2.csv") && has("images_2.zip") => Some("images_2.zip".to_string()),
                Some(_) => first(vec!["images.zip".into(), "images_2.zip".into()]),
                None => None,
            };
            Plan { files: csv.into_iter().collect(), archives: archive.into_iter().collect() }
        }
        VqaKind::Slake => {
            let json = first(names.iter().map(|s| format!("{s}.json")).collect());
            let archive = first(vec!["imgs.zip".into()]);
            Plan { files: json.into_iter().collect(), archives: archive.into_iter().collect() }
        }
        VqaKind::Jsonl => Plan {
            files: first(names.iter().map(|s| format!("{s}.jsonl")).collect()).into_iter().collect(),
            archives: vec![],
        },
        VqaKind::MedbridgeRlJsonl => {
            let candidates =
                std::iter::once("data").chain(names.iter().copied()).map(|s| format!("{s}.jsonl")).collect();
            Plan { files: first(candidates).into_iter().collect(), archives: vec![] }
        }
    };
    if plan.files.is_empty() {
        crate::bail!("no {} file for split {split}", kind.as_str());
    }
    Ok(plan)
}

/// Files under a snapshot folder, as relative paths with `/`.
fn local_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out
}

fn extracted_dir(repo_folder: &Path, commit: &str, archive: &str) -> PathBuf {
    let stem = archive.trim_end_matches(".zip").replace('/', "_");
    repo_folder.join("extracted").join(commit).join(stem)
}

/// Unpack `zip` into `target` whole or not at all: into a temporary sibling, then a rename.
/// Entries that would land outside the folder (`../`, absolute paths) are refused.
fn unpack(zip: &Path, target: &Path, cfg: &HubConfig) -> Result<()> {
    if target.is_dir() {
        return Ok(());
    }
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        target.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| -> Result<()> {
        let file = std::fs::File::open(zip).map_err(|e| Error::io(zip, e))?;
        let mut archive = zip::ZipArchive::new(file)
            .map_err(|e| Error::msg(format!("{}: not a readable zip archive: {e}", zip.display())))?;
        let bar = cfg.net.progress.bar(archive.len() as u64, "unpacking");
        for i in 0..archive.len() {
            if let Some(c) = &cfg.net.cancel {
                c.check(|| format!("unpacking {}", zip.display()))?;
            }
            let mut entry =
                archive.by_index(i).map_err(|e| Error::msg(format!("{}: entry {i}: {e}", zip.display())))?;
            let Some(name) = entry.enclosed_name() else {
                crate::bail!(
                    "{}: entry {:?} points outside the archive's folder",
                    zip.display(),
                    entry.name()
                );
            };
            let out = tmp.join(name);
            if entry.is_dir() {
                std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
            } else {
                if let Some(p) = out.parent() {
                    std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
                }
                let mut w = std::fs::File::create(&out).map_err(|e| Error::io(&out, e))?;
                std::io::copy(&mut entry, &mut w)
                    .map_err(|e| Error::msg(format!("{}: entry {}: {e}", zip.display(), out.display())))?;
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, target).map_err(|e| Error::io(target, e))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use super::*;
    use crate::data::vqa::{load_vqa, VqaOptions};
    use crate::hub::test_server::HubServer;
    use crate::hub::Net;
    use crate::run::ProgressMode;

    const SHA: &str = "fedcba9876543210fedcba9876543210fedcba98";

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/data/vqa/fixtures").join(path)).unwrap()
    }

    fn cfg(server: &HubServer, cache: &Path) -> HubConfig {
        HubConfig {
            endpoint: server.url(),
            cache_dir: cache.to_path_buf(),
            token: None,
            net: Net { offline: false, retries: 0, progress: ProgressMode::Quiet, cancel: None },
        }
    }

    fn load(kind: VqaKind, fetched: &Fetched) -> crate::task::McqTask {
        let opts = VqaOptions { image_dirs: fetched.image_dirs.clone(), ..VqaOptions::default() };
        load_vqa(kind, &fetched.dir, &opts).unwrap()
    }

    #[test]
    fn a_parquet_benchmark_by_id_is_fetched_once() {
        let server = HubServer::start();
        let files = BTreeMap::from([
            ("data/test-00000-of-00001.parquet".to_string(), fixture("medvlthinker/test.parquet")),
            ("data/train-00000-of-00001.parquet".to_string(), b"not fetched".to_vec()),
            ("README.md".to_string(), b"# eval".to_vec()),
        ]);
        server.add_repo("datasets/UCSC-VLAA/MedVLThinker-Eval", SHA, files, None);
        let cache = tempfile::tempdir().unwrap();
        let c = cfg(&server, cache.path());
        let id = "UCSC-VLAA/MedVLThinker-Eval";
        let (fetched, origin) =
            fetch_benchmark(VqaKind::MedVlThinker, id, None, Split::Test, true, &c).unwrap();
        assert_eq!(origin.downloaded, ["data/test-00000-of-00001.parquet"]);
        assert_eq!(origin.commit.as_deref(), Some(SHA));
        assert_eq!(load(VqaKind::MedVlThinker, &fetched).len(), 4);
        assert!(!server.requests().iter().any(|r| r.path.contains("train-")));

        server.clear_log();
        let (again, _) = fetch_benchmark(VqaKind::MedVlThinker, id, None, Split::Test, true, &c).unwrap();
        assert_eq!(again.dir, fetched.dir);
        assert!(server.requests().is_empty());

        let e = fetch_benchmark(VqaKind::MedVlThinker, "org/none", None, Split::Test, true, &c).unwrap_err();
        assert!(e.to_string().contains("dataset `org/none`") && e.to_string().contains("404"), "{e}");
        let offline = HubConfig { net: Net { offline: true, ..c.net.clone() }, ..c.clone() };
        let e = fetch_benchmark(VqaKind::MedVlThinker, id, None, Split::Val, true, &offline).unwrap_err();
        assert!(e.to_string().contains("--offline") && e.to_string().contains("--repo-type dataset"), "{e}");
    }

    #[test]
    fn pmc_vqa_by_id_unpacks_its_image_archive() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/data/vqa/fixtures/pmc_vqa");
        let csv = std::fs::read(dir.join("test_2.csv")).unwrap();
        // The archive holds the fixture's pictures under `figures/`.
        let mut zip_bytes = Vec::new();
        {
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
            let opts = zip::write::SimpleFileOptions::default();
            for sub in ["", "images", "figures"] {
                for entry in std::fs::read_dir(dir.join(sub)).into_iter().flatten().flatten() {
                    let p = entry.path();
                    if p.is_file() && p.extension().is_some_and(|e| e != "csv") {
                        let name = format!("figures/{}", entry.file_name().to_string_lossy());
                        w.start_file(name, opts).unwrap();
                        w.write_all(&std::fs::read(&p).unwrap()).unwrap();
                    }
                }
            }
            w.finish().unwrap();
        }
        let server = HubServer::start();
        let files =
            BTreeMap::from([("test_2.csv".to_string(), csv), ("images_2.zip".to_string(), zip_bytes)]);
        server.add_repo("datasets/xmcmic/PMC-VQA", SHA, files, None);
        let cache = tempfile::tempdir().unwrap();
        let c = cfg(&server, cache.path());
        let (fetched, _) =
            fetch_benchmark(VqaKind::PmcVqa, "xmcmic/PMC-VQA", None, Split::Test, true, &c).unwrap();
        assert_eq!(fetched.image_dirs.len(), 1);
        let task = load(VqaKind::PmcVqa, &fetched);
        assert!(!task.items().is_empty() && task.items().iter().all(|i| i.image.is_some()));
        server.clear_log();
        fetch_benchmark(VqaKind::PmcVqa, "xmcmic/PMC-VQA", None, Split::Test, true, &c).unwrap();
        assert!(server.requests().is_empty());
    }
}
