//! The paged KV cache's storage: per decoder layer one key and one value tensor of
//! `(blocks · block_size, kv_heads, head_dim)` slots, written in place with candle's
//! `scatter_set` and read with `index_select`, so the same code runs on the CPU and on CUDA.
//!
//! [`kv_cache_bytes`] gives what such a cache holds for a shape, computable without a model, so
//! a memory plan can size rollouts before running them.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::models::qwen2_5_vl::TextConfig;

/// Positions per block. Small enough that a row wastes little of its last block, large enough
/// that block tables stay short.
pub const BLOCK_SIZE: usize = 16;

/// Keys and values of one position of one row, over every layer.
pub fn kv_bytes_per_position(cfg: &TextConfig, dtype: DType) -> u64 {
    [cfg.num_hidden_layers, 2, cfg.num_key_value_heads, cfg.head_dim(), dtype.size_in_bytes()]
        .iter()
        .fold(1u64, |acc, &f| acc.saturating_mul(f as u64))
}

/// Bytes of a paged KV cache holding `rows` rows of `tokens` positions each (prompt and new
/// tokens), every row's positions rounded up to whole blocks of `block_size`. An upper bound for
/// K samples of one prompt, whose prompt blocks the engine stores once. Saturates.
pub fn kv_cache_bytes(cfg: &TextConfig, dtype: DType, block_size: usize, rows: usize, tokens: usize) -> u64 {
    let blocks = (tokens.div_ceil(block_size.max(1)) as u64).saturating_mul(rows as u64);
    pool_bytes(cfg, dtype, block_size, blocks)
}

/// Bytes of a pool of `blocks` blocks.
pub fn pool_bytes(cfg: &TextConfig, dtype: DType, block_size: usize, blocks: u64) -> u64 {
    blocks.saturating_mul(block_size as u64).saturating_mul(kv_bytes_per_position(cfg, dtype))
}

/// Every layer's key and value slots.
#[derive(Debug)]
pub struct KvPool {
    pub(super) layers: Vec<(Tensor, Tensor)>,
    kv_heads: usize,
    head_dim: usize,
    bytes: u64,
}

impl KvPool {
    pub fn new(cfg: &TextConfig, dtype: DType, device: &Device, slots: usize) -> Result<Self> {
        let (kv_heads, head_dim) = (cfg.num_key_value_heads, cfg.head_dim());
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| {
                let zeros = || Tensor::zeros((slots, kv_heads, head_dim), dtype, device);
                Ok((zeros()?, zeros()?))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = (slots as u64).saturating_mul(kv_bytes_per_position(cfg, dtype));
        Ok(KvPool { layers, kv_heads, head_dim, bytes })
    }

    /// What the pool holds on its device.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The scatter index that writes `n` positions `(n, kv_heads, head_dim)` to `slots`.
    pub fn write_index(&self, slots: &[u32], device: &Device) -> Result<Tensor> {
        let index = Tensor::new(slots, device)?.reshape((slots.len(), 1, 1))?;
        Ok(index.broadcast_as((slots.len(), self.kv_heads, self.head_dim))?.contiguous()?)
    }

    /// Write `k`, `v` `(n, kv_heads, head_dim)` of layer `layer` at the slots of `index`
    /// ([`Self::write_index`]).
    pub fn write(&self, layer: usize, index: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
        let (pk, pv) = &self.layers[layer];
        pk.scatter_set(index, &k.to_dtype(pk.dtype())?.contiguous()?, 0)?;
        pv.scatter_set(index, &v.to_dtype(pv.dtype())?.contiguous()?, 0)?;
        Ok(())
    }

    /// Copy the positions at slots `from` to slots `to`, in every layer.
    pub fn copy(&self, from: &[u32], to: &[u32]) -> Result<()> {
        let (Some((first, _)), false) = (self.layers.first(), from.is_empty()) else {
            return Ok(());
        };
        let device = first.device();
        let source = Tensor::new(from, device)?;
        let index = self.write_index(to, device)?;
        for (k, v) in &self.layers {
            let (ks, vs) = (k.index_select(&source, 0)?, v.index_select(&source, 0)?);
            k.scatter_set(&index, &ks, 0)?;
            v.scatter_set(&index, &vs, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::qwen2_5_vl::Config;

    #[test]
    fn the_cache_is_layers_heads_and_whole_blocks() {
        let cfg = Config::tiny().text;
        // 3 layers x (k, v) x 2 kv heads x 16 dims x 4 bytes.
        assert_eq!(kv_bytes_per_position(&cfg, DType::F32), 768);
        assert_eq!(kv_bytes_per_position(&cfg, DType::BF16), 384);
        // 8 rows of 40 positions: 3 blocks of 16 each.
        assert_eq!(kv_cache_bytes(&cfg, DType::F32, 16, 8, 40), 8 * 3 * 16 * 768);
        assert_eq!(kv_cache_bytes(&cfg, DType::F32, 16, usize::MAX, usize::MAX), u64::MAX);
        let pool = KvPool::new(&cfg, DType::F32, &Device::Cpu, 64).unwrap();
        assert_eq!(pool.bytes(), 64 * 768);
    }

    #[test]
    fn writes_and_copies_land_in_their_slots() {
        let cfg = Config::tiny().text;
        let dev = Device::Cpu;
        let pool = KvPool::new(&cfg, DType::F32, &dev, 8).unwrap();
        let per = cfg.num_key_value_heads * cfg.head_dim();
        let k = Tensor::arange(0f32, (2 * per) as f32, &dev).unwrap().reshape((2, 2, 16)).unwrap();
        let v = (&k + 1000.0).unwrap();
        pool.write(1, &pool.write_index(&[5, 2], &dev).unwrap(), &k, &v).unwrap();
        pool.copy(&[5], &[7]).unwrap();
        let (pk, pv) = &pool.layers[1];
        let row = |t: &Tensor, s: usize| t.get(s).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want =
            |r: usize, shift: f32| -> Vec<f32> { (0..per).map(|i| (r * per + i) as f32 + shift).collect() };
        assert_eq!((row(pk, 5), row(pk, 2), row(pk, 7)), (want(0, 0.0), want(1, 0.0), want(0, 0.0)));
        assert_eq!(row(pv, 7), want(0, 1000.0));
        assert!(row(pk, 0).iter().all(|&x| x == 0.0));
        assert!(row(&pool.layers[0].0, 5).iter().all(|&x| x == 0.0));
    }
}
