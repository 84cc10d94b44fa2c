//! The file sandbox for shared scripts.
//!
//! Scripts are passed around and run by people who did not write them, so a script reads only
//! under known roots (its own directory, the current directory, the data roots, the Hugging Face
//! cache and each `--allow-read`) and writes only inside its run directory. Paths are checked
//! after resolving `..` and symlinks, so neither can be used to step outside.
//!
//! The one exception is the loaders' downloads (`load_model`, `load_vqa` by hub id,
//! `medmnist(.., #{download: true})`): they write only into the Hugging Face cache and
//! `MEDMNIST_ROOT`, at places the script cannot choose (a file's name in the cache is its hash;
//! a MedMNIST download into any other `root` is refused).
//!
//! Under MPI only rank 0 writes: on any other rank every script write is refused with an error
//! that says how to write from rank 0 alone, since the ranks would otherwise race on one file.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// A directory scripts may read under, and why.
#[derive(Clone, Debug)]
pub struct ReadRoot {
    pub path: PathBuf,
    pub origin: String,
}

/// The read roots and the one write root of a run.
#[derive(Clone, Debug)]
pub struct Sandbox {
    read_roots: Vec<ReadRoot>,
    /// Relative reads are tried against these, in order.
    bases: Vec<PathBuf>,
    write_root: PathBuf,
    /// `(rank, ranks)` of a rank other than 0 in an MPI run: its writes are refused.
    follower: Option<(usize, usize)>,
}

impl Sandbox {
    /// `bases` anchor relative read paths (the current and the script's directory); `write_root` is
    /// the run directory, which must exist.
    pub fn new(read_roots: Vec<ReadRoot>, bases: Vec<PathBuf>, write_root: &Path) -> Result<Self> {
        let write_root = write_root.canonicalize().map_err(|e| Error::io(write_root, e))?;
        // A root that does not exist yet (the Hugging Face cache or MEDMNIST_ROOT on a fresh
        // machine, before the first download) is kept at the place it will be created.
        let mut roots: Vec<ReadRoot> = read_roots
            .into_iter()
            .filter_map(|r| planned_real_path(&r.path).map(|path| ReadRoot { path, origin: r.origin }))
            .collect();
        roots.push(ReadRoot { path: write_root.clone(), origin: "the run directory".into() });
        Ok(Sandbox { read_roots: roots, bases, write_root, follower: None })
    }

    /// The standard roots: the current directory, the script's directory, `MEDBRIDGE_DATA`,
    /// `MEDMNIST_ROOT` (default `~/.medmnist`), the Hugging Face cache, and each `--allow-read`.
    pub fn standard_roots(
        script_dir: Option<&Path>,
        allow_read: &[PathBuf],
    ) -> (Vec<ReadRoot>, Vec<PathBuf>) {
        let mut roots = Vec::new();
        let mut bases = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            roots.push(ReadRoot { path: cwd.clone(), origin: "the current directory".into() });
            bases.push(cwd);
        }
        if let Some(dir) = script_dir {
            roots.push(ReadRoot { path: dir.to_path_buf(), origin: "the script's directory".into() });
            bases.push(dir.to_path_buf());
        }
        if let Some(data) = std::env::var_os("MEDBRIDGE_DATA") {
            roots.push(ReadRoot { path: data.into(), origin: "MEDBRIDGE_DATA".into() });
        }
        roots.push(ReadRoot { path: crate::data::medmnist_root(), origin: "MEDMNIST_ROOT".into() });
        roots.push(ReadRoot { path: hf_home(), origin: "the Hugging Face cache".into() });
        if let Some(cache) = std::env::var_os("HF_HUB_CACHE") {
            roots.push(ReadRoot { path: cache.into(), origin: "HF_HUB_CACHE".into() });
        }
        for p in allow_read {
            roots.push(ReadRoot { path: p.clone(), origin: format!("--allow-read {}", p.display()) });
        }
        (roots, bases)
    }

    /// The same sandbox for rank `rank` of `ranks`: on a rank other than 0 it refuses writes.
    pub fn for_rank(self, rank: usize, ranks: usize) -> Self {
        Sandbox { follower: (rank > 0).then_some((rank, ranks)), ..self }
    }

    /// [`Self::resolve_write`] for a write every rank makes together and rank 0 carries out (the
    /// caller writes only on rank 0 and the others wait for it): the path, on any rank.
    pub fn resolve_collective_write(&self, path: &str) -> Result<PathBuf> {
        Sandbox { follower: None, ..self.clone() }.resolve_write(path)
    }

    pub fn write_root(&self) -> &Path {
        &self.write_root
    }

    pub fn read_roots(&self) -> &[ReadRoot] {
        &self.read_roots
    }

    /// Resolve a path a script wants to read; it must exist and lie under a read root.
    pub fn resolve_read(&self, path: &str) -> Result<PathBuf> {
        self.locate_read(path)?.ok_or_else(|| {
            let tried =
                self.candidates(path).iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ");
            Error::msg(format!("`{path}` does not exist (looked at {tried})"))
        })
    }

    /// Like [`Sandbox::resolve_read`], but a missing path is `Ok(None)`; a path outside the roots
    /// is still an error, so scripts cannot probe the filesystem.
    pub fn locate_read(&self, path: &str) -> Result<Option<PathBuf>> {
        let Some(real) = self.candidates(path).iter().find_map(|c| c.canonicalize().ok()) else {
            return Ok(None);
        };
        if self.read_roots.iter().any(|r| real.starts_with(&r.path)) {
            return Ok(Some(real));
        }
        let parent = real.parent().unwrap_or(&real).display().to_string();
        Err(Error::msg(format!(
            "reading `{path}` (resolved to {}) is refused: it is outside the directories scripts may read ({}); \
             run with `--allow-read {parent}` to allow it",
            real.display(),
            self.read_roots.iter().map(|r| r.origin.as_str()).collect::<Vec<_>>().join(", ")
        )))
    }

    fn candidates(&self, path: &str) -> Vec<PathBuf> {
        let raw = Path::new(path);
        if raw.is_absolute() {
            vec![raw.to_path_buf()]
        } else {
            self.bases.iter().map(|b| b.join(raw)).collect()
        }
    }

    /// Resolve a path a script wants to write: relative paths land in the run directory, and the
    /// result (after `..` and symlinks) must stay inside it. Parent directories are created.
    pub fn resolve_write(&self, path: &str) -> Result<PathBuf> {
        if let Some((rank, ranks)) = self.follower {
            crate::bail!(
                "writing `{path}` is not rank-safe: under MPI only rank 0 writes files (this is rank \
                 {rank} of {ranks}); write it from rank 0 alone: `if rank() == 0 {{ ... }}`"
            );
        }
        let raw = Path::new(path);
        let joined = if raw.is_absolute() { raw.to_path_buf() } else { self.write_root.join(raw) };
        let refuse = || {
            Error::msg(format!(
                "writing `{path}` is refused: scripts write only inside the run directory {}; use a relative \
                 path, or choose the run directory with --out",
                self.write_root.display()
            ))
        };
        let normal = normalize(&joined).ok_or_else(refuse)?;
        if !normal.starts_with(&self.write_root) {
            return Err(refuse());
        }
        // Symlinks inside the run directory could point anywhere: check the real location of the
        // deepest existing ancestor, and of the file itself if it exists.
        let mut existing = normal.as_path();
        while !existing.exists() {
            existing = existing.parent().ok_or_else(refuse)?;
        }
        let real = existing.canonicalize().map_err(|e| Error::io(existing, e))?;
        if !real.starts_with(&self.write_root) {
            return Err(refuse());
        }
        if let Some(parent) = normal.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        Ok(normal)
    }
}

/// The real path `path` has, or will have once created: its deepest existing ancestor resolved
/// (symlinks included), the rest appended. `None` for a relative path that does not exist.
fn planned_real_path(path: &Path) -> Option<PathBuf> {
    if let Ok(real) = path.canonicalize() {
        return Some(real);
    }
    if !path.is_absolute() {
        return None;
    }
    let normal = normalize(path)?;
    let mut existing = normal.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.push(existing.file_name()?.to_os_string());
        existing = existing.parent()?;
    }
    let mut real = existing.canonicalize().ok()?;
    for part in rest.into_iter().rev() {
        real.push(part);
    }
    Some(real)
}

/// Remove `.` and `..` lexically; `None` when `..` climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

/// The Hugging Face home: `HF_HOME`, else `~/.cache/huggingface`.
pub fn hf_home() -> PathBuf {
    std::env::var_os("HF_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache").join("huggingface"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        base: PathBuf,
        outside: PathBuf,
        sandbox: Sandbox,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("project");
        let run = base.join("runs").join("r1");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(base.join("data.txt"), "ok").unwrap();
        std::fs::write(outside.join("secret.txt"), "no").unwrap();
        let roots = vec![ReadRoot { path: base.clone(), origin: "the current directory".into() }];
        let sandbox = Sandbox::new(roots, vec![base.clone()], &run).unwrap();
        Fixture { _dir: dir, base, outside, sandbox }
    }

    #[test]
    fn reads_inside_roots_resolve() {
        let f = fixture();
        assert!(f.sandbox.resolve_read("data.txt").unwrap().ends_with("data.txt"));
    }

    #[test]
    fn dot_dot_and_absolute_reads_outside_are_refused_with_the_flag() {
        let f = fixture();
        let err = f.sandbox.resolve_read("../outside/secret.txt").unwrap_err().to_string();
        assert!(err.contains("refused") && err.contains("--allow-read"), "{err}");
        let abs = f.outside.join("secret.txt");
        assert!(f.sandbox.resolve_read(abs.to_str().unwrap()).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_pointing_out_are_refused() {
        let f = fixture();
        std::os::unix::fs::symlink(f.outside.join("secret.txt"), f.base.join("link.txt")).unwrap();
        assert!(f.sandbox.resolve_read("link.txt").is_err());
        std::os::unix::fs::symlink(&f.outside, f.sandbox.write_root().join("escape")).unwrap();
        assert!(f.sandbox.resolve_write("escape/x.txt").is_err());
    }

    #[test]
    fn a_root_created_after_the_sandbox_is_still_readable() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let cache = dir.path().join("hf").join("hub");
        let roots = vec![ReadRoot { path: cache.clone(), origin: "the Hugging Face cache".into() }];
        let sandbox = Sandbox::new(roots, vec![], &run).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("x.png"), "x").unwrap();
        assert!(sandbox.resolve_read(cache.join("x.png").to_str().unwrap()).is_ok());
        assert!(sandbox.resolve_read(dir.path().join("run/../y").to_str().unwrap()).is_err());
    }

    #[test]
    fn ranks_other_than_0_may_not_write() {
        let f = fixture();
        let root = f.sandbox.clone().for_rank(0, 2);
        assert!(root.resolve_write("a.json").is_ok());
        let err = f.sandbox.for_rank(1, 2).resolve_write("a.json").unwrap_err().to_string();
        assert!(err.contains("not rank-safe") && err.contains("rank 1 of 2"), "{err}");
    }

    #[test]
    fn writes_land_in_the_run_directory_only() {
        let f = fixture();
        let p = f.sandbox.resolve_write("plots/a.png").unwrap();
        assert!(p.starts_with(f.sandbox.write_root()) && p.parent().unwrap().is_dir());
        assert!(f.sandbox.resolve_write("../x.txt").is_err());
        assert!(f.sandbox.resolve_write(f.base.join("x.txt").to_str().unwrap()).is_err());
        let err = f.sandbox.resolve_write("/tmp/x.txt").unwrap_err().to_string();
        assert!(err.contains("only inside the run directory"), "{err}");
    }
}
