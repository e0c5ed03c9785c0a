//! From a localizer's outputs to scored temporal proposals, as PaddleVideo's
//! `paddlevideo/metrics/bmn_metric.py` does it for BMN: candidate boundaries (`boundary_choose`),
//! every (start, end) pair of candidates scored start · end · regression · classification, then
//! Gaussian soft-NMS (`soft_nms`) and the best 100 scaled to the video's duration; and as
//! MMAction2's `BMN.forward_test` and `localizers/utils/proposal_utils.py` do it
//! (`mmaction2_bmn_candidates`, `soft_nms_mmaction2`, `mmaction2_bmn_proposals`).

use anyhow::{bail, Result};

pub mod bsn;
pub mod ctcn;

/// One proposal on the normalised [0, 1] scale of the sequence (or in seconds once scaled).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Proposal {
    pub xmin: f64,
    pub xmax: f64,
    pub score: f64,
    /// A detector's class (an index into the model's labels); proposals have none.
    pub label: Option<usize>,
}

/// `boundary_choose`: steps whose score is above half the maximum or a strict local peak
/// (neighbours outside the sequence count as 0).
pub fn boundary_choose(scores: &[f32]) -> Vec<bool> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let n = scores.len();
    (0..n)
        .map(|i| {
            let prev = if i == 0 { 0.0 } else { scores[i - 1] };
            let next = if i + 1 == n { 0.0 } else { scores[i + 1] };
            scores[i] > max * 0.5 || (scores[i] > prev && scores[i] > next)
        })
        .collect()
}

/// The candidates of `BMNMetric.update`: `bm` [2, D, T] (row-major: channel, duration, start),
/// `start`/`end` [T]. Starts and ends from `boundary_choose` (the first start and the last end
/// always), each pair with d = end - start < D scored `start · end · (reg · cls)` (float32, as
/// numpy multiplies the float32 maps), at xmin = start / T, xmax = (end + 1) / T; in the
/// reference's order (duration-major).
pub fn bmn_candidates(bm: &[f32], start: &[f32], end: &[f32], dscale: usize) -> Result<Vec<Proposal>> {
    let t = start.len();
    if end.len() != t || bm.len() != 2 * dscale * t {
        bail!("BMN outputs of sizes {}, {}, {} for T = {t}, D = {dscale}", bm.len(), start.len(), end.len());
    }
    let mut start_mask = boundary_choose(start);
    let mut end_mask = boundary_choose(end);
    if t > 0 {
        start_mask[0] = true;
        end_mask[t - 1] = true;
    }
    let mut out = Vec::new();
    for d in 0..dscale {
        for s in 0..t {
            let e = s + d;
            if e < t && start_mask[s] && end_mask[e] {
                let map = bm[d * t + s] * bm[dscale * t + d * t + s];
                let score = start[s] * end[e] * map;
                out.push(Proposal {
                    xmin: 1.0 / t as f64 * s as f64,
                    xmax: 1.0 / t as f64 * (e + 1) as f64,
                    score: score as f64,
                    label: None,
                });
            }
        }
    }
    Ok(out)
}

/// `iou_with_anchors` for one pair.
fn iou(a: &Proposal, xmin: f64, xmax: f64) -> f64 {
    let inter = (a.xmax.min(xmax) - a.xmin.max(xmin)).max(0.0);
    let union = (a.xmax - a.xmin) - inter + xmax - xmin;
    inter / union
}

/// `soft_nms(df, alpha, t1, t2)`: sorted by score (descending; ties keep their order), the best
/// remaining proposal is kept and every other whose tIoU with it exceeds `t1 + (t2 - t1) ·
/// width` is decayed by `exp(-tIoU² / alpha)`, until one proposal is left (which the reference
/// drops) or 101 are kept.
pub fn soft_nms(mut props: Vec<Proposal>, alpha: f64, t1: f64, t2: f64) -> Vec<Proposal> {
    props.sort_by(|a, b| b.score.total_cmp(&a.score));
    decay(props, alpha, t1, t2, |left, kept| left > 1 && kept < 101)
}

/// The Gaussian decay loop both references share: while `go_on(remaining, kept)`, keep the
/// first of the highest remaining (`index(max)` / `argmax`) and decay every other whose tIoU
/// with it exceeds `t1 + (t2 − t1) · width` by `exp(−tIoU² / alpha)`.
fn decay(
    mut props: Vec<Proposal>,
    alpha: f64,
    t1: f64,
    t2: f64,
    go_on: impl Fn(usize, usize) -> bool,
) -> Vec<Proposal> {
    let mut kept = Vec::new();
    while go_on(props.len(), kept.len()) {
        let best = (0..props.len()).fold(0, |b, i| if props[i].score > props[b].score { i } else { b });
        let p = props[best];
        let width = p.xmax - p.xmin;
        for (i, q) in props.iter_mut().enumerate() {
            if i != best {
                let o = iou(q, p.xmin, p.xmax);
                if o > t1 + (t2 - t1) * width {
                    q.score *= (-(o * o) / alpha).exp();
                }
            }
        }
        kept.push(p);
        props.remove(best);
    }
    kept
}

/// The best `top` as segments [max(0, xmin) · duration, min(1, xmax) · duration].
fn in_seconds(props: Vec<Proposal>, duration: f64, top: usize) -> Vec<Proposal> {
    props
        .into_iter()
        .take(top)
        .map(|p| Proposal {
            xmin: p.xmin.max(0.0) * duration,
            xmax: p.xmax.min(1.0) * duration,
            score: p.score,
            label: p.label,
        })
        .collect()
}

/// BMN's proposals for one video, as `BMNMetric` writes them: soft-NMS (α 0.4, t1 0.55, t2 0.9)
/// when there is more than one candidate, the best `top` (100), and segments
/// [max(0, xmin) · duration, min(1, xmax) · duration] in seconds (`duration` 1 keeps the [0, 1]
/// scale).
pub fn bmn_proposals(candidates: Vec<Proposal>, duration: f64, top: usize) -> Vec<Proposal> {
    let props = if candidates.len() > 1 { soft_nms(candidates, 0.4, 0.55, 0.9) } else { candidates };
    in_seconds(props, duration, top)
}

/// MMAction2's `BMN.forward_test` candidates: boundaries only inside the sequence (a start at
/// step 0 and an end at step T − 1 always; steps 1..T−2 where a strict peak or above half the
/// maximum), the map position (d, s) pairing start s with end e = s + d + 1 < T, scored
/// `start · end · cls · reg` (float32, left to right), at [s / T, e / T].
pub fn mmaction2_bmn_candidates(
    bm: &[f32],
    start: &[f32],
    end: &[f32],
    dscale: usize,
) -> Result<Vec<Proposal>> {
    let t = start.len();
    if end.len() != t || bm.len() != 2 * dscale * t {
        bail!("BMN outputs of sizes {}, {}, {} for T = {t}, D = {dscale}", bm.len(), start.len(), end.len());
    }
    let bins = |scores: &[f32], first: bool| -> Vec<bool> {
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut b = vec![false; t];
        if t > 0 {
            b[if first { 0 } else { t - 1 }] = true;
        }
        for i in 1..t.saturating_sub(1) {
            let peak = scores[i] > scores[i + 1] && scores[i] > scores[i - 1];
            b[i] = peak || scores[i] > 0.5 * max;
        }
        b
    };
    let (start_bins, end_bins) = (bins(start, true), bins(end, false));
    let mut out = Vec::new();
    for d in 0..dscale {
        for s in 0..t {
            let e = s + d + 1;
            if e < t && start_bins[s] && end_bins[e] {
                let (cls, reg) = (bm[dscale * t + d * t + s], bm[d * t + s]);
                let score = start[s] * end[e] * cls * reg;
                out.push(Proposal {
                    xmin: s as f64 / t as f64,
                    xmax: e as f64 / t as f64,
                    score: score as f64,
                    label: None,
                });
            }
        }
    }
    Ok(out)
}

/// MMAction2's `soft_nms(proposals, alpha, low_threshold, high_threshold, top_k)`: the best
/// remaining proposal is kept and every other whose tIoU with it exceeds `low + (high − low) ·
/// width` is decayed by `exp(−tIoU² / alpha)`, until none is left or `top_k + 1` are kept.
pub fn soft_nms_mmaction2(
    mut props: Vec<Proposal>,
    alpha: f64,
    low: f64,
    high: f64,
    top_k: usize,
) -> Vec<Proposal> {
    // `argsort()[::-1]`: descending, ties in reverse order.
    props.reverse();
    props.sort_by(|a, b| b.score.total_cmp(&a.score));
    decay(props, alpha, low, high, |left, kept| left > 0 && kept <= top_k)
}

/// MMAction2's soft-NMS settings (`soft_nms_alpha`, `soft_nms_low_threshold`,
/// `soft_nms_high_threshold`, `post_process_top_k` of a localizer's config).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftNmsMmaction2 {
    pub alpha: f64,
    pub low: f64,
    pub high: f64,
    pub top_k: usize,
}

/// MMAction2's `post_processing` (`localizers/utils/proposal_utils.py`): soft-NMS when there is
/// more than one candidate, best first, the best `top`, and segments [max(0, xmin) · d,
/// min(1, xmax) · d] with d the duration the whole snippets cover, `duration_frame // interval ·
/// interval / duration_frame · duration_second` (the plain duration where the frame count is
/// unknown).
pub fn mmaction2_post_processing(
    candidates: Vec<Proposal>,
    nms: SoftNmsMmaction2,
    duration_second: f64,
    duration_frame: Option<f64>,
    interval: usize,
    top: usize,
) -> Vec<Proposal> {
    let mut props = if candidates.len() > 1 {
        soft_nms_mmaction2(candidates, nms.alpha, nms.low, nms.high, nms.top_k)
    } else {
        candidates
    };
    props.reverse();
    props.sort_by(|a, b| b.score.total_cmp(&a.score));
    let duration = match duration_frame {
        // An interval of 1 frame: the snippets cover every frame, the plain duration.
        Some(f) if f > 0.0 && interval > 1 => {
            let i = interval as f64;
            (f / i).floor() * i / f * duration_second
        }
        _ => duration_second,
    };
    in_seconds(props, duration, top)
}

/// MMAction2's `post_processing` as its BMN config (`bmn_400x100`) sets it: alpha 0.4, low 0.5,
/// high 0.9, top 100.
pub fn mmaction2_bmn_proposals(
    candidates: Vec<Proposal>,
    duration_second: f64,
    duration_frame: Option<f64>,
    interval: usize,
    top: usize,
) -> Vec<Proposal> {
    let nms = SoftNmsMmaction2 { alpha: 0.4, low: 0.5, high: 0.9, top_k: 100 };
    mmaction2_post_processing(candidates, nms, duration_second, duration_frame, interval, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_peaks_or_above_half_the_maximum() {
        let s = [0.1f32, 0.3, 0.2, 0.9, 0.5, 0.1, 0.2];
        // 0.3 and 0.2 (last) are peaks; 0.9 and 0.5 are above 0.45
        assert_eq!(boundary_choose(&s), [false, true, false, true, true, false, true]);
    }

    #[test]
    fn soft_nms_keeps_the_best_and_decays_overlaps() {
        let p = |a: f64, b: f64, s: f64| Proposal { xmin: a, xmax: b, score: s, label: None };
        let kept = soft_nms(vec![p(0.0, 0.5, 0.9), p(0.0, 0.45, 0.8), p(0.6, 0.9, 0.5)], 0.4, 0.55, 0.9);
        // the last remaining proposal is dropped, as the reference's loop does
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0], p(0.0, 0.5, 0.9));
        // tIoU 0.9 > 0.55 + 0.35 * 0.5: decayed to 0.8 * exp(-0.81 / 0.4) = 0.1056 < 0.5
        assert_eq!(kept[1], p(0.6, 0.9, 0.5));
    }
}
