//! BMN's training targets and loss, as PaddleVideo computes them:
//! `paddlevideo/loader/pipelines/anet_pipeline.py` (`GetMatchMap`, `GetVideoLabel`) and
//! `paddlevideo/modeling/losses/bmn_loss.py` (`BMNLoss`).
//!
//! Targets, on the normalised [0, 1] time axis of T steps (gap 1/T): the IoU of every map
//! position (duration d, start t) — the window [t/T, t/T + (d+1)/T] — with the closest ground
//! truth segment; start (end) targets per step, the largest share of the step's window covered by
//! a 3-step-wide box around a segment's start (end).
//!
//! Loss = TEM + 10 · PEM regression + PEM classification:
//! - TEM: per output (start, end) a balanced binary log loss over the batch, positives where the
//!   target is above 0.5, weighted `0.5·r` and `0.5·r/(r − 1)` with r = entries / positives.
//! - PEM regression: squared error on the valid map (t + d < T) over all positions with IoU
//!   above 0.7 and random subsets of the middle (0.3, 0.7] and low [0, 0.3] ones, each kept
//!   with probability `#high / #middle` (`#high / #low`); one uniform draw per map position,
//!   shared by the batch, as the reference's `paddle.uniform([D, T])`.
//! - PEM classification: the balanced log loss on the valid map, positives above IoU 0.9.

use crate::model::BmnOutput;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// One video's targets: the IoU map [D·T] (row d, column t), start and end [T].
#[derive(Clone, Debug, PartialEq)]
pub struct BmnTargets {
    pub iou_map: Vec<f32>,
    pub start: Vec<f32>,
    pub end: Vec<f32>,
}

/// `iou_with_anchors`: IoU of [a0, a1] with [b0, b1] (float64, as numpy).
fn iou(a0: f64, a1: f64, b0: f64, b1: f64) -> f64 {
    let inter = (a1.min(b1) - a0.max(b0)).max(0.0);
    inter / ((a1 - a0) - inter + b1 - b0)
}

/// `ioa_with_anchors`: the share of the anchor [a0, a1] that [b0, b1] covers.
fn ioa(a0: f64, a1: f64, b0: f64, b1: f64) -> f64 {
    (a1.min(b1) - a0.max(b0)).max(0.0) / (a1 - a0)
}

/// `GetMatchMap` + `GetVideoLabel` for segments in seconds of a video `duration` seconds long;
/// segments are clipped to the video first (`max(min(1, s / duration), 0)`). The reference
/// builds T durations and reshapes them to [D, T], which needs D = T; here durations 1..D steps,
/// the same numbers where D = T.
pub fn bmn_targets(
    segments: &[(f64, f64)],
    duration: f64,
    tscale: usize,
    dscale: usize,
) -> Result<BmnTargets> {
    if segments.is_empty() {
        bail!("no ground-truth segment (BMN's targets need at least one)");
    }
    if !(duration > 0.0 && duration.is_finite()) {
        bail!("duration {duration} is not a positive number of seconds");
    }
    let tgap = 1.0 / tscale as f64;
    let boxes: Vec<(f64, f64)> = segments
        .iter()
        .map(|&(s, e)| ((s / duration).clamp(0.0, 1.0), (e / duration).clamp(0.0, 1.0)))
        .collect();
    let mut iou_map = vec![0f32; dscale * tscale];
    for d in 0..dscale {
        for t in 0..tscale {
            let xmin = tgap * t as f64;
            let xmax = xmin + tgap * (d + 1) as f64;
            let best =
                boxes.iter().map(|&(b0, b1)| iou(xmin, xmax, b0, b1)).fold(f64::NEG_INFINITY, f64::max);
            iou_map[d * tscale + t] = best as f32;
        }
    }
    let small = 3.0 * tgap;
    let boundary = |edge: &dyn Fn(&(f64, f64)) -> f64| -> Vec<f32> {
        (0..tscale)
            .map(|j| {
                let (a0, a1) = (tgap * j as f64, tgap * (j + 1) as f64);
                let best = boxes
                    .iter()
                    .map(|b| ioa(a0, a1, edge(b) - small / 2.0, edge(b) + small / 2.0))
                    .fold(f64::NEG_INFINITY, f64::max);
                best as f32
            })
            .collect()
    };
    let start = boundary(&|b| b.0);
    let end = boundary(&|b| b.1);
    Ok(BmnTargets { iou_map, start, end })
}

/// `_get_mask`: 1 where the proposal (d, t) ends inside the sequence (t < T − d), [D·T].
pub fn bmn_valid_mask(tscale: usize, dscale: usize) -> Vec<f32> {
    (0..dscale).flat_map(|d| (0..tscale).map(move |t| if t < tscale - d { 1.0 } else { 0.0 })).collect()
}

/// The loss and its three terms (the terms as numbers, for the log).
pub struct BmnLoss {
    pub total: Tensor,
    pub tem: f32,
    pub pem_reg: f32,
    pub pem_cls: f32,
}

const EPSILON: f64 = 1e-6;

fn vec_tensor(v: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// Balanced binary log loss: `-(c1 · Σ(log(p + ε)·pos) + c0 · Σ(log(1 − p + ε)·neg)) / divisor`
/// with r = `entries / positives`, c1 = 0.5·r, c0 = 0.5·r/(r − 1) (float32, as the reference).
/// Without positives (or without negatives) the reference's coefficients are infinite and its
/// loss NaN; here they take their limits (c0 = 0.5, resp. c1 = 0.5, the empty side's term 0).
fn balanced_log_loss(
    pred: &Tensor,
    pos: Vec<f32>,
    neg: Vec<f32>,
    entries: f32,
    divisor: f32,
) -> Result<Tensor> {
    let positives: f32 = pos.iter().sum();
    let ratio = entries / positives;
    let (coef_0, coef_1) = if positives == 0.0 {
        (0.5, 0.0)
    } else if ratio <= 1.0 {
        (0.0, 0.5)
    } else {
        (0.5 * ratio / (ratio - 1.0), 0.5 * ratio)
    };
    let dims = pred.dims().to_vec();
    let pos = vec_tensor(pos, &dims, pred.device())?;
    let neg = vec_tensor(neg, &dims, pred.device())?;
    let loss_pos = ((pred + EPSILON)?.log()? * pos)?.sum_all()?.affine(coef_1 as f64, 0.0)?;
    let loss_neg =
        ((pred.affine(-1.0, 1.0 + EPSILON))?.log()? * neg)?.sum_all()?.affine(coef_0 as f64, 0.0)?;
    Ok((loss_pos + loss_neg)?.affine(-1.0 / divisor as f64, 0.0)?)
}

/// `BMNLoss.forward` for a batch's outputs and its videos' targets. `uniform_mid` and
/// `uniform_low` are the two [D·T] draws in [0, 1) that pick the middle and low IoU positions
/// the regression sees (the reference draws them with `paddle.uniform` in that order).
pub fn bmn_loss(
    out: &BmnOutput,
    targets: &[BmnTargets],
    uniform_mid: &[f32],
    uniform_low: &[f32],
) -> Result<BmnLoss> {
    bmn_loss_of(out, targets, uniform_mid, uniform_low, false)
}

/// Both references' `BMNLoss`; `mmaction2` picks MMAction2's details (see
/// [`bmn_loss_mmaction2`]).
fn bmn_loss_of(
    out: &BmnOutput,
    targets: &[BmnTargets],
    uniform_mid: &[f32],
    uniform_low: &[f32],
    mmaction2: bool,
) -> Result<BmnLoss> {
    let (b, two, dn, tn) = out.bm.dims4()?;
    if two != 2 || b != targets.len() || out.start.dims() != [b, tn] || out.end.dims() != [b, tn] {
        bail!("bmn loss: outputs {:?} do not fit {} videos' targets", out.bm.dims(), targets.len());
    }
    let map = dn * tn;
    if targets.iter().any(|g| g.iou_map.len() != map || g.start.len() != tn || g.end.len() != tn)
        || uniform_mid.len() != map
        || uniform_low.len() != map
    {
        bail!("bmn loss: targets are not [{dn}, {tn}] maps");
    }
    let device = out.bm.device();
    // TEM: the mean over the batch's steps of each output.
    let tem = |pred: &Tensor, gt: Vec<f32>| -> Result<Tensor> {
        let pos: Vec<f32> = gt.iter().map(|&g| if g > 0.5 { 1.0 } else { 0.0 }).collect();
        let neg: Vec<f32> = pos.iter().map(|p| 1.0 - p).collect();
        let n = gt.len() as f32;
        balanced_log_loss(pred, pos, neg, n, n)
    };
    let starts: Vec<f32> = targets.iter().flat_map(|g| g.start.iter().copied()).collect();
    let ends: Vec<f32> = targets.iter().flat_map(|g| g.end.iter().copied()).collect();
    let tem_loss = if mmaction2 {
        let logistic = |pred: &Tensor, gt: &[f32]| super::bsn::binary_logistic_regression_loss(pred, gt, 0.5);
        (logistic(&out.start, &starts)? + logistic(&out.end, &ends)?)?
    } else {
        (tem(&out.start, starts)? + tem(&out.end, ends)?)?
    };

    let valid = bmn_valid_mask(tn, dn);
    let gt: Vec<f32> =
        targets.iter().flat_map(|g| g.iou_map.iter().zip(&valid).map(|(i, m)| i * m)).collect();
    let at = |i: usize| valid[i % map];
    let pred_reg = out.bm.narrow(1, 0, 1)?.squeeze(1)?;
    let pred_cls = out.bm.narrow(1, 1, 1)?.squeeze(1)?;

    // PEM regression weights (no gradient): every high position, sampled middle and low ones.
    let high: Vec<f32> = gt.iter().map(|&g| if g > 0.7 { 1.0 } else { 0.0 }).collect();
    let mid: Vec<f32> = gt.iter().map(|&g| if g <= 0.7 && g > 0.3 { 1.0 } else { 0.0 }).collect();
    // MMAction2's low band leaves out IoU 0.
    let low_floor = |g: f32| if mmaction2 { g > 0.0 } else { g >= 0.0 };
    let low: Vec<f32> =
        gt.iter().enumerate().map(|(i, &g)| if g <= 0.3 && low_floor(g) { at(i) } else { 0.0 }).collect();
    let (num_h, num_m, num_l): (f32, f32, f32) = (high.iter().sum(), mid.iter().sum(), low.iter().sum());
    let (r_m, r_l) = (num_h / num_m, num_h / num_l);
    let weights: Vec<f32> = (0..gt.len())
        .map(|i| {
            let sm = if mid[i] * uniform_mid[i % map] > 1.0 - r_m { 1.0 } else { 0.0 };
            let sl = if low[i] * uniform_low[i % map] > 1.0 - r_l { 1.0 } else { 0.0 };
            high[i] + sm + sl
        })
        .collect();
    let weight_sum: f32 = weights.iter().sum();
    let gt_t = vec_tensor(gt.clone(), &[b, dn, tn], device)?;
    let w_t = vec_tensor(weights, &[b, dn, tn], device)?;
    // No position selected (no IoU above 0.3 in the batch): the reference divides 0 by 0.
    let scale = if weight_sum > 0.0 { 0.5 / weight_sum as f64 } else { 0.0 };
    let pem_reg = ((pred_reg - &gt_t)?.sqr()? * w_t)?.sum_all()?.affine(scale, 0.0)?;

    // PEM classification on the valid map.
    let pos: Vec<f32> = gt.iter().map(|&g| if g > 0.9 { 1.0 } else { 0.0 }).collect();
    let neg: Vec<f32> = gt.iter().enumerate().map(|(i, &g)| if g <= 0.9 { at(i) } else { 0.0 }).collect();
    let pem_cls = if mmaction2 {
        // Positives counted at least once, the ratio clipped to [1.05, 21], eps 1e-5.
        let positives = pos.iter().sum::<f32>().max(1.0);
        let entries = positives + neg.iter().sum::<f32>();
        let ratio = (entries / positives).clamp(1.05, 21.0) as f64;
        let (c0, c1) = (0.5 * ratio / (ratio - 1.0), 0.5 * ratio);
        let pm = vec_tensor(pos, &[b, dn, tn], device)?;
        let nm = vec_tensor(neg, &[b, dn, tn], device)?;
        let lp = ((&pred_cls + 1e-5)?.log()? * pm)?.affine(c1, 0.0)?;
        let ln = (pred_cls.affine(-1.0, 1.0 + 1e-5)?.log()? * nm)?.affine(c0, 0.0)?;
        (lp + ln)?.sum_all()?.affine(-1.0 / entries as f64, 0.0)?
    } else {
        let entries: f32 = pos.iter().sum::<f32>() + neg.iter().sum::<f32>();
        balanced_log_loss(&pred_cls, pos, neg, entries, entries)?
    };

    let total = ((&tem_loss + pem_reg.affine(10.0, 0.0)?)? + &pem_cls)?;
    let scalar = |t: &Tensor| -> Result<f32> { Ok(t.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?) };
    Ok(BmnLoss { tem: scalar(&tem_loss)?, pem_reg: scalar(&pem_reg)?, pem_cls: scalar(&pem_cls)?, total })
}

/// MMAction2's `BMNLoss` (`mmaction/models/losses/bmn_loss.py`), the same terms and weights as
/// PaddleVideo's with its own details: the TEM's logistic loss with the ratio clipped to
/// [1.05, 21] and eps 1e-5; the regression's low band excludes IoU 0 (`gt_iou_map > 0`); the
/// classification's positives counted at least 1, its ratio clipped, eps 1e-5. `uniform_mid`
/// and `uniform_low` stand for its two `torch.rand_like` draws, here one [D·T] map each shared
/// by the batch.
pub fn bmn_loss_mmaction2(
    out: &BmnOutput,
    targets: &[BmnTargets],
    uniform_mid: &[f32],
    uniform_low: &[f32],
) -> Result<BmnLoss> {
    bmn_loss_of(out, targets, uniform_mid, uniform_low, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment covering steps [2, 5) of 10: the map position starting at step 2 lasting 3
    /// steps is the segment itself (IoU 1); starts and ends peak at the boundary steps.
    #[test]
    fn targets_of_one_segment() {
        let g = bmn_targets(&[(2.0, 5.0)], 10.0, 10, 10).unwrap();
        assert!((g.iou_map[2 * 10 + 2] - 1.0).abs() < 1e-6);
        // [0.2, 0.4] against [0.2, 0.5]: 2/3.
        assert!((g.iou_map[10 + 2] - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(g.iou_map[9 * 10 + 9], 0.0);
        // The start box [0.05, 0.35] covers steps 1 and 2, half of steps 0 and 3.
        let near = |a: &[f32], want: &[f32]| a.iter().zip(want).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(near(&g.start, &[0.5, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), "{:?}", g.start);
        // The end box [0.35, 0.65].
        assert!(near(&g.end, &[0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0]), "{:?}", g.end);
    }

    #[test]
    fn segments_outside_the_video_are_clipped_and_empty_lists_refused() {
        let g = bmn_targets(&[(-3.0, 20.0)], 10.0, 4, 4).unwrap();
        assert!((g.iou_map[3 * 4] - 1.0).abs() < 1e-6);
        assert!(bmn_targets(&[], 10.0, 4, 4).is_err());
        assert!(bmn_targets(&[(0.0, 1.0)], 0.0, 4, 4).is_err());
    }

    /// A batch without any position above IoU 0.9 still has a finite loss.
    #[test]
    fn loss_is_finite_without_positives() {
        let (tn, dn) = (8, 8);
        let g = bmn_targets(&[(2.1, 2.6)], 8.0, tn, dn).unwrap();
        assert!(g.iou_map.iter().all(|&x| x <= 0.9));
        let dev = Device::Cpu;
        let u = vec![0.5f32; dn * tn];
        let out = BmnOutput {
            bm: Tensor::full(0.3f32, (1, 2, dn, tn), &dev).unwrap(),
            start: Tensor::full(0.3f32, (1, tn), &dev).unwrap(),
            end: Tensor::full(0.3f32, (1, tn), &dev).unwrap(),
        };
        let l = bmn_loss(&out, &[g], &u, &u).unwrap();
        assert!(l.total.to_scalar::<f32>().unwrap().is_finite() && l.pem_cls > 0.0);
    }

    /// The loss falls when the outputs move toward the targets, and every output gets a gradient.
    #[test]
    fn loss_prefers_the_targets() {
        let (tn, dn) = (8, 8);
        let g = bmn_targets(&[(2.0, 5.0), (6.0, 7.0)], 8.0, tn, dn).unwrap();
        let dev = Device::Cpu;
        let u: Vec<f32> = (0..dn * tn).map(|i| ((i * 37) % 100) as f32 / 100.0).collect();
        let outputs = |blend: f32| -> BmnOutput {
            let mix =
                |gt: &[f32]| gt.iter().map(|x| 0.5 * (1.0 - blend) + blend * x.clamp(0.02, 0.98)).collect();
            let reg: Vec<f32> = mix(&g.iou_map);
            let bm: Vec<f32> = reg.iter().chain(reg.iter()).copied().collect();
            BmnOutput {
                bm: Tensor::from_vec(bm, (1, 2, dn, tn), &dev).unwrap(),
                start: Tensor::from_vec(mix(&g.start), (1, tn), &dev).unwrap(),
                end: Tensor::from_vec(mix(&g.end), (1, tn), &dev).unwrap(),
            }
        };
        let far = bmn_loss(&outputs(0.0), std::slice::from_ref(&g), &u, &u).unwrap();
        let near = bmn_loss(&outputs(0.9), std::slice::from_ref(&g), &u, &u).unwrap();
        let f: f32 = far.total.to_scalar().unwrap();
        let n: f32 = near.total.to_scalar().unwrap();
        assert!(n < f && n.is_finite(), "near {n} far {f}");
        assert!(near.tem < far.tem && near.pem_reg < far.pem_reg && near.pem_cls < far.pem_cls);
    }
}
