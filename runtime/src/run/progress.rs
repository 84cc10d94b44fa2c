//! Progress bars for long primitives: drawn on a terminal, silent in CI, logs and `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress bars may be drawn at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Draw when stderr is a terminal.
    Auto,
    /// Never draw.
    Quiet,
}

impl ProgressMode {
    /// A bar of `len` steps labelled `label`; hidden unless stderr is a terminal and not quiet.
    pub fn bar(self, len: u64, label: &str) -> ProgressBar {
        let visible = self == ProgressMode::Auto && console::Term::stderr().is_term();
        let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar
    }

    /// A byte-counting bar for a download of `len` bytes (0 when unknown), hidden like [`Self::bar`].
    pub fn bytes_bar(self, len: u64, label: &str) -> ProgressBar {
        let bar = self.bar(len, label);
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    }
}
