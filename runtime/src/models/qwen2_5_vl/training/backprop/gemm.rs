//! Matrix products on strided views of f32 slices, through the `gemm` crate candle's own CPU
//! matmul uses: the training kernels multiply heads and row blocks in place, and accumulate
//! into existing buffers, which candle tensors cannot express without copies.

/// A strided matrix inside a slice: element `(i, j)` at `offset + i·rs + j·cs`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Strided {
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Strided {
    /// A row-major `(rows, cols)` matrix at the start of its slice.
    pub fn dense(rows: usize, cols: usize) -> Self {
        Self { offset: 0, rows, cols, rs: cols, cs: 1 }
    }

    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    /// Whether every element lies inside a slice of `len` values.
    fn fits(&self, len: usize) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < len
    }
}

/// `dst = beta · lhs · rhs`, or `dst += beta · lhs · rhs` when `accumulate`, on `threads`
/// threads of the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    dst: &mut [f32],
    d: Strided,
    lhs: &[f32],
    l: Strided,
    rhs: &[f32],
    r: Strided,
    beta: f32,
    accumulate: bool,
    threads: usize,
) {
    assert!(d.rows == l.rows && d.cols == r.cols && l.cols == r.rows, "matmul shapes {d:?} {l:?} {r:?}");
    assert!(d.fits(dst.len()) && l.fits(lhs.len()) && r.fits(rhs.len()), "matmul out of bounds");
    // SAFETY: the shapes agree and every element of each view lies inside its slice (checked
    // above); `dst` is borrowed mutably, so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            l.cols,
            dst.as_mut_ptr().add(d.offset),
            d.cs as isize,
            d.rs as isize,
            accumulate,
            lhs.as_ptr().add(l.offset),
            l.cs as isize,
            l.rs as isize,
            rhs.as_ptr().add(r.offset),
            r.cs as isize,
            r.rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None },
        )
    }
}
