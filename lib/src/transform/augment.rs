//! What pytorchvideo 0.1.5's RandAugment and AugMix share (`transforms/augmentations.py`'s
//! `AugmentTransform`): how a magnitude level is sampled (`_get_magnitude`: gaussian around
//! `magnitude` clipped to [0, 10], or uniform ints or floats from `sampling_min`) and turned into
//! an op's argument (`_LEVEL_TO_ARG` with the op's `(base, max)` parameters), and the
//! distributions AugMix mixes with (Dirichlet, Beta) — sampled from vidkit's own [`Rng`], so a
//! seed gives the same draw everywhere; the parity tests fix the draws instead.

use super::augment_ops::{AugmentOp, OpKind};
use crate::rng::Rng;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `_AUGMENTATION_MAX_LEVEL`.
pub const MAX_LEVEL: f64 = 10.0;

/// `sampling_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplingType {
    #[default]
    Gaussian,
    Uniform,
}

impl std::str::FromStr for SamplingType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gaussian" => Ok(Self::Gaussian),
            "uniform" => Ok(Self::Uniform),
            _ => bail!("unknown sampling type {s:?} (gaussian, uniform)"),
        }
    }
}

/// `sampling_data_type`: uniform sampling among ints or floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplingDataType {
    Int,
    Float,
}

/// `sampling_hparas`: `sampling_std` for gaussian sampling, `sampling_data_type` and
/// `sampling_min` for uniform sampling. A key left out takes the transform's default
/// (pytorchvideo replaces its whole default dict and asserts the keys it needs are there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingHparas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_std: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_data_type: Option<SamplingDataType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_min: Option<f64>,
}

/// `sampling_hparas` with every key settled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    pub sampling_std: f64,
    pub sampling_data_type: SamplingDataType,
    pub sampling_min: f64,
}

impl SamplingHparas {
    pub fn or(&self, defaults: Sampling) -> Sampling {
        Sampling {
            sampling_std: self.sampling_std.unwrap_or(defaults.sampling_std),
            sampling_data_type: self.sampling_data_type.unwrap_or(defaults.sampling_data_type),
            sampling_min: self.sampling_min.unwrap_or(defaults.sampling_min),
        }
    }
}

impl Sampling {
    fn validate(&self, sampling: SamplingType, magnitude: u32) -> Result<()> {
        match sampling {
            SamplingType::Gaussian if !(self.sampling_std >= 0.0 && self.sampling_std.is_finite()) => {
                bail!("sampling_std {} must be a non-negative number", self.sampling_std)
            }
            SamplingType::Uniform => {
                let min = self.sampling_min;
                if self.sampling_data_type == SamplingDataType::Int && min.fract() != 0.0 {
                    bail!("sampling_min {min} must be a whole number with sampling_data_type int");
                }
                if !(0.0..=magnitude as f64).contains(&min) {
                    bail!("sampling_min {min} must lie in [0, magnitude {magnitude}]");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// `transform_hparas`: `fill`, the colour that rotations, shears and translations bring in, in
/// the units of the frames they act on — for vidkit's uint8 frames 0–255, so pytorchvideo's
/// default (0.5, 0.5, 0.5), meant for [0, 1] floats, is almost black, as it is when pytorchvideo
/// is given uint8 videos (MMAction2's `PytorchVideoWrapper`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransformHparas {
    pub fill: [f64; 3],
}

impl Default for TransformHparas {
    fn default() -> Self {
        Self { fill: [0.5; 3] }
    }
}

impl TransformHparas {
    pub fn validate(&self) -> Result<()> {
        if let Some(v) = self.fill.iter().find(|v| !(0.0..=255.0).contains(*v)) {
            bail!("fill {v} must lie in [0, 255] (uint8 frames)");
        }
        Ok(())
    }

    pub(crate) fn fill_f32(&self) -> [f32; 3] {
        self.fill.map(|v| v as f32)
    }
}

/// `_LEVEL_TO_ARG`'s functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelFn {
    /// No argument (AutoContrast, Equalize, Invert).
    None,
    /// `_increasing_randomly_negate_to_arg`: base ± level / 10 · max, the sign a coin flip.
    IncreasingRandomlyNegate,
    /// `_increasing_magnitude_to_arg`: base + level / 10 · max.
    Increasing,
    /// `_decreasing_int_to_arg`: base − int(level / 10 · max).
    DecreasingInt,
    /// `_decreasing_to_arg`: base − level / 10 · max.
    Decreasing,
}

/// One row of an op table: the op, its level function and `(base, max)` parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpSpec {
    pub kind: OpKind,
    pub level_fn: LevelFn,
    pub params: (f64, f64),
}

impl OpSpec {
    pub const fn new(kind: OpKind, level_fn: LevelFn, params: (f64, f64)) -> Self {
        Self { kind, level_fn, params }
    }

    /// The op at `level`; `negate` chooses the sign where the level function flips a coin
    /// (`_randomly_negate`: the magnitude stays positive when `torch.rand(1) > 0.5`).
    pub fn at_level(&self, level: f64, negate: bool) -> AugmentOp {
        let m = (level / MAX_LEVEL) * self.params.1;
        let arg = match self.level_fn {
            LevelFn::None => 0.0,
            LevelFn::IncreasingRandomlyNegate => self.params.0 + if negate { -m } else { m },
            LevelFn::Increasing => self.params.0 + m,
            // Python's int() truncates toward zero.
            LevelFn::DecreasingInt => self.params.0 - m.trunc(),
            LevelFn::Decreasing => self.params.0 - m,
        };
        AugmentOp { kind: self.kind, arg }
    }

    /// `AugmentTransform` once it is chosen and applied: a level, then a sign when needed.
    pub(crate) fn draw(
        &self,
        magnitude: u32,
        sampling: SamplingType,
        h: &Sampling,
        rng: &mut Rng,
    ) -> AugmentOp {
        let level = sample_level(magnitude, sampling, h, rng);
        let negate = self.level_fn == LevelFn::IncreasingRandomlyNegate && rng.uniform() <= 0.5;
        self.at_level(level, negate)
    }
}

/// `AugmentTransform._get_magnitude`.
pub fn sample_level(magnitude: u32, sampling: SamplingType, h: &Sampling, rng: &mut Rng) -> f64 {
    let m = magnitude as f64;
    match (sampling, h.sampling_data_type) {
        (SamplingType::Gaussian, _) => (m + h.sampling_std * normal(rng)).clamp(0.0, MAX_LEVEL),
        // torch.randint(sampling_min, magnitude + 1)
        (SamplingType::Uniform, SamplingDataType::Int) => {
            rng.int_inclusive(h.sampling_min as i64, magnitude as i64) as f64
        }
        (SamplingType::Uniform, SamplingDataType::Float) => {
            rng.uniform() * (m - h.sampling_min) + h.sampling_min
        }
    }
}

/// Checks what pytorchvideo asserts, and a magnitude within [0, 10] (beyond it Posterize and
/// Solarize would leave their ranges, which torchvision refuses).
pub(crate) fn validate_sampling(magnitude: u32, sampling: SamplingType, h: &Sampling) -> Result<()> {
    if magnitude as f64 > MAX_LEVEL {
        bail!("magnitude {magnitude} must lie in [0, {MAX_LEVEL}]");
    }
    h.validate(sampling, magnitude)
}

/// A standard normal deviate (Box–Muller).
pub fn normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.uniform(); // (0, 1]
    let u2 = rng.uniform();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Gamma(shape, 1) deviate (Marsaglia and Tsang; shape < 1 through the boost
/// Gamma(a) = Gamma(a + 1) · U^(1/a)).
pub fn gamma(shape: f64, rng: &mut Rng) -> f64 {
    if shape < 1.0 {
        let u = 1.0 - rng.uniform();
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = 1.0 - rng.uniform();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Dirichlet(alpha, …, alpha) over `n` components as float32 weights (`torch.distributions`'
/// Dirichlet: normalised Gamma deviates), summing to one up to float rounding.
pub fn dirichlet(alpha: f64, n: usize, rng: &mut Rng) -> Vec<f32> {
    let g: Vec<f64> = (0..n).map(|_| gamma(alpha, rng).max(f64::MIN_POSITIVE)).collect();
    let sum: f64 = g.iter().sum();
    g.iter().map(|v| (v / sum) as f32).collect()
}

/// Beta(alpha, alpha) as float32 (torch's Beta is a two-component Dirichlet).
pub fn beta(alpha: f64, rng: &mut Rng) -> f32 {
    dirichlet(alpha, 2, rng)[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hparas(std: f64, data: SamplingDataType, min: f64) -> Sampling {
        Sampling { sampling_std: std, sampling_data_type: data, sampling_min: min }
    }

    /// Gaussian levels: mean `magnitude`, spread `sampling_std`, clipped to [0, 10] as
    /// `max(0, min(10, N(m, std)))` — at magnitude 10 half the levels sit on the clip.
    #[test]
    fn gaussian_levels_are_clipped_normals() {
        let mut rng = Rng::new(5);
        let h = hparas(0.5, SamplingDataType::Int, 0.0);
        let n = 20000;
        let v: Vec<f64> = (0..n).map(|_| sample_level(5, SamplingType::Gaussian, &h, &mut rng)).collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 5.0).abs() < 0.02 && (var.sqrt() - 0.5).abs() < 0.02, "{mean} {var}");
        let top: Vec<f64> = (0..n).map(|_| sample_level(10, SamplingType::Gaussian, &h, &mut rng)).collect();
        assert!(top.iter().all(|&x| (0.0..=10.0).contains(&x)));
        let at_clip = top.iter().filter(|&&x| x == 10.0).count() as f64 / n as f64;
        assert!((at_clip - 0.5).abs() < 0.02, "{at_clip}");
        let wide = hparas(8.0, SamplingDataType::Int, 0.0);
        let w: Vec<f64> = (0..n).map(|_| sample_level(1, SamplingType::Gaussian, &wide, &mut rng)).collect();
        assert!(w.contains(&0.0) && w.iter().all(|&x| (0.0..=10.0).contains(&x)));
    }

    /// Uniform levels: `randint(min, magnitude + 1)` (every integer about equally often) or
    /// `rand · (magnitude − min) + min`.
    #[test]
    fn uniform_levels_cover_their_ranges() {
        let mut rng = Rng::new(6);
        let ints = hparas(0.5, SamplingDataType::Int, 2.0);
        let mut seen = [0usize; 11];
        for _ in 0..8000 {
            let l = sample_level(5, SamplingType::Uniform, &ints, &mut rng);
            assert_eq!(l.fract(), 0.0);
            seen[l as usize] += 1;
        }
        assert_eq!(seen[..2], [0, 0]);
        assert!(seen[2..=5].iter().all(|&c| (1800..2200).contains(&c)), "{seen:?}");
        assert!(seen[6..].iter().all(|&c| c == 0));
        let floats = hparas(0.5, SamplingDataType::Float, 0.1);
        let v: Vec<f64> =
            (0..8000).map(|_| sample_level(3, SamplingType::Uniform, &floats, &mut rng)).collect();
        assert!(v.iter().all(|&x| (0.1..3.0).contains(&x)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean - 1.55).abs() < 0.05, "{mean}");
    }

    /// Dirichlet weights sum to one with mean 1/n; Beta(a, a) has mean 1/2 and variance
    /// 1 / (4 (2a + 1)); both hold for a < 1 too.
    #[test]
    fn dirichlet_and_beta_moments() {
        let mut rng = Rng::new(7);
        for alpha in [0.3, 1.0, 4.0] {
            let n = 6000;
            let mut mean = [0f64; 3];
            for _ in 0..n {
                let w = dirichlet(alpha, 3, &mut rng);
                let s: f32 = w.iter().sum();
                assert!((s - 1.0).abs() < 1e-6 && w.iter().all(|&x| x >= 0.0), "{w:?}");
                (0..3).for_each(|i| mean[i] += w[i] as f64 / n as f64);
            }
            assert!(mean.iter().all(|m| (m - 1.0 / 3.0).abs() < 0.02), "{alpha} {mean:?}");
            let b: Vec<f64> = (0..n).map(|_| beta(alpha, &mut rng) as f64).collect();
            let bm = b.iter().sum::<f64>() / n as f64;
            let bv = b.iter().map(|x| (x - bm).powi(2)).sum::<f64>() / n as f64;
            let want = 1.0 / (4.0 * (2.0 * alpha + 1.0));
            assert!((bm - 0.5).abs() < 0.02 && (bv - want).abs() < 0.1 * want, "{alpha} {bm} {bv} {want}");
        }
    }

    /// The level functions at pytorchvideo's parameters.
    #[test]
    fn level_functions_follow_pytorchvideo() {
        let spec = |kind, level_fn, params| OpSpec { kind, level_fn, params };
        let rot = spec(OpKind::Rotate, LevelFn::IncreasingRandomlyNegate, (0.0, 30.0));
        assert_eq!(rot.at_level(5.0, false).arg, 15.0);
        assert_eq!(rot.at_level(5.0, true).arg, -15.0);
        let post = spec(OpKind::Posterize, LevelFn::DecreasingInt, (4.0, 4.0));
        assert_eq!(post.at_level(7.4, false).arg, 2.0);
        let sol = spec(OpKind::Solarize, LevelFn::Decreasing, (1.0, 1.0));
        assert!((sol.at_level(3.0, false).arg - 0.7).abs() < 1e-12);
        let sat = spec(OpKind::AdjustSaturation, LevelFn::Increasing, (0.1, 1.8));
        assert!((sat.at_level(5.0, true).arg - 1.0).abs() < 1e-12);
    }
}
