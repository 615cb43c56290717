//! f32 layers, forward and backward over a batch, NHWC.
//!
//! Every function checks all shapes before it writes, writes only into the
//! caller's slices, and overwrites (never accumulates into) its outputs and
//! gradients. Backward functions take what the forward pass saw (`x`, or `y`
//! where the derivative is a function of the output) and the output gradient
//! `dy = ∂L/∂y`, and return `dx = ∂L/∂x` and the parameter gradients.

pub mod activation;
pub mod conv;
pub mod dense;
pub mod depthwise;
pub mod dropout;
pub mod loss;
pub mod pool;

pub use activation::Activation;
pub use conv::{Conv2d, Padding, Window};
pub use dense::Dense;
pub use depthwise::DepthwiseConv2d;
pub use dropout::Dropout;
pub use pool::{global_avg_pool_backward, global_avg_pool_forward, Pool2d, PoolKind};
