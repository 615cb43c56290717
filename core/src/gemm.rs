//! Matrix multiply: the one seam where a host can plug in a faster kernel.
//!
//! Dense and convolution layers (forward and backward) reduce to
//! `C = A·B` or `C += A·B` on strided matrix views. They call it through the
//! [`Gemm`] trait, so the host trainer can substitute a tuned, threaded
//! implementation while every other line of layer math stays shared with the
//! device. [`Portable`] is the reference: plain loops, no allocation, no
//! intrinsics, `no_std`.
//!
//! A [`MatRef`] is any strided view (`a[i][j] = data[i·rs + j·cs]`), so a
//! transpose is a swap of strides and costs nothing. A [`MatMut`] is always
//! row-major (`cs = 1`, `rs >= cols`), which rules out aliasing writes.

use crate::error::{Error, Operand, Param};

/// A read-only strided matrix view: element `(i, j)` is `data[i·rs + j·cs]`.
///
/// Construction checks that every element lies inside `data`, so kernels
/// (including ones that use raw pointers) may rely on it.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// A writable row-major matrix view: element `(i, j)` is `data[i·rs + j]`,
/// with `rs >= cols` so that no two elements alias.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
}

/// Index one past the last element of a `rows × cols` view with strides
/// `(rs, cs)`, or `None` on overflow. Empty views need no storage.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

impl<'a> MatRef<'a> {
    /// A strided view; fails if some element would fall outside `data`.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Result<Self, Error> {
        let needed = extent(rows, cols, rs, cs).ok_or(Error::Overflow)?;
        if needed > data.len() {
            return Err(Error::BufferTooSmall {
                operand: Operand::MatrixA,
                needed,
                actual: data.len(),
            });
        }
        Ok(MatRef {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// A dense row-major `rows × cols` view of exactly `rows·cols` elements.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, Error> {
        let len = rows.checked_mul(cols).ok_or(Error::Overflow)?;
        crate::error::check_len(Operand::MatrixA, len, data.len())?;
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose, by swapping strides.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Distance between rows, in elements.
    pub fn row_stride(&self) -> usize {
        self.rs
    }
    /// Distance between columns, in elements.
    pub fn col_stride(&self) -> usize {
        self.cs
    }
    /// The underlying storage (every element of the view lies inside it).
    pub fn data(&self) -> &'a [f32] {
        self.data
    }
    /// Element `(i, j)`; the caller keeps `i < rows`, `j < cols`.
    #[inline(always)]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

impl<'a> MatMut<'a> {
    /// A row-major view with row stride `rs >= cols`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize) -> Result<Self, Error> {
        if rs < cols && rows > 1 {
            return Err(Error::InvalidParam(Param::MatrixStride));
        }
        let needed = extent(rows, cols, rs, 1).ok_or(Error::Overflow)?;
        if needed > data.len() {
            return Err(Error::BufferTooSmall {
                operand: Operand::MatrixC,
                needed,
                actual: data.len(),
            });
        }
        Ok(MatMut {
            data,
            rows,
            cols,
            rs: rs.max(cols),
        })
    }

    /// A dense row-major `rows × cols` view of exactly `rows·cols` elements.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self, Error> {
        let len = rows.checked_mul(cols).ok_or(Error::Overflow)?;
        crate::error::check_len(Operand::MatrixC, len, data.len())?;
        Self::new(data, rows, cols, cols)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Distance between rows, in elements (columns are contiguous).
    pub fn row_stride(&self) -> usize {
        self.rs
    }
    /// The underlying storage.
    pub fn data_mut(&mut self) -> &mut [f32] {
        self.data
    }
    /// Row `i` (`cols` elements); the caller keeps `i < rows`.
    #[inline(always)]
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        let start = i * self.rs;
        &mut self.data[start..start + self.cols]
    }
}

/// Check that `c = a·b` is well formed: `a` is `m×k`, `b` is `k×n`, `c` is `m×n`.
/// Implementations of [`Gemm`] call this first.
pub fn check_shapes(a: &MatRef<'_>, b: &MatRef<'_>, c: &MatMut<'_>) -> Result<(), Error> {
    if a.cols != b.rows {
        return Err(Error::ShapeMismatch {
            operand: Operand::MatrixB,
        });
    }
    if c.rows != a.rows || c.cols != b.cols {
        return Err(Error::ShapeMismatch {
            operand: Operand::MatrixC,
        });
    }
    Ok(())
}

/// A matrix-multiply kernel: `c = a·b` (or `c += a·b` when `accumulate`).
///
/// Shapes: `a` is `m×k`, `b` is `k×n`, `c` is `m×n`; a mismatch is
/// `Error::ShapeMismatch` and leaves `c` untouched. When `k = 0` the product
/// is the zero matrix.
pub trait Gemm {
    /// Compute `c = a·b`, or `c += a·b` when `accumulate` is true.
    fn gemm(
        &self,
        a: MatRef<'_>,
        b: MatRef<'_>,
        c: MatMut<'_>,
        accumulate: bool,
    ) -> Result<(), Error>;
}

impl<G: Gemm + ?Sized> Gemm for &G {
    fn gemm(
        &self,
        a: MatRef<'_>,
        b: MatRef<'_>,
        c: MatMut<'_>,
        accumulate: bool,
    ) -> Result<(), Error> {
        (**self).gemm(a, b, c, accumulate)
    }
}

/// The portable reference kernel: plain loops in the order that walks
/// memory contiguously for the given strides, f32 accumulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Portable;

impl Gemm for Portable {
    fn gemm(
        &self,
        a: MatRef<'_>,
        b: MatRef<'_>,
        mut c: MatMut<'_>,
        accumulate: bool,
    ) -> Result<(), Error> {
        check_shapes(&a, &b, &c)?;
        let (m, k, n) = (a.rows, a.cols, b.cols);
        if b.cs == 1 {
            // Rows of b are contiguous: c[i, :] += a[i, p] · b[p, :] (axpy form).
            for i in 0..m {
                let row = c.row_mut(i);
                if !accumulate {
                    row.fill(0.0);
                }
                for p in 0..k {
                    let aip = a.at(i, p);
                    let brow = &b.data[p * b.rs..p * b.rs + n];
                    for (cij, &bpj) in row.iter_mut().zip(brow) {
                        *cij += aip * bpj;
                    }
                }
            }
        } else {
            // Columns of b are contiguous (b is a transposed row-major matrix,
            // as in y = x·Wᵀ): each c[i, j] is a dot product.
            for i in 0..m {
                let row = c.row_mut(i);
                for (j, cij) in row.iter_mut().enumerate() {
                    let mut acc = 0.0f32;
                    for p in 0..k {
                        acc += a.at(i, p) * b.at(p, j);
                    }
                    *cij = if accumulate { *cij + acc } else { acc };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> [f32; 64] {
        let mut c = [0.0f32; 64];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    s += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    proptest! {
        #[test]
        fn portable_matches_naive_in_every_stride_form(
            m in 1usize..8, k in 0usize..8, n in 1usize..8,
            seed in any::<u64>(), accumulate in any::<bool>(),
        ) {
            let mut rng = crate::rng::Rng::new(seed);
            let a: [f32; 64] = core::array::from_fn(|_| rng.uniform(-1.0, 1.0));
            let b: [f32; 64] = core::array::from_fn(|_| rng.uniform(-1.0, 1.0));
            let c0: [f32; 64] = core::array::from_fn(|_| rng.uniform(-1.0, 1.0));
            let mut expect = naive(&a, &b, m, k, n);
            if accumulate {
                for i in 0..m * n { expect[i] += c0[i]; }
            }
            // b row-major (axpy path) and b given as a transposed n×k matrix (dot path).
            let mut bt = [0.0f32; 64];
            for p in 0..k { for j in 0..n { bt[j * k + p] = b[p * n + j]; } }
            let forms = [
                MatRef::new(&b, k, n, n, 1).unwrap(),
                MatRef::new(&bt, n, k, k, 1).unwrap().t(),
            ];
            for bv in forms {
                let mut c = c0;
                let av = MatRef::new(&a, m, k, k, 1).unwrap();
                let cv = MatMut::new(&mut c, m, n, n).unwrap();
                Portable.gemm(av, bv, cv, accumulate).unwrap();
                for i in 0..m * n {
                    prop_assert!((c[i] - expect[i]).abs() <= 1e-5 + 1e-5 * expect[i].abs());
                }
            }
        }
    }

    #[test]
    fn views_reject_out_of_bounds_and_aliasing() {
        let d = [0.0f32; 6];
        assert!(MatRef::new(&d, 2, 3, 3, 1).is_ok());
        assert!(MatRef::new(&d, 3, 3, 3, 1).is_err());
        assert!(MatRef::new(&d, usize::MAX, 2, usize::MAX, 1).is_err());
        let mut e = [0.0f32; 6];
        assert_eq!(
            MatMut::new(&mut e, 2, 3, 2).unwrap_err(),
            Error::InvalidParam(Param::MatrixStride)
        );
    }

    #[test]
    fn mismatched_shapes_leave_c_untouched() {
        let a = [1.0f32; 6];
        let mut c = [7.0f32; 4];
        let av = MatRef::row_major(&a, 2, 3).unwrap();
        let bv = MatRef::row_major(&a, 2, 3).unwrap();
        let cv = MatMut::row_major(&mut c, 2, 2).unwrap();
        assert_eq!(
            Portable.gemm(av, bv, cv, false),
            Err(Error::ShapeMismatch {
                operand: Operand::MatrixB
            })
        );
        assert_eq!(c, [7.0; 4]);
    }
}
