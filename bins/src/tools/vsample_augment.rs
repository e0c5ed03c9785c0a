//! `vsample --train`'s RandAugment and AugMix flags (pytorchvideo's parameters under their
//! names), flattened into vsample's arguments.

use anyhow::Result;
use vidkit::transform::{AugMix, RandAugment, SamplingType, TransformHparas};

#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "RandAugment and AugMix (pytorchvideo's, with --train)")]
pub struct AugmentArgs {
    /// pytorchvideo's RandAugment on each clip (one draw for all its frames), on the resized
    /// frames before the crop: --rand-augment-num-layers distinct ops of its 14 (AutoContrast,
    /// Equalize, Invert, Rotate, Posterize, Solarize, AdjustBrightness/Contrast/Saturation/Sharpness,
    /// ShearX/Y, TranslateX/Y), each applied with probability --rand-augment-prob at a level
    /// sampled around --rand-augment-magnitude.
    #[arg(long, requires = "train", conflicts_with = "augmix")]
    pub rand_augment: bool,
    /// RandAugment's `magnitude`, 0–10 [default: 9].
    #[arg(long, value_name = "M", requires = "rand_augment")]
    pub rand_augment_magnitude: Option<u32>,
    /// RandAugment's `num_layers`: ops per clip [default: 2].
    #[arg(long, value_name = "N", requires = "rand_augment")]
    pub rand_augment_num_layers: Option<usize>,
    /// RandAugment's `prob`: the chance each chosen op applies [default: 0.5].
    #[arg(long, value_name = "P", requires = "rand_augment")]
    pub rand_augment_prob: Option<f64>,
    /// RandAugment's `sampling_type`: levels from N(magnitude, sampling_std) clipped to [0, 10],
    /// or uniform integers from sampling_min to magnitude [default: gaussian].
    #[arg(long, value_name = "TYPE", value_parser = ["gaussian", "uniform"], requires = "rand_augment")]
    pub rand_augment_sampling_type: Option<String>,
    /// RandAugment's `sampling_hparas` `sampling_std` [default: 0.5].
    #[arg(long, value_name = "STD", requires = "rand_augment")]
    pub rand_augment_sampling_std: Option<f64>,
    /// pytorchvideo's AugMix on each clip (one draw for all its frames), where RandAugment goes:
    /// --augmix-width chains of ops mixed with Dirichlet(alpha) weights, then with the clip by a
    /// Beta(alpha, alpha) weight.
    #[arg(long, requires = "train")]
    pub augmix: bool,
    /// AugMix's `magnitude`, 1–10 [default: 3].
    #[arg(long, value_name = "M", requires = "augmix")]
    pub augmix_magnitude: Option<u32>,
    /// AugMix's `alpha` [default: 1.0].
    #[arg(long, value_name = "A", requires = "augmix")]
    pub augmix_alpha: Option<f64>,
    /// AugMix's `width`: chains [default: 3].
    #[arg(long, value_name = "N", requires = "augmix")]
    pub augmix_width: Option<usize>,
    /// AugMix's `depth`: ops per chain, -1 for 1 to 3 at random [default: -1].
    #[arg(long, value_name = "N", allow_negative_numbers = true, requires = "augmix")]
    pub augmix_depth: Option<i64>,
    /// `transform_hparas` `fill` of either: the colour that Rotate, Shear and Translate bring in,
    /// in the frames' 0-255 units [default: 0.5 0.5 0.5, pytorchvideo's, near black on uint8].
    #[arg(long, num_args = 3, value_names = ["R", "G", "B"])]
    pub augment_fill: Option<Vec<f64>>,
}

impl AugmentArgs {
    fn hparas(&self) -> TransformHparas {
        match &self.augment_fill {
            Some(v) => TransformHparas { fill: [v[0], v[1], v[2]] },
            None => TransformHparas::default(),
        }
    }

    pub fn rand_augment(&self) -> Result<Option<RandAugment>> {
        if !self.rand_augment {
            anyhow::ensure!(
                self.augment_fill.is_none() || self.augmix,
                "--augment-fill needs --rand-augment or --augmix"
            );
            return Ok(None);
        }
        let d = RandAugment::default();
        let mut ra = RandAugment {
            magnitude: self.rand_augment_magnitude.unwrap_or(d.magnitude),
            num_layers: self.rand_augment_num_layers.unwrap_or(d.num_layers),
            prob: self.rand_augment_prob.unwrap_or(d.prob),
            transform_hparas: self.hparas(),
            sampling_type: match &self.rand_augment_sampling_type {
                Some(s) => s.parse::<SamplingType>()?,
                None => d.sampling_type,
            },
            sampling_hparas: d.sampling_hparas,
        };
        ra.sampling_hparas.sampling_std = self.rand_augment_sampling_std;
        ra.validate()?;
        Ok(Some(ra))
    }

    pub fn augmix(&self) -> Result<Option<AugMix>> {
        if !self.augmix {
            return Ok(None);
        }
        let d = AugMix::default();
        let am = AugMix {
            magnitude: self.augmix_magnitude.unwrap_or(d.magnitude),
            alpha: self.augmix_alpha.unwrap_or(d.alpha),
            width: self.augmix_width.unwrap_or(d.width),
            depth: self.augmix_depth.unwrap_or(d.depth),
            transform_hparas: self.hparas(),
            sampling_hparas: d.sampling_hparas,
        };
        am.validate()?;
        Ok(Some(am))
    }
}
