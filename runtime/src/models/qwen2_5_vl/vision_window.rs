//! Host-side index arithmetic of the vision tower: patch (row, col) positions, the window
//! permutation and the attention segment boundaries, exactly as transformers'
//! `rot_pos_emb`, `get_window_index` and `cu_seqlens` compute them.
//!
//! Patches arrive grouped in merge units (`spatial_merge_size²` neighbouring patches in a row),
//! units in row-major order over the merged grid. Windowed blocks attend within squares of
//! `window_size` pixels laid over the merged grid from its top-left corner; edge windows are
//! cut short (transformers pads and drops the padding). The tower permutes merge units so that
//! each window is contiguous, and undoes the permutation after the merger.

use crate::error::Result;

/// One image's patch grid: `[t, h, w]` in patches.
pub type Grid = [usize; 3];

/// Grids from transformers' `image_grid_thw` tensor `(images, 3)` of any integer dtype.
pub fn grids_from_tensor(grid_thw: &candle_core::Tensor) -> Result<Vec<Grid>> {
    let rows = grid_thw.to_dtype(candle_core::DType::I64)?.to_vec2::<i64>()?;
    rows.iter()
        .map(|r| match r.as_slice() {
            &[t, h, w] if t > 0 && h > 0 && w > 0 => Ok([t as usize, h as usize, w as usize]),
            other => Err(crate::error::Error::msg(format!(
                "image_grid_thw row {other:?} is not three positive sizes"
            ))),
        })
        .collect()
}

/// Check each grid is usable with this merge size and return the total patch count.
pub fn check_grids(grids: &[Grid], merge: usize) -> Result<usize> {
    let mut total = 0;
    for (i, &[t, h, w]) in grids.iter().enumerate() {
        if t == 0 || h == 0 || w == 0 || h % merge != 0 || w % merge != 0 {
            crate::bail!(
                "image {i}: grid [t={t}, h={h}, w={w}] must be non-empty with h and w multiples of {merge}"
            );
        }
        total += t * h * w;
    }
    Ok(total)
}

/// `(row, col)` of every patch, in the order the patches arrive.
pub fn patch_positions(grids: &[Grid], merge: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for &[t, h, w] in grids {
        for _ in 0..t {
            for bh in 0..h / merge {
                for bw in 0..w / merge {
                    for ih in 0..merge {
                        for iw in 0..merge {
                            out.push((bh * merge + ih, bw * merge + iw));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The window permutation over merge units, and the cumulative patch boundaries of the
/// (non-empty) windows, starting at 0.
pub fn window_index(grids: &[Grid], merge: usize, window_units: usize) -> (Vec<usize>, Vec<usize>) {
    let unit = merge * merge;
    let mut index = Vec::new();
    let mut bounds = vec![0usize];
    let mut offset = 0;
    for &[t, h, w] in grids {
        let (gh, gw) = (h / merge, w / merge);
        for frame in 0..t {
            for wr in 0..gh.div_ceil(window_units) {
                for wc in 0..gw.div_ceil(window_units) {
                    let before = index.len();
                    for r in wr * window_units..((wr + 1) * window_units).min(gh) {
                        for c in wc * window_units..((wc + 1) * window_units).min(gw) {
                            index.push(offset + frame * gh * gw + r * gw + c);
                        }
                    }
                    let last = bounds[bounds.len() - 1];
                    bounds.push(last + (index.len() - before) * unit);
                }
            }
        }
        offset += t * gh * gw;
    }
    (index, bounds)
}

/// Cumulative patch boundaries of full attention: one segment per frame of each image.
pub fn frame_bounds(grids: &[Grid]) -> Vec<usize> {
    let mut bounds = vec![0usize];
    for &[t, h, w] in grids {
        for _ in 0..t {
            bounds.push(bounds[bounds.len() - 1] + h * w);
        }
    }
    bounds
}

/// The inverse of a permutation.
pub fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_read_from_a_tensor() {
        let dev = candle_core::Device::Cpu;
        let t = candle_core::Tensor::new(&[[1i64, 8, 10], [1, 4, 4]], &dev).unwrap();
        assert_eq!(grids_from_tensor(&t).unwrap(), vec![[1, 8, 10], [1, 4, 4]]);
        let bad = candle_core::Tensor::new(&[[1i64, 0, 10]], &dev).unwrap();
        assert!(grids_from_tensor(&bad).is_err());
    }

    #[test]
    fn patches_come_in_merge_units() {
        let pos = patch_positions(&[[1, 2, 4]], 2);
        assert_eq!(pos, vec![(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]);
    }

    #[test]
    fn windows_pad_at_the_edges() {
        // Merged grid 3x5 with 2x2-unit windows: windows of 4, 4, 2 / 2, 2, 1 units.
        //  0  1 |  2  3 |  4
        //  5  6 |  7  8 |  9
        //  -----+-------+---
        // 10 11 | 12 13 | 14
        let (index, bounds) = window_index(&[[1, 6, 10]], 2, 2);
        assert_eq!(index, vec![0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14]);
        assert_eq!(bounds, vec![0, 16, 32, 40, 48, 56, 60]);
    }

    #[test]
    fn second_image_is_offset_and_inverse_restores() {
        let (index, bounds) = window_index(&[[1, 2, 2], [1, 4, 2]], 2, 1);
        assert_eq!(index, vec![0, 1, 2]);
        assert_eq!(bounds, vec![0, 4, 8, 12]);
        let (index, _) = window_index(&[[1, 4, 4]], 2, 1);
        let inv = inverse(&index);
        assert!(index.iter().enumerate().all(|(i, &p)| inv[p] == i));
        assert_eq!(frame_bounds(&[[2, 2, 2], [1, 4, 2]]), vec![0, 4, 8, 16]);
    }
}
