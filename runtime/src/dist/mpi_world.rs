//! The MPI world (`--features mpi`): the ranks `mpirun` or `srun` started, through the system's
//! MPI (OpenMPI or MPICH) and the `mpi` crate.
//!
//! MPI's own collectives wait forever for a rank that has gone: one that returned from its script
//! early and finalised, or was stopped where the launcher does not end the job (OpenMPI's
//! `mpirun` ends it when a rank exits non-zero or by a signal; `srun` only with
//! `--kill-on-bad-exit`). So each collective first takes a roll call: every rank sends a small
//! message to every other and waits, polling, until it has heard from all of them or the rank
//! timeout (`MEDBRIDGE_RANK_TIMEOUT` seconds, default 600) has passed; then the ranks it has not
//! heard from are named in the error. Messages between two ranks arrive in order, so the k-th
//! roll call only ever matches the k-th. The collective itself runs once everyone is present.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::request::StaticScope;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use super::Collectives;
use crate::error::{Error, Result};

/// The roll call's tag; nothing else is sent point to point.
const ARRIVED_TAG: i32 = 7301;
static ARRIVED: u8 = 1;

/// The most elements one MPI call moves (its counts are C ints).
const CHUNK: usize = 1 << 28;

/// How long a rank waits for the others at a collective when `MEDBRIDGE_RANK_TIMEOUT` is unset.
const DEFAULT_TIMEOUT_SECONDS: f64 = 600.0;

pub(super) struct MpiWorld {
    comm: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    timeout: Duration,
    /// Finalises MPI when the world is dropped at the end of the run.
    _universe: Universe,
}

// SAFETY: MPI is initialised with `Threading::Serialized` (checked in `init`), which allows calls
// from any thread as long as no two run at once; every call goes through the `comm` mutex.
unsafe impl Send for MpiWorld {}
unsafe impl Sync for MpiWorld {}

impl MpiWorld {
    pub(super) fn init() -> Result<MpiWorld> {
        let timeout = rank_timeout()?;
        let (universe, provided) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::msg("MPI was already initialised in this process"))?;
        if provided < Threading::Serialized {
            crate::bail!("this MPI library offers only {provided:?} threading; medbridge needs Serialized");
        }
        let comm = universe.world();
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        Ok(MpiWorld { comm: Mutex::new(comm), rank, size, timeout, _universe: universe })
    }

    /// Element-wise sum over the ranks, in place, in calls of at most [`CHUNK`] elements.
    fn sum_in_place<T: Equivalence + Copy>(&self, what: &str, values: &mut [T]) -> Result<()> {
        let comm = self.comm();
        self.arrive(&comm, what)?;
        for chunk in values.chunks_mut(CHUNK) {
            let send = chunk.to_vec();
            comm.all_reduce_into(&send[..], chunk, SystemOperation::sum());
        }
        Ok(())
    }

    fn comm(&self) -> std::sync::MutexGuard<'_, SimpleCommunicator> {
        self.comm.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The roll call in front of every collective (module header).
    fn arrive(&self, comm: &SimpleCommunicator, what: &str) -> Result<()> {
        let others: Vec<i32> = (0..self.size as i32).filter(|&r| r != self.rank as i32).collect();
        let mut sends: Vec<_> = others
            .iter()
            .map(|&r| comm.process_at_rank(r).immediate_send_with_tag(StaticScope, &ARRIVED, ARRIVED_TAG))
            .collect();
        let mut missing = others;
        let started = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            missing.retain(|&r| {
                let from = comm.process_at_rank(r);
                if from.immediate_probe_with_tag(ARRIVED_TAG).is_none() {
                    return true;
                }
                let _: (u8, _) = from.receive_with_tag(ARRIVED_TAG);
                false
            });
            let mut pending = Vec::with_capacity(sends.len());
            for send in sends {
                if let Err(still) = send.test() {
                    pending.push(still);
                }
            }
            sends = pending;
            if missing.is_empty() && sends.is_empty() {
                return Ok(());
            }
            if started.elapsed() > self.timeout {
                // Unfinished requests cannot be dropped; the job is ending anyway.
                sends.into_iter().for_each(std::mem::forget);
                let names: Vec<String> = missing.iter().map(|r| r.to_string()).collect();
                let who = match names.len() {
                    0 => "some rank did not take this rank's message".to_string(),
                    1 => format!("rank {} did not arrive", names[0]),
                    _ => format!("ranks {} did not arrive", names.join(", ")),
                };
                crate::bail!(
                    "rank {} of {}: {who} at `{what}` within {:.0} s: it died, returned early or is \
                     stuck (MEDBRIDGE_RANK_TIMEOUT sets how long ranks wait for each other)",
                    self.rank,
                    self.size,
                    self.timeout.as_secs_f64()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

impl Collectives for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_f32(&self, what: &str, values: &mut [f32]) -> Result<()> {
        self.sum_in_place(what, values)
    }

    fn all_reduce_f64(&self, what: &str, values: &mut [f64]) -> Result<()> {
        self.sum_in_place(what, values)
    }

    fn all_gather(&self, what: &str, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        if bytes.len() > i32::MAX as usize {
            crate::bail!("{what}: {} bytes is more than one MPI message holds", bytes.len());
        }
        let comm = self.comm();
        self.arrive(&comm, what)?;
        let mut counts = vec![0i32; self.size];
        comm.all_gather_into(&(bytes.len() as i32), &mut counts[..]);
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total > i32::MAX as usize {
            crate::bail!("{what}: {total} bytes from all ranks is more than one MPI message holds");
        }
        let displs: Vec<i32> = counts.iter().scan(0, |at, &c| Some(std::mem::replace(at, *at + c))).collect();
        let mut all = vec![0u8; total];
        {
            let mut parts = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            comm.all_gather_varcount_into(bytes, &mut parts);
        }
        Ok(counts.iter().zip(&displs).map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec()).collect())
    }

    fn broadcast(&self, what: &str, bytes: &[u8]) -> Result<Vec<u8>> {
        let comm = self.comm();
        self.arrive(&comm, what)?;
        let root = comm.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        let mut out = if self.rank == 0 { bytes.to_vec() } else { vec![0u8; len as usize] };
        root.broadcast_into(&mut out[..]);
        Ok(out)
    }

    fn abort(&self, code: i32) -> ! {
        self.comm().abort(code)
    }
}

fn rank_timeout() -> Result<Duration> {
    let Ok(text) = std::env::var("MEDBRIDGE_RANK_TIMEOUT") else {
        return Ok(Duration::from_secs_f64(DEFAULT_TIMEOUT_SECONDS));
    };
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        _ => crate::bail!("MEDBRIDGE_RANK_TIMEOUT = `{text}`: expected a positive number of seconds"),
    }
}
