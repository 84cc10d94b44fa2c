//! The decoding state of a batch: per-layer keys and values, which cached keys are real tokens
//! (not padding), and each row's M-RoPE delta.
//!
//! Every tensor keeps the batch as its first dimension, so a sampler can prefill a prompt once
//! and [`KvCache::repeat_each`] it into K rows, or keep a subset of rows with [`KvCache::select`].
//!
//! Decoding appends one position per step. Concatenating would copy the whole cache every step,
//! so a layer keeps spare capacity and writes new positions in place; it grows by whole chunks.
//! Anything a gradient can flow through is concatenated instead, so training graphs stay intact.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::ops::MASKED;
use crate::error::Result;

/// Positions a layer's buffers grow by when decoding outruns their capacity.
const GROWTH: usize = 64;

/// One layer's keys and values, each `(batch, kv_heads, capacity, head_dim)` with the first
/// `len` positions filled.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    buffers: Option<(Tensor, Tensor)>,
    len: usize,
    /// Cloned with the cache: a layer writes in place only while no clone shares its buffers.
    owner: Arc<()>,
}

impl LayerKv {
    /// Append `k`, `v` `(batch, kv_heads, new, head_dim)` and return every cached key and value.
    pub(crate) fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let new = k.dim(2)?;
        let Some((bk, bv)) = self.buffers.take() else {
            self.len = new;
            self.buffers = Some((k.clone(), v.clone()));
            return Ok((k, v));
        };
        let len = self.len + new;
        if [&bk, &bv, &k, &v].iter().any(|t| t.track_op()) {
            let (past_k, past_v) = (bk.narrow(2, 0, self.len)?, bv.narrow(2, 0, self.len)?);
            let (k, v) = (Tensor::cat(&[&past_k, &k], 2)?, Tensor::cat(&[&past_v, &v], 2)?);
            (self.len, self.buffers) = (len, Some((k.clone(), v.clone())));
            return Ok((k, v));
        }
        let (bk, bv) = if len > bk.dim(2)? || Arc::strong_count(&self.owner) > 1 {
            self.owner = Arc::new(());
            let capacity = len.div_ceil(GROWTH) * GROWTH;
            (self.regrow(&bk, capacity)?, self.regrow(&bv, capacity)?)
        } else {
            (bk, bv)
        };
        bk.slice_set(&k.contiguous()?, 2, self.len)?;
        bv.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = len;
        let filled = (bk.narrow(2, 0, len)?, bv.narrow(2, 0, len)?);
        self.buffers = Some((bk, bv));
        Ok(filled)
    }

    /// The filled keys and values `(batch, kv_heads, len, d)`, `None` before the first append.
    pub(crate) fn filled(&self) -> Result<Option<(Tensor, Tensor)>> {
        Ok(match &self.buffers {
            Some((k, v)) => Some((k.narrow(2, 0, self.len)?, v.narrow(2, 0, self.len)?)),
            None => None,
        })
    }

    /// A fresh buffer of `capacity` positions holding the filled ones.
    fn regrow(&self, buffer: &Tensor, capacity: usize) -> Result<Tensor> {
        let (b, heads, _, d) = buffer.dims4()?;
        let spare = Tensor::zeros((b, heads, capacity - self.len, d), buffer.dtype(), buffer.device())?;
        // Both parts contiguous, so the result is too (as `slice_set` needs).
        Ok(Tensor::cat(&[&buffer.narrow(2, 0, self.len)?.contiguous()?, &spare], 2)?)
    }

    /// Rows `idx` of the buffers, in a layer of its own.
    fn select(&self, idx: &Tensor) -> Result<Self> {
        let buffers = match &self.buffers {
            Some((k, v)) => {
                Some((k.contiguous()?.index_select(idx, 0)?, v.contiguous()?.index_select(idx, 0)?))
            }
            None => None,
        };
        Ok(Self { buffers, len: self.len, owner: Arc::new(()) })
    }
}

#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
    pub(crate) key_valid: Vec<Vec<bool>>,
    pub(crate) rope_deltas: Vec<i64>,
}

impl KvCache {
    pub(crate) fn empty(layers: usize, batch: usize, rope_deltas: Vec<i64>) -> Self {
        Self { layers: vec![LayerKv::default(); layers], key_valid: vec![Vec::new(); batch], rope_deltas }
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
        let device = self.layers.iter().filter_map(|l| l.buffers.as_ref()).map(|(k, _)| k.device()).next();
        let layers = match device {
            None => self.layers.iter().map(|_| LayerKv::default()).collect(),
            Some(device) => {
                let idx = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), device)?;
                self.layers.iter().map(|layer| layer.select(&idx)).collect::<Result<Vec<_>>>()?
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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn positions(b: usize, from: usize, n: usize) -> Tensor {
        let values: Vec<f32> = (0..b * 2 * n * 4).map(|i| (from * 1000 + i) as f32).collect();
        Tensor::from_vec(values, (b, 2, n, 4), &Device::Cpu).unwrap()
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.dims() == b.dims()
            && a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Appending one position at a time, across a growth of the buffers, keeps exactly the
    /// concatenation of everything appended.
    #[test]
    fn appends_equal_concatenation() {
        let mut layer = LayerKv::default();
        let mut all = positions(2, 0, 5);
        layer.append(all.clone(), all.clone()).unwrap();
        for step in 0..GROWTH + 3 {
            let new = positions(2, step + 1, 1);
            all = Tensor::cat(&[&all, &new], 2).unwrap();
            let (k, v) = layer.append(new.clone(), new).unwrap();
            assert!(same(&k, &all) && same(&v, &all), "step {step}");
        }
    }

    /// A cloned cache decodes on its own: neither copy sees the other's new positions.
    #[test]
    fn clones_do_not_share_new_positions() {
        let mut a = LayerKv::default();
        a.append(positions(1, 0, 3), positions(1, 0, 3)).unwrap();
        a.append(positions(1, 1, 1), positions(1, 1, 1)).unwrap();
        let mut b = a.clone();
        let (from_b, _) = b.append(positions(1, 2, 1), positions(1, 2, 1)).unwrap();
        let (from_a, _) = a.append(positions(1, 3, 1), positions(1, 3, 1)).unwrap();
        let prefix = Tensor::cat(&[&positions(1, 0, 3), &positions(1, 1, 1)], 2).unwrap();
        assert!(same(&from_b, &Tensor::cat(&[&prefix, &positions(1, 2, 1)], 2).unwrap()));
        assert!(same(&from_a, &Tensor::cat(&[&prefix, &positions(1, 3, 1)], 2).unwrap()));
        let (again_b, _) = b.append(positions(1, 4, 1), positions(1, 4, 1)).unwrap();
        assert!(same(&again_b.narrow(2, 0, 5).unwrap(), &from_b));
    }

    /// Keys a gradient flows through are concatenated, so the gradient reaches every position.
    #[test]
    fn tracked_appends_keep_the_gradient() {
        let first = Var::from_tensor(&positions(1, 0, 2)).unwrap();
        let second = Var::from_tensor(&positions(1, 1, 1)).unwrap();
        let mut layer = LayerKv::default();
        layer.append(first.as_tensor().clone(), first.as_tensor().clone()).unwrap();
        let (k, _) = layer.append(second.as_tensor().clone(), second.as_tensor().clone()).unwrap();
        let grads = k.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(first.as_tensor()).is_some() && grads.get(second.as_tensor()).is_some());
    }
}
