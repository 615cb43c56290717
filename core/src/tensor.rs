//! Shapes and borrowed tensor views.
//!
//! # Layout: NHWC, everywhere
//!
//! Activations are stored batch-major, then row, column, and channel last:
//! element `(n, h, w, c)` of a `[N, H, W, C]` tensor lives at
//! `((n·H + h)·W + w)·C + c`. A dense layer's features are the special case
//! `H = W = 1`, so "a batch of feature vectors" and "a batch of images" are
//! the same kind of object, and flattening `[N, H, W, C]` to `[N, H·W·C]` moves
//! no data.
//!
//! Why NHWC and not NCHW:
//! - **Batch Normalization is one kernel.** A conv channel's statistics run
//!   over N·H·W values (paper Sec. 3.2); in NHWC those are simply the rows of an
//!   `[N·H·W, C]` matrix, exactly like dense features over a batch
//!   `[N, C]`. Both use the same code path with `rows = N·H·W`.
//! - **Convolution lowers to one product without transposes.** An output
//!   pixel's receptive field is `KH` runs of `KW·Cin` contiguous inputs, the
//!   im2col matrix `[N·OH·OW, KH·KW·Cin]` times the filters `[Cout, KH·KW·Cin]`
//!   transposed lands directly in NHWC order.
//! - **Microcontrollers prefer it.** Depthwise convolution and per-channel
//!   requantization walk channels contiguously; CMSIS-NN and TFLite Micro use
//!   the same layout, so their users' weights need no reshuffle.
//!
//! Weights follow the same rule (output channel major, input channel last):
//! dense `[out, in]`, conv `[Cout, KH, KW, Cin]`, depthwise `[KH, KW, C]`.

use crate::error::{check_len, Error, Operand};

/// A 4-d NHWC shape. Dense feature batches use `h = w = 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Shape {
    /// Batch size.
    pub n: usize,
    /// Height (rows of pixels).
    pub h: usize,
    /// Width (columns of pixels).
    pub w: usize,
    /// Channels (features).
    pub c: usize,
}

impl Shape {
    /// An image batch `[n, h, w, c]`.
    pub const fn nhwc(n: usize, h: usize, w: usize, c: usize) -> Self {
        Shape { n, h, w, c }
    }

    /// A batch of `n` feature vectors of length `c`: `[n, 1, 1, c]`.
    pub const fn features(n: usize, c: usize) -> Self {
        Shape { n, h: 1, w: 1, c }
    }

    /// Elements of one sample, `h·w·c`, or `Error::Overflow`.
    pub fn sample_len(&self) -> Result<usize, Error> {
        self.h
            .checked_mul(self.w)
            .and_then(|hw| hw.checked_mul(self.c))
            .ok_or(Error::Overflow)
    }

    /// Pixel positions over the whole batch, `n·h·w`: the number of rows of
    /// the `[n·h·w, c]` matrix view that BN and 1×1 convolutions use.
    pub fn rows(&self) -> Result<usize, Error> {
        self.n
            .checked_mul(self.h)
            .and_then(|nh| nh.checked_mul(self.w))
            .ok_or(Error::Overflow)
    }

    /// Total elements, `n·h·w·c`, or `Error::Overflow`.
    pub fn len(&self) -> Result<usize, Error> {
        self.rows()?.checked_mul(self.c).ok_or(Error::Overflow)
    }

    /// True when some dimension is zero.
    pub const fn is_empty(&self) -> bool {
        self.n == 0 || self.h == 0 || self.w == 0 || self.c == 0
    }

    /// The same batch seen as flat feature vectors `[n, 1, 1, h·w·c]`.
    pub fn flattened(&self) -> Result<Shape, Error> {
        Ok(Shape::features(self.n, self.sample_len()?))
    }
}

/// A borrowed, shape-checked, read-only NHWC tensor.
#[derive(Debug, Clone, Copy)]
pub struct View<'a, T = f32> {
    shape: Shape,
    data: &'a [T],
}

/// A borrowed, shape-checked, writable NHWC tensor.
#[derive(Debug)]
pub struct ViewMut<'a, T = f32> {
    shape: Shape,
    data: &'a mut [T],
}

impl<'a, T> View<'a, T> {
    /// Borrow `data` as a tensor of `shape`; its length must equal `shape.len()`.
    /// `operand` names the buffer in the error.
    pub fn new(shape: Shape, data: &'a [T]) -> Result<Self, Error> {
        Self::named(Operand::Input, shape, data)
    }

    /// As [`View::new`], naming the buffer `operand` in a length error.
    pub fn named(operand: Operand, shape: Shape, data: &'a [T]) -> Result<Self, Error> {
        check_len(operand, shape.len()?, data.len())?;
        Ok(View { shape, data })
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The elements in NHWC order.
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: Shape) -> Result<Self, Error> {
        View::named(Operand::Input, shape, self.data)
    }
}

impl<'a, T> ViewMut<'a, T> {
    /// Borrow `data` as a writable tensor of `shape`.
    pub fn new(shape: Shape, data: &'a mut [T]) -> Result<Self, Error> {
        Self::named(Operand::Output, shape, data)
    }

    /// As [`ViewMut::new`], naming the buffer `operand` in a length error.
    pub fn named(operand: Operand, shape: Shape, data: &'a mut [T]) -> Result<Self, Error> {
        check_len(operand, shape.len()?, data.len())?;
        Ok(ViewMut { shape, data })
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The elements in NHWC order.
    pub fn data(&self) -> &[T] {
        self.data
    }

    /// The elements, writable.
    pub fn data_mut(&mut self) -> &mut [T] {
        self.data
    }

    /// Give the borrow back as a plain slice.
    pub fn into_data(self) -> &'a mut [T] {
        self.data
    }

    /// A read-only view of the same elements.
    pub fn as_view(&self) -> View<'_, T> {
        View {
            shape: self.shape,
            data: self.data,
        }
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: Shape) -> Result<Self, Error> {
        ViewMut::named(Operand::Output, shape, self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_arithmetic() {
        let s = Shape::nhwc(2, 3, 4, 5);
        assert_eq!(s.len(), Ok(120));
        assert_eq!(s.rows(), Ok(24));
        assert_eq!(s.sample_len(), Ok(60));
        assert_eq!(s.flattened(), Ok(Shape::features(2, 60)));
        assert!(!s.is_empty());
        assert!(Shape::features(0, 3).is_empty());
    }

    #[test]
    fn overflow_is_an_error() {
        let s = Shape::nhwc(usize::MAX, 2, 1, 1);
        assert_eq!(s.len(), Err(Error::Overflow));
        assert!(View::<f32>::new(s, &[]).is_err());
    }

    #[test]
    fn views_check_length() {
        let data = [0.0f32; 6];
        assert!(View::new(Shape::features(2, 3), &data).is_ok());
        assert_eq!(
            View::new(Shape::features(2, 4), &data).unwrap_err(),
            Error::LengthMismatch {
                operand: Operand::Input,
                expected: 8,
                actual: 6
            }
        );
        let mut out = [0.0f32; 6];
        let v = ViewMut::new(Shape::nhwc(1, 2, 3, 1), &mut out).unwrap();
        let v = v.reshape(Shape::features(1, 6)).unwrap();
        assert_eq!(v.shape(), Shape::features(1, 6));
        assert!(v.reshape(Shape::features(1, 7)).is_err());
    }
}
