//! `vtrain`'s configuration of a recognizer's training: a JSON object whose every key can be
//! overridden with `-o key=value` (PaddleVideo style), its checks, and the clip specs it gives
//! the loader for training and validation.

use super::{BatchMix, LrSchedule, OptimizerConfig};
use crate::clips::ClipSpec;
use crate::model::ModelConfig;
use crate::rng::Rng;
use crate::transform::CropMode;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// LR schedule; absent means the optimiser's `lr` throughout.
    pub schedule: Option<LrSchedule>,
    pub label_smoothing: f64,
    /// Batch mixing (Mixup, CutMix, VideoMix); absent means none.
    pub mix: Option<BatchMix>,
    /// Micro-batches per optimiser step.
    pub accumulate: usize,
    /// Clip the global gradient norm to this.
    pub clip_grad: Option<f64>,
    /// Validate every N epochs (and after the last).
    pub val_every: usize,
    pub seed: u64,
    /// Parallel decoders.
    pub jobs: usize,
    /// Batches decoded ahead of the model.
    pub prefetch: usize,
    /// Train-time crop: random-resized, multiscale, center, none.
    pub train_crop: String,
    /// Random horizontal flip (off by default: it swaps left and right).
    pub flip: bool,
    /// torchvision's ColorJitter per training clip (`{"brightness": 0.4, "contrast": 0.4,
    /// "saturation": 0.4, "hue": 0.1}`); absent means none.
    pub color_jitter: Option<crate::transform::ColorJitter>,
    /// torchvision's RandomGrayscale probability per training clip (0: never).
    pub grayscale: f64,
    /// pytorchvideo's RandAugment per training clip, its parameters by their names there
    /// (`{"magnitude": 9, "num_layers": 2, "prob": 0.5, "sampling_type": "gaussian",
    /// "sampling_hparas": {"sampling_std": 0.5}, "transform_hparas": {"fill": [0.5, 0.5, 0.5]}}`;
    /// `{}` takes pytorchvideo's defaults); absent means none.
    pub rand_augment: Option<crate::transform::RandAugment>,
    /// pytorchvideo's AugMix per training clip (`{"magnitude": 3, "alpha": 1.0, "width": 3,
    /// "depth": -1}`, `{}` for the defaults); absent means none.
    pub augmix: Option<crate::transform::AugMix>,
    /// Log a training line every N iterations.
    pub log_every: usize,
    /// Deep mutual learning (PP-TSMv2's DML): a peer model trained alongside, each model's loss
    /// adding `weight` × KL(the other's softmax ‖ its own). Absent means no peer.
    pub dml: Option<DmlConfig>,
    /// Mixed precision (`bf16`, `f16`) on candle's ops (`--device cuda` or `cpu-portable`):
    /// products in half precision, parameters and optimiser state in f32, f16's loss scaled
    /// dynamically ([`super::amp`]). Absent means f32 throughout.
    pub amp: Option<super::Amp>,
    /// f16's initial loss scale (torch's GradScaler `init_scale`, 2^16 by default).
    pub loss_scale: Option<f64>,
}

/// The DML peer: another registered architecture (or the same, differently initialised) with
/// the main model's data, input spec and optimiser; written as `peer_last.safetensors`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DmlConfig {
    pub arch: String,
    #[serde(default = "default_dml_weight")]
    pub weight: f64,
    /// Config keys of the peer that differ from the main model's (`{"base_width": 32}`).
    #[serde(default)]
    pub model: serde_json::Map<String, Value>,
}

fn default_dml_weight() -> f64 {
    1.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: ModelConfig::defaults("tsm_r50"),
            epochs: 30,
            batch_size: 8,
            optimizer: OptimizerConfig::default(),
            schedule: None,
            label_smoothing: 0.0,
            mix: None,
            accumulate: 1,
            clip_grad: None,
            val_every: 1,
            seed: 0,
            jobs: 1,
            prefetch: 4,
            train_crop: "multiscale".into(),
            flip: false,
            color_jitter: None,
            grayscale: 0.0,
            rand_augment: None,
            augmix: None,
            log_every: 10,
            dml: None,
            amp: None,
            loss_scale: None,
        }
    }
}

impl TrainConfig {
    /// Applies `key=value` overrides. Keys are dotted paths (`optimizer.lr=0.01`); a key naming
    /// a model field may omit `model.` (`num_classes=4`). Values are JSON, or a bare string.
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<()> {
        *self = apply_json_overrides(&*self, overrides, "model")?;
        self.validate()
    }

    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        if let Some(j) = &self.color_jitter {
            j.validate()?;
        }
        if !(0.0..=1.0).contains(&self.grayscale) {
            bail!("grayscale {} is a probability: it must lie in [0, 1]", self.grayscale);
        }
        if let Some(ra) = &self.rand_augment {
            ra.validate()?;
        }
        if let Some(am) = &self.augmix {
            am.validate()?;
        }
        if self.rand_augment.is_some() && self.augmix.is_some() {
            bail!("rand_augment and augmix are alternatives (pytorchvideo's aug_type): set one");
        }
        if self.epochs == 0 || self.batch_size == 0 || self.accumulate == 0 || self.val_every == 0 {
            bail!("epochs, batch_size, accumulate and val_every must be positive");
        }
        self.train_crop.parse::<CropMode>()?;
        if let Some(m) = &self.mix {
            m.validate()?;
        }
        if ModelConfig::is_sequence_arch(&self.model.arch) && self.mix.is_some() {
            bail!(
                "mix (Mixup/CutMix/VideoMix) applies to clips; {} takes feature sequences",
                self.model.arch
            );
        }
        if self.model.multilabel && (self.dml.is_some() || self.mix.is_some() || self.label_smoothing > 0.0) {
            bail!("multilabel training supports neither dml, mix nor label_smoothing");
        }
        if let Some(s) = self.loss_scale {
            if self.amp != Some(super::Amp::F16) || !(s.is_finite() && s > 0.0) {
                bail!("loss_scale {s}: the initial scale of amp=f16's loss, a positive number");
            }
        }
        if self.dml.is_some() && self.accumulate > 1 {
            bail!("dml steps the peer every iteration: use accumulate = 1");
        }
        Ok(())
    }

    pub(super) fn schedule(&self) -> LrSchedule {
        self.schedule.clone().unwrap_or_else(|| LrSchedule::constant(self.optimizer.lr()))
    }

    /// Clip sampling for training: the model's sampler in train mode, random crops.
    pub fn train_spec(&self, epoch: usize) -> Result<ClipSpec> {
        let m = &self.model;
        Ok(ClipSpec {
            decoder: Default::default(),
            sampler: m.sampler_config(true)?,
            short_side_px: Some(m.short_side),
            fixed_ratio: m.fixed_ratio(),
            crop: self.train_crop.parse()?,
            crop_px: m.crop_size,
            flip: self.flip,
            color_jitter: self.color_jitter,
            grayscale: self.grayscale,
            rand_augment: self.rand_augment,
            augmix: self.augmix,
            normalize: None,
            seed: Rng::derive(self.seed, 1_000_003 + epoch as u64).next_u64(),
            indices: None,
            rate_fps: None,
            chunk_frames: None,
        })
    }

    /// The test protocol for validation: deterministic sampling, centre crop.
    pub fn val_spec(&self) -> Result<ClipSpec> {
        let mut s = self.train_spec(0)?;
        s.sampler.train = false;
        s.crop = CropMode::Center;
        s.flip = false;
        s.color_jitter = None;
        s.grayscale = 0.0;
        s.rand_augment = None;
        s.augmix = None;
        Ok(s)
    }
}

/// Where a run reads and writes.
/// `config` with `key=value` overrides applied: keys are dotted paths into its JSON form
/// (`optimizer.lr=0.01`); a key naming a field of the `section` object, or any bare key the top
/// level lacks, goes into that section (`num_classes=4` → `model.num_classes`). Values are JSON,
/// or a bare string.
pub fn apply_json_overrides<T: Serialize + serde::de::DeserializeOwned>(
    config: &T,
    overrides: &[String],
    section: &str,
) -> Result<T> {
    let mut root = serde_json::to_value(config)?;
    let section_keys: Vec<String> =
        root[section].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    for o in overrides {
        let (key, val) = o.split_once('=').with_context(|| format!("override {o:?} is not key=value"))?;
        let value = serde_json::from_str::<Value>(val).unwrap_or_else(|_| Value::String(val.to_string()));
        let mut path: Vec<&str> = key.trim().split('.').collect();
        if root.get(path[0]).is_none() && (section_keys.iter().any(|k| k == path[0]) || path.len() == 1) {
            path.insert(0, section);
        }
        let mut node = &mut root;
        for (i, p) in path.iter().enumerate() {
            if i + 1 == path.len() {
                node.as_object_mut()
                    .with_context(|| format!("override {key:?}: not an object"))?
                    .insert(p.to_string(), value.clone());
                break;
            }
            let obj = node.as_object_mut().with_context(|| format!("override {key:?}: not an object"))?;
            node = obj.entry(p.to_string()).or_insert_with(|| Value::Object(Default::default()));
            if node.is_null() {
                *node = Value::Object(Default::default());
            }
        }
    }
    serde_json::from_value(root).context("config after overrides")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `color_jitter` is a config key: it reaches the training clips, never validation's, and
    /// a hue beyond torchvision's [0, 0.5] is refused.
    #[test]
    fn color_jitter_configures_training_clips_only() {
        let mut cfg = TrainConfig::default();
        cfg.apply_overrides(&[
            r#"color_jitter={"brightness":0.4,"contrast":0.4,"saturation":0.4,"hue":0.1}"#.into(),
        ])
        .unwrap();
        assert_eq!(cfg.train_spec(0).unwrap().color_jitter.unwrap().hue, 0.1);
        assert!(cfg.val_spec().unwrap().color_jitter.is_none());
        let bad = [r#"color_jitter={"brightness":0,"contrast":0,"saturation":0,"hue":0.7}"#.to_string()];
        assert!(TrainConfig::default().apply_overrides(&bad).is_err());
    }

    /// `rand_augment` and `augmix` are config keys with pytorchvideo's parameter names and
    /// defaults: they reach the training clips only; bad values and both at once are refused.
    /// `color_jitter`'s `style` picks PaddleVideo's arithmetic.
    #[test]
    fn rand_augment_and_augmix_configure_training_clips_only() {
        use crate::transform::{JitterStyle, SamplingType};
        let mut cfg = TrainConfig::default();
        cfg.apply_overrides(&[r#"rand_augment={"magnitude":7,"num_layers":4}"#.into()]).unwrap();
        let ra = cfg.train_spec(0).unwrap().rand_augment.unwrap();
        assert_eq!((ra.magnitude, ra.num_layers, ra.prob), (7, 4, 0.5));
        assert!(cfg.val_spec().unwrap().rand_augment.is_none());
        let mut cfg = TrainConfig::default();
        cfg.apply_overrides(&[r#"augmix={}"#.into()]).unwrap();
        assert_eq!(cfg.train_spec(0).unwrap().augmix.unwrap().width, 3);
        assert!(cfg.val_spec().unwrap().augmix.is_none());
        for bad in
            [r#"rand_augment={"num_layers":0}"#, r#"augmix={"alpha":-1}"#, r#"rand_augment={"magnitud":3}"#]
        {
            assert!(TrainConfig::default().apply_overrides(&[bad.to_string()]).is_err(), "{bad}");
        }
        let both = [r#"rand_augment={}"#.to_string(), r#"augmix={}"#.to_string()];
        assert!(TrainConfig::default().apply_overrides(&both).is_err());
        // Dotted keys into an absent one start from pytorchvideo's defaults.
        let both = ["rand_augment.num_layers=3".to_string(), "augmix.depth=2".to_string()];
        assert!(TrainConfig::default().apply_overrides(&both).is_err());
        let mut cfg = TrainConfig::default();
        cfg.apply_overrides(&[
            "rand_augment.num_layers=3".into(),
            "rand_augment.sampling_type=uniform".into(),
        ])
        .unwrap();
        let ra = cfg.rand_augment.unwrap();
        assert_eq!((ra.magnitude, ra.num_layers, ra.sampling_type), (9, 3, SamplingType::Uniform));
        let jitter =
            r#"color_jitter={"brightness":0.4,"contrast":0,"saturation":0,"hue":0,"style":"paddlevideo"}"#;
        let mut cfg = TrainConfig::default();
        cfg.apply_overrides(&[jitter.into()]).unwrap();
        assert_eq!(cfg.train_spec(0).unwrap().color_jitter.unwrap().style, JitterStyle::Paddlevideo);
    }

    /// A zoo model trains and validates on its own T × τ dense clips (pytorchvideo's spec).
    #[test]
    fn clip_specs_follow_the_models_dense_interval() {
        let mut cfg = TrainConfig::default();
        cfg.model = ModelConfig::defaults("slow_r50");
        let (train, val) = (cfg.train_spec(0).unwrap(), cfg.val_spec().unwrap());
        assert_eq!((train.sampler.frames, train.sampler.interval), (8, 8));
        assert_eq!((val.sampler.interval, val.sampler.train, train.sampler.train), (8, false, true));
        cfg.model = ModelConfig::defaults("tsm_r50");
        assert_eq!(cfg.train_spec(0).unwrap().sampler.interval, 1);
    }
}
