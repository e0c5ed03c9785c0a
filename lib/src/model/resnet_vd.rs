//! ResNet-vd with temporal shift, PP-TSM's backbone, as PaddleVideo's `ResNetTweaksTSM`
//! (paddlevideo/modeling/backbones/resnet_tweaks_tsm.py, bottleneck depths):
//! * ResNet-C stem: three 3×3 conv-BN-LeakyReLU (`base/2`, `base/2`, `base` channels, the first
//!   with stride 2), then 3×3/2 max pooling;
//! * bottleneck blocks, stride on the 3×3 conv; ResNet-D shortcut where the shape changes: 2×2/2
//!   average pooling (ceil mode, exclusive) then a 1×1 conv of stride 1 — except in the very
//!   first block, which keeps the resolution and has a plain 1×1 conv;
//! * LeakyReLU with Paddle's default slope 0.01 wherever torchvision's ResNet has ReLU;
//! * Paddle's `temporal_shift` with `shift_ratio = 1 / num_seg` on every block's input, feeding
//!   the residual branch only (the shortcut sees the unshifted input).
//!
//! Parameter names are Paddle's structured names with its private layer names made ours (see
//! `import_paddle`): `conv1_{1,2,3}.{conv,bn}.*`, `bb_{stage}_{block}.conv{0,1,2}.{conv,bn}.*`,
//! `bb_{stage}_0.short.{conv,bn}.*`, BatchNorm statistics `running_mean`/`running_var`.

use super::resnet::{resnet_layout, BlockKind};
use crate::nn::{avg_pool2d_ceil, batch_norm2d, conv2d, max_pool2d, temporal_shift_paddle, ConvBn};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// Paddle's `F.leaky_relu` default.
const LEAKY_SLOPE: f32 = 0.01;

fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    crate::nn::leaky_relu(x, LEAKY_SLOPE)
}

/// PaddleVideo's `ConvBNLayer`: a bias-free conv with "same" padding, BatchNorm.
fn conv_bn(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<ConvBn> {
    Ok(ConvBn {
        conv: conv2d(cin, cout, k, stride, (k - 1) / 2, vb.pp("conv"))?,
        bn: batch_norm2d(cout, vb.pp("bn"))?,
    })
}

#[derive(Clone, Debug)]
enum Shortcut {
    Identity,
    Conv(ConvBn),
    /// ResNet-D: average pooling, then the conv.
    PoolConv(ConvBn),
}

#[derive(Clone, Debug)]
struct Bottleneck {
    convs: [ConvBn; 3],
    shortcut: Shortcut,
}

impl Bottleneck {
    fn forward_t(&self, x: &Tensor, segments: usize, train: bool) -> Result<Tensor> {
        let shifted = temporal_shift_paddle(x, segments, 1.0 / segments as f32)?;
        let y = leaky_relu(&self.convs[0].forward_t(&shifted, train)?)?;
        let y = leaky_relu(&self.convs[1].forward_t(&y, train)?)?;
        let y = self.convs[2].forward_t(&y, train)?;
        let short = match &self.shortcut {
            Shortcut::Identity => x.clone(),
            Shortcut::Conv(cb) => cb.forward_t(x, train)?,
            Shortcut::PoolConv(cb) => cb.forward_t(&avg_pool2d_ceil(x, 2)?, train)?,
        };
        crate::nn::add_leaky_relu(&y, &short, LEAKY_SLOPE)
    }
}

/// The backbone up to the last stage (no pooling, no fc), for clips of `segments` frames.
#[derive(Clone, Debug)]
pub struct ResNetVdTsm {
    stem: [ConvBn; 3],
    blocks: Vec<Bottleneck>,
    segments: usize,
    pub out_channels: usize,
}

impl ResNetVdTsm {
    /// `base_width` 64 is PaddleVideo's; smaller values give narrow variants for tests.
    pub fn new(depth: usize, base_width: usize, segments: usize, vb: VarBuilder) -> Result<Self> {
        let Some((BlockKind::Bottleneck, counts)) = resnet_layout(depth) else {
            candle_core::bail!("no bottleneck ResNet-vd of depth {depth} (50, 101, 152)")
        };
        let half = base_width / 2;
        let stem = [
            conv_bn(3, half, 3, 2, vb.pp("conv1_1"))?,
            conv_bn(half, half, 3, 1, vb.pp("conv1_2"))?,
            conv_bn(half, base_width, 3, 1, vb.pp("conv1_3"))?,
        ];
        let mut cin = base_width;
        let mut blocks = Vec::new();
        for (s, &n) in counts.iter().enumerate() {
            let planes = base_width << s;
            for b in 0..n {
                let vb = vb.pp(format!("bb_{s}_{b}"));
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                let convs = [
                    conv_bn(cin, planes, 1, 1, vb.pp("conv0"))?,
                    conv_bn(planes, planes, 3, stride, vb.pp("conv1"))?,
                    conv_bn(planes, planes * 4, 1, 1, vb.pp("conv2"))?,
                ];
                let shortcut = match (b, s) {
                    (0, 0) => Shortcut::Conv(conv_bn(cin, planes * 4, 1, 1, vb.pp("short"))?),
                    (0, _) => Shortcut::PoolConv(conv_bn(cin, planes * 4, 1, 1, vb.pp("short"))?),
                    _ => Shortcut::Identity,
                };
                blocks.push(Bottleneck { convs, shortcut });
                cin = planes * 4;
            }
        }
        Ok(Self { stem, blocks, segments, out_channels: cin })
    }

    /// [N × T, 3, H, W] → [N × T, C, H/32, W/32]
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for cb in &self.stem {
            y = leaky_relu(&cb.forward_t(&y, train)?)?;
        }
        y = max_pool2d(&y, 3, 2, 1)?;
        for block in &self.blocks {
            y = block.forward_t(&y, self.segments, train)?;
        }
        Ok(y)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use crate::model::{build, init_weights, ModelConfig};
    use crate::rng::Rng;
    use crate::train::trainable_vars;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    /// A narrow PP-TSM: the shapes come out right and every parameter learns (no op on the way
    /// drops the gradient), dropout included.
    #[test]
    fn pptsm_gives_every_parameter_a_gradient() {
        let mut cfg = ModelConfig::defaults("pptsm_r50vd");
        (cfg.num_classes, cfg.base_width, cfg.frames) = (5, 8, 4);
        let varmap = VarMap::new();
        let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        init_weights(&varmap, 3).unwrap();
        // 36 px: odd sizes from stage 2 on exercise the ceil-mode pooling of the shortcuts.
        let x = crate::rng::randn(0f32, 1., (2, 4, 3, 36, 36), &Device::Cpu).unwrap();
        assert_eq!(model.features_t(&x, false).unwrap().dims(), &[2, 4, 32 * 8]);
        let y = model.forward_train(&x, true, Some(&mut Rng::new(1))).unwrap();
        assert_eq!(y.dims(), &[2, 5]);
        let names = assert_every_parameter_learns(&varmap, &y);
        assert_eq!(names.len(), 3 * 3 + 16 * 3 * 3 + 4 * 3 + 2, "convs, BN weight and bias, fc");
    }

    /// Backpropagates sum(y²) and asserts that every trainable variable gets a non-zero
    /// gradient; returns their names.
    pub(in crate::model) fn assert_every_parameter_learns(varmap: &VarMap, y: &Tensor) -> Vec<String> {
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let vars = trainable_vars(varmap);
        for (name, var) in &vars {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
            let norm = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0, "{name}: zero gradient");
        }
        vars.into_iter().map(|(n, _)| n).collect()
    }
}
