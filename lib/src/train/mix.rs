//! Batch mixes on clip batches [B, T, C, H, W] with soft targets [B, C]: Mixup, CutMix,
//! PaddleVideo's VideoMix (a coin flip between the two) and a temporal CutMix.
//!
//! Every random choice comes from our [`Rng`], so a run resumed from a checkpoint mixes the
//! same way. The order of draws is: pairing, λ, then the box (as mmaction2's blendings draw
//! `randperm`, `Beta.sample`, then the box centre); VideoMix draws its coin first.
//!
//! Mixing soft targets is equivalent to the references' `λ·loss(y_a) + (1−λ)·loss(y_b)`
//! (PaddleVideo returns both labels and λ; mmaction2 mixes one-hot labels) because
//! cross-entropy with or without label smoothing is linear in the target.

use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// A standard normal draw (Box–Muller; two uniforms per draw, nothing cached between calls).
pub fn standard_normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.uniform(); // (0, 1], so the log is finite
    let u2 = rng.uniform();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Gamma(shape, 1) by Marsaglia and Tsang (2000); shapes below 1 use their boost
/// `Gamma(a) = Gamma(a + 1) · U^(1/a)`.
pub fn sample_gamma(rng: &mut Rng, shape: f64) -> f64 {
    assert!(shape > 0.0, "gamma shape must be positive");
    if shape < 1.0 {
        let u = 1.0 - rng.uniform();
        return sample_gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = rng.uniform();
        if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b).
pub fn sample_beta(rng: &mut Rng, a: f64, b: f64) -> f64 {
    let x = sample_gamma(rng, a);
    let y = sample_gamma(rng, b);
    if x + y == 0.0 {
        // Both underflowed (tiny shapes): the mass sits at the ends; pick one fairly.
        return if rng.chance(a / (a + b)) { 1.0 } else { 0.0 };
    }
    x / (x + y)
}

/// A uniform random permutation of 0..n (Fisher–Yates).
pub fn permutation(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

/// Whom each sample is mixed with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pairing {
    /// A random permutation of the batch (mmaction2, PaddleVideo).
    #[default]
    Permute,
    /// The batch reversed (timm's `flip`): no draw, every sample paired with another when B > 1
    /// is even.
    Reverse,
}

fn default_mixup_alpha() -> f64 {
    0.2
}
fn default_cutmix_alpha() -> f64 {
    0.2
}
fn default_videomix_cutmix_alpha() -> f64 {
    1.0
}
fn default_cutmix_prob() -> f64 {
    0.5
}

/// A batch mix chosen by `name` in a JSON config, with the references' default parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum BatchMix {
    /// Zhang et al. 2018; mmaction2 `MixupBlending`, PaddleVideo `Mixup`: λ ~ Beta(α, α),
    /// `x = λ·x + (1−λ)·x[partner]`.
    Mixup {
        #[serde(default = "default_mixup_alpha")]
        alpha: f64,
        #[serde(default)]
        pairing: Pairing,
    },
    /// Yun et al. 2019; mmaction2 `CutmixBlending`, PaddleVideo `Cutmix`: one box of side
    /// `√(1−λ)` of the frame's, centred uniformly and clipped to the frame, pasted from the
    /// partner into every frame of every sample; λ becomes `1 − box area / (H·W)`.
    Cutmix {
        #[serde(default = "default_cutmix_alpha")]
        alpha: f64,
        #[serde(default)]
        pairing: Pairing,
    },
    /// PaddleVideo `VideoMix` (PP-TSM, PP-TSMv2): CutMix with probability `cutmix_prob`, else
    /// Mixup.
    #[serde(alias = "videomix")]
    VideoMix {
        #[serde(default = "default_cutmix_prob")]
        cutmix_prob: f64,
        #[serde(default = "default_mixup_alpha")]
        mixup_alpha: f64,
        #[serde(default = "default_videomix_cutmix_alpha")]
        cutmix_alpha: f64,
        #[serde(default)]
        pairing: Pairing,
    },
    /// Temporal VideoMix (Yun et al. 2020): a run of `⌊T·(1−λ)⌋` frames centred uniformly,
    /// clipped, taken whole from the partner; λ becomes `1 − frames taken / T`.
    TemporalCutmix {
        #[serde(default = "default_videomix_cutmix_alpha")]
        alpha: f64,
        #[serde(default)]
        pairing: Pairing,
    },
}

/// The region (frames × rows × columns) taken from the partner by a cut mix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MixBox {
    pub t: Range<usize>,
    pub y: Range<usize>,
    pub x: Range<usize>,
}

/// A mixed batch.
#[derive(Clone, Debug)]
pub struct Mixed {
    pub clips: Tensor,
    /// Soft targets [B, C]; rows sum to 1 when the input rows did.
    pub targets: Tensor,
    /// Weight of each sample's own target (after the box adjustment for cut mixes).
    pub lam: f64,
    /// Sample i was mixed with sample `partner[i]`.
    pub partner: Vec<usize>,
    /// The pasted region for cut mixes; None for Mixup.
    pub region: Option<MixBox>,
}

impl BatchMix {
    pub fn validate(&self) -> Result<()> {
        let alphas: &[f64] = match self {
            BatchMix::Mixup { alpha, .. }
            | BatchMix::Cutmix { alpha, .. }
            | BatchMix::TemporalCutmix { alpha, .. } => &[*alpha],
            BatchMix::VideoMix { mixup_alpha, cutmix_alpha, cutmix_prob, .. } => {
                if !(0.0..=1.0).contains(cutmix_prob) {
                    bail!("cutmix_prob must be in [0, 1], not {cutmix_prob}");
                }
                &[*mixup_alpha, *cutmix_alpha]
            }
        };
        if let Some(a) = alphas.iter().find(|a| !(**a > 0.0 && a.is_finite())) {
            bail!("mix alpha must be positive, not {a}");
        }
        Ok(())
    }

    /// Mixes `clips` [B, T, C, H, W] and their soft `targets` [B, C] (see
    /// [`crate::train::loss::one_hot`] for hard labels).
    pub fn apply(&self, clips: &Tensor, targets: &Tensor, rng: &mut Rng) -> Result<Mixed> {
        self.validate()?;
        let dims = clips.dims();
        if dims.len() != 5 {
            bail!("batch mixes want clips [B, T, C, H, W], got shape {dims:?}");
        }
        if targets.rank() != 2 || targets.dim(0)? != dims[0] {
            bail!("targets have shape {:?} for {} clips; want [B, C]", targets.dims(), dims[0]);
        }
        match *self {
            BatchMix::Mixup { alpha, pairing } => mixup(clips, targets, alpha, pairing, rng),
            BatchMix::Cutmix { alpha, pairing } => cutmix(clips, targets, alpha, pairing, rng),
            BatchMix::TemporalCutmix { alpha, pairing } => {
                temporal_cutmix(clips, targets, alpha, pairing, rng)
            }
            BatchMix::VideoMix { cutmix_prob, mixup_alpha, cutmix_alpha, pairing } => {
                if rng.uniform() < cutmix_prob {
                    cutmix(clips, targets, cutmix_alpha, pairing, rng)
                } else {
                    mixup(clips, targets, mixup_alpha, pairing, rng)
                }
            }
        }
    }
}

fn partners(pairing: Pairing, b: usize, rng: &mut Rng) -> Vec<usize> {
    match pairing {
        Pairing::Permute => permutation(rng, b),
        Pairing::Reverse => (0..b).rev().collect(),
    }
}

fn gather(t: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let idx: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let idx = Tensor::new(idx.as_slice(), t.device())?;
    Ok(t.index_select(&idx, 0)?)
}

fn mix_targets(targets: &Tensor, partner: &[usize], lam: f64) -> Result<Tensor> {
    let other = gather(targets, partner)?;
    Ok((targets.affine(lam, 0.0)? + other.affine(1.0 - lam, 0.0)?)?)
}

/// Mixup of the whole batch.
pub fn mixup(clips: &Tensor, targets: &Tensor, alpha: f64, pairing: Pairing, rng: &mut Rng) -> Result<Mixed> {
    let partner = partners(pairing, clips.dim(0)?, rng);
    let lam = sample_beta(rng, alpha, alpha);
    let other = gather(clips, &partner)?;
    let mixed = (clips.affine(lam, 0.0)? + other.affine(1.0 - lam, 0.0)?)?;
    Ok(Mixed { clips: mixed, targets: mix_targets(targets, &partner, lam)?, lam, partner, region: None })
}

/// The CutMix box for a frame `h`×`w` and a drawn λ: side ratio `√(1−λ)` (truncated to whole
/// pixels), centre uniform over the frame, halves of the side on each side (integer division),
/// clipped to the frame (mmaction2 `CutmixBlending.rand_bbox`).
pub fn cutmix_box(h: usize, w: usize, lam: f64, rng: &mut Rng) -> (Range<usize>, Range<usize>) {
    let cut_rat = (1.0 - lam).max(0.0).sqrt();
    let cut_w = (w as f64 * cut_rat) as i64;
    let cut_h = (h as f64 * cut_rat) as i64;
    let cx = rng.below(w) as i64;
    let cy = rng.below(h) as i64;
    let clip = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
    (clip(cy - cut_h / 2, h)..clip(cy + cut_h / 2, h), clip(cx - cut_w / 2, w)..clip(cx + cut_w / 2, w))
}

/// CutMix with one box for all frames and samples.
pub fn cutmix(
    clips: &Tensor,
    targets: &Tensor,
    alpha: f64,
    pairing: Pairing,
    rng: &mut Rng,
) -> Result<Mixed> {
    let (b, t, _, h, w) = clips.dims5()?;
    let partner = partners(pairing, b, rng);
    let lam = sample_beta(rng, alpha, alpha);
    let (y, x) = cutmix_box(h, w, lam, rng);
    let region = MixBox { t: 0..t, y, x };
    let area = (region.y.len() * region.x.len()) as f64;
    let lam = 1.0 - area / (h * w) as f64;
    paste(clips, targets, partner, lam, region)
}

/// Temporal CutMix: whole frames from the partner.
pub fn temporal_cutmix(
    clips: &Tensor,
    targets: &Tensor,
    alpha: f64,
    pairing: Pairing,
    rng: &mut Rng,
) -> Result<Mixed> {
    let (b, t, _, h, w) = clips.dims5()?;
    let partner = partners(pairing, b, rng);
    let lam = sample_beta(rng, alpha, alpha);
    let cut = (t as f64 * (1.0 - lam).max(0.0)) as i64;
    let ct = rng.below(t) as i64;
    let clip = |v: i64| v.clamp(0, t as i64) as usize;
    let region = MixBox { t: clip(ct - cut / 2)..clip(ct + cut / 2), y: 0..h, x: 0..w };
    let lam = 1.0 - region.t.len() as f64 / t as f64;
    paste(clips, targets, partner, lam, region)
}

fn paste(clips: &Tensor, targets: &Tensor, partner: Vec<usize>, lam: f64, region: MixBox) -> Result<Mixed> {
    let (_, t, _, h, w) = clips.dims5()?;
    let mut mask = vec![0u8; t * h * w];
    for ti in region.t.clone() {
        for yi in region.y.clone() {
            let row = (ti * h + yi) * w;
            mask[row + region.x.start..row + region.x.end].fill(1);
        }
    }
    let mask = Tensor::from_vec(mask, (1, t, 1, h, w), clips.device())?.broadcast_as(clips.shape())?;
    let other = gather(clips, &partner)?;
    let mixed = mask.where_cond(&other, clips)?;
    let targets = mix_targets(targets, &partner, lam)?;
    Ok(Mixed { clips: mixed, targets, lam, partner, region: Some(region) })
}

/// One-hot soft targets [B, C] (f32) for hard labels.
pub fn one_hot_targets(labels: &[usize], num_classes: usize, device: &candle_core::Device) -> Result<Tensor> {
    let l: Vec<u32> = labels.iter().map(|&i| i as u32).collect();
    crate::train::loss::one_hot(&Tensor::new(l.as_slice(), device)?, num_classes, DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Sample i is the constant i + 1 in every frame, channel and pixel.
    fn batch(b: usize, t: usize, h: usize, w: usize) -> Tensor {
        let v: Vec<f32> = (0..b).flat_map(|i| std::iter::repeat_n((i + 1) as f32, t * 3 * h * w)).collect();
        Tensor::from_vec(v, (b, t, 3, h, w), &Device::Cpu).unwrap()
    }

    fn check_targets(m: &Mixed, labels: &[usize], c: usize) {
        let q = m.targets.to_vec2::<f32>().unwrap();
        for (i, row) in q.iter().enumerate() {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "row {i} sums to {sum}");
            let mut want = vec![0f64; c];
            want[labels[i]] += m.lam;
            want[labels[m.partner[i]]] += 1.0 - m.lam;
            for j in 0..c {
                assert!((row[j] as f64 - want[j]).abs() < 1e-6, "row {i}: {row:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn gamma_and_beta_moments() {
        let mut rng = Rng::new(11);
        let n = 40_000;
        for shape in [0.3, 1.0, 3.5] {
            let mean = (0..n).map(|_| sample_gamma(&mut rng, shape)).sum::<f64>() / n as f64;
            assert!((mean - shape).abs() < 0.03 * shape.max(1.0), "Gamma({shape}) mean {mean}");
        }
        for (a, b) in [(0.2, 0.2), (2.0, 5.0), (1.0, 1.0)] {
            let xs: Vec<f64> = (0..n).map(|_| sample_beta(&mut rng, a, b)).collect();
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let (m, v) = (a / (a + b), a * b / ((a + b).powi(2) * (a + b + 1.0)));
            assert!((mean - m).abs() < 0.01, "Beta({a},{b}) mean {mean} vs {m}");
            assert!((var - v).abs() < 0.1 * v, "Beta({a},{b}) var {var} vs {v}");
        }
        let p = permutation(&mut rng, 10);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn mixup_mixes_inputs_and_targets_with_one_lambda() {
        let (b, c) = (4, 3);
        let labels = [0, 1, 2, 1];
        let x = batch(b, 2, 4, 5);
        let q = one_hot_targets(&labels, c, &Device::Cpu).unwrap();
        let m = BatchMix::Mixup { alpha: 0.4, pairing: Pairing::Permute }
            .apply(&x, &q, &mut Rng::new(5))
            .unwrap();
        check_targets(&m, &labels, c);
        let v = m.clips.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
        for (i, sample) in v.iter().enumerate() {
            let want = m.lam * (i + 1) as f64 + (1.0 - m.lam) * (m.partner[i] + 1) as f64;
            assert!(sample.iter().all(|p| (*p as f64 - want).abs() < 1e-5), "sample {i}");
        }
        let r = BatchMix::Mixup { alpha: 0.4, pairing: Pairing::Reverse }
            .apply(&x, &q, &mut Rng::new(5))
            .unwrap();
        assert_eq!(r.partner, vec![3, 2, 1, 0]);
    }

    #[test]
    fn cutmix_lambda_is_the_box_area_in_every_frame() {
        let (b, t, h, w, c) = (5, 3, 16, 12, 4);
        let labels = [0, 1, 2, 3, 0];
        let x = batch(b, t, h, w);
        let q = one_hot_targets(&labels, c, &Device::Cpu).unwrap();
        let mut rng = Rng::new(1);
        let mut boxes = 0;
        for _ in 0..20 {
            let m =
                BatchMix::Cutmix { alpha: 1.0, pairing: Pairing::Permute }.apply(&x, &q, &mut rng).unwrap();
            check_targets(&m, &labels, c);
            let region = m.region.clone().unwrap();
            assert_eq!(region.t, 0..t);
            let area = region.y.len() * region.x.len();
            assert!((m.lam - (1.0 - area as f64 / (h * w) as f64)).abs() < 1e-12);
            boxes += (area > 0) as usize;
            let v = m.clips.to_dtype(DType::F32).unwrap().flatten_from(2).unwrap().to_vec3::<f32>().unwrap();
            for (i, sample) in v.iter().enumerate() {
                let (own, other) = ((i + 1) as f32, (m.partner[i] + 1) as f32);
                for (ti, frame) in sample.iter().enumerate() {
                    // Per frame (3 channels × H × W): the partner's pixels are exactly the box.
                    let from_other = frame.iter().filter(|p| **p == other && other != own).count();
                    let want = if other == own { 0 } else { 3 * area };
                    assert_eq!(from_other, want, "sample {i} frame {ti}");
                    for (k, p) in frame.iter().enumerate() {
                        let (yy, xx) = ((k % (h * w)) / w, k % w);
                        let inside = region.y.contains(&yy) && region.x.contains(&xx);
                        assert_eq!(*p, if inside { other } else { own });
                    }
                }
            }
        }
        assert!(boxes > 10, "boxes were almost always empty");
    }

    #[test]
    fn temporal_cutmix_takes_whole_frames() {
        let (b, t, h, w, c) = (3, 8, 4, 4, 3);
        let labels = [0, 1, 2];
        let x = batch(b, t, h, w);
        let q = one_hot_targets(&labels, c, &Device::Cpu).unwrap();
        let m = BatchMix::TemporalCutmix { alpha: 1.0, pairing: Pairing::Reverse }
            .apply(&x, &q, &mut Rng::new(3))
            .unwrap();
        check_targets(&m, &labels, c);
        let region = m.region.clone().unwrap();
        assert_eq!((region.y.clone(), region.x.clone()), (0..h, 0..w));
        assert!((m.lam - (1.0 - region.t.len() as f64 / t as f64)).abs() < 1e-12);
        let v = m.clips.flatten_from(2).unwrap().to_vec3::<f32>().unwrap();
        for (ti, frame) in v[0].iter().enumerate() {
            let want = if region.t.contains(&ti) { 3.0 } else { 1.0 };
            assert!(frame.iter().all(|p| *p == want));
        }
    }

    #[test]
    fn same_seed_same_mix_and_videomix_uses_both() {
        let labels = [0, 1, 2, 0, 1, 2];
        let x = batch(6, 2, 8, 8);
        let q = one_hot_targets(&labels, 3, &Device::Cpu).unwrap();
        let mix: BatchMix = serde_json::from_str(r#"{"name": "video_mix"}"#).unwrap();
        assert_eq!(
            mix,
            BatchMix::VideoMix {
                cutmix_prob: 0.5,
                mixup_alpha: 0.2,
                cutmix_alpha: 1.0,
                pairing: Pairing::Permute
            }
        );
        let (mut cut, mut up) = (0, 0);
        for seed in 0..20 {
            let a = mix.apply(&x, &q, &mut Rng::new(seed)).unwrap();
            let b = mix.apply(&x, &q, &mut Rng::new(seed)).unwrap();
            assert_eq!(a.lam, b.lam);
            assert_eq!(a.partner, b.partner);
            assert_eq!(a.region, b.region);
            let diff =
                (&a.clips - &b.clips).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(diff, 0.0);
            check_targets(&a, &labels, 3);
            if a.region.is_some() {
                cut += 1
            } else {
                up += 1
            }
        }
        assert!(cut > 3 && up > 3, "cutmix {cut}, mixup {up}");
        // Different seeds mix differently.
        let mut lams: Vec<f64> =
            (100..110).map(|s| mix.apply(&x, &q, &mut Rng::new(s)).unwrap().lam).collect();
        lams.sort_by(f64::total_cmp);
        lams.dedup();
        assert!(lams.len() > 5, "{lams:?}");
        assert!(BatchMix::Mixup { alpha: 0.0, pairing: Pairing::Permute }
            .apply(&x, &q, &mut Rng::new(0))
            .is_err());
    }
}
