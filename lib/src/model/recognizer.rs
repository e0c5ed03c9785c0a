//! The task trait of recognizers (DESIGN.md §2.5): a model that gives class scores for clips of
//! frames (`vclassify`, `vfeat`, `vtrain` from video lists) or for a video's feature sequence
//! (VideoTag's second stage). Each family implements [`Recognizer`] and has one builder that the
//! registry's rows name (the CNN and sequence families here, newer ones in their own module);
//! [`Model`] is a built recognizer of any family.

use super::{
    resnet_layout, slowfast, x3d, ModelConfig, Padded, Recognizer2d, ResNet3d, ResNet3dSpec, SequenceModel,
    SlowFast, X3d,
};
use crate::rng::Rng;
use anyhow::{bail, Context};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use std::sync::Arc;

pub trait Recognizer: Send + Sync + std::fmt::Debug {
    fn config(&self) -> &ModelConfig;

    /// Logits [B, classes] for normalised clips [B, T, 3, H, W], with dropout drawn from
    /// `dropout_rng` when training and given.
    fn forward_train(&self, x: &Tensor, train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        let _ = (x, train, dropout_rng);
        candle_core::bail!("{} takes feature sequences (vfeat output), not frames", self.config().arch)
    }

    /// The parameter prefix of the final classifier (`{prefix}.weight`, `{prefix}.bias`): the
    /// layer mmaction2's `fc_lr5` and PaddleVideo's head `ParamAttr`s train faster.
    fn classifier(&self) -> String;

    /// Whether the model takes feature sequences rather than frames.
    fn takes_features(&self) -> bool {
        false
    }

    /// Logits [B, classes] of a batch of feature sequences (one padded tensor per modality).
    fn forward_seq(&self, batch: &[Padded], train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        let _ = (batch, train, dropout_rng);
        candle_core::bail!("{} takes frames, not feature sequences", self.config().arch)
    }

    /// Pooled per-frame features [B, T, C] (before consensus and classifier); clip models give
    /// one feature per clip, [B, 1, C].
    fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _ = (x, train);
        candle_core::bail!("{} has no frame features", self.config().arch)
    }

    /// Backbone stages that `stage_features_t` can pool (`layer1` .. `layerN`). Clip models
    /// offer only their pooled clip features (`pool`): one stage.
    fn num_stages(&self) -> usize {
        1
    }

    /// Globally average-pooled output of backbone stage `stage` (1-based) per frame, [B, T, C];
    /// stage `num_stages()` gives `features_t`'s values. T need not be the config's `frames`
    /// except for models that couple frames (`temporal_group`).
    fn stage_features_t(&self, x: &Tensor, stage: usize, train: bool) -> Result<Tensor> {
        if stage == 1 {
            // One row per clip, [B, 1, C].
            return self.features_t(x, train);
        }
        candle_core::bail!("{}: only the pooled clip features (layer pool)", self.config().arch)
    }

    /// Frames that must go through the model together (TSM's shift couples a clip's frames, a
    /// clip model takes whole clips of `frames`); `None` when frames are independent (TSN).
    fn temporal_group(&self) -> Option<usize> {
        Some(self.config().frames)
    }

    /// Logits [B, classes] for normalised clips (inference, or training without dropout).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_train(x, train, None)
    }
}

/// A built recognizer of any registered family; cheap to clone (the parameters are shared).
#[derive(Clone, Debug)]
pub struct Model(Arc<dyn Recognizer>);

impl Model {
    pub fn new(recognizer: impl Recognizer + 'static) -> Self {
        Model(Arc::new(recognizer))
    }
}

impl std::ops::Deref for Model {
    type Target = dyn Recognizer;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// What a registry row of a recognizer calls to build it from its config and parameters.
pub type RecognizerBuilder = fn(&ModelConfig, VarBuilder) -> anyhow::Result<Model>;

impl Recognizer for Recognizer2d {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn forward_train(&self, x: &Tensor, train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        Recognizer2d::forward_t(self, x, train, dropout_rng)
    }
    fn classifier(&self) -> String {
        "head.fc".into()
    }
    fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Recognizer2d::features_t(self, x, train)
    }
    fn num_stages(&self) -> usize {
        4
    }
    fn stage_features_t(&self, x: &Tensor, stage: usize, train: bool) -> Result<Tensor> {
        Recognizer2d::stage_features_t(self, x, stage, train)
    }
    fn temporal_group(&self) -> Option<usize> {
        Recognizer2d::temporal_group(self)
    }
}

/// TSN/TSM on torchvision's ResNet-NN (`tsn_rNN`, `tsm_rNN`), PP-TSM (`pptsm_r50vd`) and
/// PP-TSMv2 (`pptsmv2_lcnetv2`).
pub(super) fn build_recognizer2d(config: &ModelConfig, vb: VarBuilder) -> anyhow::Result<Model> {
    let arch = config.arch.as_str();
    Ok(Model::new(match arch {
        "pptsm_r50vd" => Recognizer2d::pptsm(config.clone(), 50, vb)?,
        "pptsmv2_lcnetv2" => Recognizer2d::pptsmv2(config.clone(), vb)?,
        _ => {
            let (family, depth) = arch.split_once("_r").context("tsn/tsm name")?;
            let depth: usize = depth.parse()?;
            if resnet_layout(depth).is_none() {
                bail!("{arch}: no ResNet-{depth}");
            }
            Recognizer2d::new(config.clone(), depth, family == "tsm", vb)?
        }
    }))
}

impl Recognizer for ResNet3d {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn forward_train(&self, x: &Tensor, train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        ResNet3d::forward_t(self, x, train, dropout_rng)
    }
    fn classifier(&self) -> String {
        ResNet3d::classifier(self).into()
    }
    fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        ResNet3d::features_t(self, x, train)
    }
}

/// C2D, I3D, Slow, R(2+1)D and ir-CSN as pytorchvideo builds them.
pub(super) fn build_resnet3d(config: &ModelConfig, vb: VarBuilder) -> anyhow::Result<Model> {
    let spec = ResNet3dSpec::for_arch(&config.arch).context("resnet3d: no spec")?;
    Ok(Model::new(ResNet3d::new(config.clone(), &spec, vb)?))
}

impl Recognizer for X3d {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn forward_train(&self, x: &Tensor, train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        X3d::forward_t(self, x, train, dropout_rng)
    }
    fn classifier(&self) -> String {
        "blocks.5.proj".into()
    }
    fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        X3d::features_t(self, x, train)
    }
}

/// X3D-XS/S/M/L as pytorchvideo.
pub(super) fn build_x3d(config: &ModelConfig, vb: VarBuilder) -> anyhow::Result<Model> {
    let depth_factor = x3d::x3d_depth_factor(&config.arch).context("x3d: no variant")?;
    Ok(Model::new(X3d::new(config.clone(), depth_factor, vb)?))
}

impl Recognizer for SlowFast {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn forward_train(&self, x: &Tensor, train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        SlowFast::forward_t(self, x, train, dropout_rng)
    }
    fn classifier(&self) -> String {
        "blocks.6.proj".into()
    }
    fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        SlowFast::features_t(self, x, train)
    }
}

/// SlowFast-R50/R101 as pytorchvideo; both pathways from one clip.
pub(super) fn build_slowfast(config: &ModelConfig, vb: VarBuilder) -> anyhow::Result<Model> {
    let (depth, fusion_kernel) = slowfast::slowfast_variant(&config.arch).context("slowfast: no variant")?;
    Ok(Model::new(SlowFast::new(config.clone(), depth, fusion_kernel, vb)?))
}

impl Recognizer for SequenceModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn classifier(&self) -> String {
        "fc_logit".into()
    }
    fn takes_features(&self) -> bool {
        true
    }
    fn forward_seq(&self, batch: &[Padded], train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        SequenceModel::forward_t(self, batch, train, dropout_rng)
    }
    fn num_stages(&self) -> usize {
        0
    }
    fn stage_features_t(&self, x: &Tensor, stage: usize, train: bool) -> Result<Tensor> {
        let _ = (x, stage, train);
        candle_core::bail!("{} has no frame features", self.config.arch)
    }
    fn temporal_group(&self) -> Option<usize> {
        None
    }
}

/// AttentionLSTM, AttentionCluster and NeXtVLAD as PaddleVideo (feature sequences in).
pub(super) fn build_sequence(config: &ModelConfig, vb: VarBuilder) -> anyhow::Result<Model> {
    Ok(Model::new(SequenceModel::new(config.clone(), vb)?))
}
