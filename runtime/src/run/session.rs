//! `Session`: what every primitive of one run shares — device, seed, sandbox, run directory,
//! cancel flag, progress mode, memory budget and the ranks of an MPI run. The bindings hold one
//! `Arc<Session>` per engine.

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::Device;

use super::{CancelFlag, MemoryBudget, ProgressMode, RunDir};
use crate::dist::World;
use crate::sandbox::Sandbox;

#[derive(Debug)]
pub struct Session {
    pub device: Device,
    pub sandbox: Sandbox,
    pub run: RunDir,
    pub cancel: CancelFlag,
    pub progress: ProgressMode,
    /// What one sampling call may add to memory (`--max-memory`, else the machine's default).
    pub memory: MemoryBudget,
    /// `--offline`: loaders never touch the network (as with `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// The ranks training and evaluation split their work over (one process unless under MPI).
    pub world: World,
    seed: AtomicU64,
    draws: AtomicU64,
}

/// The global seed when a script never calls `seed(n)`.
pub const DEFAULT_SEED: u64 = 0;

impl Session {
    pub fn new(
        device: Device,
        sandbox: Sandbox,
        run: RunDir,
        cancel: CancelFlag,
        progress: ProgressMode,
    ) -> Self {
        Session {
            device,
            sandbox,
            run,
            cancel,
            progress,
            memory: MemoryBudget::machine_default(),
            offline: false,
            world: World::single(),
            seed: AtomicU64::new(DEFAULT_SEED),
            draws: AtomicU64::new(0),
        }
    }

    /// The same session under another memory budget (`--max-memory`).
    pub fn with_memory(self, memory: MemoryBudget) -> Self {
        Session { memory, ..self }
    }

    /// The same session as one rank of `world`.
    pub fn with_world(self, world: World) -> Self {
        Session { world, ..self }
    }

    /// Refuse network access for this run's loaders (`--offline`).
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// How this run's loaders may download: never when `--offline` or `HF_HUB_OFFLINE=1`, with
    /// the run's progress bars and cancel flag otherwise.
    pub fn net(&self) -> crate::hub::Net {
        crate::hub::Net {
            offline: self.offline || crate::hub::offline_from_env(),
            progress: self.progress,
            cancel: Some(self.cancel.clone()),
            ..crate::hub::Net::default()
        }
    }

    /// Set the global seed and restart the stream of derived seeds.
    pub fn set_seed(&self, seed: u64) {
        self.seed.store(seed, Ordering::SeqCst);
        self.draws.store(0, Ordering::SeqCst);
    }

    pub fn seed(&self) -> u64 {
        self.seed.load(Ordering::SeqCst)
    }

    /// A fresh seed for a primitive called without its own `seed` option: the i-th such call after
    /// `seed(n)` always gets the same value, so whole scripts replay exactly.
    pub fn next_seed(&self) -> u64 {
        let i = self.draws.fetch_add(1, Ordering::SeqCst);
        splitmix64(self.seed().wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    }
}

/// SplitMix64's finaliser: decorrelates nearby integers into well-spread 64-bit seeds.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
