//! One resumable HTTP download: bytes go to a `.part` file beside the destination, are checked
//! (size, and SHA-256 or MD5 when one is known) and only then renamed into place, so a file at the
//! destination is always whole. An interrupted transfer keeps its `.part` and the next attempt
//! asks for the rest with `Range: bytes=N-`.
//!
//! Why not hf-hub's own `ApiRepo::download`: in 0.4.3 it (1) appends whatever a ranged request
//! returns without checking for `206 Partial Content`, so a server or proxy that ignores `Range`
//! corrupts a resumed file; (2) never compares the final size or hash, so a body that ends early
//! but cleanly is renamed into a trusted blob; (3) has no way to stop mid-file (its `Progress`
//! callback cannot fail), so Ctrl-C could not stop a 4 GB shard; (4) `assert!`s and `unwrap`s on
//! odd server answers (a 3xx without `Location`). The file names are hf-hub's (`blobs/<etag>`,
//! `<etag>.part`, `<etag>.lock`), so a download it began resumes here and the other way round.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::run::{CancelFlag, ProgressMode};

/// How a loader may use the network.
#[derive(Clone, Debug)]
pub struct Net {
    /// No requests at all (`--offline`, `HF_HUB_OFFLINE=1`): what is not on disk is an error.
    pub offline: bool,
    /// Further attempts after an interrupted transfer, each resuming where the last stopped.
    pub retries: usize,
    pub progress: ProgressMode,
    /// Checked between chunks; a cancelled download keeps its `.part` for the next run.
    pub cancel: Option<CancelFlag>,
}

impl Default for Net {
    fn default() -> Self {
        Net { offline: offline_from_env(), retries: 3, progress: ProgressMode::Auto, cancel: None }
    }
}

/// `HF_HUB_OFFLINE` set to a true value (`1`, `true`, `yes`, `on`), as huggingface_hub reads it.
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The checksum a finished file must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checksum {
    None,
    /// Lower-case hex; the hub's etag of an LFS file is the SHA-256 of its content.
    Sha256(String),
    /// Lower-case hex; MedMNIST publishes MD5s.
    Md5(String),
}

impl Checksum {
    fn name(&self) -> &'static str {
        match self {
            Checksum::None => "",
            Checksum::Sha256(_) => "SHA-256",
            Checksum::Md5(_) => "MD5",
        }
    }
}

enum Hasher {
    None,
    Sha256(Sha256),
    Md5(Md5),
}

impl Hasher {
    fn new(c: &Checksum) -> Self {
        match c {
            Checksum::None => Hasher::None,
            Checksum::Sha256(_) => Hasher::Sha256(Sha256::new()),
            Checksum::Md5(_) => Hasher::Md5(Md5::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::None => {}
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Md5(h) => h.update(bytes),
        }
    }

    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::None => return String::new(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The hex digest of a whole file, read in chunks (cancellable).
pub fn file_digest(path: &Path, checksum: &Checksum, cancel: Option<&CancelFlag>) -> Result<String> {
    let mut hasher = Hasher::new(checksum);
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    hash_into(&mut file, &mut hasher, path, cancel)?;
    Ok(hasher.hex())
}

fn hash_into(file: &mut File, hasher: &mut Hasher, path: &Path, cancel: Option<&CancelFlag>) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if let Some(c) = cancel {
            c.check(|| format!("checking {}", path.display()))?;
        }
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

const CHUNK: usize = 256 * 1024;

/// One file to fetch.
pub struct Transfer<'a> {
    pub agent: &'a ureq::Agent,
    pub url: String,
    /// Sent with every request (the hub token); never to another host after a redirect.
    pub authorization: Option<String>,
    /// The finished file: renamed here only once complete and checked.
    pub dest: PathBuf,
    /// The resumable partial file, in `dest`'s folder.
    pub part: PathBuf,
    /// A lock file held while writing, so two processes never write one `.part`.
    pub lock: Option<PathBuf>,
    /// The size the finished file must have, when the server said so beforehand.
    pub size: Option<u64>,
    pub checksum: Checksum,
    /// Shown on the progress bar: the file name.
    pub label: String,
    /// Names the file in errors: "`model-00001-of-00002.safetensors` of model `org/x`".
    pub what: String,
}

/// Why one attempt failed: worth resuming (the connection), or not (the answer).
enum Failure {
    Retry(Error),
    Fatal(Error),
}

impl Transfer<'_> {
    /// Download (or resume) into `part`, check, and rename to `dest`.
    pub fn run(&self, net: &Net) -> Result<()> {
        if let Some(parent) = self.dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let _lock = match &self.lock {
            Some(path) => Some(FileLock::acquire(path, net.cancel.as_ref(), &self.what)?),
            None => None,
        };
        // Another process may have finished it while we waited for the lock.
        if self.dest.is_file() && self.size.is_none_or(|s| file_len(&self.dest) == s) {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            match self.attempt(net) {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) if attempt >= net.retries => {
                    let kept = file_len(&self.part);
                    return Err(Error::msg(format!(
                        "downloading {} from {} failed: {e}. {} Run the same call again to resume{}",
                        self.what,
                        self.url,
                        if kept > 0 {
                            format!("{kept} bytes are kept in {}.", self.part.display())
                        } else {
                            String::new()
                        },
                        if net.retries > 0 {
                            format!(" ({} attempts made)", attempt + 1)
                        } else {
                            String::new()
                        }
                    )));
                }
                Err(Failure::Retry(_)) => {
                    attempt += 1;
                    sleep_checked(
                        Duration::from_millis(250 << attempt.min(5)),
                        net.cancel.as_ref(),
                        &self.what,
                    )?;
                }
            }
        }
    }

    fn attempt(&self, net: &Net) -> std::result::Result<(), Failure> {
        let fatal = Failure::Fatal;
        let mut start = file_len(&self.part);
        if self.size.is_some_and(|s| start > s) {
            start = 0;
        }
        let (response, total) = match self.request(start)? {
            Answer::Body(r, total) => (r, total),
            Answer::Restart => {
                start = 0;
                match self.request(0)? {
                    Answer::Body(r, total) => (r, total),
                    Answer::Restart => {
                        return Err(fatal(Error::msg(format!(
                            "{}: {} does not answer a plain GET with the file",
                            self.what, self.url
                        ))))
                    }
                }
            }
        };
        if let (Some(want), Some(got)) = (self.size, total) {
            if want != got {
                return Err(fatal(Error::msg(format!(
                    "{}: the server first gave its size as {want} bytes, then as {got}; the file changed on \
                     the server while downloading, so run again",
                    self.what
                ))));
            }
        }
        let size = self.size.or(total);

        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&self.part)
            .map_err(|e| fatal(Error::io(&self.part, e)))?;
        file.set_len(start).map_err(|e| fatal(Error::io(&self.part, e)))?;
        let mut hasher = Hasher::new(&self.checksum);
        if start > 0 && !matches!(self.checksum, Checksum::None) {
            file.seek(SeekFrom::Start(0)).map_err(|e| fatal(Error::io(&self.part, e)))?;
            hash_into(&mut file, &mut hasher, &self.part, net.cancel.as_ref()).map_err(fatal)?;
        }
        file.seek(SeekFrom::Start(start)).map_err(|e| fatal(Error::io(&self.part, e)))?;

        let bar = net.progress.bytes_bar(size.unwrap_or(0), &short_label(&self.label));
        bar.set_position(start);
        let mut reader = (*response).into_reader();
        let mut buf = vec![0u8; CHUNK];
        let mut done = start;
        let outcome = loop {
            if let Some(c) = &net.cancel {
                if c.is_cancelled() {
                    let _ = file.flush();
                    break Err(fatal(Error::Cancelled(format!(
                        "download of {} stopped after {done} bytes; they are kept in {} and the next run resumes",
                        self.what,
                        self.part.display()
                    ))));
                }
            }
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Err(e) = file.write_all(&buf[..n]) {
                        break Err(fatal(Error::io(&self.part, e)));
                    }
                    hasher.update(&buf[..n]);
                    done += n as u64;
                    bar.set_position(done);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    break Err(Failure::Retry(Error::msg(format!(
                        "the connection broke after {done} of {} bytes ({e})",
                        size.map_or("?".to_string(), |s| s.to_string())
                    ))))
                }
            }
        };
        bar.finish_and_clear();
        file.flush().map_err(|e| fatal(Error::io(&self.part, e)))?;
        outcome?;
        drop(file);

        if let Some(want) = size {
            if done != want {
                // The body ended cleanly but short (or long): never trust it. A short prefix may be
                // resumed; anything longer is wrong and goes.
                if done > want {
                    let _ = std::fs::remove_file(&self.part);
                }
                return Err(Failure::Retry(Error::msg(format!(
                    "the server sent {done} of {want} bytes (the file is truncated on the server or in transit)"
                ))));
            }
        }
        let got = hasher.hex();
        let expected = match &self.checksum {
            Checksum::None => None,
            Checksum::Sha256(h) | Checksum::Md5(h) => Some(h.to_ascii_lowercase()),
        };
        if let Some(expected) = expected {
            if got != expected {
                let _ = std::fs::remove_file(&self.part);
                return Err(fatal(Error::msg(format!(
                    "{}: the downloaded file's {} is {got}, expected {expected}; it was deleted, not kept. \
                     The server sent other bytes than it promised (a stale mirror or a proxy rewriting \
                     the file?): run again, or check the URL {}",
                    self.what,
                    self.checksum.name(),
                    self.url
                ))));
            }
        }
        std::fs::rename(&self.part, &self.dest).map_err(|e| fatal(Error::io(&self.dest, e)))?;
        Ok(())
    }

    /// GET from `start`: the body to read and the file's full size when the answer gives it.
    fn request(&self, start: u64) -> std::result::Result<Answer, Failure> {
        let mut req = self.agent.get(&self.url);
        if let Some(auth) = &self.authorization {
            req = req.set("Authorization", auth);
        }
        if start > 0 {
            req = req.set("Range", &format!("bytes={start}-"));
        }
        let response = match req.call() {
            Ok(r) => r,
            // Asked for the rest of a file that is already whole (or that shrank): start over.
            Err(ureq::Error::Status(416, _)) if start > 0 => return Ok(Answer::Restart),
            Err(ureq::Error::Status(code, r)) if code >= 500 || code == 429 => {
                return Err(Failure::Retry(Error::msg(format!(
                    "the server answered {code} {}",
                    r.status_text()
                ))))
            }
            Err(ureq::Error::Status(code, r)) => {
                return Err(Failure::Fatal(Error::msg(status_message(code, &r, &self.what, &self.url))))
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(Failure::Retry(Error::msg(format!("cannot reach {}: {t}", host_of(&self.url)))))
            }
        };
        match response.status() {
            206 => {
                let (first, total) = content_range(&response).ok_or_else(|| {
                    Failure::Fatal(Error::msg(format!(
                        "{}: a 206 answer from {} without a valid Content-Range",
                        self.what, self.url
                    )))
                })?;
                if first != start {
                    return Ok(Answer::Restart);
                }
                Ok(Answer::Body(Box::new(response), total))
            }
            200 => {
                // A server that ignores `Range` sends the whole file: appending it would corrupt
                // the partial one, so start over.
                if start > 0 {
                    return Ok(Answer::Restart);
                }
                // The length of this body, not a claim about the file: a short one is caught
                // after reading, as a truncated transfer.
                let total = match self.size {
                    Some(_) => None,
                    None => response.header("Content-Length").and_then(|v| v.trim().parse().ok()),
                };
                Ok(Answer::Body(Box::new(response), total))
            }
            code => Err(Failure::Fatal(Error::msg(format!(
                "{}: unexpected answer {code} {} from {}",
                self.what,
                response.status_text(),
                self.url
            )))),
        }
    }
}

enum Answer {
    Body(Box<ureq::Response>, Option<u64>),
    /// The answer does not continue the partial file: download from byte 0.
    Restart,
}

/// `Content-Range: bytes a-b/total` as `(a, Some(total))` (`total` may be `*`).
pub fn content_range(r: &ureq::Response) -> Option<(u64, Option<u64>)> {
    let v = r.header("Content-Range")?.trim();
    let rest = v.strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let first = range.split_once('-')?.0.trim().parse().ok()?;
    Some((first, total.trim().parse().ok()))
}

/// A message for an HTTP error answer about `what`, with the likely fix.
pub fn status_message(code: u16, r: &ureq::Response, what: &str, url: &str) -> String {
    let hint = match code {
        401 | 403 => {
            "the server refused access: the file is private or gated. Set HF_TOKEN (or run \
                      `huggingface-cli login`) with a token that may read it, and accept its licence on \
                      its page if it is gated"
        }
        404 => "the server has no such file",
        _ => "",
    };
    let mut msg = format!("{what}: {url} answered {code} {}", r.status_text());
    if !hint.is_empty() {
        msg += ": ";
        msg += hint;
    }
    msg
}

pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn short_label(label: &str) -> String {
    let name = label.rsplit('/').next().unwrap_or(label);
    if name.chars().count() > 28 {
        let tail: String = name.chars().rev().take(26).collect::<Vec<_>>().into_iter().rev().collect();
        format!("..{tail}")
    } else {
        name.to_string()
    }
}

fn sleep_checked(total: Duration, cancel: Option<&CancelFlag>, what: &str) -> Result<()> {
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while waited < total {
        if let Some(c) = cancel {
            c.check(|| format!("waiting to resume the download of {what}"))?;
        }
        std::thread::sleep(step);
        waited += step;
    }
    Ok(())
}

/// An exclusive `flock` on a lock file, released on drop (hf-hub's and huggingface_hub's way).
struct FileLock {
    #[cfg_attr(not(unix), allow(dead_code))]
    file: File,
}

impl FileLock {
    fn acquire(path: &Path, cancel: Option<&CancelFlag>, what: &str) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut said = false;
        while !try_lock(&file) {
            if !said {
                eprintln!("waiting for another process downloading {what} (lock {})", path.display());
                said = true;
            }
            sleep_checked(Duration::from_millis(200), cancel, what)?;
        }
        Ok(FileLock { file })
    }
}

#[cfg(unix)]
fn try_lock(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this process owns; no memory is shared with the call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> bool {
    true
}

#[cfg(unix)]
impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as in `try_lock`.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// The HTTP client for transfers: redirects followed (the hub sends LFS files to a CDN), the token
/// kept to the same host, a connect and a read timeout so a dead connection errors (and resumes)
/// instead of hanging.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .try_proxy_from_env(true)
        .redirects(10)
        .redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost)
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("medbridge/", env!("CARGO_PKG_VERSION"), "; hf-hub/0.4.3; rust"))
        .build()
}
