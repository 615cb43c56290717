//! Max, average and global average pooling (NHWC).
//!
//! STUB: signatures fixed, bodies to be written.

use super::conv::Window;
use crate::error::Error;
use crate::tensor::{Shape, View, ViewMut};

/// Which reduction a [`Pool2d`] applies over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PoolKind {
    /// Maximum over the in-bounds window elements.
    Max,
    /// Mean over the in-bounds window elements.
    Average,
}

/// Geometry of a 2-d pooling layer: `[N, in_h, in_w, C] -> [N, out_h, out_w, C]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pool2d {
    /// Max or average.
    pub kind: PoolKind,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Channels.
    pub channels: usize,
    /// Kernel, stride and padding.
    pub window: Window,
}

#[allow(unused_variables)]
impl Pool2d {
    /// Validated geometry.
    pub fn new(
        kind: PoolKind,
        in_h: usize,
        in_w: usize,
        channels: usize,
        window: Window,
    ) -> Result<Self, Error> {
        todo!()
    }
    /// `[n, out_h, out_w, C]`.
    pub fn output_shape(&self, n: usize) -> Result<Shape, Error> {
        todo!()
    }
    /// Forward.
    pub fn forward(&self, x: View<'_>, y: ViewMut<'_>) -> Result<(), Error> {
        todo!()
    }
    /// Backward.
    pub fn backward(&self, x: View<'_>, dy: View<'_>, dx: ViewMut<'_>) -> Result<(), Error> {
        todo!()
    }
}

/// Global average pooling: `[N, H, W, C] -> [N, 1, 1, C]`, the mean over H·W.
#[allow(unused_variables)]
pub fn global_avg_pool_forward(x: View<'_>, y: ViewMut<'_>) -> Result<(), Error> {
    todo!()
}

/// Backward of global average pooling: `dx[n,h,w,c] = dy[n,c] / (H·W)`.
#[allow(unused_variables)]
pub fn global_avg_pool_backward(dy: View<'_>, dx: ViewMut<'_>) -> Result<(), Error> {
    todo!()
}
