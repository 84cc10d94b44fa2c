//! The vision tower (`visual.*`): patch embedding, 2D rotary embedding, windowed and full
//! attention blocks, and the patch merger, as transformers' `Qwen2_5_VisionTransformerPretrainedModel`.
//!
//! Input is transformers' `pixel_values`: `(Σ t·h·w, C·T·P·P)` with one row per patch in merge-
//! unit order, and one `[t, h, w]` grid per image. The Conv3d patch embedding has stride equal
//! to its kernel, so it is a matmul over the flattened patch.

use candle_core::{DType, Device, Tensor};

use super::config::VisionConfig;
use super::lora::{Linear, INIT_STD};
use super::ops::{apply_rotary, attention, upcast, RmsNorm};
use super::text::SwiGlu;
use super::vision_window::{check_grids, frame_bounds, inverse, patch_positions, window_index, Grid};
use super::weights::{join, Init, Param, Visitor, Weights};
use crate::error::{Context, Result};

/// transformers hard-codes this epsilon for the vision norms.
const VISION_EPS: f64 = 1e-6;
const VISION_ROPE_THETA: f32 = 10_000.0;

#[derive(Debug, Clone)]
struct VisionAttention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl VisionAttention {
    /// `x: (n, dim)`; attention runs separately inside each `[bounds[i], bounds[i+1])` segment.
    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, bounds: &[usize]) -> Result<Tensor> {
        let (n, dim) = x.dims2()?;
        let head_dim = dim / self.heads;
        let qkv = self.qkv.forward(x)?.reshape((n, 3, self.heads, head_dim))?;
        let rotate = |t: Tensor| -> Result<Tensor> {
            let dtype = t.dtype();
            Ok(apply_rotary(&upcast(&t)?, cos, sin)?.to_dtype(dtype)?.transpose(0, 1)?.contiguous()?)
        };
        let q = rotate(qkv.narrow(1, 0, 1)?.squeeze(1)?)?;
        let k = rotate(qkv.narrow(1, 1, 1)?.squeeze(1)?)?;
        let v = qkv.narrow(1, 2, 1)?.squeeze(1)?.transpose(0, 1)?.contiguous()?;
        let mut parts = Vec::with_capacity(bounds.len());
        for pair in bounds.windows(2) {
            let (start, len) = (pair[0], pair[1] - pair[0]);
            if len > 0 {
                let seg = |t: &Tensor| t.narrow(1, start, len);
                parts.push(attention(&seg(&q)?, &seg(&k)?, &seg(&v)?, None)?);
            }
        }
        let out = Tensor::cat(&parts, 1)?.transpose(0, 1)?.reshape((n, dim))?;
        self.proj.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct VisionBlock {
    norm1: RmsNorm,
    attn: VisionAttention,
    norm2: RmsNorm,
    mlp: SwiGlu,
}

impl VisionBlock {
    fn new(cfg: &VisionConfig, w: &Weights) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            norm1: RmsNorm::new(&w.pp("norm1"), d, VISION_EPS)?,
            attn: VisionAttention {
                qkv: Linear::new(&w.pp("attn").pp("qkv"), d, 3 * d, true)?,
                proj: Linear::new(&w.pp("attn").pp("proj"), d, d, true)?,
                heads: cfg.num_heads,
            },
            norm2: RmsNorm::new(&w.pp("norm2"), d, VISION_EPS)?,
            mlp: SwiGlu::new(&w.pp("mlp"), d, cfg.intermediate_size, true)?,
        })
    }

    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, bounds: &[usize]) -> Result<Tensor> {
        let h = (x + self.attn.forward(&self.norm1.forward(x)?, cos, sin, bounds)?)?;
        Ok((&h + self.mlp.forward(&self.norm2.forward(&h)?)?)?)
    }

    fn visit(&mut self, prefix: &str, f: &mut Visitor) -> Result<()> {
        f(&join(prefix, "norm1.weight"), Param::Tensor(&mut self.norm1.weight))?;
        f(&join(prefix, "attn.qkv"), Param::Linear(&mut self.attn.qkv))?;
        f(&join(prefix, "attn.proj"), Param::Linear(&mut self.attn.proj))?;
        f(&join(prefix, "norm2.weight"), Param::Tensor(&mut self.norm2.weight))?;
        self.mlp.visit(&join(prefix, "mlp"), f)
    }
}

/// RMSNorm each patch, concatenate each merge unit, then Linear -> GELU -> Linear.
#[derive(Debug, Clone)]
struct PatchMerger {
    ln_q: RmsNorm,
    fc1: Linear,
    fc2: Linear,
    unit_dim: usize,
}

impl PatchMerger {
    fn new(cfg: &VisionConfig, w: &Weights) -> Result<Self> {
        let unit_dim = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        Ok(Self {
            ln_q: RmsNorm::new(&w.pp("ln_q"), cfg.hidden_size, VISION_EPS)?,
            fc1: Linear::new(&w.pp("mlp.0"), unit_dim, unit_dim, true)?,
            fc2: Linear::new(&w.pp("mlp.2"), unit_dim, cfg.out_hidden_size, true)?,
            unit_dim,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let units = self.ln_q.forward(x)?.reshape(((), self.unit_dim))?;
        self.fc2.forward(&self.fc1.forward(&units)?.gelu_erf()?)
    }
}

/// The whole tower.
#[derive(Debug, Clone)]
pub struct VisionModel {
    /// Conv3d kernel `(hidden, C, T, P, P)`, used as a `(hidden, C·T·P·P)` matrix.
    patch_embed: Tensor,
    blocks: Vec<VisionBlock>,
    merger: PatchMerger,
    inv_freq: Vec<f32>,
    cfg: VisionConfig,
}

/// Hidden states of the blocks, still in window order, and that order.
struct BlockOutput {
    hidden: Tensor,
    window_index: Vec<usize>,
}

impl VisionModel {
    /// Build from `visual.*` of a hub-layout checkpoint (`w` points at `visual`).
    pub fn new(cfg: &VisionConfig, w: &Weights) -> Result<Self> {
        let (c, t, p) = (cfg.in_chans, cfg.temporal_patch_size, cfg.patch_size);
        let patch_embed =
            w.pp("patch_embed.proj").get(&[cfg.hidden_size, c, t, p, p], "weight", Init::Normal(INIT_STD))?;
        let blocks = (0..cfg.depth)
            .map(|i| VisionBlock::new(cfg, &w.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let rot_dim = cfg.head_dim() / 2;
        let inv_freq =
            (0..rot_dim / 2).map(|i| 1.0 / VISION_ROPE_THETA.powf((2 * i) as f32 / rot_dim as f32)).collect();
        Ok(Self {
            patch_embed,
            blocks,
            merger: PatchMerger::new(cfg, &w.pp("merger"))?,
            inv_freq,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Merged features `(Σ t·h·w / merge², out_hidden_size)`, in the order of the image tokens.
    pub fn forward(&self, pixel_values: &Tensor, grids: &[Grid]) -> Result<Tensor> {
        let out = self.run_blocks(pixel_values, grids)?;
        let merged = self.merger.forward(&out.hidden)?;
        restore(&merged, &out.window_index)
    }

    /// Patch features before the merger `(Σ t·h·w, hidden_size)`, in input patch order; for probing.
    pub fn forward_pre_merger(&self, pixel_values: &Tensor, grids: &[Grid]) -> Result<Tensor> {
        let out = self.run_blocks(pixel_values, grids)?;
        let (n, d) = out.hidden.dims2()?;
        let units = out.hidden.reshape((out.window_index.len(), ()))?;
        Ok(restore(&units, &out.window_index)?.reshape((n, d))?)
    }

    fn run_blocks(&self, pixel_values: &Tensor, grids: &[Grid]) -> Result<BlockOutput> {
        let cfg = &self.cfg;
        let merge = cfg.spatial_merge_size;
        let total = check_grids(grids, merge)?;
        let patch_dim = self.patch_embed.elem_count() / cfg.hidden_size;
        let (rows, cols) = pixel_values.dims2().context("pixel_values must be 2-D (patches, C·T·P·P)")?;
        if rows != total || cols != patch_dim {
            crate::bail!(
                "pixel_values has shape [{rows}, {cols}], but grids {grids:?} need [{total}, {patch_dim}] \
                 (C={} T={} P={})",
                cfg.in_chans,
                cfg.temporal_patch_size,
                cfg.patch_size
            );
        }
        let dtype = self.patch_embed.dtype();
        let kernel = self.patch_embed.reshape((cfg.hidden_size, patch_dim))?;
        let x = pixel_values.to_dtype(dtype)?.matmul(&kernel.t()?)?;

        let unit = merge * merge;
        let (window_index, window_bounds) =
            window_index(grids, merge, cfg.window_size / merge / cfg.patch_size);
        let units = Tensor::new(window_index.iter().map(|&i| i as u32).collect::<Vec<_>>(), x.device())?;
        let mut x = x
            .reshape((total / unit, unit * cfg.hidden_size))?
            .index_select(&units, 0)?
            .reshape((total, ()))?;

        let positions = patch_positions(grids, merge);
        let ordered: Vec<(usize, usize)> =
            window_index.iter().flat_map(|&u| positions[u * unit..(u + 1) * unit].iter().copied()).collect();
        let (cos, sin) = self.rotary(&ordered, x.device())?;
        // The rotation runs in f32 as in transformers, or in f64 for an f64 model.
        let rope_dtype = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
        let (cos, sin) = (cos.to_dtype(rope_dtype)?, sin.to_dtype(rope_dtype)?);

        let full_bounds = frame_bounds(grids);
        for (i, block) in self.blocks.iter().enumerate() {
            let bounds = if cfg.fullatt_block_indexes.contains(&i) { &full_bounds } else { &window_bounds };
            x = block.forward(&x, &cos, &sin, bounds)?;
        }
        Ok(BlockOutput { hidden: x, window_index })
    }

    /// f32 `cos`/`sin` of shape `(n, 1, head_dim)`: row frequencies then column frequencies,
    /// the whole repeated twice for rotate-half.
    fn rotary(&self, positions: &[(usize, usize)], device: &Device) -> Result<(Tensor, Tensor)> {
        let quarter = self.inv_freq.len();
        let head_dim = 4 * quarter;
        let mut angles = Vec::with_capacity(positions.len() * head_dim);
        for &(r, c) in positions {
            let row: Vec<f32> = self.inv_freq.iter().map(|f| r as f32 * f).collect();
            let col: Vec<f32> = self.inv_freq.iter().map(|f| c as f32 * f).collect();
            for _ in 0..2 {
                angles.extend_from_slice(&row);
                angles.extend_from_slice(&col);
            }
        }
        let angles =
            Tensor::from_vec(angles, (positions.len(), 1, head_dim), device)?.to_dtype(DType::F32)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    pub fn dtype(&self) -> DType {
        self.patch_embed.dtype()
    }

    /// Walk every parameter with its hub-layout name (`visual.*`).
    pub fn visit(&mut self, f: &mut Visitor) -> Result<()> {
        f("visual.patch_embed.proj.weight", Param::Tensor(&mut self.patch_embed))?;
        for (i, block) in self.blocks.iter_mut().enumerate() {
            block.visit(&format!("visual.blocks.{i}"), f)?;
        }
        f("visual.merger.ln_q.weight", Param::Tensor(&mut self.merger.ln_q.weight))?;
        f("visual.merger.mlp.0", Param::Linear(&mut self.merger.fc1))?;
        f("visual.merger.mlp.2", Param::Linear(&mut self.merger.fc2))
    }
}

/// Undo the window permutation on rows that are merge units.
fn restore(units: &Tensor, window_index: &[usize]) -> Result<Tensor> {
    let inv: Vec<u32> = inverse(window_index).into_iter().map(|i| i as u32).collect();
    let inv = Tensor::new(inv, units.device())?;
    Ok(units.index_select(&inv, 0)?)
}
