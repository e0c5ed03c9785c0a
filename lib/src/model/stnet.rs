//! StNet (He et al., "StNet: Local and Global Spatial-Temporal Modeling for Action Recognition",
//! AAAI 2019) as the 2019 PaddlePaddle video zoo builds it (`PaddleCV/video/models/stnet/
//! stnet_res_model.py`, `configs/stnet.yaml`): a clip of N segments × T consecutive frames
//! becomes N "super-images" of 3T channels (frame-major, RGB within a frame, as the reader's
//! `np.reshape(imgs, (seg_num, seglen * 3, H, W))`), a ResNet-50 whose stem takes 3T channels,
//! a temporal modelling block after res3 and after res4 — `x + BN(ReLU(conv3d(x)))`, the conv
//! (3, 1, 1) with bias over the N segments — global average pooling, the temporal Xception
//! block over the N segment features (below), max over the segments and a linear classifier
//! (softmax in the reference; logits here).
//!
//! The ResNet is Paddle's (`conv_bn_layer`: stride on the 3×3, projection shortcuts where the
//! shape changes), which is torchvision's layout, so it is our [`ResNet`] under `backbone.` with
//! torchvision's names. Every layer after the backbone works on any number of segments, so one
//! model file runs the zoo's 7-segment training clips and its 25-segment test clips (set
//! `frames` in the config, e.g. `vconvert -o frames=125`).

use super::{ModelConfig, ResNet};
use crate::nn::{batch_norm2d, plane_mean, relu, BatchNorm2d, Conv3d, Conv3dConfig};
use candle_core::{Result, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};

/// The temporal modelling block: conv3d (3, 1, 1) with bias and ReLU, BN, plus the input.
#[derive(Clone, Debug)]
struct TemporalBlock {
    conv: Conv3d,
    bn: BatchNorm2d,
}

impl TemporalBlock {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv3dConfig { padding: [1, 0, 0], bias: true, ..Default::default() };
        Ok(Self {
            conv: Conv3d::new(c, c, [3, 1, 1], cfg, vb.pp("conv"))?,
            bn: batch_norm2d(c, vb.pp("bn"))?,
        })
    }

    /// [B·N, C, H, W] → the same, mixing each position across the N segments of a clip.
    fn forward_t(&self, x: &Tensor, segments: usize, train: bool) -> Result<Tensor> {
        let (bn, c, h, w) = x.dims4()?;
        let b = bn / segments;
        let xt = x.reshape((b, segments, c, h, w))?.transpose(1, 2)?.contiguous()?; // [B, C, N, H, W]
        let y = self.bn.forward_t(&relu(&self.conv.forward(&xt)?)?, train)?;
        (y + xt)?.transpose(1, 2)?.contiguous()?.reshape((bn, c, h, w))
    }
}

/// The temporal Xception block over segment features [B, C, N] (as [B, C, N, 1, 1]): BN; a
/// depthwise (3, 1) conv, a 1×1 conv to C/2, BN + ReLU, a depthwise (3, 1) conv and a 1×1 conv;
/// plus a 1×1 conv of the BN's output; BN and ReLU. Every conv has a bias. C is 2048 in the
/// zoo (`xception_*` layers).
#[derive(Clone, Debug)]
struct Xception {
    bn: BatchNorm2d,
    att_conv: Conv3d,
    att_2: Conv3d,
    bndw: BatchNorm2d,
    att1: Conv3d,
    att1_2: Conv3d,
    dw: Conv3d,
    bn2: BatchNorm2d,
}

impl Xception {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        let h = c / 2;
        let depthwise = |ch: usize, name: &str| {
            let cfg = Conv3dConfig { padding: [1, 0, 0], groups: ch, bias: true, ..Default::default() };
            Conv3d::new(ch, ch, [3, 1, 1], cfg, vb.pp(name))
        };
        let pointwise = |ci: usize, co: usize, name: &str| {
            Conv3d::new(ci, co, [1, 1, 1], Conv3dConfig { bias: true, ..Default::default() }, vb.pp(name))
        };
        Ok(Self {
            bn: batch_norm2d(c, vb.pp("bn"))?,
            att_conv: depthwise(c, "att_conv")?,
            att_2: pointwise(c, h, "att_2")?,
            bndw: batch_norm2d(h, vb.pp("bndw"))?,
            att1: depthwise(h, "att1")?,
            att1_2: pointwise(h, h, "att1_2")?,
            dw: pointwise(c, h, "dw")?,
            bn2: batch_norm2d(h, vb.pp("bn2"))?,
        })
    }

    /// [B, C, N, 1, 1] → [B, C/2, N, 1, 1]
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let bn = self.bn.forward_t(x, train)?;
        let att = self.att_2.forward(&self.att_conv.forward(&bn)?)?;
        let att = self.bndw.forward_act_t(&att, train, true)?;
        let att = self.att1_2.forward(&self.att1.forward(&att)?)?;
        let sum = (self.dw.forward(&bn)? + att)?;
        self.bn2.forward_act_t(&sum, train, true)
    }
}

#[derive(Clone, Debug)]
pub struct Stnet {
    pub config: ModelConfig,
    backbone: ResNet,
    /// After res3 (`layer2`) and after res4 (`layer3`).
    temporal: [TemporalBlock; 2],
    xception: Xception,
    fc: Linear,
}

impl Stnet {
    pub fn new(config: ModelConfig, depth: usize, vb: VarBuilder) -> Result<Self> {
        let seglen = config.seglen();
        if config.frames % seglen != 0 {
            candle_core::bail!(
                "{}: frames {} is not a whole number of segments of seglen {seglen}",
                config.arch,
                config.frames
            );
        }
        let backbone = ResNet::with_input_channels(
            depth,
            config.base_width,
            3 * seglen,
            config.stage_depths,
            None,
            vb.pp("backbone"),
        )?;
        let temporal = [
            TemporalBlock::new(backbone.stage_channels(1), vb.pp("temporal.0"))?,
            TemporalBlock::new(backbone.stage_channels(2), vb.pp("temporal.1"))?,
        ];
        let c = backbone.out_channels;
        let xception = Xception::new(c, vb.pp("xception"))?;
        let fc = candle_nn::linear(c / 2, config.num_classes, vb.pp("head.fc"))?;
        Ok(Self { config, backbone, temporal, xception, fc })
    }

    /// Segments per clip of `t` frames.
    fn segments(&self, t: usize) -> Result<usize> {
        let seglen = self.config.seglen();
        if t == 0 || t % seglen != 0 {
            candle_core::bail!("{}: {t} frames are not whole segments of {seglen}", self.config.arch);
        }
        Ok(t / seglen)
    }

    /// Xception features max-pooled over the segments, [B, C/2], of clips [B, N·T, 3, H, W].
    pub fn clip_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        let n = self.segments(t)?;
        let x = x.reshape((b * n, t / n * c, h, w))?;
        let mut y = self.backbone.stem_t(&x, train)?;
        for s in 0..4 {
            y = self.backbone.stage_t(s, &y, train)?;
            if s == 1 || s == 2 {
                y = self.temporal[s - 1].forward_t(&y, n, train)?;
            }
        }
        let pooled = plane_mean(&y, train)?; // [B·N, C]
        let ch = pooled.dim(1)?;
        let seq = pooled.reshape((b, n, ch))?.transpose(1, 2)?.contiguous()?.reshape((b, ch, n, 1, 1))?;
        let x = self.xception.forward_t(&seq, train)?; // [B, C/2, N, 1, 1]
        x.squeeze(D::Minus1)?.squeeze(D::Minus1)?.max(D::Minus1)
    }

    /// Logits [B, classes] of normalised clips [B, N·T, 3, H, W].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.fc.forward(&self.clip_features(x, train)?)
    }
}

/// `stnet_r50` (and deeper, by name): the registry row's builder.
pub(super) fn build_stnet(config: &ModelConfig, vb: VarBuilder) -> anyhow::Result<super::Model> {
    let depth: usize = config.arch.strip_prefix("stnet_r").and_then(|d| d.parse().ok()).unwrap_or(50);
    Ok(super::Model::new(Stnet::new(config.clone(), depth, vb)?))
}

impl super::Recognizer for Stnet {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn forward_train(
        &self,
        x: &Tensor,
        train: bool,
        _dropout_rng: Option<&mut crate::rng::Rng>,
    ) -> Result<Tensor> {
        // StNet has no dropout.
        Stnet::forward_t(self, x, train)
    }
    fn classifier(&self) -> String {
        "head.fc".into()
    }
    /// One row per clip: the max-pooled Xception features, [B, 1, C/2].
    fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.clip_features(x, train)?.unsqueeze(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// The whole model's backward (every parameter of these blocks included) is checked against
    /// the reference's float64 one in train mode in bins/tests/parity_stnet.rs; here the blocks'
    /// input gradients against central differences, on seeded inputs.
    fn seeded(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// dL/dx of `f` at `x` (L = Σ f(x) ⊙ R, R seeded) against central differences at every
    /// coordinate where the one-sided differences agree (elsewhere a ReLU switches within
    /// ±eps: no derivative to compare with); such kinks must stay rare.
    fn assert_input_gradient(x: &Tensor, f: impl Fn(&Tensor) -> Tensor) {
        let var = candle_core::Var::from_tensor(x).unwrap();
        let r = seeded(f(x).dims(), 99);
        let loss = |t: &Tensor| (f(t) * &r).unwrap().sum_all().unwrap();
        let g: Vec<f32> = loss(var.as_tensor())
            .backward()
            .unwrap()
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let eps = 1e-3f32;
        let at = |i: usize, d: f32| {
            let mut v = base.clone();
            v[i] += d;
            loss(&Tensor::from_vec(v, x.shape(), &Device::Cpu).unwrap()).to_scalar::<f32>().unwrap()
        };
        let mut kinks = 0;
        for i in 0..base.len() {
            let mid = at(i, 0.0);
            let (ahead, behind) = ((at(i, eps) - mid) / eps, (mid - at(i, -eps)) / eps);
            let fd = (ahead + behind) / 2.0;
            if (ahead - behind).abs() > 0.05 * fd.abs().max(0.1) {
                kinks += 1;
                continue;
            }
            assert!(
                (fd - g[i]).abs() <= 0.02 * fd.abs().max(g[i].abs()).max(0.1),
                "x[{i}]: backward {} vs differences {fd}",
                g[i]
            );
        }
        assert!(kinks * 10 <= base.len(), "{kinks} of {} points at a kink", base.len());
    }

    #[test]
    fn xception_input_gradient_matches_central_differences() {
        let vm = VarMap::new();
        let t = Xception::new(4, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        crate::model::init_weights(&vm, 5).unwrap();
        let x = seeded(&[3, 4, 5, 1, 1], 1);
        assert_input_gradient(&x, |x| t.forward_t(x, true).unwrap());
    }

    #[test]
    fn temporal_block_input_gradient_matches_central_differences() {
        let vm = VarMap::new();
        let t = TemporalBlock::new(3, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        crate::model::init_weights(&vm, 6).unwrap();
        let x = seeded(&[6, 3, 2, 2], 2);
        assert_input_gradient(&x, |x| t.forward_t(x, 3, true).unwrap());
    }
}
