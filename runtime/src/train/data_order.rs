//! The order examples are visited in: a fresh seeded shuffle each epoch, with its full state
//! (seed, generator position, epoch, cursor and the current permutation) saved in checkpoints so
//! a resumed run sees exactly the batches the uninterrupted run would have.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::Result;

#[derive(Debug, Clone)]
pub struct DataOrder {
    seed: u64,
    rng: ChaCha8Rng,
    epoch: u64,
    cursor: usize,
    order: Vec<usize>,
}

/// What a checkpoint records of a [`DataOrder`]. The generator position is a decimal string
/// because it is a 128-bit counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataOrderState {
    pub seed: u64,
    pub rng_word_pos: String,
    pub epoch: u64,
    pub cursor: usize,
    pub order: Vec<usize>,
}

impl DataOrder {
    /// Visit `0..n`, shuffled with `seed`.
    pub fn new(n: usize, seed: u64) -> Result<Self> {
        if n == 0 {
            crate::bail!("there is nothing to train on: the task has no items");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        Ok(Self { seed, rng, epoch: 0, cursor: 0, order })
    }

    /// The next `k` indices, starting a new shuffled epoch when this one runs out.
    pub fn next_batch(&mut self, k: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            if self.cursor == self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.epoch += 1;
                self.cursor = 0;
            }
            out.push(self.order[self.cursor]);
            self.cursor += 1;
        }
        out
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn state(&self) -> DataOrderState {
        DataOrderState {
            seed: self.seed,
            rng_word_pos: self.rng.get_word_pos().to_string(),
            epoch: self.epoch,
            cursor: self.cursor,
            order: self.order.clone(),
        }
    }

    /// Continue from a saved state; `n` must be the size the state was made for.
    pub fn restore(state: &DataOrderState, n: usize) -> Result<Self> {
        let mut sorted = state.order.clone();
        sorted.sort_unstable();
        if sorted != (0..n).collect::<Vec<_>>() || state.cursor > n {
            crate::bail!(
                "the checkpoint's data order covers {} items but the task has {n}: resume with the same task",
                state.order.len()
            );
        }
        let pos: u128 = state.rng_word_pos.parse().map_err(|_| {
            crate::Error::msg(format!("data order rng_word_pos {:?} is not a number", state.rng_word_pos))
        })?;
        let mut rng = ChaCha8Rng::seed_from_u64(state.seed);
        rng.set_word_pos(pos);
        Ok(Self {
            seed: state.seed,
            rng,
            epoch: state.epoch,
            cursor: state.cursor,
            order: state.order.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_and_restore_continues_the_stream() {
        let mut a = DataOrder::new(5, 3).unwrap();
        let first: Vec<usize> = a.next_batch(5);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        a.next_batch(3);
        let mut b = DataOrder::restore(&a.state(), 5).unwrap();
        assert_eq!(a.next_batch(9), b.next_batch(9));
        assert!(DataOrder::restore(&a.state(), 6).is_err());
    }
}
