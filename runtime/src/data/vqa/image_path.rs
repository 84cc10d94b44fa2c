//! The one rule for image paths written inside a data file: a relative path is taken against the
//! file's folder (and, per layout, the subfolders its publisher unpacks pictures into), an absolute
//! one is taken as it is, and with a sandbox the picture must lie under the read roots, refused with
//! the message `read_text` gives for the same path. Every reader in this folder goes through here,
//! so a data file cannot point a script at a file the script itself may not read.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::sandbox::Sandbox;

/// The first of `tries` (each relative to `base`, the data file's folder) that exists. `raw` is the
/// path as the file wrote it, for the error when none does.
pub(super) fn locate_image(
    base: &Path,
    raw: &str,
    tries: &[PathBuf],
    sandbox: Option<&Sandbox>,
) -> Result<PathBuf> {
    if raw.trim().is_empty() {
        crate::bail!("the image path is empty");
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for candidate in tries.iter().map(|t| base.join(t)) {
        if !candidates.contains(&candidate) {
            candidates.push(candidate);
        }
    }
    for candidate in &candidates {
        match sandbox {
            Some(sandbox) => {
                if let Some(real) = sandbox.locate_read(&candidate.to_string_lossy())? {
                    return Ok(real);
                }
            }
            None if candidate.is_file() => return Ok(candidate.clone()),
            None => {}
        }
    }
    let tried: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    crate::bail!("image {raw:?} not found (looked at {})", tried.join(", "))
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::{Path, PathBuf};

    use crate::data::vqa::{load_vqa, VqaKind, VqaOptions};
    use crate::sandbox::{ReadRoot, Sandbox};

    /// A data folder that is the only read root, and a picture outside it.
    pub struct Outside {
        pub data: tempfile::TempDir,
        _elsewhere: tempfile::TempDir,
        pub picture: PathBuf,
    }

    impl Outside {
        pub fn new() -> Outside {
            let data = tempfile::tempdir().unwrap();
            let elsewhere = tempfile::tempdir().unwrap();
            let png = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/data/vqa/fixtures/medbridgerl_jsonl/images/MMMU_0_0.png");
            let picture = elsewhere.path().join("x.png");
            std::fs::copy(png, &picture).unwrap();
            Outside { data, _elsewhere: elsewhere, picture }
        }

        pub fn sandbox(&self) -> Sandbox {
            let dir = self.data.path().to_path_buf();
            let roots = vec![ReadRoot { path: dir.clone(), origin: "the data folder".into() }];
            Sandbox::new(roots, vec![dir.clone()], &dir).unwrap()
        }

        /// `load_vqa` refuses `file` with exactly what `read_text` says of the picture, and reads
        /// it when there is no sandbox.
        pub fn assert_refused(&self, kind: VqaKind, file: &Path) {
            let sandbox = self.sandbox();
            let read_text = sandbox.resolve_read(self.picture.to_str().unwrap()).unwrap_err().to_string();
            assert!(read_text.contains("is refused"), "{read_text}");
            let opts = VqaOptions { sandbox: Some(sandbox), closed_only: false, ..Default::default() };
            let err = load_vqa(kind, file, &opts).unwrap_err().to_string();
            assert!(err.contains(&read_text), "{err}\nshould contain\n{read_text}");
            let open = VqaOptions { closed_only: false, ..Default::default() };
            assert!(load_vqa(kind, file, &open).is_ok(), "without a sandbox the picture is read");
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_file_and_stay_inside() {
        let outside = Outside::new();
        let base = outside.data.path();
        std::fs::create_dir(base.join("images")).unwrap();
        std::fs::copy(&outside.picture, base.join("images/a.png")).unwrap();
        let sandbox = outside.sandbox();
        let tries = [PathBuf::from("a.png"), PathBuf::from("images/a.png")];
        let found = super::locate_image(base, "a.png", &tries, Some(&sandbox)).unwrap();
        assert!(found.ends_with("images/a.png"), "{}", found.display());
        let up = [PathBuf::from("../x.png")];
        let missing = super::locate_image(base, "../x.png", &up, Some(&sandbox)).unwrap_err().to_string();
        assert!(missing.contains("not found"), "{missing}");
    }
}
