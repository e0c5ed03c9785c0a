//! Depthwise 2D convolution (`groups` = channels, one k×k filter per channel), as PP-LCNetV2
//! uses: a sum over the k² taps of strided views of the zero-padded input, each scaled by its
//! per-channel weight. Built from candle ops that all have a backward; for the small kernels
//! (3, 5) and channel counts of mobile nets this beats a per-group GEMM.

use super::Conv2d;
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
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let Conv2d { weight, kernel: k, stride: s, padding: p } = &self.0;
        let (k, s, p) = (*k, *s, *p);
        let (oh, ow) = self.0.output_size(h, w);
        // Pad so that every tap's strided view has exactly s·oh rows and s·ow columns.
        let (ph, pw) = ((k - 1 + s * oh).saturating_sub(h + p), (k - 1 + s * ow).saturating_sub(w + p));
        let xp = x.pad_with_zeros(2, p, ph)?.pad_with_zeros(3, p, pw)?.contiguous()?;
        let weight = weight.reshape((c, k * k))?;
        let mut out: Option<Tensor> = None;
        for dy in 0..k {
            for dx in 0..k {
                let rows = xp.narrow(2, dy, s * oh)?.reshape((n, c, oh, s, xp.dim(3)?))?.narrow(3, 0, 1)?;
                let view = rows.narrow(4, dx, s * ow)?.reshape((n, c, oh, ow, s))?.narrow(4, 0, 1)?;
                let tap = weight.narrow(1, dy * k + dx, 1)?.reshape((1, c, 1, 1))?;
                let term = view.reshape((n, c, oh, ow))?.broadcast_mul(&tap)?;
                out = Some(match out {
                    None => term,
                    Some(acc) => (acc + term)?,
                });
            }
        }
        Ok(out.expect("kernel >= 1"))
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
