//! BSN's proposal generation module (PGM), as MMAction2's `localizers/utils/bsn_utils.py` does
//! it between its TEM and PEM: candidate proposals from the TEM's start and end probabilities
//! (`generate_candidate_proposals`) and the boundary-sensitive proposal features that the PEM
//! scores (`generate_bsp_feature`), a fixed-length sampling of the actionness curve over each
//! proposal's start region, end region and body.
//!
//! The reference passes both through CSV and `.npy` files that it reads back as float32 (the
//! candidates' boundaries and scores, the TEM's anchors, the features); the same roundings are
//! made here, and the reference's float32 arithmetic (numpy 2's rules for float32 scalars) is kept
//! where it computes in float32, so that the numbers are the reference's.

/// One candidate proposal on the normalised [0, 1] scale: its boundaries and their TEM scores
/// as the PEM reads them (float32), and the ranking score `tmin_score · tmax_score`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BsnCandidate {
    /// The steps of its start and end boundaries.
    pub steps: (usize, usize),
    pub tmin: f32,
    pub tmax: f32,
    pub tmin_score: f32,
    pub tmax_score: f32,
    pub score: f64,
}

/// Steps taken as boundaries: the first and the last always, the others where a strict local
/// peak or above `peak_threshold` of the maximum (`generate_candidate_proposals`' bins).
fn boundary_bins(scores: &[f32], peak_threshold: f64) -> Vec<bool> {
    let n = scores.len();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // numpy 2: a Python float times a float32 scalar is a float32 product.
    let threshold = peak_threshold as f32 * max;
    (0..n)
        .map(|i| {
            if i == 0 || i + 1 == n {
                return true;
            }
            let s = scores[i];
            (s > scores[i + 1] && s > scores[i - 1]) || s > threshold
        })
        .collect()
}

/// `generate_candidate_proposals` for one video's TEM outputs (`start`, `end` [T]): boundary
/// steps at their centres (`tgap / 2 + tgap · idx`, tgap = 1 / T), every start before an end
/// paired with it, scored `tmin_score · tmax_score`, best first (ties in reverse order, as
/// `argsort()[::-1]`), at most `top_k` (`LoadProposals`' and `generate_bsp_feature`'s `top_k`).
pub fn bsn_candidates(start: &[f32], end: &[f32], peak_threshold: f64, top_k: usize) -> Vec<BsnCandidate> {
    let t = start.len().min(end.len());
    let (start, end) = (&start[..t], &end[..t]);
    let tgap = 1.0 / t as f64;
    let (start_bins, end_bins) = (boundary_bins(start, peak_threshold), boundary_bins(end, peak_threshold));
    let at = |idx: usize| tgap / 2.0 + tgap * idx as f64;
    let starts: Vec<usize> = (0..t).filter(|&i| start_bins[i]).collect();
    let ends: Vec<usize> = (0..t).filter(|&i| end_bins[i]).collect();
    let mut props = Vec::new();
    for &e in &ends {
        let (tmax, tmax_score) = (at(e), end[e]);
        for &s in &starts {
            let (tmin, tmin_score) = (at(s), start[s]);
            if tmin >= tmax {
                break;
            }
            props.push(BsnCandidate {
                steps: (s, e),
                tmin: tmin as f32,
                tmax: tmax as f32,
                tmin_score,
                tmax_score,
                score: tmin_score as f64 * tmax_score as f64,
            });
        }
    }
    props.reverse();
    props.sort_by(|a, b| b.score.total_cmp(&a.score));
    props.truncate(top_k);
    props
}

/// How `generate_bsp_feature` samples the actionness curve (`pgm_features_*_cfg`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BspSampling {
    /// The start and end regions: ±`boundary_ratio` of the proposal's length around each boundary.
    pub boundary_ratio: f64,
    pub num_sample_start: usize,
    pub num_sample_end: usize,
    pub num_sample_action: usize,
    /// Points per sample: each sample averages `num_sample_interp + 1` interpolated points.
    pub num_sample_interp: usize,
}

impl BspSampling {
    /// Width of a feature: action, start and end samples.
    pub fn width(&self) -> usize {
        self.num_sample_action + self.num_sample_start + self.num_sample_end
    }
}

/// `np.interp(x, xp, fp)` for increasing `xp`: fp's ends outside, linear inside.
fn interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let last = xp.len() - 1;
    if x < xp[0] {
        return fp[0];
    }
    if x >= xp[last] {
        return fp[last];
    }
    let j = xp.partition_point(|&v| v <= x) - 1;
    if xp[j] == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    slope * (x - xp[j]) + fp[j]
}

/// `num` samples over [lo, hi] (float32, as the reference's scalars): points from
/// `lo − step / 2` every `step / interp`, `step = (hi − lo) / (num − 1)`, sample i the mean of
/// points i·interp ..= (i + 1)·interp.
fn sample_region(lo: f32, hi: f32, num: usize, interp_n: usize, xp: &[f64], fp: &[f64], out: &mut Vec<f32>) {
    let step = (hi - lo) / (num as f32 - 1.0);
    let sub = step / interp_n as f32;
    let first = lo - step / 2.0;
    let ys: Vec<f64> =
        (0..=num * interp_n).map(|i| interp((first + sub * i as f32) as f64, xp, fp)).collect();
    for i in 0..num {
        let window = &ys[i * interp_n..=(i + 1) * interp_n];
        let sum = window.iter().fold(0.0f64, |a, y| a + y);
        out.push((sum / window.len() as f64) as f32);
    }
}

/// `generate_bsp_feature` for one video: the actionness curve `action` [T] (read at step
/// centres, zero-padded by `T / 4 + 10` steps on both sides) sampled for each candidate; rows
/// [action samples, start samples, end samples], float32 (the PEM's input), row-major
/// [candidates, width].
pub fn bsp_features(action: &[f32], candidates: &[BsnCandidate], s: &BspSampling) -> Vec<f32> {
    let t = action.len();
    // The TEM's anchors as the reference reads them back (float32), and its float32 gap.
    let anchor = |i: usize| (1.0 / t as f64 * i as f64) as f32;
    let gap = anchor(1) - anchor(0);
    let extend = t / 4 + 10;
    let last_max = (1.0 / t as f64 * t as f64) as f32;
    let mut xp = Vec::with_capacity(t + 2 * extend);
    for i in 0..extend {
        xp.push((-gap / 2.0 - (extend - 1 - i) as f32 * gap) as f64);
    }
    for i in 0..t {
        xp.push((gap / 2.0 + i as f32 * gap) as f64);
    }
    for i in 0..extend {
        xp.push((gap / 2.0 + last_max + i as f32 * gap) as f64);
    }
    let mut fp = vec![0.0f64; extend];
    fp.extend(action.iter().map(|&a| a as f64));
    fp.extend(std::iter::repeat_n(0.0, extend));
    let ratio = s.boundary_ratio as f32;
    let mut out = Vec::with_capacity(candidates.len() * s.width());
    for c in candidates {
        let (tmin, tmax) = (c.tmin, c.tmax);
        let len = tmax - tmin;
        let mut start = Vec::new();
        let mut end = Vec::new();
        sample_region(
            tmin - len * ratio,
            tmin + len * ratio,
            s.num_sample_start,
            s.num_sample_interp,
            &xp,
            &fp,
            &mut start,
        );
        sample_region(
            tmax - len * ratio,
            tmax + len * ratio,
            s.num_sample_end,
            s.num_sample_interp,
            &xp,
            &fp,
            &mut end,
        );
        sample_region(tmin, tmax, s.num_sample_action, s.num_sample_interp, &xp, &fp, &mut out);
        out.extend(start);
        out.extend(end);
    }
    out
}

impl BsnCandidate {
    /// Its boundaries before the float32 rounding (`tgap / 2 + tgap · step`, float64), as the
    /// reference's training tIoU takes them, for a sequence of `t` steps.
    pub fn bounds_f64(&self, t: usize) -> (f64, f64) {
        let tgap = 1.0 / t as f64;
        (tgap / 2.0 + tgap * self.steps.0 as f64, tgap / 2.0 + tgap * self.steps.1 as f64)
    }
}

/// `temporal_iou` of [a0, a1] with [b0, b1].
pub fn temporal_iou(a0: f64, a1: f64, b0: f64, b1: f64) -> f64 {
    let inter = (a1.min(b1) - a0.max(b0)).max(0.0);
    inter / ((a1 - a0) - inter + b1 - b0)
}

/// `temporal_iop`: the overlap of [a0, a1] with [b0, b1] over the length of [a0, a1].
pub fn temporal_iop(a0: f64, a1: f64, b0: f64, b1: f64) -> f64 {
    let inter = (a1.min(b1) - a0.max(b0)).max(0.0);
    inter / (a1 - a0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_pair_each_start_with_the_later_ends_best_first() {
        // T = 5: starts at 0 (always), 2 (peak), 4 (always); ends at 0, 3 (peak), 4.
        let start = [0.2f32, 0.1, 0.3, 0.1, 0.05];
        let end = [0.1f32, 0.1, 0.1, 0.4, 0.1];
        let c = bsn_candidates(&start, &end, 0.9, 100);
        let pairs: Vec<(f32, f32)> = c.iter().map(|c| (c.tmin, c.tmax)).collect();
        // ends 0.7 (idx 3) and 0.9 (idx 4); starts 0.1 and 0.5 (idx 4's 0.9 is never before an end)
        assert_eq!(pairs, [(0.5, 0.7), (0.1, 0.7), (0.5, 0.9), (0.1, 0.9)]);
        assert!((c[0].score - 0.3f32 as f64 * 0.4f32 as f64).abs() < 1e-12);
        assert_eq!(bsn_candidates(&start, &end, 0.9, 2).len(), 2);
    }

    #[test]
    fn interp_is_numpys() {
        let xp = [0.0, 1.0, 2.0];
        let fp = [1.0, 3.0, 2.0];
        assert_eq!(interp(-1.0, &xp, &fp), 1.0);
        assert_eq!(interp(0.5, &xp, &fp), 2.0);
        assert_eq!(interp(1.0, &xp, &fp), 3.0);
        assert_eq!(interp(1.5, &xp, &fp), 2.5);
        assert_eq!(interp(9.0, &xp, &fp), 2.0);
    }

    #[test]
    fn a_flat_curve_gives_flat_features_and_zero_outside() {
        let action = vec![0.5f32; 20];
        let s = BspSampling {
            boundary_ratio: 0.2,
            num_sample_start: 8,
            num_sample_end: 8,
            num_sample_action: 16,
            num_sample_interp: 3,
        };
        let inside = BsnCandidate {
            steps: (6, 11),
            tmin: 0.3,
            tmax: 0.6,
            tmin_score: 1.0,
            tmax_score: 1.0,
            score: 1.0,
        };
        let f = bsp_features(&action, &[inside], &s);
        assert_eq!(f.len(), 32);
        assert!(f.iter().all(|v| (v - 0.5).abs() < 1e-6), "{f:?}");
        // A proposal over the whole video: its start region begins before 0, where the curve is 0.
        let whole = BsnCandidate { tmin: 0.025, tmax: 0.975, ..inside };
        let f = bsp_features(&action, &[whole], &s);
        assert!(f[16] < 0.3 && f[23] > 0.45 && f[31] < 0.3, "{f:?}");
    }
}
