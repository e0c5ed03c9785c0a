//! Depthwise 2D convolution (`groups` = channels, one k×k filter per channel), as PP-LCNetV2
//! uses: the direct depthwise kernel of `conv3d.rs` over a single frame (forward and backward
//! are one pass each; as a GEMM it would be C products of one row).

use super::vol2col::Geometry3d;
use super::{add_act, depthwise_branches_bn_act_3d, fusable, BatchNorm2d, Conv2d, Conv3d, Conv3dConfig};
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

    /// BN(conv(x)) (then ReLU): one fused pass in eval mode on the CPU, the differentiable ops
    /// otherwise.
    pub fn forward_bn_act(&self, bn: &BatchNorm2d, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        Self::branches_bn_act(&[(self, bn)], x, train, relu)
    }

    /// act(Σ BN_b(conv_b(x))) over parallel branches of the same stride whose (odd) kernels are
    /// centred in the first, largest one (PP-LCNetV2's re-parameterisable depthwise block). In
    /// eval mode on the CPU one pass with the branches folded into one kernel (what the
    /// reference's `rep()` does for deployment); else each branch, the sum, the activation.
    pub fn branches_bn_act(
        branches: &[(&DepthwiseConv2d, &BatchNorm2d)],
        x: &Tensor,
        train: bool,
        relu: bool,
    ) -> Result<Tensor> {
        let Some(&(first, _)) = branches.first() else { candle_core::bail!("depthwise: no branches") };
        if train || !fusable(x) {
            let mut sum: Option<Tensor> = None;
            for (conv, bn) in branches {
                let y = bn.forward_t(&conv.forward(x)?, train)?;
                sum = Some(match sum {
                    Some(s) => (s + y)?,
                    None => y,
                });
            }
            return add_act(sum.expect("at least one branch"), None, relu);
        }
        let (n, c, h, w) = x.dims4()?;
        let Conv2d { kernel: k, stride: s, padding: p, .. } = &first.0;
        let g = Geometry3d {
            n,
            c,
            input: [1, h, w],
            kernel: [1, *k, *k],
            stride: [1, *s, *s],
            pad: [0, *p, *p],
            dilation: [1; 3],
        };
        let weighted: Vec<(&Tensor, &BatchNorm2d)> =
            branches.iter().map(|(conv, bn)| (&conv.0.weight, *bn)).collect();
        depthwise_branches_bn_act_3d(&x.unsqueeze(2)?, g, &weighted, relu)?.squeeze(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    #[test]
    fn fused_eval_equals_conv_then_batch_norm() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let conv = DepthwiseConv2d::new(5, 3, 2, 1, vb.pp("c")).unwrap();
        let bn = BatchNorm2d::new(5, vb.pp("bn")).unwrap();
        crate::nn::randomise_params(&vm);
        let x = crate::rng::randn(0f32, 1., (2, 5, 9, 7), &dev).unwrap();
        for relu in [false, true] {
            let want = add_act(bn.forward_t(&conv.forward(&x).unwrap(), false).unwrap(), None, relu).unwrap();
            let got = conv.forward_bn_act(&bn, &x, false, relu).unwrap();
            let d = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-5, "relu {relu}: {d}");
        }
    }

    #[test]
    fn matches_candle_grouped_conv2d_and_has_gradients() {
        let dev = Device::Cpu;
        for (k, s, p, h, w) in
            // The last three: frames of several 64-value blocks, rows split between blocks.
            [
                (3, 1, 1, 9, 7),
                (3, 2, 1, 9, 8),
                (5, 2, 2, 11, 6),
                (5, 1, 2, 5, 5),
                (1, 2, 0, 7, 6),
                (3, 1, 1, 3, 37),
                (5, 2, 2, 4, 150),
                (3, 1, 1, 2, 200),
            ]
        {
            let x = Var::from_tensor(&crate::rng::randn(0f32, 1., (2, 4, h, w), &dev).unwrap()).unwrap();
            let wt = Var::from_tensor(&crate::rng::randn(0f32, 1., (4, 1, k, k), &dev).unwrap()).unwrap();
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

    /// Folded branches (eval) equal the sum of each branch's conv → BN, then ReLU (train-mode
    /// path, here with eval statistics): PP-LCNetV2's 5/3/1 at stride 1 and 5/3 at stride 2.
    #[test]
    fn folded_branches_equal_their_sum() {
        let dev = Device::Cpu;
        for (stride, kernels) in [(1, vec![5, 3, 1]), (2, vec![5, 3])] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let convs: Vec<_> = kernels
                .iter()
                .enumerate()
                .map(|(i, &k)| {
                    DepthwiseConv2d::new(6, k, stride, (k - 1) / 2, vb.pp(format!("c{i}"))).unwrap()
                })
                .collect();
            let bns: Vec<_> =
                (0..kernels.len()).map(|i| BatchNorm2d::new(6, vb.pp(format!("bn{i}"))).unwrap()).collect();
            crate::nn::randomise_params(&vm);
            let branches: Vec<_> = convs.iter().zip(&bns).collect();
            let x = crate::rng::randn(0f32, 1., (2, 6, 11, 9), &dev).unwrap();
            let mut want = bns[0].forward_t(&convs[0].forward(&x).unwrap(), false).unwrap();
            for (conv, bn) in &branches[1..] {
                want = (want + bn.forward_t(&conv.forward(&x).unwrap(), false).unwrap()).unwrap();
            }
            let want = want.relu().unwrap();
            let got = DepthwiseConv2d::branches_bn_act(&branches, &x, false, true).unwrap();
            assert_eq!(got.dims(), want.dims());
            let d = (got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let top = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            // Folding reorders the sums: float32 rounding relative to the largest output (random
            // inputs and parameters: outputs up to ~40, errors up to 4.1e-7 of them in 60 runs;
            // an absolute 1e-5 failed once at 1.1e-5).
            assert!(d <= 4e-6 * top.max(1.0), "stride {stride}: {d} (largest output {top})");
        }
    }
}
