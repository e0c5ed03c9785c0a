//! AugMix for video as pytorchvideo 0.1.5's `transforms/augmix.py`: `width` chains of ops
//! (each `depth` long, or 1–3 when `depth` is −1, drawn with replacement from 13 ops at uniform
//! float levels), their results mixed with Dirichlet(`alpha`) weights, then with the original
//! clip by a Beta(`alpha`, `alpha`) weight m: `uint8(m · clip + (1 − m) · Σ wᵢ chainᵢ(clip))`.
//! One draw for the whole clip, as pytorchvideo applies it to the (T, C, H, W) video.

use super::augment::{
    beta, dirichlet, validate_sampling, LevelFn, OpSpec, Sampling, SamplingDataType, SamplingHparas,
    SamplingType, TransformHparas, MAX_LEVEL,
};
use super::augment_ops::{apply_op, AugmentOp, OpKind};
use crate::rng::Rng;
use anyhow::{bail, Result};
use ndarray::ArrayViewMut4;
use serde::{Deserialize, Serialize};

/// `_TRANSFORM_AUGMIX_MAX_PARAMS` with `_AUGMIX_LEVEL_TO_ARG`, in pytorchvideo's order (no
/// Invert; the colour ops increase only).
pub const AUGMIX_OPS: [OpSpec; 13] = {
    use LevelFn::*;
    use OpKind::*;
    [
        OpSpec::new(AutoContrast, None, (0.0, 0.0)),
        OpSpec::new(Equalize, None, (0.0, 0.0)),
        OpSpec::new(Rotate, IncreasingRandomlyNegate, (0.0, 30.0)),
        OpSpec::new(Posterize, DecreasingInt, (4.0, 4.0)),
        OpSpec::new(Solarize, Decreasing, (1.0, 1.0)),
        OpSpec::new(ShearX, IncreasingRandomlyNegate, (0.0, 0.3)),
        OpSpec::new(ShearY, IncreasingRandomlyNegate, (0.0, 0.3)),
        OpSpec::new(TranslateX, IncreasingRandomlyNegate, (0.0, 1.0 / 3.0)),
        OpSpec::new(TranslateY, IncreasingRandomlyNegate, (0.0, 1.0 / 3.0)),
        OpSpec::new(AdjustSaturation, Increasing, (0.1, 1.8)),
        OpSpec::new(AdjustContrast, Increasing, (0.1, 1.8)),
        OpSpec::new(AdjustBrightness, Increasing, (0.1, 1.8)),
        OpSpec::new(AdjustSharpness, Increasing, (0.1, 1.8)),
    ]
};

/// `SAMPLING_AUGMIX_DEFAULT_HPARAS` (AugMix always samples uniformly).
pub const AUGMIX_SAMPLING: Sampling =
    Sampling { sampling_std: 0.5, sampling_data_type: SamplingDataType::Float, sampling_min: 0.1 };

/// pytorchvideo's `AugMix(magnitude, alpha, width, depth, transform_hparas, sampling_hparas)`
/// with its defaults; every key may be left out of a config.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugMix {
    pub magnitude: u32,
    pub alpha: f64,
    pub width: usize,
    /// Ops per chain; −1 draws 1 to 3 per chain.
    pub depth: i64,
    pub transform_hparas: TransformHparas,
    pub sampling_hparas: SamplingHparas,
}

impl Default for AugMix {
    fn default() -> Self {
        Self {
            magnitude: 3,
            alpha: 1.0,
            width: 3,
            depth: -1,
            transform_hparas: TransformHparas::default(),
            sampling_hparas: SamplingHparas::default(),
        }
    }
}

/// One clip's AugMix: the chains' mixing weights (float32, as torch samples them), the
/// original's share `m`, and each chain's ops in order.
#[derive(Clone, Debug, PartialEq)]
pub struct AugMixDraw {
    pub weights: Vec<f32>,
    pub m: f32,
    pub chains: Vec<Vec<AugmentOp>>,
}

impl AugMix {
    pub fn validate(&self) -> Result<()> {
        // pytorchvideo's assertions
        if !(1.0..=MAX_LEVEL).contains(&(self.magnitude as f64)) {
            bail!("augmix magnitude {} must lie in [1, {MAX_LEVEL}]", self.magnitude);
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            bail!("augmix alpha {} must be greater than 0", self.alpha);
        }
        if self.width == 0 {
            bail!("augmix width must be greater than 0");
        }
        if self.depth == 0 || self.depth < -1 || self.depth > AUGMIX_OPS.len() as i64 {
            bail!(
                "augmix depth {} must be -1 (1 to 3 at random) or lie in [1, {}]",
                self.depth,
                AUGMIX_OPS.len()
            );
        }
        self.transform_hparas.validate()?;
        validate_sampling(self.magnitude, SamplingType::Uniform, &self.sampling())
    }

    pub fn sampling(&self) -> Sampling {
        self.sampling_hparas.or(AUGMIX_SAMPLING)
    }

    pub fn draw(&self, rng: &mut Rng) -> AugMixDraw {
        let weights = dirichlet(self.alpha, self.width, rng);
        let m = beta(self.alpha, rng);
        let sampling = self.sampling();
        let chains = (0..self.width)
            .map(|_| {
                // OpSampler(num_sample_op=3, randomly_sample_depth=True) or depth ops, with
                // replacement.
                let depth = if self.depth > 0 { self.depth as usize } else { 1 + rng.below(3) };
                (0..depth)
                    .map(|_| {
                        let spec = &AUGMIX_OPS[rng.below(AUGMIX_OPS.len())];
                        spec.draw(self.magnitude, SamplingType::Uniform, &sampling, rng)
                    })
                    .collect()
            })
            .collect();
        AugMixDraw { weights, m, chains }
    }
}

/// Applies one clip's AugMix to an RGB clip [T, H, W, 3], in float32 as pytorchvideo computes
/// it: `mixed += wᵢ · chainᵢ(clip)` chain by chain, then `m · clip + (1 − m) · mixed` (1 − m
/// in double, as Python's `1 - m`), truncated to uint8.
pub fn augmix(mut clip: ArrayViewMut4<u8>, draw: &AugMixDraw, hparas: &TransformHparas) -> Result<()> {
    if draw.weights.len() != draw.chains.len() {
        bail!("augmix draw has {} weights for {} chains", draw.weights.len(), draw.chains.len());
    }
    let mut mixed = vec![0f32; clip.len()];
    for (&w, chain) in draw.weights.iter().zip(&draw.chains) {
        let mut aug = clip.to_owned();
        for &op in chain {
            apply_op(aug.view_mut(), op, hparas.fill_f32())?;
        }
        for (acc, &v) in mixed.iter_mut().zip(aug.iter()) {
            *acc += w * v as f32;
        }
    }
    let (m, rest) = (draw.m, (1.0 - draw.m as f64) as f32);
    for (v, &x) in clip.iter_mut().zip(&mixed) {
        *v = (m * *v as f32 + rest * x) as u8;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn draws_follow_width_and_depth() {
        let mut rng = Rng::new(9);
        let am = AugMix::default();
        am.validate().unwrap();
        let mut depths = [0usize; 4];
        for _ in 0..600 {
            let d = am.draw(&mut rng);
            assert_eq!((d.weights.len(), d.chains.len()), (3, 3));
            assert!((d.weights.iter().sum::<f32>() - 1.0).abs() < 1e-6 && (0.0..=1.0).contains(&d.m));
            for c in &d.chains {
                depths[c.len()] += 1;
                for op in c {
                    assert_ne!(op.kind, OpKind::Invert);
                    if op.kind == OpKind::AdjustContrast {
                        // 0.1 + level / 10 · 1.8 with level in [0.1, 3)
                        assert!((0.118..0.64).contains(&op.arg), "{op:?}");
                    }
                }
            }
        }
        assert_eq!(depths[0], 0);
        assert!(depths[1..].iter().all(|&c| (500..700).contains(&c)), "{depths:?}");
        let fixed = AugMix { depth: 2, width: 5, ..Default::default() };
        assert!(fixed.draw(&mut rng).chains.iter().all(|c| c.len() == 2));
        assert!(AugMix { magnitude: 0, ..Default::default() }.validate().is_err());
        assert!(AugMix { alpha: 0.0, ..Default::default() }.validate().is_err());
    }

    /// With m = 1 the clip comes back; with empty chains and m = 0 it is the weighted sum of
    /// copies of itself (weights summing to one), truncated.
    #[test]
    fn mixing_weights_blend_the_chains() {
        let clip =
            Array4::from_shape_fn((2, 4, 5, 3), |(t, y, x, c)| ((t * 50 + y * 30 + x * 7 + c) % 256) as u8);
        let inv = AugmentOp { kind: OpKind::Invert, arg: 0.0 };
        let mut a = clip.clone();
        let d = AugMixDraw { weights: vec![0.5, 0.5], m: 1.0, chains: vec![vec![inv], vec![]] };
        augmix(a.view_mut(), &d, &TransformHparas::default()).unwrap();
        assert_eq!(a, clip);
        let mut b = clip.clone();
        let d = AugMixDraw { weights: vec![1.0, 0.0], m: 0.0, chains: vec![vec![inv], vec![]] };
        augmix(b.view_mut(), &d, &TransformHparas::default()).unwrap();
        assert_eq!(b, clip.mapv(|v| 255 - v));
    }
}
