//! The cancel flag: Ctrl-C sets it, long primitives poll it between steps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// A shared, cloneable cancellation flag.
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Cancelled)` once the flag is set; `what` says where the work stopped.
    pub fn check(&self, what: impl FnOnce() -> String) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled(what()))
        } else {
            Ok(())
        }
    }
}
