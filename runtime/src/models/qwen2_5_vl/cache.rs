//! The decoding state of a batch: per-layer keys and values, which cached keys are real tokens
//! (not padding), and each row's M-RoPE delta.
//!
//! Every tensor keeps the batch as its first dimension, so a sampler can prefill a prompt once
//! and [`KvCache::repeat_each`] it into K rows, or keep a subset of rows with [`KvCache::select`].

use candle_core::{Device, Tensor};

use super::ops::MASKED;
use super::text::LayerKv;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
    pub(crate) key_valid: Vec<Vec<bool>>,
    pub(crate) rope_deltas: Vec<i64>,
}

impl KvCache {
    pub(crate) fn empty(layers: usize, batch: usize, rope_deltas: Vec<i64>) -> Self {
        Self { layers: vec![None; layers], key_valid: vec![Vec::new(); batch], rope_deltas }
    }

    pub fn batch(&self) -> usize {
        self.key_valid.len()
    }

    /// Cached positions per row (padding included).
    pub fn len(&self) -> usize {
        self.key_valid.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn rope_deltas(&self) -> &[i64] {
        &self.rope_deltas
    }

    /// A cache holding rows `rows` of this one, in that order (rows may repeat).
    pub fn select(&self, rows: &[usize]) -> Result<Self> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch()) {
            crate::bail!("cache row {bad} out of range: the cache holds {} rows", self.batch());
        }
        let device = self.layers.iter().flatten().map(|(k, _)| k.device().clone()).next();
        let layers = match device {
            None => self.layers.clone(),
            Some(device) => {
                let idx = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), &device)?;
                self.layers
                    .iter()
                    .map(|kv| match kv {
                        Some((k, v)) => Ok(Some((
                            k.contiguous()?.index_select(&idx, 0)?,
                            v.contiguous()?.index_select(&idx, 0)?,
                        ))),
                        None => Ok(None),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        Ok(Self {
            layers,
            key_valid: rows.iter().map(|&r| self.key_valid[r].clone()).collect(),
            rope_deltas: rows.iter().map(|&r| self.rope_deltas[r]).collect(),
        })
    }

    /// Each row repeated `k` times in place: rows `[a, b]` become `[a, a, .., b, b, ..]`.
    pub fn repeat_each(&self, k: usize) -> Result<Self> {
        let rows: Vec<usize> = (0..self.batch()).flat_map(|r| std::iter::repeat_n(r, k)).collect();
        self.select(&rows)
    }

    /// Record `new` appended positions per row with their validity.
    pub(crate) fn extend_valid(&mut self, new: &[Vec<bool>]) {
        for (row, add) in self.key_valid.iter_mut().zip(new) {
            row.extend_from_slice(add);
        }
    }

    /// The additive mask `(batch, 1, q_len, keys)` for the last `q_len` cached positions as
    /// queries: causal, and blind to padding keys. `None` when nothing needs masking.
    pub(crate) fn mask(&self, q_len: usize, device: &Device) -> Result<Option<Tensor>> {
        let keys = self.len();
        let all_valid = self.key_valid.iter().all(|r| r.iter().all(|&v| v));
        if all_valid && q_len == 1 {
            return Ok(None);
        }
        let past = keys - q_len;
        let mut data = Vec::with_capacity(self.batch() * q_len * keys);
        for row in &self.key_valid {
            for i in 0..q_len {
                data.extend(
                    row.iter().enumerate().map(|(j, &v)| if v && j <= past + i { 0.0 } else { MASKED }),
                );
            }
        }
        Ok(Some(Tensor::from_vec(data, (self.batch(), 1, q_len, keys), device)?))
    }
}
