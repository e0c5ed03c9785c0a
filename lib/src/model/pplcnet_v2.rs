//! PP-TSMv2's backbone, PP-LCNetV2 with temporal shift, as PaddleVideo's `PPTSM_v2`
//! (paddlevideo/modeling/backbones/pptsm_v2.py; configs/recognition/pptsm/v2/
//! pptsm_lcnet_k400_8frames_uniform.yaml: scale 1.0, depths [2, 2, 6, 2], dropout 0.2):
//! * stem: 3×3/2 conv-BN-ReLU (32), a depthwise-separable block (64);
//! * four stages of `RepDepthwiseSeparable` blocks (first block stride 2): a depthwise conv
//!   (k 3, 3, 5, 5) — in stages 3 and 4 the sum of parallel depthwise conv-BN branches of
//!   kernels k, k-2, ..., 1 (the 1×1 only at stride 1) before the ReLU —, squeeze-excitation in
//!   stage 3 (sigmoid gate), then 1×1 conv-BN-ReLU (split in two halves-wide convs in stage 3),
//!   a residual connection where stage 4 keeps its shape;
//! * before stage 3 only: the optional temporal attention (`GlobalAttention`, PP-TSMv2's LTA: a
//!   sigmoid gate per frame from a T×T linear layer over the frames' mean activations) and
//!   Paddle's temporal shift with ratio 1 / num_seg;
//! * global average pooling, 1×1 conv to 1280 (no bias), ReLU; then (in `Recognizer2d`)
//!   dropout, the average over the segments and the classifier.
//!
//! Parameter names are Paddle's with the import rule of `import_paddle`
//! (`stages.2.0.dw_conv_list.1.bn.running_mean`, ...), except the classifier (`backbone.fc` in
//! Paddle, `head.fc` here). Paddle's `dw_conv` of a re-parameterisable block is the fused
//! kernel its `rep()` fills for deployment; it is unused in training and eval and not kept.

use crate::nn::{
    batch_norm2d, conv2d, conv2d_bn_act, temporal_shift_paddle, BatchNorm2d, Conv2d, DepthwiseConv2d,
};
use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

/// Channels of the blocks of each stage at scale 1, kernel, split pointwise, re-parameterisable
/// depthwise, squeeze-excitation, residual (`NET_CONFIG` of the reference).
const STAGES: [(usize, usize, bool, bool, bool, bool); 4] = [
    (64, 3, false, false, false, false),
    (128, 3, false, false, false, false),
    (256, 5, true, true, true, false),
    (512, 5, false, true, false, true),
];
const DEPTHS: [usize; 4] = [2, 2, 6, 2];
/// Channels of the last 1×1 conv (`class_expand`).
pub const LAST_CHANNELS: usize = 1280;

/// The reference's `make_divisible(v, 8)`.
fn make_divisible(v: f64) -> usize {
    let d: f64 = 8.0;
    let new_v = d.max(((v + d / 2.0) / d).floor() * d);
    (if new_v < 0.9 * v { new_v + d } else { new_v }) as usize
}

/// conv (plain or depthwise, no bias) → BN → optional ReLU: the reference's `ConvBNLayer`.
#[derive(Clone, Debug)]
struct ConvBnAct {
    conv: Conv,
    bn: BatchNorm2d,
    relu: bool,
}

#[derive(Clone, Debug)]
enum Conv {
    Dense(Conv2d),
    Depthwise(DepthwiseConv2d),
}

impl ConvBnAct {
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        depthwise: bool,
        relu: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let p = (k - 1) / 2;
        let conv = if depthwise {
            Conv::Depthwise(DepthwiseConv2d::new(cin, k, stride, p, vb.pp("conv"))?)
        } else {
            Conv::Dense(conv2d(cin, cout, k, stride, p, vb.pp("conv"))?)
        };
        Ok(Self { conv, bn: batch_norm2d(cout, vb.pp("bn"))?, relu })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match &self.conv {
            Conv::Dense(c) => conv2d_bn_act(c, &self.bn, x, train, None, self.relu),
            Conv::Depthwise(c) => c.forward_bn_act(&self.bn, x, train, self.relu),
        }
    }
}

/// A 1×1 conv with bias applied to [N, C, 1, 1] (the squeeze-excitation's), as a matmul.
#[derive(Clone, Debug)]
struct PointwiseBias {
    weight: Tensor,
    bias: Tensor,
}

impl PointwiseBias {
    fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        let weight =
            vb.get_with_hints((cout, cin, 1, 1), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let bias = vb.get_with_hints(cout, "bias", candle_nn::init::ZERO)?;
        Ok(Self { weight, bias })
    }

    /// [N, C_in] → [N, C_out]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (cout, cin) = (self.weight.dim(0)?, self.weight.dim(1)?);
        crate::nn::gemm::matmul(x, &self.weight.reshape((cout, cin))?.t()?)?.broadcast_add(&self.bias)
    }
}

#[derive(Clone, Debug)]
struct SqueezeExcite {
    conv1: PointwiseBias,
    conv2: PointwiseBias,
}

impl SqueezeExcite {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let pooled = crate::nn::plane_mean(x, train)?;
        let gate = candle_nn::ops::sigmoid(&self.conv2.forward(&self.conv1.forward(&pooled)?.relu()?)?)?;
        if !train {
            return crate::nn::channel_scale_inference(x, &gate);
        }
        x.broadcast_mul(&gate.reshape((n, c, 1, 1))?)
    }
}

#[derive(Clone, Debug)]
struct RepDepthwiseSeparable {
    /// One branch (with ReLU), or the re-parameterisable branches summed before the ReLU.
    depthwise: Vec<ConvBnAct>,
    se: Option<SqueezeExcite>,
    pointwise: Vec<ConvBnAct>,
    shortcut: bool,
}

impl RepDepthwiseSeparable {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cin: usize,
        cout: usize,
        stride: usize,
        k: usize,
        (split_pw, use_rep, use_se, use_shortcut): (bool, bool, bool, bool),
        vb: VarBuilder,
    ) -> Result<Self> {
        let depthwise = if use_rep {
            (1..=k)
                .rev()
                .step_by(2)
                .filter(|&ks| ks != 1 || stride == 1)
                .enumerate()
                .map(|(i, ks)| {
                    ConvBnAct::new(cin, cin, ks, stride, true, false, vb.pp(format!("dw_conv_list.{i}")))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![ConvBnAct::new(cin, cin, k, stride, true, true, vb.pp("dw_conv"))?]
        };
        let se = if use_se {
            let vb = vb.pp("se");
            Some(SqueezeExcite {
                conv1: PointwiseBias::new(cin, cin / 4, vb.pp("conv1"))?,
                conv2: PointwiseBias::new(cin / 4, cin, vb.pp("conv2"))?,
            })
        } else {
            None
        };
        let pointwise = if split_pw {
            let half = cout / 2;
            vec![
                ConvBnAct::new(cin, half, 1, 1, false, true, vb.pp("pw_conv_1"))?,
                ConvBnAct::new(half, cout, 1, 1, false, true, vb.pp("pw_conv_2"))?,
            ]
        } else {
            vec![ConvBnAct::new(cin, cout, 1, 1, false, true, vb.pp("pw_conv"))?]
        };
        let shortcut = use_shortcut && stride == 1 && cin == cout;
        Ok(Self { depthwise, se, pointwise, shortcut })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = if self.depthwise.len() > 1 || !self.depthwise[0].relu {
            let branches = self
                .depthwise
                .iter()
                .map(|b| match &b.conv {
                    Conv::Depthwise(c) => Ok((c, &b.bn)),
                    Conv::Dense(_) => candle_core::bail!("a re-parameterisable branch is not depthwise"),
                })
                .collect::<Result<Vec<_>>>()?;
            DepthwiseConv2d::branches_bn_act(&branches, x, train, true)?
        } else {
            self.depthwise[0].forward_t(x, train)?
        };
        if let Some(se) = &self.se {
            y = se.forward_t(&y, train)?;
        }
        for pw in &self.pointwise {
            y = pw.forward_t(&y, train)?;
        }
        if self.shortcut {
            y = (y + x)?;
        }
        Ok(y)
    }
}

/// PP-TSMv2's temporal attention (`GlobalAttention`).
#[derive(Clone, Debug)]
struct TemporalAttention {
    fc: Linear,
}

impl TemporalAttention {
    fn forward(&self, x: &Tensor, segments: usize) -> Result<Tensor> {
        let (nt, c, h, w) = x.dims4()?;
        let clips = x.reshape((nt / segments, segments, c * h * w))?;
        let gate = candle_nn::ops::sigmoid(&self.fc.forward(&clips.mean(2)?)?)?;
        clips.broadcast_mul(&gate.unsqueeze(2)?)?.reshape((nt, c, h, w))
    }
}

/// The backbone up to the 1280-channel features (no dropout, no classifier).
#[derive(Clone, Debug)]
pub struct PpLcNetV2Tsm {
    stem: (ConvBnAct, RepDepthwiseSeparable),
    stages: Vec<Vec<RepDepthwiseSeparable>>,
    attention: Option<TemporalAttention>,
    last_conv: Conv2d,
    segments: usize,
}

impl PpLcNetV2Tsm {
    /// `scale` 1.0 is PP-TSMv2's (`base_width` 64 in the config); `temporal_attention` adds the
    /// LTA module (off in PaddleVideo's configs: `use_temporal_att` defaults to False).
    pub fn new(scale: f64, segments: usize, temporal_attention: bool, vb: VarBuilder) -> Result<Self> {
        let c = |v: usize| make_divisible(v as f64 * scale);
        let stem = vb.pp("stem");
        let stem = (
            ConvBnAct::new(3, c(32), 3, 2, false, true, stem.pp("0"))?,
            RepDepthwiseSeparable::new(c(32), c(64), 1, 3, (false, false, false, false), stem.pp("1"))?,
        );
        let mut stages = Vec::new();
        for (s, (&(ch, k, split, rep, se, short), &depth)) in STAGES.iter().zip(&DEPTHS).enumerate() {
            let blocks = (0..depth)
                .map(|i| {
                    let (cin, stride) = if i == 0 { (c(ch), 2) } else { (c(2 * ch), 1) };
                    let vb = vb.pp(format!("stages.{s}.{i}"));
                    RepDepthwiseSeparable::new(cin, c(2 * ch), stride, k, (split, rep, se, short), vb)
                })
                .collect::<Result<Vec<_>>>()?;
            stages.push(blocks);
        }
        let attention = if temporal_attention {
            Some(TemporalAttention {
                fc: candle_nn::linear(segments, segments, vb.pp("global_attention.fc"))?,
            })
        } else {
            None
        };
        let last_conv = conv2d(c(2 * STAGES[3].0), LAST_CHANNELS, 1, 1, 0, vb.pp("last_conv"))?;
        Ok(Self { stem, stages, attention, last_conv, segments })
    }

    /// [N × T, 3, H, W] → [N × T, 1280] (after the last conv and its ReLU)
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = self.stem.1.forward_t(&self.stem.0.forward_t(x, train)?, train)?;
        for (s, stage) in self.stages.iter().enumerate() {
            if s == 2 {
                if let Some(att) = &self.attention {
                    y = att.forward(&y, self.segments)?;
                }
                y = temporal_shift_paddle(&y, self.segments, 1.0 / self.segments as f32)?;
            }
            for block in stage {
                y = block.forward_t(&y, train)?;
            }
        }
        let pooled = crate::nn::plane_mean(&y, train)?.unsqueeze(2)?.unsqueeze(3)?;
        let (n, _, _, _) = pooled.dims4()?;
        self.last_conv.forward(&pooled)?.relu()?.reshape((n, LAST_CHANNELS))
    }
}

#[cfg(test)]
mod tests {
    use super::make_divisible;
    use crate::model::{build, init_weights, ModelConfig};
    use crate::rng::Rng;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    /// A half-width PP-TSMv2 with temporal attention: shapes, and a gradient for every parameter.
    #[test]
    fn pptsmv2_gives_every_parameter_a_gradient() {
        let mut cfg = ModelConfig::defaults("pptsmv2_lcnetv2");
        (cfg.num_classes, cfg.base_width, cfg.frames) = (5, 32, 4);
        cfg.extra.insert("temporal_attention".into(), true.into());
        let varmap = VarMap::new();
        let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        init_weights(&varmap, 3).unwrap();
        let x = crate::rng::randn(0f32, 1., (2, 4, 3, 48, 40), &Device::Cpu).unwrap();
        assert_eq!(model.features_t(&x, false).unwrap().dims(), &[2, 4, super::LAST_CHANNELS]);
        let y = model.forward_train(&x, true, Some(&mut Rng::new(1))).unwrap();
        assert_eq!(y.dims(), &[2, 5]);
        let names = crate::model::resnet_vd::tests::assert_every_parameter_learns(&varmap, &y);
        assert!(names.iter().any(|n| n.contains("global_attention")));
    }

    #[test]
    fn make_divisible_as_the_reference() {
        // python: make_divisible(v) for v in (32, 64 * 0.5, 20, 3, 100 * 0.75) → 32 32 24 8 72
        let got: Vec<usize> = [32.0, 32.0, 20.0, 3.0, 75.0].iter().map(|&v| make_divisible(v)).collect();
        assert_eq!(got, vec![32, 32, 24, 8, 72]);
    }
}
