//! Depthwise 2-d convolution (NHWC, channel multiplier 1).
//!
//! STUB: signatures fixed, bodies to be written.

use super::conv::Window;
use crate::error::Error;
use crate::tensor::{Shape, View, ViewMut};

/// Geometry of a depthwise convolution: input `[N, in_h, in_w, C]`, taps
/// `[kernel_h, kernel_w, C]`, bias `[C]`, output `[N, out_h, out_w, C]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DepthwiseConv2d {
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Channels (in = out).
    pub channels: usize,
    /// Kernel, stride and padding.
    pub window: Window,
}

#[allow(unused_variables)]
impl DepthwiseConv2d {
    /// Validated geometry.
    pub fn new(in_h: usize, in_w: usize, channels: usize, window: Window) -> Result<Self, Error> {
        todo!()
    }
    /// `[n, out_h, out_w, C]`.
    pub fn output_shape(&self, n: usize) -> Result<Shape, Error> {
        todo!()
    }
    /// `kernel_h · kernel_w · C`.
    pub fn weight_len(&self) -> Result<usize, Error> {
        todo!()
    }
    /// Forward.
    pub fn forward(
        &self,
        x: View<'_>,
        w: &[f32],
        b: Option<&[f32]>,
        y: ViewMut<'_>,
    ) -> Result<(), Error> {
        todo!()
    }
    /// Backward.
    pub fn backward(
        &self,
        x: View<'_>,
        w: &[f32],
        dy: View<'_>,
        dx: Option<ViewMut<'_>>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        todo!()
    }
}
