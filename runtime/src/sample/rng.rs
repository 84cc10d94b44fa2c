//! Per-sample random streams: sample `i` of question `q` under seed `s` always sees the same
//! random numbers, whatever the batch size, the batch order or the other questions in the run.
//!
//! Each stream is a ChaCha20 generator keyed by SHA-256 of (seed, question id, sample index); the
//! sampler takes exactly one draw per generated token, so token t of a sample always uses the
//! stream's t-th number.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

/// The random stream of one sample.
#[derive(Debug, Clone)]
pub struct SampleRng {
    rng: ChaCha20Rng,
    draws: u64,
}

impl SampleRng {
    pub fn new(seed: u64, question_id: &str, sample_index: u64) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"medbridge sample stream v1");
        hash.update(seed.to_le_bytes());
        // Length-prefixed so ("ab", 1) and ("a", ...) can never produce the same key bytes.
        hash.update((question_id.len() as u64).to_le_bytes());
        hash.update(question_id.as_bytes());
        hash.update(sample_index.to_le_bytes());
        SampleRng { rng: ChaCha20Rng::from_seed(hash.finalize().into()), draws: 0 }
    }

    /// The next uniform number in [0, 1), from one 64-bit draw (53 bits of precision).
    pub fn next_uniform(&mut self) -> f64 {
        self.draws += 1;
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// How many numbers this stream has given, i.e. tokens generated with it.
    pub fn draws(&self) -> u64 {
        self.draws
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(seed: u64, qid: &str, index: u64) -> Vec<f64> {
        let mut rng = SampleRng::new(seed, qid, index);
        (0..64).map(|_| rng.next_uniform()).collect()
    }

    #[test]
    fn same_key_same_stream() {
        assert_eq!(stream(7, "pathmnist/12", 3), stream(7, "pathmnist/12", 3));
    }

    #[test]
    fn any_changed_key_part_changes_the_stream() {
        let base = stream(7, "pathmnist/12", 3);
        for other in
            [stream(8, "pathmnist/12", 3), stream(7, "pathmnist/13", 3), stream(7, "pathmnist/12", 4)]
        {
            assert!(base.iter().zip(&other).all(|(a, b)| a != b));
        }
    }

    #[test]
    fn uniforms_are_in_range_and_counted() {
        let mut rng = SampleRng::new(0, "", 0);
        let draws: Vec<f64> = (0..10_000).map(|_| rng.next_uniform()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert_eq!(rng.draws(), 10_000);
    }
}
