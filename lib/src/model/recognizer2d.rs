//! 2D recognizers: a per-frame ResNet, average pooling, average consensus over the segments,
//! dropout and a linear classifier. TSN (Wang et al.) as mmaction2's `TSNHead`; TSM adds the
//! temporal shift inside the backbone (mmaction2 `ResNetTSM` + `TSMHead`; the two heads give the
//! same logits in eval mode, as the fc is linear and dropout is the identity).

use super::resnet::{ResNet, ShiftSpec};
use super::ModelConfig;
use crate::rng::Rng;
use candle_core::{Result, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};

#[derive(Clone, Debug)]
pub struct Recognizer2d {
    pub config: ModelConfig,
    backbone: ResNet,
    fc: Linear,
    tsm: bool,
}

impl Recognizer2d {
    pub fn new(config: ModelConfig, depth: usize, tsm: bool, vb: VarBuilder) -> Result<Self> {
        let shift = tsm.then_some(ShiftSpec { segments: config.frames, shift_div: config.shift_div });
        let backbone = ResNet::new(depth, config.base_width, shift, vb.pp("backbone"))?;
        let fc = candle_nn::linear(backbone.out_channels, config.num_classes, vb.pp("head.fc"))?;
        Ok(Self { config, backbone, fc, tsm })
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
        let y = self.backbone.forward_stages_t(&x.reshape((b * t, c, h, w))?, stage, train)?;
        let pooled = y.mean(D::Minus1)?.mean(D::Minus1)?; // global average pool → [B*T, C]
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
        let consensus = self.features_t(x, train)?.mean(1)?;
        let dropped = crate::nn::dropout(&consensus, self.config.dropout as f64, dropout_rng)?;
        self.fc.forward(&dropped)
    }
}
