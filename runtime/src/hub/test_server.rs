//! A loopback stand-in for the Hugging Face hub and for Zenodo, for tests only (std + sha2, so the
//! CLI tests can include this file too). It listens on 127.0.0.1 on a free port and answers the
//! routes the hub client uses, the way huggingface.co answers them:
//!
//! - `GET /api/{models|datasets}/{id}/revision/{rev}`: `{"sha", "siblings": [{"rfilename"}]}`;
//! - `GET /[datasets/]{id}/resolve/{rev}/{file}`: small files straight away with `etag` and
//!   `x-repo-commit`; large ("LFS") files as a `302` to an absolute `/cdn/{sha256}` URL with
//!   `x-linked-etag` (the SHA-256), `x-linked-size` and `x-repo-commit`; `Range` answered with
//!   `206` and `Content-Range: bytes a-b/size`; a renamed repo as a relative `307`;
//! - any other path registered with [`HubServer::add_raw`] (a Zenodo file; `?query` ignored).
//!
//! Errors: `404` with `x-error-code` `RepoNotFound`, `RevisionNotFound` or `EntryNotFound`; `401`
//! for a repo with a token when the request has none. Faults on demand: drop the connection
//! halfway through a body, serve a file truncated, ignore `Range`. Every request is logged.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

/// Misbehaviour for files whose path ends with `suffix`.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Send the headers and `after` bytes of the body, then close the connection; `times` times.
    Drop { suffix: String, after: usize, times: usize },
    /// The file's bytes stop after `len`, while sizes in headers stay the full length.
    Truncate { suffix: String, len: usize },
    /// Answer every request for the file with `200` and the whole file.
    IgnoreRange { suffix: String },
}

struct Repo {
    sha: String,
    files: BTreeMap<String, Vec<u8>>,
    token: Option<String>,
}

#[derive(Default)]
struct State {
    /// Keyed `org/name` (models) or `datasets/org/name`.
    repos: HashMap<String, Repo>,
    /// Old repo path → new repo path: answered with a relative redirect.
    renamed: HashMap<String, String>,
    raw: HashMap<String, Vec<u8>>,
    faults: Vec<Fault>,
    log: Vec<Logged>,
}

pub struct HubServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

/// Files larger than this are served as LFS files through the `/cdn/` redirect.
const LFS_THRESHOLD: usize = 10_000;

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl HubServer {
    pub fn start() -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &st, addr);
                });
            }
        });
        HubServer { addr, state, stop }
    }

    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT` and `MEDMNIST_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serve `files` as the repo `key` (`org/name` or `datasets/org/name`) at commit `sha`;
    /// with `token`, only to `Authorization: Bearer <token>`.
    pub fn add_repo(&self, key: &str, sha: &str, files: BTreeMap<String, Vec<u8>>, token: Option<&str>) {
        let repo = Repo { sha: sha.into(), files, token: token.map(str::to_string) };
        self.state().repos.insert(key.into(), repo);
    }

    /// Every file directly inside `dir`, keyed by name.
    pub fn folder_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_file() {
                files.insert(entry.file_name().to_string_lossy().into_owned(), std::fs::read(&path).unwrap());
            }
        }
        files
    }

    pub fn rename_repo(&self, old: &str, new: &str) {
        self.state().renamed.insert(old.into(), new.into());
    }

    /// Serve `bytes` at `path` (e.g. `/records/10519652/files/pathmnist.npz`).
    pub fn add_raw(&self, path: &str, bytes: Vec<u8>) {
        self.state().raw.insert(path.into(), bytes);
    }

    pub fn fault(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state().log.clone()
    }

    pub fn clear_log(&self) {
        self.state().log.clear();
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so its thread ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

struct Request {
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let _method = parts.next()?;
    let target = parts.next()?.to_string();
    let (mut range, mut authorization) = (None, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            break;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(value.trim().to_string()),
                "authorization" => authorization = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    let path = target.split('?').next().unwrap_or_default().to_string();
    Some(Request { path, range, authorization })
}

/// What to answer.
enum Reply {
    Json(u16, String, Vec<(String, String)>),
    Redirect(u16, String, Vec<(String, String)>),
    /// A file: the bytes to serve, the size to announce, extra headers, the fault key.
    File {
        bytes: Vec<u8>,
        size: usize,
        headers: Vec<(String, String)>,
        name: String,
    },
}

fn serve(mut stream: TcpStream, state: &Mutex<State>, addr: SocketAddr) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let Some(req) = read_request(&stream) else { return Ok(()) };
    let (reply, faults) = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.log.push(Logged {
            path: req.path.clone(),
            range: req.range.clone(),
            authorization: req.authorization.clone(),
        });
        let reply = route(&st, &req, addr);
        (reply, st.faults.clone())
    };
    match reply {
        Reply::Json(code, body, headers) => respond(&mut stream, code, &headers, body.as_bytes(), None),
        Reply::Redirect(code, location, mut headers) => {
            headers.push(("Location".into(), location));
            respond(&mut stream, code, &headers, b"", None)
        }
        Reply::File { mut bytes, size, mut headers, name } => {
            let matches = |suffix: &str| name.ends_with(suffix);
            let mut ignore_range = false;
            for f in &faults {
                match f {
                    Fault::Truncate { suffix, len } if matches(suffix) => bytes.truncate(*len),
                    Fault::IgnoreRange { suffix } if matches(suffix) => ignore_range = true,
                    _ => {}
                }
            }
            let range = if ignore_range { None } else { req.range.as_deref().and_then(parse_range) };
            let (code, body) = match range {
                None => (200, bytes.as_slice()),
                Some((first, _)) if first >= bytes.len() => {
                    headers.push(("Content-Range".into(), format!("bytes */{size}")));
                    return respond(&mut stream, 416, &headers, b"", None);
                }
                Some((first, last)) => {
                    let last = last.unwrap_or(usize::MAX).min(bytes.len() - 1);
                    headers.push(("Content-Range".into(), format!("bytes {first}-{last}/{size}")));
                    (206, &bytes[first..=last])
                }
            };
            // A drop fault applies to whole-file bodies only (not to the 1-byte metadata probe).
            let mut cut = None;
            if body.len() > 1 {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                for f in st.faults.iter_mut() {
                    if let Fault::Drop { suffix, after, times } = f {
                        if *times > 0 && name.ends_with(suffix.as_str()) {
                            *times -= 1;
                            cut = Some(*after);
                            break;
                        }
                    }
                }
            }
            respond(&mut stream, code, &headers, body, cut)
        }
    }
}

fn parse_range(v: &str) -> Option<(usize, Option<usize>)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()))
}

fn respond(
    stream: &mut TcpStream,
    code: u16,
    headers: &[(String, String)],
    body: &[u8],
    cut: Option<usize>,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Status",
    };
    let mut head =
        format!("HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes())?;
    match cut {
        Some(n) if n < body.len() => {
            stream.write_all(&body[..n])?;
            stream.flush()?;
            stream.shutdown(Shutdown::Both)
        }
        _ => {
            stream.write_all(body)?;
            stream.flush()?;
            // Let the client read everything before the socket closes.
            let _ = stream.shutdown(Shutdown::Write);
            let mut sink = [0u8; 64];
            let _ = stream.read(&mut sink);
            Ok(())
        }
    }
}

fn error(code: u16, kind: &str, message: &str) -> Reply {
    Reply::Json(
        code,
        format!("{{\"error\":\"{message}\"}}"),
        vec![("x-error-code".into(), kind.into()), ("Content-Type".into(), "application/json".into())],
    )
}

fn authorized(repo: &Repo, req: &Request) -> bool {
    match &repo.token {
        None => true,
        Some(t) => req.authorization.as_deref() == Some(format!("Bearer {t}").as_str()),
    }
}

fn route(st: &State, req: &Request, addr: SocketAddr) -> Reply {
    let path = req.path.as_str();
    if let Some(rest) = path.strip_prefix("/api/") {
        let (prefix, rest) = match rest.split_once('/') {
            Some(("models", r)) => ("", r),
            Some(("datasets", r)) => ("datasets/", r),
            _ => return error(404, "RepoNotFound", "Repository Not Found"),
        };
        let Some((id, rev)) = rest.rsplit_once("/revision/") else {
            return error(404, "RepoNotFound", "Repository Not Found");
        };
        let rev = rev.replace("%2F", "/");
        let Some(repo) = st.repos.get(&format!("{prefix}{id}")) else {
            return error(404, "RepoNotFound", "Repository Not Found");
        };
        if !authorized(repo, req) {
            return error(401, "GatedRepo", "Invalid credentials in Authorization header");
        }
        if rev != "main" && rev != repo.sha {
            return error(404, "RevisionNotFound", "Invalid rev id");
        }
        let siblings: Vec<String> = repo.files.keys().map(|f| format!("{{\"rfilename\":\"{f}\"}}")).collect();
        let body =
            format!("{{\"id\":\"{id}\",\"sha\":\"{}\",\"siblings\":[{}]}}", repo.sha, siblings.join(","));
        return Reply::Json(200, body, vec![("Content-Type".into(), "application/json".into())]);
    }
    if let Some(hash) = path.strip_prefix("/cdn/") {
        for repo in st.repos.values() {
            for (name, bytes) in &repo.files {
                if sha256_hex(bytes) == hash {
                    return Reply::File {
                        bytes: bytes.clone(),
                        size: bytes.len(),
                        headers: vec![],
                        name: name.clone(),
                    };
                }
            }
        }
        return error(404, "EntryNotFound", "no such blob");
    }
    if let Some((repo_path, rest)) = path.trim_start_matches('/').split_once("/resolve/") {
        let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
        let rev = rev.replace("%2F", "/");
        if let Some(new) = st.renamed.get(repo_path) {
            return Reply::Redirect(307, format!("/{new}/resolve/{rev}/{file}"), vec![]);
        }
        let Some(repo) = st.repos.get(repo_path) else {
            return error(404, "RepoNotFound", "Repository Not Found");
        };
        if !authorized(repo, req) {
            return error(401, "GatedRepo", "Invalid credentials in Authorization header");
        }
        if rev != "main" && rev != repo.sha {
            return error(404, "RevisionNotFound", "Invalid rev id");
        }
        let Some(bytes) = repo.files.get(file) else {
            return error(404, "EntryNotFound", "Entry not found");
        };
        let sha = sha256_hex(bytes);
        let commit = ("x-repo-commit".to_string(), repo.sha.clone());
        if bytes.len() > LFS_THRESHOLD {
            let headers = vec![
                commit,
                ("x-linked-etag".into(), format!("\"{sha}\"")),
                ("x-linked-size".into(), bytes.len().to_string()),
                ("etag".into(), format!("\"{}\"", &sha[..40])),
            ];
            return Reply::Redirect(302, format!("http://{addr}/cdn/{sha}"), headers);
        }
        // A git file's etag is its git blob id; any 40-hex value stands in for it here.
        let headers = vec![commit, ("etag".into(), format!("\"{}\"", &sha[24..]))];
        return Reply::File { bytes: bytes.clone(), size: bytes.len(), headers, name: file.to_string() };
    }
    match st.raw.get(path) {
        Some(bytes) => {
            Reply::File { bytes: bytes.clone(), size: bytes.len(), headers: vec![], name: path.to_string() }
        }
        None => error(404, "EntryNotFound", "Not Found"),
    }
}
