//! Building blocks candle lacks or that we need with exact reference semantics.

mod conv;
mod im2col;
mod pool;
mod shift;

pub use conv::Conv2d;
pub use pool::max_pool2d;
pub use shift::temporal_shift;

use candle_core::{Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, ModuleT, VarBuilder};

/// Parameter names that are state, not parameters: optimisers and weight decay skip them.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var") || name.ends_with("num_batches_tracked")
}

/// A bias-free convolution as torchvision's ResNets use (`conv{k}x{k}`).
pub fn conv2d(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Conv2d::new(cin, cout, k, stride, padding, vb)
}

/// BatchNorm2d with PyTorch's defaults (eps 1e-5, momentum 0.1, affine, unbiased running
/// variance); weight 1, bias 0, running stats 0/1 when created fresh.
pub fn batch_norm2d(c: usize, vb: VarBuilder) -> Result<BatchNorm> {
    candle_nn::batch_norm(
        c,
        BatchNormConfig { eps: 1e-5, remove_mean: true, affine: true, momentum: 0.1 },
        vb,
    )
}

/// conv → BN, the pair every ResNet layer is made of.
#[derive(Clone, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBn {
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv.forward(x)?;
        self.bn.forward_t(&y, train)
    }
}
