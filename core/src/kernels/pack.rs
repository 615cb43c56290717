//! The row-blocked weight layout (FORMAT.md, "Row-blocked weights").
//!
//! A weight matrix `W [rows, cols]` (dense `[out, in]`, or conv filters
//! `[Cout, KH·KW·Cin]`) is stored in blocks of `R` rows, interleaved by
//! column, so that one input meets `R` consecutive weights:
//! ```text
//! stored[(b·cols + p)·R + r] = W[b·R + r, p]     b < ⌈rows/R⌉, p < cols, r < R
//! ```
//! Rows past `rows` in the last block are zero (`T::default()`), so a
//! kernel runs every block the same way and skips the padded outputs.
//! Stored elements: `⌈rows/R⌉·R·cols`; the bias is padded to `⌈rows/R⌉·R`.
//!
//! Example, `rows = 3`, `cols = 2`, `R = 4`:
//! `W = [[a, b], [c, d], [e, f]]` is stored as `[a, c, e, 0, b, d, f, 0]`.

use crate::error::{check_len, Error, Operand, Param};

/// `Ok` when `r` is a supported block height (4 or 8), else
/// `InvalidParam(Param::BlockRows)`.
#[inline]
pub fn check_block_rows(r: usize) -> Result<(), Error> {
    match r {
        4 | 8 => Ok(()),
        _ => Err(Error::InvalidParam(Param::BlockRows)),
    }
}

/// `⌈rows/r⌉·r`: rows rounded up to whole blocks (the padded bias length).
/// Errors: `r` not 4 or 8 (`Param::BlockRows`), overflow.
pub fn padded_rows(rows: usize, r: usize) -> Result<usize, Error> {
    check_block_rows(r)?;
    rows.div_ceil(r).checked_mul(r).ok_or(Error::Overflow)
}

/// Stored elements of a `rows × cols` matrix in blocks of `r` rows:
/// `⌈rows/r⌉·r·cols`. Errors: `r` not 4 or 8 (`Param::BlockRows`), overflow.
pub fn packed_len(rows: usize, cols: usize, r: usize) -> Result<usize, Error> {
    padded_rows(rows, r)?
        .checked_mul(cols)
        .ok_or(Error::Overflow)
}

/// Validate the arguments shared by [`pack_rows`] and [`unpack_rows`].
fn check(
    plain: usize,
    plain_op: Operand,
    packed: usize,
    packed_op: Operand,
    rows: usize,
    cols: usize,
    r: usize,
) -> Result<(), Error> {
    let want_packed = packed_len(rows, cols, r)?;
    let want_plain = rows.checked_mul(cols).ok_or(Error::Overflow)?;
    check_len(plain_op, want_plain, plain)?;
    check_len(packed_op, want_packed, packed)
}

/// Write the row-major `w [rows, cols]` into `dst` in the row-blocked layout
/// with blocks of `r` rows (see the [module docs](self)); the padding rows
/// of the last block are `T::default()`.
///
/// Errors (nothing written): `r` not 4 or 8 (`Param::BlockRows`), `w` not
/// `rows·cols` long (`LengthMismatch`, `Operand::Weight`), `dst` not
/// [`packed_len`] long (`LengthMismatch`, `Operand::Output`), overflow.
pub fn pack_rows<T: Copy + Default>(
    w: &[T],
    rows: usize,
    cols: usize,
    r: usize,
    dst: &mut [T],
) -> Result<(), Error> {
    check(
        w.len(),
        Operand::Weight,
        dst.len(),
        Operand::Output,
        rows,
        cols,
        r,
    )?;
    if cols == 0 || rows == 0 {
        return Ok(()); // dst is empty
    }
    // Lengths are validated: block b holds rows b·r .. b·r + r, each
    // `cols` long in `w`, and `cols·r` elements in `dst`.
    for (b, block) in dst.chunks_exact_mut(cols * r).enumerate() {
        block.fill(T::default());
        let first = b * r;
        let live = (rows - first).min(r);
        for (k, row) in w[first * cols..][..live * cols]
            .chunks_exact(cols)
            .enumerate()
        {
            for (group, &v) in block.chunks_exact_mut(r).zip(row) {
                group[k] = v;
            }
        }
    }
    Ok(())
}

/// The inverse of [`pack_rows`]: read the row-blocked `packed` back into the
/// row-major `dst [rows, cols]`, dropping the padding rows (for re-export and
/// for tools that need the plain matrix).
///
/// Errors (nothing written): `r` not 4 or 8 (`Param::BlockRows`), `packed`
/// not [`packed_len`] long (`LengthMismatch`, `Operand::Weight`), `dst` not
/// `rows·cols` long (`LengthMismatch`, `Operand::Output`), overflow.
pub fn unpack_rows<T: Copy>(
    packed: &[T],
    rows: usize,
    cols: usize,
    r: usize,
    dst: &mut [T],
) -> Result<(), Error> {
    check(
        dst.len(),
        Operand::Output,
        packed.len(),
        Operand::Weight,
        rows,
        cols,
        r,
    )?;
    if cols == 0 || rows == 0 {
        return Ok(());
    }
    for (b, block) in packed.chunks_exact(cols * r).enumerate() {
        let first = b * r;
        let live = (rows - first).min(r);
        for (k, row) in dst[first * cols..][..live * cols]
            .chunks_exact_mut(cols)
            .enumerate()
        {
            for (v, group) in row.iter_mut().zip(block.chunks_exact(r)) {
                *v = group[k];
            }
        }
    }
    Ok(())
}

/// The pair word of two int8 weights: `lo + 2^24·hi` (FORMAT.md dtype
/// `i8pair`). Exact in i32 for weights in `[-127, 127]` (and for -128 too,
/// though the format does not allow it).
#[inline]
pub const fn pair_word(lo: i8, hi: i8) -> i32 {
    (lo as i32).wrapping_add((hi as i32) << 24)
}

/// The two weights of a pair word, `(lo, hi)`, if both lie in `[-127, 127]`
/// and the word is exactly `lo + 2^24·hi`; `None` for any other word.
#[inline]
pub const fn split_pair_word(w: i32) -> Option<(i8, i8)> {
    let lo = (w << 8) >> 8; // the low 24 bits, sign-extended
    let hi = (w.wrapping_sub(lo)) >> 24;
    if lo < -127 || lo > 127 || hi < -127 || hi > 127 {
        None
    } else {
        Some((lo as i8, hi as i8))
    }
}

/// Convert row-blocked int8 weights (from [`pack_rows`], any block size)
/// into the pair form: `dst[j] = `[`pair_word`]`(blocked[2j], blocked[2j + 1])`,
/// i.e. rows `2k` and `2k + 1` of a block for the same input share a word.
///
/// Errors (nothing written): `blocked` not `2·dst.len()` long
/// (`LengthMismatch`, `Operand::Weight`), a weight of -128
/// (`Param::WeightRange`: the pair form's exactness needs `|w| ≤ 127`).
pub fn pack_pairs(blocked: &[i8], dst: &mut [i32]) -> Result<(), Error> {
    check_len(
        Operand::Weight,
        dst.len().checked_mul(2).ok_or(Error::Overflow)?,
        blocked.len(),
    )?;
    if blocked.contains(&i8::MIN) {
        return Err(Error::InvalidParam(Param::WeightRange));
    }
    for (d, p) in dst.iter_mut().zip(blocked.chunks_exact(2)) {
        *d = pair_word(p[0], p[1]);
    }
    Ok(())
}

/// The inverse of [`pack_pairs`]: the row-blocked bytes of pair words.
///
/// Errors (nothing written): `dst` not `2·words.len()` long
/// (`LengthMismatch`, `Operand::Output`), a word that is not a valid pair
/// (`Param::WeightRange`).
pub fn unpack_pairs(words: &[i32], dst: &mut [i8]) -> Result<(), Error> {
    check_len(
        Operand::Output,
        words.len().checked_mul(2).ok_or(Error::Overflow)?,
        dst.len(),
    )?;
    if !words.iter().all(|&w| split_pair_word(w).is_some()) {
        return Err(Error::InvalidParam(Param::WeightRange));
    }
    for (&w, d) in words.iter().zip(dst.chunks_exact_mut(2)) {
        if let Some((lo, hi)) = split_pair_word(w) {
            d[0] = lo;
            d[1] = hi;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn layout_matches_the_format_example() {
        let w = [1i8, 2, 3, 4, 5, 6]; // [[1,2],[3,4],[5,6]]
        let mut p = [9i8; 8];
        pack_rows(&w, 3, 2, 4, &mut p).unwrap();
        assert_eq!(p, [1, 3, 5, 0, 2, 4, 6, 0]);
        // Two blocks of 4 for 5 rows, 1 column.
        let w = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let mut p = [9.0f32; 8];
        pack_rows(&w, 5, 1, 4, &mut p).unwrap();
        assert_eq!(p, [1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0, 0.0]);
        assert_eq!(packed_len(5, 1, 4), Ok(8));
        assert_eq!(packed_len(9, 3, 8), Ok(48));
        assert_eq!(padded_rows(8, 8), Ok(8));
        assert_eq!(padded_rows(0, 4), Ok(0));
    }

    proptest! {
        /// Every element lands where the formula says, padding is zero, and
        /// unpacking gives the matrix back.
        #[test]
        fn pack_unpack_round_trip(rows in 0usize..20, cols in 0usize..12, eight in any::<bool>(), seed in any::<u32>()) {
            let r = if eight { 8 } else { 4 };
            let w: Vec<i32> = (0..rows * cols).map(|i| (i as i32 + 1).wrapping_mul(seed as i32 | 1)).collect();
            let mut p = vec![7i32; packed_len(rows, cols, r).unwrap()];
            pack_rows(&w, rows, cols, r, &mut p).unwrap();
            for b in 0..rows.div_ceil(r) {
                for c in 0..cols {
                    for k in 0..r {
                        let row = b * r + k;
                        let want = if row < rows { w[row * cols + c] } else { 0 };
                        prop_assert_eq!(p[(b * cols + c) * r + k], want);
                    }
                }
            }
            let mut back = vec![0i32; w.len()];
            unpack_rows(&p, rows, cols, r, &mut back).unwrap();
            prop_assert_eq!(back, w);
        }
    }

    #[test]
    fn bad_arguments_are_errors_and_write_nothing() {
        let w = [1i8; 6];
        for r in [0, 1, 2, 3, 5, 7, 16] {
            let mut p = [9i8; 8];
            assert_eq!(
                pack_rows(&w, 3, 2, r, &mut p),
                Err(Error::InvalidParam(Param::BlockRows))
            );
            assert_eq!(p, [9; 8]);
            assert_eq!(
                packed_len(3, 2, r),
                Err(Error::InvalidParam(Param::BlockRows))
            );
        }
        let mut p = [9i8; 8];
        assert_eq!(
            pack_rows(&w[..5], 3, 2, 4, &mut p),
            Err(Error::LengthMismatch {
                operand: Operand::Weight,
                expected: 6,
                actual: 5
            })
        );
        assert_eq!(
            pack_rows(&w, 3, 2, 4, &mut p[..7]),
            Err(Error::LengthMismatch {
                operand: Operand::Output,
                expected: 8,
                actual: 7
            })
        );
        assert_eq!(p, [9; 8]);
        let mut out = [9i8; 6];
        assert_eq!(
            unpack_rows(&p[..7], 3, 2, 4, &mut out),
            Err(Error::LengthMismatch {
                operand: Operand::Weight,
                expected: 8,
                actual: 7
            })
        );
        assert_eq!(
            unpack_rows(&p, 3, 2, 4, &mut out[..5]),
            Err(Error::LengthMismatch {
                operand: Operand::Output,
                expected: 6,
                actual: 5
            })
        );
        assert_eq!(out, [9; 6]);
        assert_eq!(packed_len(usize::MAX, 2, 4), Err(Error::Overflow));
        assert_eq!(packed_len(usize::MAX / 2, 3, 8), Err(Error::Overflow));
    }

    #[test]
    fn pair_words_round_trip_and_reject_what_is_not_a_pair() {
        for lo in -127i8..=127 {
            for hi in [-127i8, -64, -1, 0, 1, 63, 127] {
                let w = pair_word(lo, hi);
                assert_eq!(split_pair_word(w), Some((lo, hi)));
                assert_eq!(i64::from(w), i64::from(lo) + (i64::from(hi) << 24));
            }
        }
        for w in [
            pair_word(-128, 0),
            pair_word(0, -128),
            128,
            -128,
            1 << 23,
            i32::MIN,
        ] {
            assert_eq!(split_pair_word(w), None, "{w:#x}");
        }
        let blocked = [1i8, -2, 127, -127, 0, 5];
        let mut words = [0i32; 3];
        pack_pairs(&blocked, &mut words).unwrap();
        assert_eq!(words, [1 - (2 << 24), 127 - (127 << 24), 5 << 24]);
        let mut back = [0i8; 6];
        unpack_pairs(&words, &mut back).unwrap();
        assert_eq!(back, blocked);
        let mut w9 = [9i32; 3];
        assert_eq!(
            pack_pairs(&[1, -128, 0, 0, 0, 0], &mut w9),
            Err(Error::InvalidParam(Param::WeightRange))
        );
        assert_eq!(
            pack_pairs(&blocked[..5], &mut w9),
            Err(Error::LengthMismatch {
                operand: Operand::Weight,
                expected: 6,
                actual: 5
            })
        );
        assert_eq!(w9, [9; 3]);
        let mut b9 = [9i8; 6];
        assert_eq!(
            unpack_pairs(&[1, 128, 0], &mut b9),
            Err(Error::InvalidParam(Param::WeightRange))
        );
        assert_eq!(b9, [9; 6]);
    }
}
