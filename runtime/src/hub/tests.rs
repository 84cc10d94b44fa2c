//! The hub client against the loopback hub in `test_server.rs`, serving the committed tiny
//! Qwen2.5-VL checkpoint: only 127.0.0.1 is ever contacted.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};

use super::test_server::{sha256_hex, Fault, HubServer};
use super::*;
use crate::image::Image;
use crate::models::qwen2_5_vl::load::{resolve_with, HubSource};
use crate::models::qwen2_5_vl::tests::fixture;
use crate::models::Vlm;
use crate::run::{CancelFlag, ProgressMode};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const SHARD1: &str = "model-00001-of-00002.safetensors";

/// A server with the fixture as `org/tiny` and a fresh cache.
fn setup() -> (HubServer, tempfile::TempDir, HubConfig) {
    let server = HubServer::start();
    server.add_repo("org/tiny", SHA, HubServer::folder_files(&fixture()), None);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&server, cache.path());
    (server, cache, cfg)
}

fn config(server: &HubServer, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: server.url(),
        cache_dir: cache.to_path_buf(),
        token: None,
        net: Net { offline: false, retries: 0, progress: ProgressMode::Quiet, cancel: None },
    }
}

fn source(cfg: &HubConfig) -> HubSource {
    HubSource { revision: None, download: true, hub: cfg.clone() }
}

fn load(id: &str, cfg: &HubConfig) -> crate::Result<(Vlm, crate::models::qwen2_5_vl::load::Origin)> {
    Vlm::load_with(id, &source(cfg), DType::F32, &Device::Cpu)
}

fn err(id: &str, cfg: &HubConfig) -> String {
    match load(id, cfg) {
        Ok(_) => panic!("{id} loaded"),
        Err(e) => e.to_string(),
    }
}

/// Every file under `dir`, relative paths, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn shard_bytes() -> Vec<u8> {
    std::fs::read(fixture().join(SHARD1)).unwrap()
}

#[test]
fn a_fresh_cache_downloads_loads_like_the_folder_and_then_needs_no_request() {
    let (server, cache, cfg) = setup();
    let (hub_model, origin) = load("org/tiny", &cfg).unwrap();
    assert_eq!(origin.commit.as_deref(), Some(SHA));
    assert_eq!(origin.revision.as_deref(), Some("main"));
    assert!(origin.downloaded.contains(&SHARD1.to_string()), "{:?}", origin.downloaded);
    assert!(!server.requests().is_empty());

    let local = Vlm::load(fixture().to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
    let image = Image::open(&fixture().join("image_grid.png")).unwrap();
    let a = hub_model.logits(Some(&image), "Which organ?").unwrap();
    let b = local.logits(Some(&image), "Which organ?").unwrap();
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(diff, 0.0);

    // The layout hf-hub and huggingface_hub share: refs/main → commit, snapshot links → blobs.
    let repo = cache.path().join("models--org--tiny");
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap().trim(), SHA);
    let link = repo.join("snapshots").join(SHA).join(SHARD1);
    assert!(link.is_symlink());
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../../blobs").join(sha256_hex(&shard_bytes())));
    assert_eq!(
        hf_hub::Cache::new(cache.path().to_path_buf()).model("org/tiny".into()).get(SHARD1),
        Some(link)
    );
    assert!(!tree(&repo).iter().any(|f| f.ends_with(".part")), "{:?}", tree(&repo));

    server.clear_log();
    let (_, again) = load("org/tiny", &cfg).unwrap();
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert!(again.downloaded.is_empty());
    // Offline, the cache alone serves it too.
    let offline = HubConfig { net: Net { offline: true, ..cfg.net.clone() }, ..cfg.clone() };
    load("org/tiny", &offline).unwrap();
    assert!(server.requests().is_empty());
}

#[test]
fn a_dropped_connection_resumes_on_the_next_call_byte_identical() {
    let (server, cache, cfg) = setup();
    let half = shard_bytes().len() / 2;
    server.fault(Fault::Drop { suffix: SHARD1.into(), after: half, times: 1 });
    let e = err("org/tiny", &cfg);
    assert!(e.contains(SHARD1) && e.contains("org/tiny") && e.contains("resume"), "{e}");
    let repo = cache.path().join("models--org--tiny");
    let blob = repo.join("blobs").join(sha256_hex(&shard_bytes()));
    let part = blob.with_extension("part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), half as u64);
    assert!(!blob.exists() && !repo.join("snapshots").join(SHA).join(SHARD1).exists());

    server.clear_log();
    load("org/tiny", &cfg).unwrap();
    let ranged: Vec<_> = server.requests().into_iter().filter(|r| r.path.starts_with("/cdn/")).collect();
    assert!(ranged.iter().any(|r| r.range.as_deref() == Some(&format!("bytes={half}-")[..])), "{ranged:?}");
    assert_eq!(std::fs::read(&blob).unwrap(), shard_bytes());
    assert!(!part.exists());
}

#[test]
fn retries_resume_within_one_call_and_a_server_ignoring_range_starts_over() {
    let (server, cache, mut cfg) = setup();
    cfg.net.retries = 2;
    server.fault(Fault::Drop { suffix: SHARD1.into(), after: 1000, times: 1 });
    server.fault(Fault::IgnoreRange { suffix: SHARD1.into() });
    load("org/tiny", &cfg).unwrap();
    let blob = cache.path().join("models--org--tiny/blobs").join(sha256_hex(&shard_bytes()));
    assert_eq!(std::fs::read(blob).unwrap(), shard_bytes());
}

#[test]
fn a_missing_repo_and_a_private_repo_without_token_are_clear_errors() {
    let (server, cache, mut cfg) = setup();
    let e = err("org/missing", &cfg);
    assert!(e.contains("org/missing") && e.contains("404") && e.contains("HF_TOKEN"), "{e}");

    server.add_repo("org/private", SHA, HubServer::folder_files(&fixture()), Some("s3cret"));
    let e = err("org/private", &cfg);
    assert!(e.contains("org/private") && e.contains("401") && e.contains("HF_TOKEN"), "{e}");
    cfg.token = Some("wrong".into());
    assert!(err("org/private", &cfg).contains("refused"));
    cfg.token = Some("s3cret".into());
    server.clear_log();
    load("org/private", &cfg).unwrap();
    // The token goes to the hub, never to the CDN host... which is the same host here, so check
    // only that the hub requests carried it.
    assert!(server
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer s3cret") || r.path.starts_with("/cdn/")));

    let e = load("org/tiny", &HubConfig { token: None, ..cfg.clone() })
        .map(|_| ())
        .and_then(|_| {
            let mut pinned = source(&cfg);
            pinned.revision = Some("v9".into());
            resolve_with("org/tiny", &pinned).map(|_| ())
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("RevisionNotFound") && e.contains("`v9`"), "{e}");
    assert!(tree(cache.path()).iter().all(|f| !f.ends_with(".part")));
}

#[test]
fn a_pinned_commit_is_fetched_and_found_again_offline() {
    let (server, _cache, cfg) = setup();
    let mut pinned = source(&cfg);
    pinned.revision = Some(SHA.into());
    let (_, origin) = resolve_with("org/tiny", &pinned).unwrap();
    assert_eq!((origin.revision.as_deref(), origin.commit.as_deref()), (Some(SHA), Some(SHA)));
    server.clear_log();
    pinned.hub.net.offline = true;
    resolve_with("org/tiny", &pinned).unwrap();
    assert!(server.requests().is_empty());
}

#[test]
fn a_shard_missing_from_the_repo_is_named() {
    let server = HubServer::start();
    let mut files = HubServer::folder_files(&fixture());
    files.remove("model-00002-of-00002.safetensors");
    server.add_repo("org/broken", SHA, files, None);
    let cache = tempfile::tempdir().unwrap();
    let e = err("org/broken", &config(&server, cache.path()));
    assert!(e.contains("model-00002-of-00002.safetensors") && e.contains("org/broken"), "{e}");
    assert!(e.contains("revision"), "{e}");
}

#[test]
fn a_truncated_file_is_never_trusted() {
    let (server, cache, cfg) = setup();
    server.fault(Fault::Truncate { suffix: SHARD1.into(), len: 5000 });
    let e = err("org/tiny", &cfg);
    assert!(e.contains(SHARD1) && e.contains("truncated"), "{e}");
    let repo = cache.path().join("models--org--tiny");
    let blob = repo.join("blobs").join(sha256_hex(&shard_bytes()));
    assert!(!blob.exists() && !repo.join("snapshots").join(SHA).join(SHARD1).exists());
    assert!(!repo.join("refs/main").exists(), "no ref to a half-fetched snapshot");
    // Offline, the half-fetched snapshot is not mistaken for a checkpoint.
    let offline = HubConfig { net: Net { offline: true, ..cfg.net.clone() }, ..cfg.clone() };
    assert!(err("org/tiny", &offline).contains("not in the Hugging Face cache"));
    server.clear_faults();
    load("org/tiny", &cfg).unwrap();
}

#[test]
fn content_that_does_not_match_its_checksum_is_deleted() {
    // The loopback hub hashes what it serves, so a mismatch is staged with a raw file and a
    // checksum that belongs to other bytes (a CDN serving stale content under an LFS etag).
    let server = HubServer::start();
    server.add_raw("/blob", b"hello".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let (part, dest) = (dir.path().join("x.part"), dir.path().join("x"));
    let forged = sha256_hex(b"something else");
    let net = Net { offline: false, retries: 0, progress: ProgressMode::Quiet, cancel: None };
    let agent = transfer::agent();
    let e = transfer::Transfer {
        agent: &agent,
        url: format!("{}/blob", server.url()),
        authorization: None,
        dest: dest.clone(),
        part: part.clone(),
        lock: Some(dir.path().join("x.lock")),
        size: Some(5),
        checksum: Checksum::Sha256(forged.clone()),
        label: "x".into(),
        what: "`x`".into(),
    }
    .run(&net)
    .unwrap_err()
    .to_string();
    assert!(e.contains(&forged) && e.contains(&sha256_hex(b"hello")) && e.contains("deleted"), "{e}");
    assert!(!dest.exists() && !part.exists());
}

#[test]
fn offline_with_an_empty_cache_says_so_without_a_request() {
    let (server, _cache, mut cfg) = setup();
    cfg.net.offline = true;
    let e = err("org/tiny", &cfg);
    assert!(e.contains("org/tiny") && e.contains("--offline") && e.contains("HF_HUB_OFFLINE"), "{e}");
    assert!(server.requests().is_empty());
}

#[test]
fn an_unreachable_hub_is_named_with_the_fix() {
    let cache = tempfile::tempdir().unwrap();
    // A port nothing listens on: take a free one and close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = HubConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        cache_dir: cache.path().to_path_buf(),
        token: None,
        net: Net { offline: false, retries: 0, progress: ProgressMode::Quiet, cancel: None },
    };
    let e = err("org/tiny", &cfg);
    assert!(e.contains("cannot reach") && e.contains("HF_ENDPOINT") && e.contains("--offline"), "{e}");
}

#[test]
fn a_cancelled_download_stops_and_keeps_its_part() {
    let (_server, cache, mut cfg) = setup();
    let cancel = CancelFlag::new();
    cancel.cancel();
    cfg.net.cancel = Some(cancel);
    let Err(e) = load("org/tiny", &cfg) else { panic!("a cancelled load succeeded") };
    assert!(e.is_cancelled(), "{e}");
    assert!(tree(cache.path()).iter().all(|f| !f.contains("snapshots") || f.ends_with(".json")));
}

#[test]
fn a_renamed_repo_redirects_and_datasets_use_their_prefix() {
    let (server, cache, cfg) = setup();
    server.rename_repo("org/old-name", "org/tiny");
    // The API lists the old name too (the hub answers its info under either).
    server.add_repo("org/old-name", SHA, HubServer::folder_files(&fixture()), None);
    server.rename_repo("org/old-name", "org/tiny");
    let repo = RepoRef::new(RepoKind::Model, "org/old-name", None);
    let hub = Hub::new(&cfg).unwrap();
    let path = hub.fetch(&repo, SHA, "config.json").unwrap();
    assert_eq!(std::fs::read(path).unwrap(), std::fs::read(fixture().join("config.json")).unwrap());
    assert!(server.requests().iter().any(|r| r.path.starts_with("/org/tiny/resolve/")));

    let parquet =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/data/vqa/fixtures/medvlthinker/test.parquet");
    let files =
        BTreeMap::from([("data/test-00000-of-00001.parquet".to_string(), std::fs::read(&parquet).unwrap())]);
    server.add_repo("datasets/org/eval", SHA, files, None);
    let repo = RepoRef::new(RepoKind::Dataset, "org/eval", None);
    let remote = hub.info(&repo).unwrap();
    assert!(remote.files.contains("data/test-00000-of-00001.parquet"));
    let path = hub.fetch(&repo, &remote.commit, "data/test-00000-of-00001.parquet").unwrap();
    hub.finish(&repo, &remote.commit).unwrap();
    assert!(path.starts_with(cache.path().join("datasets--org--eval/snapshots")));
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&parquet).unwrap());
    assert!(server.requests().iter().any(|r| r.path.starts_with("/api/datasets/org/eval/revision/main")));
}

#[test]
fn repo_ids_are_told_from_paths() {
    for id in ["Qwen/Qwen2.5-VL-7B-Instruct", "gpt2", "UCSC-VLAA/MedVLThinker-Eval"] {
        assert!(looks_like_repo_id(id), "{id}");
    }
    for p in ["./x", "/abs/x", "a/b/c", "../x", "x.parquet/", "", "a b/c"] {
        assert!(!looks_like_repo_id(p), "{p}");
    }
}
