//! RandAugment for video as pytorchvideo 0.1.5's `transforms/rand_augment.py`: `num_layers`
//! distinct ops of the 14 chosen in a random order (`OpSampler`, multinomial without
//! replacement), each applied with probability `prob` at a level sampled around `magnitude`,
//! one draw for the whole clip (pytorchvideo applies each op to the (T, C, H, W) video).

use super::augment::{
    validate_sampling, LevelFn, OpSpec, Sampling, SamplingDataType, SamplingHparas, SamplingType,
    TransformHparas,
};
use super::augment_ops::{apply_op, AugmentOp, OpKind};
use crate::rng::Rng;
use anyhow::{bail, Result};
use ndarray::ArrayViewMut4;
use serde::{Deserialize, Serialize};

/// `_TRANSFORM_RANDAUG_MAX_PARAMS` with `_LEVEL_TO_ARG`, in pytorchvideo's order.
pub const RANDAUG_OPS: [OpSpec; 14] = {
    use LevelFn::*;
    use OpKind::*;
    [
        OpSpec::new(AdjustBrightness, IncreasingRandomlyNegate, (1.0, 0.9)),
        OpSpec::new(AdjustContrast, IncreasingRandomlyNegate, (1.0, 0.9)),
        OpSpec::new(AdjustSaturation, IncreasingRandomlyNegate, (1.0, 0.9)),
        OpSpec::new(AdjustSharpness, IncreasingRandomlyNegate, (1.0, 0.9)),
        OpSpec::new(AutoContrast, None, (0.0, 0.0)),
        OpSpec::new(Equalize, None, (0.0, 0.0)),
        OpSpec::new(Invert, None, (0.0, 0.0)),
        OpSpec::new(Rotate, IncreasingRandomlyNegate, (0.0, 30.0)),
        OpSpec::new(Posterize, DecreasingInt, (4.0, 4.0)),
        OpSpec::new(Solarize, Decreasing, (1.0, 1.0)),
        OpSpec::new(ShearX, IncreasingRandomlyNegate, (0.0, 0.3)),
        OpSpec::new(ShearY, IncreasingRandomlyNegate, (0.0, 0.3)),
        OpSpec::new(TranslateX, IncreasingRandomlyNegate, (0.0, 0.45)),
        OpSpec::new(TranslateY, IncreasingRandomlyNegate, (0.0, 0.45)),
    ]
};

/// pytorchvideo's `RandAugment(magnitude, num_layers, prob, transform_hparas, sampling_type,
/// sampling_hparas)` with its defaults; every key may be left out of a config.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandAugment {
    pub magnitude: u32,
    pub num_layers: usize,
    pub prob: f64,
    pub transform_hparas: TransformHparas,
    pub sampling_type: SamplingType,
    pub sampling_hparas: SamplingHparas,
}

impl Default for RandAugment {
    fn default() -> Self {
        Self {
            magnitude: 9,
            num_layers: 2,
            prob: 0.5,
            transform_hparas: TransformHparas::default(),
            sampling_type: SamplingType::Gaussian,
            sampling_hparas: SamplingHparas::default(),
        }
    }
}

/// `SAMPLING_RANDAUG_DEFAULT_HPARAS`.
pub const RANDAUG_SAMPLING: Sampling =
    Sampling { sampling_std: 0.5, sampling_data_type: SamplingDataType::Int, sampling_min: 0.0 };

impl RandAugment {
    pub fn validate(&self) -> Result<()> {
        if !(1..=RANDAUG_OPS.len()).contains(&self.num_layers) {
            bail!("rand augment num_layers {} must lie in [1, {}]", self.num_layers, RANDAUG_OPS.len());
        }
        if !(0.0..=1.0).contains(&self.prob) {
            bail!("rand augment prob {} is a probability: it must lie in [0, 1]", self.prob);
        }
        self.transform_hparas.validate()?;
        validate_sampling(self.magnitude, self.sampling_type, &self.sampling())
    }

    pub fn sampling(&self) -> Sampling {
        self.sampling_hparas.or(RANDAUG_SAMPLING)
    }

    /// One clip's ops, in the order they apply (those that lost their `prob` coin left out).
    pub fn draw(&self, rng: &mut Rng) -> Vec<AugmentOp> {
        let mut order: Vec<usize> = (0..RANDAUG_OPS.len()).collect();
        for i in 0..self.num_layers {
            let j = i + rng.below(order.len() - i);
            order.swap(i, j);
        }
        let sampling = self.sampling();
        let mut ops = Vec::with_capacity(self.num_layers);
        for &k in &order[..self.num_layers] {
            // AugmentTransform: `if torch.rand(1) > prob: return video`
            if rng.uniform() > self.prob {
                continue;
            }
            ops.push(RANDAUG_OPS[k].draw(self.magnitude, self.sampling_type, &sampling, rng));
        }
        ops
    }
}

/// Applies a drawn sequence of ops to every frame of an RGB clip [T, H, W, 3].
pub fn rand_augment(mut clip: ArrayViewMut4<u8>, ops: &[AugmentOp], hparas: &TransformHparas) -> Result<()> {
    for &op in ops {
        apply_op(clip.view_mut(), op, hparas.fill_f32())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `num_layers` distinct ops, each present with probability `prob`, every op of the table
    /// about equally often; arguments within their ranges.
    #[test]
    fn draws_pick_distinct_ops_at_the_given_rate() {
        let ra = RandAugment { num_layers: 3, prob: 0.7, ..Default::default() };
        ra.validate().unwrap();
        let mut rng = Rng::new(3);
        let (n, mut applied) = (4000, 0usize);
        let mut per_op = std::collections::HashMap::new();
        for _ in 0..n {
            let ops = ra.draw(&mut rng);
            assert!(ops.len() <= 3);
            for (i, a) in ops.iter().enumerate() {
                assert!(ops[i + 1..].iter().all(|b| b.kind != a.kind), "{ops:?}");
                *per_op.entry(a.kind).or_insert(0usize) += 1;
                match a.kind {
                    OpKind::Rotate => assert!(a.arg.abs() <= 30.0),
                    OpKind::Posterize => assert!((0.0..=4.0).contains(&a.arg) && a.arg.fract() == 0.0),
                    OpKind::Solarize => assert!((0.0..=1.0).contains(&a.arg)),
                    // 1 − 0.9 is 0.09999999999999998 in double, as in pytorchvideo
                    OpKind::AdjustBrightness => assert!((0.1 - 1e-12..=1.9).contains(&a.arg)),
                    OpKind::TranslateX => assert!(a.arg.abs() <= 0.45),
                    _ => {}
                }
            }
            applied += ops.len();
        }
        let rate = applied as f64 / (3 * n) as f64;
        assert!((rate - 0.7).abs() < 0.02, "{rate}");
        assert_eq!(per_op.len(), 14);
        assert!(per_op
            .values()
            .all(|&c| (c as f64 - applied as f64 / 14.0).abs() < 0.15 * applied as f64 / 14.0));
        let bad = RandAugment { num_layers: 15, ..Default::default() };
        assert!(bad.validate().is_err());
        let bad = RandAugment { magnitude: 11, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("magnitude 11"));
        let cfg: RandAugment = serde_json::from_str(r#"{"magnitude": 7, "num_layers": 4}"#).unwrap();
        assert_eq!((cfg.magnitude, cfg.num_layers, cfg.prob), (7, 4, 0.5));
        assert!(serde_json::from_str::<RandAugment>(r#"{"layers": 4}"#).is_err());
    }
}
