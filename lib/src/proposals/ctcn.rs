//! C-TCN's anchors and its detections, as the 2019 zoo's `models/ctcn/ctcn_utils.py` makes them:
//! `BoxCoder` (7 anchors per step: the level's stride as width, then three narrower and three
//! wider, the last level's all narrower), `decode` (offsets with variances 0.1 and 0.2 to
//! boxes; per class, scores above a threshold, `box_nms`, then Gaussian `soft_nms`) and
//! `encode` (the training targets: each ground-truth box's best anchor, then every anchor of
//! tIoU ≥ 0.5 with a box). Boxes are in steps of the 512-step input; `metrics/detections/
//! detection_metrics.py` scales them by the video's duration / 512.

use super::Proposal;
use crate::model::{CtcnSpec, CTCN_STEPS};

/// The anchors (centre, width) in input steps, level by level, step by step
/// (`BoxCoder._get_default_boxes`, `fm_sizes` from the input length).
pub fn default_boxes(spec: &CtcnSpec) -> Vec<(f64, f64)> {
    let lengths = spec.level_lengths();
    let n = spec.anchor_num;
    let mut boxes = Vec::with_capacity(spec.total_anchors());
    for (i, &len) in lengths.iter().enumerate() {
        let base = CTCN_STEPS[i] as f64;
        let last = i + 1 == lengths.len();
        for h in 0..len {
            let cy = (h as f64 + 0.5) * base;
            boxes.push((cy, base));
            for p in 0..n {
                let s = (base * 4.5 / 15.0) * (1.0 + p as f64) / n as f64;
                boxes.push((cy, base - s));
                if last {
                    // The reference's `base_s == 512`: the last level of its 512-step input.
                    let step_s = (base * 4.5 / 15.0) / (2 * n) as f64;
                    boxes.push((cy, base - s - step_s));
                } else {
                    boxes.push((cy, base + s));
                }
            }
        }
    }
    boxes
}

/// `box_nms(bboxes, scores, threshold)`: best first (`argsort(-scores)`, ties in index order),
/// each kept box removing those overlapping it by more than `threshold` (tIoU).
fn box_nms(boxes: &[(f64, f64)], scores: &[f32], threshold: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut keep = Vec::new();
    while let Some(&i) = order.first() {
        keep.push(i);
        if order.len() == 1 {
            break;
        }
        let (y1, y2) = boxes[i];
        let area = y2 - y1;
        order = order[1..]
            .iter()
            .copied()
            .filter(|&j| {
                let (a, b) = boxes[j];
                let inter = (b.min(y2) - a.max(y1)).max(0.0);
                let ovr = inter / (area + (b - a) - inter);
                ovr <= threshold
            })
            .collect();
    }
    keep
}

/// `soft_nms(props, method=2, sigma, threshold)` on rows (start, end, score): in place, the
/// best remaining moved to the front, the rest decayed by `exp(−tIoU² / sigma)` and dropped
/// (swapped with the last) when below `threshold`.
fn soft_nms_gaussian(props: &mut Vec<[f64; 3]>, sigma: f64, threshold: f64) {
    let mut n = props.len();
    let mut i = 0;
    while i < n {
        let mut maxpos = i;
        for pos in i + 1..n {
            if props[maxpos][2] < props[pos][2] {
                maxpos = pos;
            }
        }
        props.swap(i, maxpos);
        let [tx, ty, _] = props[i];
        let mut pos = i + 1;
        while pos < n {
            let [x, y, s] = props[pos];
            let inter = (y.min(ty) - x.max(tx)).max(0.0);
            let overlap = inter / (y - x + ty - tx - inter);
            props[pos][2] = (-(overlap * overlap) / sigma).exp() * s;
            if props[pos][2] < threshold {
                props[pos] = props[n - 1];
                n -= 1;
            } else {
                pos += 1;
            }
        }
        i += 1;
    }
    props.truncate(n);
}

/// `BoxCoder.decode` for one video: `loc` [A, 2] offsets, `probs` [A, K] class probabilities
/// (softmax, class 0 the background). Scores compare with the threshold in float32 (numpy 2
/// compares a float32 array with a Python float so). Per class k ≥ 1 in order, detections labelled k − 1, boxes
/// in input steps; when no class scores above the threshold, the reference's stand-in
/// ([0, 1], label 1, score 1).
pub fn ctcn_detections(loc: &[f32], probs: &[f32], spec: &CtcnSpec) -> Vec<(f64, f64, f64, usize)> {
    let anchors = default_boxes(spec);
    let k = spec.num_classes;
    let boxes: Vec<(f64, f64)> = anchors
        .iter()
        .enumerate()
        .map(|(a, &(cy, w))| {
            let y = loc[2 * a] as f64 * 0.1 * w + cy;
            let h = (loc[2 * a + 1] as f64 * 0.2 + 1.0) * w;
            (y - h / 2.0, y + h / 2.0)
        })
        .collect();
    let mut out = Vec::new();
    for class in 1..k {
        let idx: Vec<usize> =
            (0..anchors.len()).filter(|&a| probs[a * k + class] > spec.score_thresh as f32).collect();
        if idx.is_empty() {
            continue;
        }
        let b: Vec<(f64, f64)> = idx.iter().map(|&a| boxes[a]).collect();
        let s: Vec<f32> = idx.iter().map(|&a| probs[a * k + class]).collect();
        let mut rows: Vec<[f64; 3]> =
            box_nms(&b, &s, spec.nms_thresh).into_iter().map(|i| [b[i].0, b[i].1, s[i] as f64]).collect();
        soft_nms_gaussian(&mut rows, spec.sigma_thresh, spec.soft_thresh);
        out.extend(rows.into_iter().map(|[x0, x1, sc]| (x0, x1, sc, class - 1)));
    }
    if out.is_empty() {
        out.push((0.0, 1.0, 1.0, 1));
    }
    out
}

/// Detections as `detection_metrics.py` writes them, best first, at most `top`: segments
/// [max(0, d · start / 512), min(d, d · end / 512)] for a video of `duration` d seconds (1 keeps
/// the [0, 1] scale), with the class index. A box wholly outside the video, which the reference
/// writes as an inverted segment (its start is not clipped), is left out.
pub fn ctcn_segments(
    dets: &[(f64, f64, f64, usize)],
    img_size: usize,
    duration: f64,
    top: usize,
) -> Vec<Proposal> {
    let scale = img_size as f64;
    let mut props: Vec<Proposal> = dets
        .iter()
        .map(|&(x0, x1, score, label)| Proposal {
            xmin: (duration * x0 / scale).max(0.0),
            xmax: (duration * x1 / scale).min(duration),
            score,
            label: Some(label),
        })
        .filter(|p| p.xmin < p.xmax)
        .collect();
    props.sort_by(|a, b| b.score.total_cmp(&a.score));
    props.truncate(top);
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_the_box_coders() {
        let boxes = default_boxes(&CtcnSpec::default());
        assert_eq!(boxes.len(), 1785);
        // Level 0, step 0: stride 4, widths 4, 4 ∓ 0.4, ∓ 0.8, ∓ 1.2.
        let w: Vec<f64> = boxes[..7].iter().map(|b| b.1).collect();
        let want = [4.0, 3.6, 4.4, 3.2, 4.8, 2.8, 5.2];
        assert!(w.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{w:?}");
        assert_eq!(boxes[0].0, 2.0);
        // The last level: one step at 256, all seven narrower than 512.
        let last = &boxes[1778..];
        assert!(last.iter().all(|b| b.0 == 256.0 && b.1 <= 512.0));
        assert!((last[2].1 - (512.0 - 51.2 - 25.6)).abs() < 1e-9);
    }

    #[test]
    fn soft_nms_decays_and_drops() {
        let mut rows = vec![[0.0, 10.0, 0.5], [0.0, 10.0, 0.9], [20.0, 30.0, 0.3]];
        soft_nms_gaussian(&mut rows, 0.5, 0.01);
        // the identical box decays to 0.5 · e^-2 = 0.068; the disjoint one keeps 0.3
        assert_eq!(rows[0], [0.0, 10.0, 0.9]);
        assert_eq!(rows.len(), 3);
        let mut rows = vec![[0.0, 10.0, 0.5], [0.0, 10.0, 0.9]];
        soft_nms_gaussian(&mut rows, 0.5, 0.1);
        assert_eq!(rows, [[0.0, 10.0, 0.9]]);
    }
}
