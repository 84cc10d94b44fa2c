//! The Hugging Face hub: checkpoints and benchmark files downloaded on first use into the cache
//! that huggingface_hub, transformers and hf-hub share, and read from it afterwards without a
//! request.
//!
//! | piece | from |
//! | --- | --- |
//! | cache layout (`models--org--name/{refs,snapshots,blobs}`, `Repo`, `Cache`) | hf-hub |
//! | repo info (`GET /api/{models,datasets}/{id}/revision/{rev}`: commit and file list), URLs | hf-hub's `Api` |
//! | per-file metadata (`GET …/resolve/{commit}/{file}`, `Range: bytes=0-0`, no redirects) | here, as hf-hub does it (its `metadata` is private, and panics on a 3xx without `Location`) |
//! | the transfer itself (resume, checks, cancel, progress) | `transfer.rs`, which says why |
//!
//! Environment, as huggingface_hub reads it: `HF_ENDPOINT` (default `https://huggingface.co`),
//! `HF_HUB_CACHE` (else `HF_HOME/hub`, else `~/.cache/huggingface/hub`), `HF_TOKEN` (else the
//! token file `huggingface-cli login` writes in `HF_HOME`), `HF_HUB_OFFLINE=1`. hf-hub 0.4.3
//! itself reads only `HF_HOME` and `HF_ENDPOINT`, so the rest is resolved here and handed to it.

pub mod transfer;

#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

pub use transfer::{file_digest, offline_from_env, Checksum, Net};

use crate::error::{Error, Result};
use transfer::{host_of, status_message, Transfer};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// What kind of hub repo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    fn hf(self) -> RepoType {
        match self {
            RepoKind::Model => RepoType::Model,
            RepoKind::Dataset => RepoType::Dataset,
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }
}

/// Where the hub is, where its cache lives, who we are, and how the network may be used.
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub endpoint: String,
    /// The hub cache folder (`…/huggingface/hub`).
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    pub net: Net,
}

impl HubConfig {
    /// From `HF_ENDPOINT`, `HF_HUB_CACHE`/`HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        HubConfig { endpoint, cache_dir: hub_cache_dir(), token: token_from_env(), net: Net::default() }
    }

    /// The same, with the session's progress mode, cancel flag and `--offline`.
    pub fn for_session(session: &crate::run::Session) -> Self {
        let mut cfg = Self::from_env();
        cfg.net = session.net();
        cfg
    }
}

/// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> PathBuf {
    match std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => crate::sandbox::hf_home().join("hub"),
    }
}

/// `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else the file at `HF_TOKEN_PATH` or
/// `HF_HOME/token` that `huggingface-cli login` writes.
pub fn token_from_env() -> Option<String> {
    for var in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] {
        if let Some(t) = std::env::var(var).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
            return Some(t);
        }
    }
    let path = std::env::var_os("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::sandbox::hf_home().join("token"));
    std::fs::read_to_string(path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// A repo at a revision (a branch, a tag or a commit hash).
#[derive(Clone, Debug)]
pub struct RepoRef {
    pub id: String,
    pub kind: RepoKind,
    pub revision: String,
}

impl RepoRef {
    pub fn new(kind: RepoKind, id: &str, revision: Option<&str>) -> Self {
        RepoRef { id: id.to_string(), kind, revision: revision.unwrap_or("main").to_string() }
    }

    fn hf(&self) -> Repo {
        Repo::with_revision(self.id.clone(), self.kind.hf(), self.revision.clone())
    }

    fn at(&self, commit: &str) -> Repo {
        Repo::with_revision(self.id.clone(), self.kind.hf(), commit.to_string())
    }

    /// "model `org/x`", with " at revision `r`" when pinned off `main`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} `{}`", self.kind.noun(), self.id);
        if self.revision != "main" {
            s += &format!(" at revision `{}`", self.revision);
        }
        s
    }

    /// The repo's folder in the cache.
    pub fn cache_folder(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(self.hf().folder_name())
    }
}

/// Whether `s` could be a hub id (`name` or `org/name`) rather than a path.
pub fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    !s.is_empty()
        && parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// One commit of a repo in the local cache.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub repo: RepoRef,
    pub commit: String,
    pub dir: PathBuf,
}

impl Snapshot {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Present and readable (a snapshot entry is a symlink to a blob, which must exist).
    pub fn has(&self, name: &str) -> bool {
        self.file(name).is_file()
    }
}

/// The snapshot a revision points to in the cache, without any request: `refs/<revision>`, or
/// the commit itself when the revision is a full commit hash.
pub fn cached_snapshot(cache_dir: &Path, repo: &RepoRef) -> Option<Snapshot> {
    let folder = repo.cache_folder(cache_dir);
    let commit = match std::fs::read_to_string(folder.join("refs").join(&repo.revision)) {
        Ok(c) => c.trim().to_string(),
        Err(_) if is_commit_hash(&repo.revision) => repo.revision.clone(),
        Err(_) => return None,
    };
    let dir = folder.join("snapshots").join(&commit);
    dir.is_dir().then(|| Snapshot { repo: repo.clone(), commit, dir })
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The error for a file that is not in the cache while downloads are off.
pub fn not_cached(cfg: &HubConfig, repo: &RepoRef, what: &str, download_off: bool) -> Error {
    let (reason, fix) = if cfg.net.offline {
        (
            "the network is off (--offline or HF_HUB_OFFLINE=1)",
            "run once without --offline and with HF_HUB_OFFLINE unset",
        )
    } else if download_off {
        ("`download: false` forbids fetching it", "drop `download: false`")
    } else {
        ("it could not be fetched", "run again with network")
    };
    Error::msg(format!(
        "{} is not a local directory and {what} is not in the Hugging Face cache ({}); {reason}. To get \
         it: {fix}, or run `huggingface-cli download {}{}` on a machine with network and copy its cache \
         here (HF_HUB_CACHE or HF_HOME pointing at it), or pass a local directory",
        repo.describe(),
        repo.cache_folder(&cfg.cache_dir).display(),
        if repo.kind == RepoKind::Dataset { "--repo-type dataset " } else { "" },
        repo.id,
    ))
}

/// Where a loader's files came from, for `run.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The hub id, or `None` for a local path.
    pub repo: Option<String>,
    /// The revision asked for (`main` unless pinned).
    pub revision: Option<String>,
    /// The commit the files are from.
    pub commit: Option<String>,
    /// Files fetched over the network by this call (empty when all came from the cache).
    pub downloaded: Vec<String>,
}

impl Origin {
    /// The record `run.json` keeps of a load: `source` as the script gave it, and for a hub id
    /// the repo, the revision asked for, the commit the files are from and what was downloaded.
    pub fn record(&self, source: &str) -> serde_json::Value {
        match &self.repo {
            None => serde_json::json!({ "source": source, "from": "path" }),
            Some(repo) => serde_json::json!({
                "source": source,
                "from": "hub",
                "repo": repo,
                "revision": self.revision,
                "commit": self.commit,
                "downloaded": self.downloaded,
            }),
        }
    }
}

/// A repo as the hub lists it at one commit.
#[derive(Clone, Debug)]
pub struct RemoteRepo {
    pub commit: String,
    pub files: BTreeSet<String>,
}

/// A connection to the hub for one loader call.
pub struct Hub {
    cfg: HubConfig,
    api: Api,
    /// Follows redirects: the transfers.
    agent: ureq::Agent,
    /// Follows none: the metadata probe reads the hub's own headers before any CDN redirect.
    probe: ureq::Agent,
}

/// How a file will be fetched: from where, into which blob, how large, which checksum.
struct FileMeta {
    url: String,
    etag: String,
    size: Option<u64>,
    same_host: bool,
}

impl Hub {
    pub fn new(cfg: &HubConfig) -> Result<Hub> {
        if cfg.net.offline {
            crate::bail!("the network is off (--offline or HF_HUB_OFFLINE=1)");
        }
        // `from_cache` rather than `new`/`from_env`: those call `dirs::home_dir().expect(..)`.
        let api = ApiBuilder::from_cache(Cache::new(cfg.cache_dir.clone()))
            .with_endpoint(cfg.endpoint.clone())
            .with_token(cfg.token.clone())
            .with_progress(false)
            .with_user_agent("medbridge", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| Error::msg(format!("cannot set up the hub client: {e}")))?;
        let probe = ureq::AgentBuilder::new()
            .try_proxy_from_env(true)
            .redirects(0)
            .timeout_connect(std::time::Duration::from_secs(30))
            .timeout_read(std::time::Duration::from_secs(60))
            .build();
        Ok(Hub { cfg: cfg.clone(), api, agent: transfer::agent(), probe })
    }

    fn authorization(&self) -> Option<String> {
        self.cfg.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// The commit a revision points to and the files of that commit (hf-hub's `info`).
    pub fn info(&self, repo: &RepoRef) -> Result<RemoteRepo> {
        let info = self.api.repo(repo.hf()).info().map_err(|e| self.repo_error(repo, e))?;
        Ok(RemoteRepo { commit: info.sha, files: info.siblings.into_iter().map(|s| s.rfilename).collect() })
    }

    fn repo_error(&self, repo: &RepoRef, e: ApiError) -> Error {
        let endpoint = &self.cfg.endpoint;
        match e {
            ApiError::RequestError(boxed) => match *boxed {
                ureq::Error::Status(code, r) => {
                    let kind = r.header("x-error-code").unwrap_or_default().to_string();
                    let hint = match (code, kind.as_str()) {
                        (_, "RevisionNotFound") => format!(
                            "the repo has no revision `{}`: use a branch, tag or commit hash it has",
                            repo.revision
                        ),
                        (401 | 403, _) => format!(
                            "the hub refused access: the repo is private or gated. Set HF_TOKEN (or run \
                             `huggingface-cli login`) with a token that may read it{}",
                            if self.cfg.token.is_some() {
                                " (the token sent was refused)"
                            } else {
                                "; no token was sent"
                            }
                        ),
                        (404, _) => format!(
                            "no such repo (nor a local directory of that name): check the id's spelling{}; \
                             a private repo also answers 404 without a token (set HF_TOKEN)",
                            if repo.kind == RepoKind::Model { "" } else { " and that it is a dataset id" }
                        ),
                        _ => String::new(),
                    };
                    Error::msg(format!(
                        "{} on {endpoint}: the hub answered {code} {}{}{}",
                        repo.describe(),
                        r.status_text(),
                        if kind.is_empty() { String::new() } else { format!(" ({kind})") },
                        if hint.is_empty() { String::new() } else { format!(": {hint}") }
                    ))
                }
                ureq::Error::Transport(t) => Error::msg(format!(
                    "cannot reach the hub at {endpoint} to look up {}: {t}. Check the network and \
                     HF_ENDPOINT; if the files are in the cache already, run with --offline (or \
                     HF_HUB_OFFLINE=1)",
                    repo.describe()
                )),
            },
            other => Error::msg(format!("{} on {endpoint}: {other}", repo.describe())),
        }
    }

    /// `file` of `repo` at `commit` in the cache, downloaded first when it is not there. Returns
    /// the snapshot path (a symlink to the blob, as hf-hub and huggingface_hub lay it out).
    pub fn fetch(&self, repo: &RepoRef, commit: &str, file: &str) -> Result<PathBuf> {
        let folder = repo.cache_folder(&self.cfg.cache_dir);
        let pointer = folder.join("snapshots").join(commit).join(file);
        if pointer.is_file() {
            return Ok(pointer);
        }
        let what = format!("`{file}` of {}", repo.describe());
        let url = self.api.repo(repo.at(commit)).url(file);
        let meta = self.metadata(&url, &what)?;
        let blobs = folder.join("blobs");
        let blob = blobs.join(&meta.etag);
        let checksum = if meta.etag.len() == 64 && meta.etag.chars().all(|c| c.is_ascii_hexdigit()) {
            Checksum::Sha256(meta.etag.to_ascii_lowercase())
        } else {
            Checksum::None
        };
        let have_blob =
            blob.is_file() && meta.size.is_none_or(|s| blob.metadata().map(|m| m.len()).ok() == Some(s));
        if !have_blob {
            Transfer {
                agent: &self.agent,
                url: meta.url.clone(),
                authorization: if meta.same_host { self.authorization() } else { None },
                dest: blob.clone(),
                part: blobs.join(format!("{}.part", meta.etag)),
                lock: Some(blobs.join(format!("{}.lock", meta.etag))),
                size: meta.size,
                checksum,
                label: file.to_string(),
                what: what.clone(),
            }
            .run(&self.cfg.net)?;
        }
        link_into_snapshot(&blob, &pointer)?;
        Ok(pointer)
    }

    /// Point `refs/<revision>` at `commit` once the files are in, so the next call finds them
    /// without a request. A revision that is itself the commit needs no ref.
    pub fn finish(&self, repo: &RepoRef, commit: &str) -> Result<()> {
        if repo.revision == commit {
            return Ok(());
        }
        let cache = Cache::new(self.cfg.cache_dir.clone());
        cache.repo(repo.hf()).create_ref(commit).map_err(|e| {
            Error::io(repo.cache_folder(&self.cfg.cache_dir).join("refs").join(&repo.revision), e)
        })
    }

    /// The hub's headers for a file: a 1-byte ranged GET that follows only relative redirects
    /// (a renamed repo), then reads the etag, the size and where the bytes are (a CDN for LFS).
    fn metadata(&self, url: &str, what: &str) -> Result<FileMeta> {
        let mut current = url.to_string();
        for _ in 0..5 {
            let mut req = self.probe.get(&current).set("Range", "bytes=0-0");
            if let Some(auth) = self.authorization() {
                req = req.set("Authorization", &auth);
            }
            let r = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(code, r)) => {
                    let kind = r.header("x-error-code").unwrap_or_default().to_string();
                    let mut msg = status_message(code, &r, what, &current);
                    if kind == "EntryNotFound" {
                        msg += " (the repo has no such file at this commit)";
                    } else if !kind.is_empty() {
                        msg += &format!(" ({kind})");
                    }
                    return Err(Error::msg(msg));
                }
                Err(ureq::Error::Transport(t)) => {
                    return Err(Error::msg(format!(
                    "{what}: cannot reach {}: {t}. Check the network and HF_ENDPOINT, or run with --offline \
                         when the files are cached",
                    host_of(&current)
                )))
                }
            };
            let location = r.header("Location").map(str::to_string);
            let redirect = (300..400).contains(&r.status());
            if redirect {
                if let Some(loc) = location.as_deref().filter(|l| l.starts_with('/')) {
                    // Relative: the hub itself (a renamed repo). Follow it and read its headers.
                    current = format!("{}{loc}", origin_of(&current));
                    continue;
                }
            }
            let etag = r
                .header("x-linked-etag")
                .or_else(|| r.header("etag"))
                .map(|e| e.trim().trim_start_matches("W/").trim_matches('"').to_string())
                .filter(|e| !e.is_empty() && !e.contains(['/', '\\']))
                .ok_or_else(|| {
                    Error::msg(format!(
                        "{what}: {current} sent no etag; HF_ENDPOINT ({}) does not look like a Hugging Face hub",
                        self.cfg.endpoint
                    ))
                })?;
            let linked_size = r.header("x-linked-size").and_then(|s| s.trim().parse().ok());
            let (target, size) = if redirect {
                let loc = location.ok_or_else(|| {
                    Error::msg(format!("{what}: {current} answered {} without a Location", r.status()))
                })?;
                (loc, linked_size)
            } else {
                let total = transfer::content_range(&r).and_then(|(_, t)| t);
                (current.clone(), linked_size.or(total))
            };
            let same_host = host_of(&target) == host_of(&self.cfg.endpoint);
            return Ok(FileMeta { url: target, etag, size, same_host });
        }
        crate::bail!("{what}: too many redirects from {url}")
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", host_of(rest)),
        None => host_of(url).to_string(),
    }
}

/// `snapshots/<commit>/<file>` → `../../blobs/<etag>` (relative, as hf-hub and huggingface_hub
/// write it; a copy where symlinks are unavailable).
fn link_into_snapshot(blob: &Path, pointer: &Path) -> Result<()> {
    let parent = pointer.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    if pointer.is_file() {
        return Ok(());
    }
    // A dangling link left by a blob someone deleted.
    let _ = std::fs::remove_file(pointer);
    #[cfg(unix)]
    {
        // snapshots/<commit>/<dirs…>/<file>: one `..` per folder between the pointer and the repo.
        let depth = pointer
            .strip_prefix(blob.parent().and_then(Path::parent).unwrap_or(Path::new("/")))
            .map(|p| p.components().count().saturating_sub(1))
            .unwrap_or(0);
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob.file_name().unwrap_or_default());
        if std::os::unix::fs::symlink(&target, pointer).is_ok() {
            return Ok(());
        }
    }
    std::fs::copy(blob, pointer).map(|_| ()).map_err(|e| Error::io(pointer, e))
}
