//! Sweeps: a grid of independent runs of one script, each cell its own run directory, wherever
//! it ran (local worker processes or a Slurm array task), gathered afterwards.
//!
//! This module owns what is on disk — the grid and its cells' names ([`grid`]), the sweep
//! directory with `sweep.json` and each cell's status file ([`dir`]), and reading every cell back
//! ([`results`]). Starting processes and talking to Slurm is the CLI's job (`medbridge sweep`).

pub mod dir;
pub mod grid;
pub mod results;

pub use dir::{
    host_name, now, CellRecord, CellState, CellStatus, SlurmSubmission, SweepDir, SweepSpec, SWEEP_FORMAT,
};
pub use grid::{cell_name, expand, GridAxis, GridCell};
pub use results::collect;
