//! The host's matrix multiply: core's [`Gemm`] seam backed by the `gemm`
//! crate (runtime-dispatched AVX2/AVX-512/NEON kernels), so that the trainer
//! runs the same layer code as the device with a fast product underneath.

use normcore::gemm::check_shapes;
use normcore::{Error, Gemm, MatMut, MatRef};

/// `gemm`-crate backed matrix multiply, single-threaded: the trainer
/// parallelises over the batch instead, which keeps every thread's product
/// large and the results independent of thread scheduling.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastGemm;

fn isize_of(v: usize) -> Result<isize, Error> {
    isize::try_from(v).map_err(|_| Error::Overflow)
}

impl Gemm for FastGemm {
    fn gemm(
        &self,
        a: MatRef<'_>,
        b: MatRef<'_>,
        mut c: MatMut<'_>,
        accumulate: bool,
    ) -> Result<(), Error> {
        check_shapes(&a, &b, &c)?;
        let (m, k, n) = (a.rows(), a.cols(), b.cols());
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            if !accumulate {
                for i in 0..m {
                    c.row_mut(i).fill(0.0);
                }
            }
            return Ok(());
        }
        let (a_rs, a_cs) = (isize_of(a.row_stride())?, isize_of(a.col_stride())?);
        let (b_rs, b_cs) = (isize_of(b.row_stride())?, isize_of(b.col_stride())?);
        let c_rs = isize_of(c.row_stride())?;
        let c_ptr = c.data_mut().as_mut_ptr();
        // SAFETY: `MatRef::new` and `MatMut::new` proved that every element
        // (i, j) of each view, at offset i·rs + j·cs, lies inside its slice;
        // `check_shapes` proved a is m×k, b is k×n and c is m×n, so the kernel
        // reads and writes only those elements. `c` is row-major with
        // rs >= cols (no two elements alias) and is borrowed mutably, so it
        // overlaps neither input. Parallelism::None: no other thread runs.
        #[allow(unsafe_code)]
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c_ptr,
                1,
                c_rs,
                accumulate,
                a.data().as_ptr(),
                a_cs,
                a_rs,
                b.data().as_ptr(),
                b_cs,
                b_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normcore::{Portable, Rng};

    #[test]
    fn agrees_with_core_portable_in_every_stride_form() {
        let mut rng = Rng::new(42);
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 0, 2),
            (7, 5, 3),
            (60, 784, 100),
            (33, 17, 65),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            for accumulate in [false, true] {
                for transpose_b in [false, true] {
                    let bt: Vec<f32>;
                    let bv = if transpose_b {
                        bt = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect();
                        MatRef::row_major(&bt, n, k).unwrap().t()
                    } else {
                        MatRef::row_major(&b, k, n).unwrap()
                    };
                    let av = MatRef::row_major(&a, m, k).unwrap();
                    let (mut c1, mut c2) = (c0.clone(), c0.clone());
                    FastGemm
                        .gemm(
                            av,
                            bv,
                            MatMut::row_major(&mut c1, m, n).unwrap(),
                            accumulate,
                        )
                        .unwrap();
                    Portable
                        .gemm(
                            av,
                            bv,
                            MatMut::row_major(&mut c2, m, n).unwrap(),
                            accumulate,
                        )
                        .unwrap();
                    for (x, y) in c1.iter().zip(&c2) {
                        assert!(
                            (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                            "{m}x{k}x{n}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
}
