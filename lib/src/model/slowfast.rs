//! SlowFast (Feichtenhofer 2019) with pytorchvideo's structure and parameter names, as
//! `pytorchvideo.models.slowfast.create_slowfast` builds the hub's slowfast_r50/r101:
//!
//! * the two pathways come from one clip of T frames inside the model: fast = the clip, slow =
//!   frames ⌊linspace(0, T−1, T/α)⌋ (pytorchvideo's `PackPathway`, α = 4);
//! * `blocks.0.multipathway_blocks.{0,1}`: stems (slow conv (1, 7, 7) → 64, fast (5, 7, 7) →
//!   8 = 64β, β = 1/8), BN, ReLU, max pool (1, 3, 3) stride (1, 2, 2);
//! * `blocks.{i}.multipathway_fusion` after the stem and stages 1–3 (`FuseFastToSlow`): conv
//!   (k, 1, 1) stride (α, 1, 1) from fast C to 2C channels, BN, ReLU, concatenated to the slow
//!   pathway (k = 7 for R50, 5 for R101);
//! * `blocks.1-4.multipathway_blocks.{0,1}.res_blocks.{j}`: bottlenecks; slow conv_a (1,1,1) in
//!   stages 1–2 and (3,1,1) in 3–4, fast (3,1,1) everywhere;
//! * `blocks.5` pools each pathway and concatenates (2048 + 256), `blocks.6.proj` classifies.
//!
//! Options (config keys, absent = the hub's structure), for mmaction2's `ResNet3dSlowFast`
//! (mmaction/models/backbones/resnet3d_slowfast.py): `alpha` (speed ratio, mmaction2
//! `speed_ratio`), `fusion_kernel`, `fusion_norm` (false: the lateral conv alone, no BN or ReLU,
//! as mmaction2's `lateral_norm=False` ConvModule, L166-175), `slow_frames` (`linspace`, as
//! `PackPathway`, or `stride`: frames 0, α, 2α, ..., mmaction2's nearest
//! `interpolate(scale_factor=1/resample_rate)` L476-479 with resample_rate = α, so that the fast
//! pathway is the clip itself).
//!
//! The hub's pathway pools have kernels fixed for the zoo input ((8, 7, 7), (32, 7, 7)), covering
//! the whole maps there; here they pool globally.

use super::resnet3d::{
    config_stage_depths, global_pool, res_stage, to_channels_first, Bottleneck3d, ConvB, ConvBn3d,
};
use super::ModelConfig;
use crate::nn::max_pool3d;
use crate::rng::Rng;
use candle_core::{DType, Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use serde::Deserialize;

/// Slow-to-fast frame rate ratio α and channel ratio 1/β of the hub models.
const ALPHA: usize = 4;
const BETA_INV: usize = 8;

/// Depth and fusion kernel of each hub variant (hub/slowfast.py).
pub fn slowfast_variant(arch: &str) -> Option<(usize, usize)> {
    match arch {
        "slowfast_r50" => Some((50, 7)),
        "slowfast_r101" => Some((101, 5)),
        _ => None,
    }
}

/// pytorchvideo `PackPathway`: the slow pathway's frames, ⌊linspace(0, T−1, T/α)⌋.
fn linspace_frames(t: usize, alpha: usize) -> Vec<usize> {
    let n = t / alpha;
    (0..n).map(|i| if n <= 1 { 0 } else { (i as f64 * (t - 1) as f64 / (n - 1) as f64) as usize }).collect()
}

/// The SlowFast options a config may carry (keys of its `extra` map; see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SlowFastOptions {
    pub alpha: Option<usize>,
    pub fusion_kernel: Option<usize>,
    pub fusion_norm: Option<bool>,
    pub slow_frames: Option<String>,
}

impl SlowFastOptions {
    pub const KEYS: [&'static str; 4] = ["alpha", "fusion_kernel", "fusion_norm", "slow_frames"];

    pub fn from_config(config: &ModelConfig) -> Result<Self> {
        let opts: Self = config.extra_options(&Self::KEYS)?;
        if opts.alpha == Some(0) || opts.fusion_kernel.is_some_and(|k| k % 2 == 0) {
            candle_core::bail!("{}: alpha must be positive and fusion_kernel odd", config.arch);
        }
        if let Some(m) = opts.slow_frames.as_deref().filter(|m| !["linspace", "stride"].contains(m)) {
            candle_core::bail!("{}: slow_frames is linspace or stride, not {m:?}", config.arch);
        }
        Ok(opts)
    }
}

#[derive(Clone, Debug)]
pub struct SlowFast {
    pub config: ModelConfig,
    stems: [ConvBn3d; 2],
    /// One per fusion point (after the stem and stages 1–3).
    fusions: Vec<ConvBn3d>,
    stages: Vec<[Vec<Bottleneck3d>; 2]>,
    proj: Linear,
    fusion_norm: bool,
    /// Frames of the clip the slow pathway takes.
    slow_frames: Vec<usize>,
}

impl SlowFast {
    pub fn new(config: ModelConfig, depth: usize, fusion_kernel: usize, vb: VarBuilder) -> Result<Self> {
        let depths = config_stage_depths(&config, depth)?;
        let opts = SlowFastOptions::from_config(&config)?;
        let alpha = opts.alpha.unwrap_or(ALPHA);
        let fusion_kernel = opts.fusion_kernel.unwrap_or(fusion_kernel);
        let fusion_norm = opts.fusion_norm.unwrap_or(true);
        let slow_frames = match opts.slow_frames.as_deref() {
            Some("stride") => (0..config.frames / alpha).map(|i| i * alpha).collect(),
            _ => linspace_frames(config.frames, alpha),
        };
        if slow_frames.is_empty() {
            candle_core::bail!(
                "{}: {} frames leave the slow pathway none (alpha {alpha})",
                config.arch,
                config.frames
            );
        }
        let blocks = vb.pp("blocks");
        let slow_w = config.base_width;
        let fast_w = slow_w / BETA_INV;
        let b0 = blocks.pp("0.multipathway_blocks");
        let stems = [
            ConvBn3d::new(3, slow_w, [1, 7, 7], [1, 2, 2], 1, b0.pp("0.conv"), b0.pp("0.norm"))?,
            ConvBn3d::new(3, fast_w, [5, 7, 7], [1, 2, 2], 1, b0.pp("1.conv"), b0.pp("1.norm"))?,
        ];
        let fusion = |i: usize, c: usize| -> Result<ConvBn3d> {
            let f = blocks.pp(i.to_string()).pp("multipathway_fusion");
            let mut cb = ConvBn3d::new(
                c,
                2 * c,
                [fusion_kernel, 1, 1],
                [alpha, 1, 1],
                1,
                f.pp("conv_fast_to_slow"),
                // Without a norm its parameters are made aside and never used or saved.
                if fusion_norm {
                    f.pp("norm")
                } else {
                    VarBuilder::zeros(candle_core::DType::F32, f.device())
                },
            )?;
            cb.conv.cfg.padding = [fusion_kernel / 2, 0, 0];
            Ok(cb)
        };
        let mut fusions = vec![fusion(0, fast_w)?];
        let (mut slow_in, mut fast_in) = (slow_w + 2 * fast_w, fast_w);
        let (mut slow_out, mut fast_out) = (slow_w * 4, fast_w * 4);
        let mut stages = Vec::new();
        for (s, &n) in depths.iter().enumerate() {
            let bv = blocks.pp((s + 1).to_string()).pp("multipathway_blocks");
            let stride = (1, if s > 0 { 2 } else { 1 });
            let slow_a = if s < 2 { [1, 1, 1] } else { [3, 1, 1] };
            stages.push([
                res_stage(
                    slow_in,
                    slow_out / 4,
                    slow_out,
                    n,
                    &[slow_a],
                    ConvB::Spatial,
                    stride,
                    None,
                    bv.pp("0"),
                )?,
                res_stage(
                    fast_in,
                    fast_out / 4,
                    fast_out,
                    n,
                    &[[3, 1, 1]],
                    ConvB::Spatial,
                    stride,
                    None,
                    bv.pp("1"),
                )?,
            ]);
            if s < 3 {
                fusions.push(fusion(s + 1, fast_out)?);
            }
            slow_in = slow_out + if s < 3 { 2 * fast_out } else { 0 };
            fast_in = fast_out;
            slow_out *= 2;
            fast_out *= 2;
        }
        let proj = candle_nn::linear(slow_in + fast_in, config.num_classes, blocks.pp("6.proj"))?;
        Ok(Self { config, stems, fusions, stages, proj, fusion_norm, slow_frames })
    }

    fn fuse(&self, i: usize, slow: &Tensor, fast: &Tensor, train: bool) -> Result<Tensor> {
        let f = if self.fusion_norm {
            self.fusions[i].forward_act(fast, train, None, true)?
        } else {
            // The plain convolution reads f32 (a bf16 block output widened: exact).
            self.fusions[i].conv.forward(&fast.to_dtype(DType::F32)?)?
        };
        // Both halves in bf16 where either is (`nn::bf16_act`: a block's output or a stem's pool
        // handed over; a lateral convolution on the direct kernel writes f32): only the next
        // block's convolutions read the concatenation, which round it to bf16 anyway.
        let f = match (slow.dtype(), f.dtype()) {
            (DType::BF16, DType::F32) => f.to_dtype(DType::BF16)?,
            (DType::F32, DType::BF16) => f.to_dtype(DType::F32)?,
            _ => f,
        };
        Tensor::cat(&[slow, &f], 1)
    }

    /// Pooled clip features [B, 1, C_slow + C_fast].
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let fast = to_channels_first(x, self.config.frames)?;
        let idx: Vec<u32> = self.slow_frames.iter().map(|&i| i as u32).collect();
        let idx = Tensor::new(idx.as_slice(), x.device())?;
        let slow = fast.index_select(&idx, 2)?.contiguous()?;
        // Only convolutions read a stem's pool (the first blocks', the lateral one's), and every
        // block's output but the last two (the head's pool reads those): bf16 under bf16.
        let stem = |k: usize, x: &Tensor| -> Result<Tensor> {
            let y = crate::nn::through_max_pool(|| self.stems[k].forward_act(x, train, None, true))?;
            max_pool3d(&y, [1, 3, 3], [1, 2, 2], [0, 1, 1])
        };
        let mut f = stem(1, &fast)?;
        let mut s = self.fuse(0, &stem(0, &slow)?, &f, train)?;
        let stages = self.stages.len();
        let run = |blocks: &[Bottleneck3d], mut y: Tensor, to_head: bool| -> Result<Tensor> {
            for (j, b) in blocks.iter().enumerate() {
                y = match to_head && j + 1 == blocks.len() {
                    true => b.forward_t(&y, train)?,
                    false => b.forward_to_convs_t(&y, train)?,
                };
            }
            Ok(y)
        };
        for (i, [slow_blocks, fast_blocks]) in self.stages.iter().enumerate() {
            s = run(slow_blocks, s, i + 1 == stages)?;
            f = run(fast_blocks, f, i + 1 == stages)?;
            if i < 3 {
                s = self.fuse(i + 1, &s, &f, train)?;
            }
        }
        Tensor::cat(&[global_pool(&s, train)?, global_pool(&f, train)?], 1)?.unsqueeze(1)
    }

    pub fn forward_t(&self, x: &Tensor, train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        let f = self.features_t(x, train)?.squeeze(1)?;
        let f = crate::nn::dropout(&f, self.config.dropout as f64, dropout_rng)?;
        self.proj.forward(&f)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slow_frames_follow_pack_pathway() {
        // torch.linspace(0, 31, 8).long() and torch.linspace(0, 7, 2).long()
        assert_eq!(super::linspace_frames(32, 4), [0, 4, 8, 13, 17, 22, 26, 31]);
        assert_eq!(super::linspace_frames(8, 4), [0, 7]);
    }
}
