//! 2D recognizers: a per-frame ResNet, average pooling, average consensus over the segments,
//! dropout and a linear classifier. TSN (Wang et al.) as mmaction2's `TSNHead`; TSM adds the
//! temporal shift inside the backbone (mmaction2 `ResNetTSM` + `TSMHead`; the two heads give the
//! same logits in eval mode, as the fc is linear and dropout is the identity). PP-TSM is the same
//! recognizer (PaddleVideo `Recognizer2D` + `ppTSMHead`) over a ResNet-vd with Paddle's temporal
//! shift; its head drops out per-frame features, before the consensus. PP-TSMv2 (PaddleVideo
//! `PPTSM_v2` + `MoViNetHead`) has the same structure over PP-LCNetV2, its dropout in Paddle's
//! `downscale_in_infer` mode: no scaling in training, features × (1 − p) in eval.

use super::pplcnet_v2::PpLcNetV2Tsm;
use super::resnet::{ResNet, ShiftSpec};
use super::resnet_vd::ResNetVdTsm;
use super::ModelConfig;
use crate::nn::dropout;
use crate::rng::Rng;
use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

#[derive(Clone, Debug)]
enum Backbone {
    ResNet(ResNet),
    ResNetVdTsm(ResNetVdTsm),
    PpLcNetV2Tsm(PpLcNetV2Tsm),
}

#[derive(Clone, Debug)]
pub struct Recognizer2d {
    pub config: ModelConfig,
    backbone: Backbone,
    fc: Linear,
    /// The backbone shifts features across a clip's frames (TSM, PP-TSM, PP-TSMv2).
    tsm: bool,
    /// ppTSMHead: dropout on the per-frame features rather than on their average.
    dropout_per_frame: bool,
    /// Paddle's `downscale_in_infer` dropout (PP-TSMv2) rather than inverted dropout.
    dropout_downscale_in_infer: bool,
}

impl Recognizer2d {
    pub fn new(config: ModelConfig, depth: usize, tsm: bool, vb: VarBuilder) -> Result<Self> {
        let shift = tsm.then_some(ShiftSpec { segments: config.frames, shift_div: config.shift_div });
        let backbone = ResNet::new(depth, config.base_width, shift, vb.pp("backbone"))?;
        let fc = candle_nn::linear(backbone.out_channels, config.num_classes, vb.pp("head.fc"))?;
        let backbone = Backbone::ResNet(backbone);
        Ok(Self { config, backbone, fc, tsm, dropout_per_frame: false, dropout_downscale_in_infer: false })
    }

    /// PP-TSM: ResNet-vd of `depth` with Paddle's shift (ratio 1 / frames), ppTSMHead.
    pub fn pptsm(config: ModelConfig, depth: usize, vb: VarBuilder) -> Result<Self> {
        let backbone = ResNetVdTsm::new(depth, config.base_width, config.frames, vb.pp("backbone"))?;
        let fc = candle_nn::linear(backbone.out_channels, config.num_classes, vb.pp("head.fc"))?;
        let backbone = Backbone::ResNetVdTsm(backbone);
        Ok(Self {
            config,
            backbone,
            fc,
            tsm: true,
            dropout_per_frame: true,
            dropout_downscale_in_infer: false,
        })
    }

    /// PP-TSMv2: PP-LCNetV2 at scale `base_width / 64` with the shift before stage 3, and the
    /// temporal attention when the config's `temporal_attention` is true.
    pub fn pptsmv2(config: ModelConfig, vb: VarBuilder) -> Result<Self> {
        let attention = config.extra.get("temporal_attention").and_then(|v| v.as_bool()).unwrap_or(false);
        let scale = config.base_width as f64 / 64.0;
        let backbone = PpLcNetV2Tsm::new(scale, config.frames, attention, vb.pp("backbone"))?;
        let fc = candle_nn::linear(super::pplcnet_v2::LAST_CHANNELS, config.num_classes, vb.pp("head.fc"))?;
        let backbone = Backbone::PpLcNetV2Tsm(backbone);
        Ok(Self {
            config,
            backbone,
            fc,
            tsm: true,
            dropout_per_frame: true,
            dropout_downscale_in_infer: true,
        })
    }

    /// Pooled per-frame features [B, T, C] of clips [B, T, 3, H, W].
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let t = x.dim(1)?;
        if t != self.config.frames {
            candle_core::bail!("the model takes {} frames per clip, got {t}", self.config.frames);
        }
        self.stage_features_t(x, 4, train)
    }

    /// Globally average-pooled output of ResNet stage `stage` (1–4) per frame, [B, T, C]. TSN
    /// frames are independent, so T is free; TSM shifts across groups of `frames` consecutive
    /// frames, so T must be a multiple of `frames`.
    pub fn stage_features_t(&self, x: &Tensor, stage: usize, train: bool) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        if let Some(group) = self.temporal_group() {
            if t % group != 0 {
                candle_core::bail!("TSM couples {group} frames per clip; got {t}, not a multiple");
            }
        }
        let x = x.reshape((b * t, c, h, w))?;
        let y = match &self.backbone {
            Backbone::ResNet(r) => r.forward_stages_t(&x, stage, train)?,
            // The Paddle backbones offer their last stage only (`pool`).
            _ if stage != 4 => candle_core::bail!("{}: only the pooled last stage", self.config.arch),
            Backbone::ResNetVdTsm(r) => r.forward_t(&x, train)?,
            Backbone::PpLcNetV2Tsm(r) => return r.forward_t(&x, train)?.reshape((b, t, ())),
        };
        let pooled = crate::nn::plane_mean(&y, train)?; // global average pool → [B*T, C]
        pooled.reshape((b, t, ()))
    }

    /// Frames that must go through the backbone together (TSM), or `None` when each frame
    /// stands alone (TSN).
    pub fn temporal_group(&self) -> Option<usize> {
        self.tsm.then_some(self.config.frames)
    }

    /// Logits [B, classes] of clips [B, T, 3, H, W] normalised with the config's mean/std.
    /// Dropout is applied only when `dropout_rng` is given (training), from that seeded
    /// generator, so a training run is reproducible (candle's own RNG cannot be seeded).
    pub fn forward_t(&self, x: &Tensor, train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        let features = self.features_t(x, train)?;
        let p = self.config.dropout as f64;
        let consensus = if self.dropout_downscale_in_infer {
            match dropout_rng {
                _ if !train => (features * (1.0 - p))?.mean(1)?,
                Some(rng) => (dropout(&features, p, Some(rng))? * (1.0 - p))?.mean(1)?,
                None => features.mean(1)?,
            }
        } else if self.dropout_per_frame {
            dropout(&features, p, dropout_rng)?.mean(1)?
        } else {
            dropout(&features.mean(1)?, p, dropout_rng)?
        };
        self.fc.forward(&consensus)
    }
}
