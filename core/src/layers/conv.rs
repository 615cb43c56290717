//! 2-d convolution (NHWC), lowered to one matrix product per chunk of samples.
//!
//! STUB: signatures fixed, bodies to be written.

use crate::error::{Error, Param};
use crate::gemm::Gemm;
use crate::tensor::{Shape, View, ViewMut};

/// Zero padding added around the input, in pixels. TensorFlow's "SAME"
/// padding can be asymmetric (the extra pixel goes bottom/right), so each
/// side is its own field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Padding {
    /// Rows added above.
    pub top: usize,
    /// Rows added below.
    pub bottom: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Columns added on the right.
    pub right: usize,
}

impl Padding {
    /// No padding ("VALID").
    pub const NONE: Padding = Padding {
        top: 0,
        bottom: 0,
        left: 0,
        right: 0,
    };

    /// `ph` rows above and below, `pw` columns left and right.
    pub const fn symmetric(ph: usize, pw: usize) -> Self {
        Padding {
            top: ph,
            bottom: ph,
            left: pw,
            right: pw,
        }
    }
}

/// The sliding window shared by convolutions and pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Window {
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Zero padding.
    pub padding: Padding,
}

impl Window {
    /// A square `k×k` window with stride `s` and symmetric padding `p`.
    pub const fn square(k: usize, s: usize, p: usize) -> Self {
        Window {
            kernel_h: k,
            kernel_w: k,
            stride_h: s,
            stride_w: s,
            padding: Padding::symmetric(p, p),
        }
    }

    /// Output height and width for an `in_h × in_w` input:
    /// `out = (in + pad_before + pad_after - kernel) / stride + 1`.
    /// Errors: zero stride (`Param::Stride`), zero kernel or a kernel larger
    /// than the padded input (`Param::Kernel`), zero input (`Param::Dimension`).
    pub fn output_hw(&self, in_h: usize, in_w: usize) -> Result<(usize, usize), Error> {
        if self.stride_h == 0 || self.stride_w == 0 {
            return Err(Error::InvalidParam(Param::Stride));
        }
        if in_h == 0 || in_w == 0 {
            return Err(Error::InvalidParam(Param::Dimension));
        }
        let ph = in_h
            .checked_add(self.padding.top)
            .and_then(|v| v.checked_add(self.padding.bottom))
            .ok_or(Error::Overflow)?;
        let pw = in_w
            .checked_add(self.padding.left)
            .and_then(|v| v.checked_add(self.padding.right))
            .ok_or(Error::Overflow)?;
        if self.kernel_h == 0 || self.kernel_w == 0 || self.kernel_h > ph || self.kernel_w > pw {
            return Err(Error::InvalidParam(Param::Kernel));
        }
        Ok((
            (ph - self.kernel_h) / self.stride_h + 1,
            (pw - self.kernel_w) / self.stride_w + 1,
        ))
    }
}

/// Geometry of a 2-d convolution: input `[N, in_h, in_w, in_c]`, filters
/// `[out_c, kernel_h, kernel_w, in_c]`, bias `[out_c]`, output
/// `[N, out_h, out_w, out_c]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv2d {
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Input channels.
    pub in_c: usize,
    /// Output channels (filters).
    pub out_c: usize,
    /// Kernel, stride and padding.
    pub window: Window,
}

#[allow(unused_variables, clippy::missing_errors_doc)]
impl Conv2d {
    /// Validated geometry.
    pub fn new(
        in_h: usize,
        in_w: usize,
        in_c: usize,
        out_c: usize,
        window: Window,
    ) -> Result<Self, Error> {
        todo!()
    }
    /// `[n, out_h, out_w, out_c]`.
    pub fn output_shape(&self, n: usize) -> Result<Shape, Error> {
        todo!()
    }
    /// `out_c · kernel_h · kernel_w · in_c`.
    pub fn weight_len(&self) -> Result<usize, Error> {
        todo!()
    }
    /// Minimum scratch for `forward` to process `samples` samples per product.
    pub fn forward_scratch_len(&self, samples: usize) -> Result<usize, Error> {
        todo!()
    }
    /// Minimum scratch for `backward` to process `samples` samples per product.
    pub fn backward_scratch_len(&self, samples: usize) -> Result<usize, Error> {
        todo!()
    }
    /// Forward.
    pub fn forward<G: Gemm + ?Sized>(
        &self,
        gemm: &G,
        x: View<'_>,
        w: &[f32],
        b: Option<&[f32]>,
        y: ViewMut<'_>,
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        todo!()
    }
    /// Backward.
    pub fn backward<G: Gemm + ?Sized>(
        &self,
        gemm: &G,
        x: View<'_>,
        w: &[f32],
        dy: View<'_>,
        dx: Option<ViewMut<'_>>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        todo!()
    }
}
