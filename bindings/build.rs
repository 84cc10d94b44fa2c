//! Embeds every `stdlib/*.rhai` module into the binary, so `import "recipe"` works from any
//! directory and a new stdlib file needs no registration by hand.

use std::path::Path;

fn main() {
    // Read when the script runs, not when it is compiled: a build script compiled once can serve
    // several checkouts through a shared target folder.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let stdlib = Path::new(&manifest).join("..").join("stdlib");
    println!("cargo:rerun-if-changed={}", stdlib.display());
    let mut entries: Vec<(String, String)> = std::fs::read_dir(&stdlib)
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
                .map(|p| {
                    println!("cargo:rerun-if-changed={}", p.display());
                    let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                    (name, p.canonicalize().unwrap_or(p).display().to_string())
                })
                .collect()
        })
        .unwrap_or_else(|e| panic!("cannot read the stdlib folder {}: {e}", stdlib.display()));
    entries.sort();
    let body: String =
        entries.iter().map(|(name, path)| format!("    ({name:?}, include_str!({path:?})),\n")).collect();
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("stdlib_modules.rs");
    std::fs::write(out, format!("&[\n{body}]\n")).expect("OUT_DIR is writable");
}
