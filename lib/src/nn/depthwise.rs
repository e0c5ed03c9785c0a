//! Depthwise 2D convolution (`groups` = channels, one k×k filter per channel), as PP-LCNetV2
//! uses: the direct depthwise kernel of `conv3d.rs` over a single frame (forward and backward
//! are one pass each; as a GEMM it would be C products of one row).

use super::{Conv2d, Conv3d, Conv3dConfig};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// The geometry and the [C, 1, k, k] weight (PyTorch's and Paddle's layout for groups = C) of a
/// `Conv2d`, applied per channel.
#[derive(Clone, Debug)]
pub struct DepthwiseConv2d(pub Conv2d);

impl DepthwiseConv2d {
    pub fn new(
        channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self(Conv2d::with_weight_shape((channels, 1, kernel, kernel), stride, padding, vb)?))
    }

    /// [N, C, H, W] → [N, C, H', W'] (no bias, dilation 1).
    /// Through the direct depthwise 3D kernel (one frame, (1, k, k) window), whose forward and
    /// backward are single passes; shifted views multiplied tap by tap cost a full tensor each.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = x.dim(1)?;
        let Conv2d { weight, kernel: _, stride: s, padding: p } = &self.0;
        let cfg = Conv3dConfig { stride: [1, *s, *s], padding: [0, *p, *p], groups: c, ..Default::default() };
        let conv = Conv3d { weight: weight.unsqueeze(2)?, bias: None, cfg };
        conv.forward(&x.unsqueeze(2)?)?.squeeze(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_grouped_conv2d_and_has_gradients() {
        let dev = Device::Cpu;
        for (k, s, p, h, w) in
            [(3, 1, 1, 9, 7), (3, 2, 1, 9, 8), (5, 2, 2, 11, 6), (5, 1, 2, 5, 5), (1, 2, 0, 7, 6)]
        {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 4, h, w), &dev).unwrap()).unwrap();
            let wt = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 1, k, k), &dev).unwrap()).unwrap();
            let conv =
                DepthwiseConv2d(Conv2d { weight: wt.as_tensor().clone(), kernel: k, stride: s, padding: p });
            let ours = conv.forward(x.as_tensor()).unwrap();
            let theirs = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 4).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "k{k} s{s} p{p}");
            let diff =
                (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "k{k} s{s} p{p}: {diff}");
            let grads = ours.sum_all().unwrap().backward().unwrap();
            // d sum(y) / d w[c, dy, dx] = sum of the inputs that tap sees: positive count check.
            let gw = grads.get(wt.as_tensor()).unwrap();
            assert_eq!(gw.dims(), &[4, 1, k, k]);
            let gx = grads.get(x.as_tensor()).unwrap().abs().unwrap().sum_all().unwrap();
            assert!(gx.to_scalar::<f32>().unwrap() > 0.0);
        }
    }
}
