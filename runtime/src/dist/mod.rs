//! Data parallelism across processes: the ranks of one run, what they exchange, and how work is
//! split between them.
//!
//! A [`World`] is the run's set of ranks. One process is a world of one whose collectives return
//! their input, so the training and evaluation code has one path for both cases. Under `mpirun`
//! or `srun` with the `mpi` feature (`mpi_world.rs`) each collective first waits, for at most the
//! rank timeout, until every rank has reached it, so a rank that died or left early makes the
//! others fail with an error naming it instead of hanging.
//!
//! What is exchanged is small and on the host: gradients as f32 (LoRA's are a few MiB), counts
//! and statistics as f64, and records or hashes as bytes. Work is split into contiguous blocks in
//! rank order ([`World::shard`]), so gathering the blocks restores one process's order.

mod agree;
#[cfg(feature = "mpi")]
mod mpi_world;

use std::ops::Range;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;

pub use agree::{check_agreement, check_call, model_fingerprint, text_fingerprint};

/// The collectives a world offers; `what` names the exchange in a timeout's error.
pub trait Collectives: Send + Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Element-wise sum over ranks, in place.
    fn all_reduce_f32(&self, what: &str, values: &mut [f32]) -> Result<()>;
    fn all_reduce_f64(&self, what: &str, values: &mut [f64]) -> Result<()>;
    /// Every rank's bytes, in rank order.
    fn all_gather(&self, what: &str, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Rank 0's bytes on every rank (other ranks' `bytes` are ignored).
    fn broadcast(&self, what: &str, bytes: &[u8]) -> Result<Vec<u8>>;
    /// End every rank of the job now with `code` (after a rank's own error was reported), since
    /// the others would otherwise wait for it at their next collective.
    fn abort(&self, code: i32) -> !;
}

/// The ranks of a run; cheap to clone.
#[derive(Clone)]
pub struct World(Arc<dyn Collectives>);

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "World(rank {} of {})", self.rank(), self.size())
    }
}

impl Default for World {
    fn default() -> Self {
        World::single()
    }
}

impl World {
    /// One process: rank 0 of 1.
    pub fn single() -> World {
        World(Arc::new(Single))
    }

    pub fn new(collectives: Arc<dyn Collectives>) -> World {
        World(collectives)
    }

    /// The MPI world when this process was started by an MPI launcher, else one process. Without
    /// the `mpi` feature, a launch of several ranks is an error: each would run the whole script
    /// and write its own run directory.
    pub fn from_launcher() -> Result<World> {
        let launched = launcher_size();
        // One rank (a sweep cell inside a Slurm step, `mpirun -np 1`) needs no MPI at all.
        #[cfg(feature = "mpi")]
        if launched.is_some_and(|n| n > 1) {
            return mpi_world::MpiWorld::init().map(|w| World(Arc::new(w)));
        }
        match launched {
            Some(n) if n > 1 => crate::bail!(
                "this process is one of {n} ranks started by mpirun or srun, but medbridge was built \
                 without MPI; build it with `cargo build --release --features mpi` (Debian: apt-get \
                 install libopenmpi-dev openmpi-bin libclang-dev clang)"
            ),
            _ => Ok(World::single()),
        }
    }

    pub fn rank(&self) -> usize {
        self.0.rank()
    }

    pub fn size(&self) -> usize {
        self.0.size()
    }

    /// Rank 0: the one that writes the run directory, metrics and checkpoints.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    pub fn is_distributed(&self) -> bool {
        self.size() > 1
    }

    /// This rank's contiguous block of `0..len`: the first `len % size` ranks take one more.
    pub fn shard(&self, len: usize) -> Range<usize> {
        shard_range(len, self.rank(), self.size())
    }

    pub fn all_reduce_f32(&self, what: &str, values: &mut [f32]) -> Result<()> {
        if self.is_distributed() {
            self.0.all_reduce_f32(what, values)?;
        }
        Ok(())
    }

    pub fn all_reduce_f64(&self, what: &str, values: &mut [f64]) -> Result<()> {
        if self.is_distributed() {
            self.0.all_reduce_f64(what, values)?;
        }
        Ok(())
    }

    /// The sum over ranks of one number.
    pub fn sum(&self, what: &str, value: f64) -> Result<f64> {
        let mut v = [value];
        self.all_reduce_f64(what, &mut v)?;
        Ok(v[0])
    }

    /// Whether any rank says yes (a cancel request, say), so all ranks take the same branch.
    pub fn any(&self, what: &str, yes: bool) -> Result<bool> {
        Ok(self.sum(what, f64::from(u8::from(yes)))? > 0.0)
    }

    pub fn all_gather(&self, what: &str, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        if !self.is_distributed() {
            return Ok(vec![bytes.to_vec()]);
        }
        self.0.all_gather(what, bytes)
    }

    /// Every rank's items, concatenated in rank order: with [`Self::shard`] blocks, the order one
    /// process would have produced.
    pub fn gather_items<T: Serialize + DeserializeOwned>(&self, what: &str, items: Vec<T>) -> Result<Vec<T>> {
        if !self.is_distributed() {
            return Ok(items);
        }
        let mut all = Vec::new();
        for (rank, bytes) in self.all_gather(what, &serde_json::to_vec(&items)?)?.into_iter().enumerate() {
            let part: Vec<T> = serde_json::from_slice(&bytes).map_err(|e| {
                crate::error::Error::msg(format!("{what}: rank {rank} sent unreadable data: {e}"))
            })?;
            all.extend(part);
        }
        Ok(all)
    }

    /// Rank 0's `text` on every rank.
    pub fn broadcast_text(&self, what: &str, text: &str) -> Result<String> {
        if !self.is_distributed() {
            return Ok(text.to_string());
        }
        let bytes = self.0.broadcast(what, text.as_bytes())?;
        String::from_utf8(bytes).map_err(|e| crate::error::Error::msg(format!("{what}: not UTF-8: {e}")))
    }

    /// See [`Collectives::abort`]; a world of one simply exits.
    pub fn abort(&self, code: i32) -> ! {
        if self.is_distributed() {
            self.0.abort(code)
        }
        std::process::exit(code)
    }
}

/// Block `rank` of `0..len` split into `size` contiguous blocks.
pub fn shard_range(len: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, extra) = (len / size, len % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// How many ranks the launcher started, when this process was started by one: OpenMPI's
/// `mpirun`, MPICH's hydra (`PMI_SIZE`) or a Slurm step (`srun`).
pub fn launcher_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// This rank's index among the ranks on its node, from the launcher (`LOCAL_RANK` first, as
/// torchrun sets it), so `--device cuda` becomes `cuda:LOCAL_RANK`.
pub fn local_rank() -> Option<usize> {
    ["LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// A device name for this rank: under several ranks, plain `cuda` is the rank's own GPU on its
/// node (`cuda:LOCAL_RANK`), or the one GPU the launcher left it visible (Slurm's
/// `--gpus-per-task=1`). `--device` and a script's own `device:` option both pass through this,
/// so a script written for one GPU puts each rank on its own.
pub fn rank_device(device: &str, world: &World) -> String {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok().map(|v| v.split(',').count());
    match device {
        "cuda" if world.is_distributed() && visible == Some(1) => "cuda:0".to_string(),
        "cuda" if world.is_distributed() => format!("cuda:{}", local_rank().unwrap_or(world.rank())),
        other => other.to_string(),
    }
}

/// What the world's collectives do in a world of one: nothing.
struct Single;

impl Collectives for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_f32(&self, _: &str, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_f64(&self, _: &str, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn all_gather(&self, _: &str, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![bytes.to_vec()])
    }
    fn broadcast(&self, _: &str, bytes: &[u8]) -> Result<Vec<u8>> {
        Ok(bytes.to_vec())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_range_in_order_without_overlap() {
        for (len, size) in [(0, 3), (5, 2), (7, 3), (2, 4), (8, 8)] {
            let blocks: Vec<Range<usize>> = (0..size).map(|r| shard_range(len, r, size)).collect();
            let flat: Vec<usize> = blocks.iter().flat_map(|b| b.clone()).collect();
            assert_eq!(flat, (0..len).collect::<Vec<_>>(), "{len} over {size}");
            let sizes: Vec<usize> = blocks.iter().map(|b| b.len()).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        }
    }

    #[test]
    fn a_world_of_one_returns_its_input() {
        let world = World::single();
        let mut v = [1.5f32, 2.0];
        world.all_reduce_f32("test", &mut v).unwrap();
        assert_eq!(v, [1.5, 2.0]);
        assert_eq!(world.gather_items("test", vec![3u32, 4]).unwrap(), vec![3, 4]);
        assert_eq!(world.broadcast_text("test", "run-1").unwrap(), "run-1");
        assert!(!world.any("test", false).unwrap() && world.is_root());
    }
}
