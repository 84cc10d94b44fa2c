//! M-RoPE position ids for a batch of prompts, as transformers' `get_rope_index` computes them.
//!
//! Text tokens count up on all three axes. An image's tokens take `(t, h, w)` on its merged
//! grid, offset by the position the image starts at; the text after it resumes at the image's
//! largest id + 1. Padding (attention 0) gets id 1 and is skipped. Each row's rope delta
//! (`max id + 1 - row length`) is what decoding adds to the cache length to continue.

use super::config::TokenIds;
use super::text::MropePositions;
use super::vision_window::Grid;
use crate::error::Result;

/// Position ids `(3, batch, seq)` and one rope delta per row. `grids` are consumed in order,
/// one per image, across the whole batch.
pub fn rope_index(
    ids: &[Vec<u32>],
    valid: &[Vec<bool>],
    grids: &[Grid],
    tokens: &TokenIds,
    merge: usize,
) -> Result<(MropePositions, Vec<i64>)> {
    let batch = ids.len();
    let seq = ids.first().map_or(0, Vec::len);
    let mut pos = MropePositions { batch, seq, ids: vec![1; 3 * batch * seq] };
    let mut deltas = Vec::with_capacity(batch);
    let mut next_grid = 0;
    for (b, (row, mask)) in ids.iter().zip(valid).enumerate() {
        let kept: Vec<(usize, u32)> = row.iter().copied().enumerate().filter(|&(i, _)| mask[i]).collect();
        let tokens_only: Vec<u32> = kept.iter().map(|&(_, t)| t).collect();
        let images = tokens_only
            .windows(2)
            .filter(|w| w[0] == tokens.vision_start_token_id && w[1] == tokens.image_token_id)
            .count();
        let mut chunks: Vec<[i64; 3]> = Vec::with_capacity(kept.len());
        let mut next: i64 = 0;
        let mut st = 0;
        for _ in 0..images {
            let Some(ed) = tokens_only[st..].iter().position(|&t| t == tokens.image_token_id).map(|i| i + st)
            else {
                crate::bail!("row {b}: an image start token is not followed by image tokens");
            };
            let Some(&[t, h, w]) = grids.get(next_grid) else {
                crate::bail!("the prompts hold more images than the {} grids given", grids.len());
            };
            next_grid += 1;
            for i in 0..(ed - st) as i64 {
                chunks.push([next + i; 3]);
            }
            let start = next + (ed - st) as i64;
            let (gh, gw) = (h / merge, w / merge);
            let mut max = start;
            for _frame in 0..t {
                for r in 0..gh {
                    for c in 0..gw {
                        chunks.push([start, start + r as i64, start + c as i64]);
                        max = max.max(start + r.max(c) as i64);
                    }
                }
            }
            next = max + 1;
            st = ed + t * gh * gw;
        }
        for i in 0..tokens_only.len().saturating_sub(st) as i64 {
            chunks.push([next + i; 3]);
        }
        if chunks.len() != kept.len() {
            crate::bail!(
                "row {b}: image grids cover {} positions but the row holds {} tokens",
                chunks.len(),
                kept.len()
            );
        }
        let mut row_max = 0;
        for (&(s, _), p) in kept.iter().zip(&chunks) {
            for (axis, &id) in p.iter().enumerate() {
                pos.ids[(axis * batch + b) * seq + s] = id;
                row_max = row_max.max(id);
            }
        }
        let row_max = if kept.is_empty() { 0 } else { row_max };
        deltas.push(row_max + 1 - seq as i64);
    }
    Ok((pos, deltas))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> TokenIds {
        TokenIds {
            image_token_id: 9,
            video_token_id: 8,
            vision_start_token_id: 7,
            vision_end_token_id: 6,
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    #[test]
    fn image_tokens_take_grid_positions_and_text_resumes_after_the_max() {
        // text, <start>, 6 image tokens (merged grid 2x3), <end>, text
        let ids = vec![vec![1, 7, 9, 9, 9, 9, 9, 9, 6, 2]];
        let valid = vec![vec![true; 10]];
        let (pos, deltas) = rope_index(&ids, &valid, &[[1, 4, 6]], &tokens(), 2).unwrap();
        let axis = |a: usize| (0..10).map(|s| pos.get(a, 0, s)).collect::<Vec<_>>();
        assert_eq!(axis(0), vec![0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(axis(1), vec![0, 1, 2, 2, 2, 3, 3, 3, 5, 6]);
        assert_eq!(axis(2), vec![0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);
        assert_eq!(deltas, vec![7 - 10]);
    }

    #[test]
    fn left_padding_is_skipped() {
        let ids = vec![vec![0, 0, 5, 5], vec![5, 5, 5, 5]];
        let valid = vec![vec![false, false, true, true], vec![true; 4]];
        let (pos, deltas) = rope_index(&ids, &valid, &[], &tokens(), 2).unwrap();
        assert_eq!((0..4).map(|s| pos.get(1, 0, s)).collect::<Vec<_>>(), vec![1, 1, 0, 1]);
        assert_eq!(deltas, vec![-2, 0]);
    }

    #[test]
    fn missing_grid_is_an_error() {
        let ids = vec![vec![7, 9, 9, 9, 9]];
        let err = rope_index(&ids, &[vec![true; 5]], &[], &tokens(), 2).unwrap_err().to_string();
        assert!(err.contains("more images"), "{err}");
    }
}
