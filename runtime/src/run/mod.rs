//! Runs: the run directory, the session every primitive shares, cancellation, progress and the
//! memory budget.

mod cancel;
pub mod memory;
mod progress;
mod run_dir;
mod session;

pub use cancel::CancelFlag;
pub use memory::MemoryBudget;
pub use progress::ProgressMode;
pub use run_dir::{utc_stamp, RunDir};
pub use session::{splitmix64, Session, DEFAULT_SEED};
