//! Temporal localization metrics, as ActivityNet's `Evaluation/eval_proposal.py` and
//! `Evaluation/eval_detection.py` (with `utils.py`) compute them: average recall against the
//! average number of proposals per video (AR@AN) and its area, and detection mAP per tIoU
//! threshold. Ranking follows the reference's `argsort()[::-1]` over scores: descending, and
//! among equal scores the later one first (numpy's sort is stable for the short per-video and
//! per-class lists this matters for; for long lists with exact ties its order is unspecified).

use crate::data::{SegmentGroundTruth, SegmentPredictions};
use anyhow::{bail, Result};
use std::collections::HashMap;

/// numpy's `linspace(start, stop, n)`: `i * step + start`, the last value exactly `stop`.
pub fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    v[n - 1] = stop;
    v
}

/// `utils.segment_iou` for one pair.
fn tiou(a: (f64, f64), b: (f64, f64)) -> f64 {
    let inter = (a.1.min(b.1) - a.0.max(b.0)).max(0.0);
    let union = (b.1 - b.0) + (a.1 - a.0) - inter;
    inter / union
}

/// Indices of `scores` in the reference's `argsort()[::-1]` order.
fn descending(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    idx.reverse();
    idx
}

/// AR@AN as `average_recall_vs_avg_nr_proposals` with `max_avg_nr_proposals`, and the area
/// under it (`np.trapz(avg_recall, proposals_per_video) / proposals_per_video[-1]`).
#[derive(Clone, Debug)]
pub struct ProposalMetrics {
    /// recall[t][j]: at threshold t, at the j-th of 100 proposal budgets.
    pub recall: Vec<Vec<f64>>,
    pub avg_recall: Vec<f64>,
    /// Average number of proposals per video at each budget.
    pub proposals_per_video: Vec<f64>,
    /// Area under AR@AN divided by the largest AN: a fraction in [0, 1].
    pub auc: f64,
    pub videos: usize,
}

pub fn proposal_recall(
    gt: &SegmentGroundTruth,
    preds: &SegmentPredictions,
    max_avg_nr_proposals: Option<f64>,
    thresholds: &[f64],
) -> Result<ProposalMetrics> {
    let nvid = gt.videos.len();
    // Every proposal in the file counts, as the reference's proposals.shape[0].
    let total: usize = preds.iter().map(|(_, s)| s.len()).sum();
    if total == 0 {
        bail!("no proposals at all");
    }
    let max_avg = max_avg_nr_proposals.unwrap_or(total as f64 / nvid as f64);
    let ratio = max_avg * nvid as f64 / total as f64;
    let mut by_video: HashMap<&str, Vec<&crate::data::Segment>> = HashMap::new();
    for (v, segs) in preds {
        by_video.entry(v.as_str()).or_default().extend(segs.iter());
    }
    // Per video: tIoU [gt][proposal] of its best proposals (a video without any: one column of 0).
    let mut scores: Vec<(usize, Vec<Vec<f64>>)> = Vec::with_capacity(nvid);
    let mut total_nr = 0usize;
    for (v, gts) in &gt.videos {
        let props = by_video.get(v.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        if props.is_empty() {
            scores.push((1, vec![vec![0.0]; gts.len()]));
            continue;
        }
        let order = descending(&props.iter().map(|p| p.score).collect::<Vec<_>>());
        let nr = ((props.len() as f64 * ratio) as usize).min(props.len());
        total_nr += nr;
        let kept: Vec<(f64, f64)> = order[..nr].iter().map(|&i| (props[i].t0, props[i].t1)).collect();
        let m = gts.iter().map(|g| kept.iter().map(|&p| tiou(p, (g.t0, g.t1))).collect()).collect();
        scores.push((nr, m));
    }
    if total_nr == 0 {
        bail!("no proposal kept for the ground-truth videos (too few proposals per video)");
    }
    let factor = max_avg * nvid as f64 / total_nr as f64;
    let pcn: Vec<f64> = (1..=100).map(|k| k as f64 / 100.0 * factor).collect();
    let positives: usize = gt.videos.iter().map(|(_, g)| g.len()).sum();
    let mut recall = Vec::with_capacity(thresholds.len());
    for &thr in thresholds {
        let mut matches = vec![0usize; pcn.len()];
        for (cols, m) in &scores {
            for (j, &p) in pcn.iter().enumerate() {
                let k = ((*cols as f64 * p) as usize).min(*cols);
                matches[j] +=
                    m.iter().filter(|row| row[..k.min(row.len())].iter().any(|&s| s >= thr)).count();
            }
        }
        recall.push(matches.iter().map(|&n| n as f64 / positives as f64).collect::<Vec<_>>());
    }
    let avg_recall: Vec<f64> =
        (0..pcn.len()).map(|j| recall.iter().map(|r| r[j]).sum::<f64>() / thresholds.len() as f64).collect();
    let proposals_per_video: Vec<f64> = pcn.iter().map(|p| p * (total_nr as f64 / nvid as f64)).collect();
    let area: f64 = (1..avg_recall.len())
        .map(|j| {
            (proposals_per_video[j] - proposals_per_video[j - 1]) * (avg_recall[j] + avg_recall[j - 1]) / 2.0
        })
        .sum();
    let auc = area / proposals_per_video[proposals_per_video.len() - 1];
    Ok(ProposalMetrics { recall, avg_recall, proposals_per_video, auc, videos: nvid })
}

/// Detection AP per threshold and class (`ap[t][c]`, classes in ground-truth order), mAP per
/// threshold and their mean.
#[derive(Clone, Debug)]
pub struct DetectionMetrics {
    pub ap: Vec<Vec<f64>>,
    pub map_at_tiou: Vec<f64>,
    pub map: f64,
    pub classes: Vec<String>,
    pub videos: usize,
    /// Detections of classes the ground truth does not have, left out (ActivityNet's
    /// `eval_detection.py` fails on them with a KeyError; a detector trained on more classes
    /// than a small evaluation subset holds makes them).
    pub other_class_detections: usize,
}

/// `utils.interpolated_prec_rec` (VOC 2011 AP).
fn interpolated_ap(prec: &[f64], rec: &[f64]) -> f64 {
    let mut mprec = Vec::with_capacity(prec.len() + 2);
    mprec.push(0.0);
    mprec.extend_from_slice(prec);
    mprec.push(0.0);
    let mut mrec = Vec::with_capacity(rec.len() + 2);
    mrec.push(0.0);
    mrec.extend_from_slice(rec);
    mrec.push(1.0);
    for i in (0..mprec.len() - 1).rev() {
        mprec[i] = mprec[i].max(mprec[i + 1]);
    }
    (1..mrec.len()).filter(|&i| mrec[i] != mrec[i - 1]).map(|i| (mrec[i] - mrec[i - 1]) * mprec[i]).sum()
}

/// `compute_average_precision_detection` for one class: `gts` (video, t0, t1) in ground-truth
/// order, `preds` (video, t0, t1, score) in file order.
fn class_ap(gts: &[(&str, f64, f64)], preds: &[(&str, f64, f64, f64)], thresholds: &[f64]) -> Vec<f64> {
    let npos = gts.len() as f64;
    let mut by_video: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, g) in gts.iter().enumerate() {
        by_video.entry(g.0).or_default().push(i);
    }
    let order = descending(&preds.iter().map(|p| p.3).collect::<Vec<_>>());
    let nt = thresholds.len();
    let mut lock = vec![vec![false; gts.len()]; nt];
    let mut tp = vec![vec![0f64; preds.len()]; nt];
    let mut fp = vec![vec![0f64; preds.len()]; nt];
    for (idx, &pi) in order.iter().enumerate() {
        let p = preds[pi];
        let Some(cands) = by_video.get(p.0) else {
            for f in fp.iter_mut() {
                f[idx] = 1.0;
            }
            continue;
        };
        let ious: Vec<f64> = cands.iter().map(|&g| tiou((p.1, p.2), (gts[g].1, gts[g].2))).collect();
        let best = descending(&ious);
        for (t, &thr) in thresholds.iter().enumerate() {
            for &j in &best {
                if ious[j] < thr {
                    fp[t][idx] = 1.0;
                    break;
                }
                if lock[t][cands[j]] {
                    continue;
                }
                tp[t][idx] = 1.0;
                lock[t][cands[j]] = true;
                break;
            }
            if fp[t][idx] == 0.0 && tp[t][idx] == 0.0 {
                fp[t][idx] = 1.0;
            }
        }
    }
    (0..nt)
        .map(|t| {
            let (mut ctp, mut cfp) = (0f64, 0f64);
            let mut prec = Vec::with_capacity(preds.len());
            let mut rec = Vec::with_capacity(preds.len());
            for i in 0..preds.len() {
                ctp += tp[t][i];
                cfp += fp[t][i];
                rec.push(ctp / npos);
                prec.push(ctp / (ctp + cfp));
            }
            interpolated_ap(&prec, &rec)
        })
        .collect()
}

pub fn detection_map(
    gt: &SegmentGroundTruth,
    preds: &SegmentPredictions,
    thresholds: &[f64],
) -> Result<DetectionMetrics> {
    let nc = gt.classes.len();
    let class_of: HashMap<&str, usize> =
        gt.classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let mut gts: Vec<Vec<(&str, f64, f64)>> = vec![Vec::new(); nc];
    for (v, segs) in &gt.videos {
        for s in segs {
            let c = class_of[s.label.as_deref().unwrap_or_default()];
            gts[c].push((v.as_str(), s.t0, s.t1));
        }
    }
    let mut ps: Vec<Vec<(&str, f64, f64, f64)>> = vec![Vec::new(); nc];
    let mut other_class_detections = 0;
    for (v, segs) in preds {
        for s in segs {
            let Some(label) = s.label.as_deref() else {
                bail!("video {v:?}: a detection without a `label` (proposals are scored with --proposals)");
            };
            let Some(&c) = class_of.get(label) else {
                other_class_detections += 1;
                continue;
            };
            ps[c].push((v.as_str(), s.t0, s.t1, s.score));
        }
    }
    let nt = thresholds.len();
    let mut ap = vec![vec![0f64; nc]; nt];
    for c in 0..nc {
        // A class without detections scores 0 (the reference's later versions do the same).
        if ps[c].is_empty() {
            continue;
        }
        for (t, a) in class_ap(&gts[c], &ps[c], thresholds).into_iter().enumerate() {
            ap[t][c] = a;
        }
    }
    let map_at_tiou: Vec<f64> = ap.iter().map(|row| row.iter().sum::<f64>() / nc as f64).collect();
    let map = map_at_tiou.iter().sum::<f64>() / nt as f64;
    Ok(DetectionMetrics {
        ap,
        map_at_tiou,
        map,
        classes: gt.classes.clone(),
        videos: gt.videos.len(),
        other_class_detections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Segment;

    fn seg(t0: f64, t1: f64, label: &str, score: f64) -> Segment {
        Segment { t0, t1, label: Some(label.into()), score }
    }

    #[test]
    fn linspace_is_numpys() {
        let t = linspace(0.5, 0.95, 10);
        assert_eq!(t.len(), 10);
        assert_eq!(t[0], 0.5);
        assert_eq!(t[9], 0.95);
        // numpy: 0.5 + 4 * 0.05 = 0.7000000000000001
        assert_eq!(t[4], 4.0 * ((0.95 - 0.5) / 9.0) + 0.5);
    }

    #[test]
    fn detection_ap_by_hand() {
        // One class, two ground-truth segments in one video; three detections.
        let gt = SegmentGroundTruth {
            videos: vec![("v".into(), vec![seg(0.0, 10.0, "a", 1.0), seg(20.0, 30.0, "a", 1.0)])],
            classes: vec!["a".into()],
        };
        // best first: a hit on gt 0, a duplicate of gt 0 (false positive), a hit on gt 1
        let preds = vec![(
            "v".to_string(),
            vec![seg(0.0, 10.0, "a", 0.9), seg(1.0, 10.0, "a", 0.8), seg(20.0, 29.0, "a", 0.7)],
        )];
        let m = detection_map(&gt, &preds, &[0.5]).unwrap();
        // precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: VOC AP = 0.5 * 1 + 0.5 * 2/3
        assert!((m.map - (0.5 + 1.0 / 3.0)).abs() < 1e-12, "{}", m.map);
        // detections of other classes are left out and counted
        let mut other = preds.clone();
        other[0].1.push(seg(0.0, 1.0, "b", 0.95));
        let o = detection_map(&gt, &other, &[0.5]).unwrap();
        assert_eq!((o.map, o.other_class_detections), (m.map, 1));
    }

    #[test]
    fn proposal_recall_by_hand() {
        // Two videos with one ground truth each; video a's best proposal matches (tIoU 1), video
        // b's second-best does (tIoU 0.8). 2 proposals each, budget 2 per video.
        let gt = SegmentGroundTruth {
            videos: vec![
                ("a".into(), vec![seg(0.0, 10.0, "x", 1.0)]),
                ("b".into(), vec![seg(0.0, 10.0, "x", 1.0)]),
            ],
            classes: vec!["x".into()],
        };
        let preds = vec![
            ("a".to_string(), vec![seg(50.0, 60.0, "x", 0.1), seg(0.0, 10.0, "x", 0.9)]),
            ("b".to_string(), vec![seg(30.0, 40.0, "x", 0.9), seg(0.0, 8.0, "x", 0.5)]),
        ];
        let m = proposal_recall(&gt, &preds, Some(2.0), &[0.5, 0.9]).unwrap();
        // budgets pcn = k/100 * 2: one proposal per video from k = 50, two from k = 100
        assert_eq!(m.recall[0][48], 0.0);
        assert_eq!(m.recall[0][49], 0.5);
        assert_eq!(m.recall[0][99], 1.0);
        assert_eq!(m.recall[1][99], 0.5); // 0.8 < 0.9
        assert!((m.proposals_per_video[99] - 2.0).abs() < 1e-12);
        assert!(m.auc > 0.0 && m.auc < 1.0);
    }
}
