//! Temporal grounding recall: R@k at IoU m, the fraction of queries whose best k candidate
//! segments include one that overlaps the query's ground-truth segment by at least m.
//!
//! Two references, which differ on purpose and are both kept:
//! - TALL ([`GroundingProtocol::Tall`]): `compute_IoU_recall_top_n_forreg` in jiyanggao/TALL
//!   `main.py`, restated unchanged in PaddlePaddle/models release/1.8
//!   `PaddleCV/video/metrics/tall_metrics/tall_metrics.py`. The candidates first pass through
//!   `nms_temporal` at IoU `m - 0.05` (ranked by score, a candidate whose plain IoU with a kept
//!   one exceeds that is dropped), then the first k kept ones are compared with `iou >= m`.
//! - MMAction2 ([`GroundingProtocol::Mmaction2`]): `RecallatTopK` in
//!   `mmaction/evaluation/metrics/video_grounding_metric.py`: the first k candidates as listed,
//!   no NMS, `iou > m`.
//!
//! Both measure a candidate against the ground truth with the same `calculate_IoU`, whose
//! "union" is the hull of the two segments: `(min(e0, e1) - max(s0, s1)) / (max(e0, e1) -
//! min(s0, s1))`, negative for disjoint segments. Recall divides by every query, including
//! those without candidates (which count as misses, as an empty row of scores would there).

/// R@k is reported for these k (the references' `top_n` 1, 5, 10).
pub const TOP_K: [usize; 3] = [1, 5, 10];
/// ... at these IoU thresholds (PaddlePaddle's TALL `IoU_thresh`).
pub const IOU_THRESHOLDS: [f64; 4] = [0.1, 0.3, 0.5, 0.7];

/// Which reference's rules decide a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroundingProtocol {
    /// TALL / PaddlePaddle: temporal NMS at m - 0.05, then `iou >= m`.
    Tall,
    /// MMAction2 `RecallatTopK`: no NMS, candidates in their listed order, `iou > m`.
    Mmaction2,
}

/// One query: its candidates `[t0, t1, score]` (best first as written; TALL re-ranks by score)
/// and its ground-truth segment.
#[derive(Clone, Debug, PartialEq)]
pub struct GroundingQuery {
    pub candidates: Vec<[f64; 3]>,
    pub gt: (f64, f64),
}

/// `calculate_IoU(i0, i1)` of both references: intersection over the hull of the two segments.
pub fn hull_iou(i0: (f64, f64), i1: (f64, f64)) -> f64 {
    // Python's min/max over two floats: min(a, b) is b only when b < a.
    let (u0, u1) = (py_min(i0.0, i1.0), py_max(i0.1, i1.1));
    let (n0, n1) = (py_max(i0.0, i1.0), py_min(i0.1, i1.1));
    1.0 * (n1 - n0) / (u1 - u0)
}

fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// TALL's `nms_temporal(x1, x2, sim, overlap)`: indices of the kept candidates, best first.
/// Python's stable ascending sort puts the highest score last and, among equal scores, the
/// later-listed candidate last, so that one is kept first. A candidate survives a kept one when
/// their plain IoU (`inter / (len_i + len_j - inter)`, IEEE division: 0/0 is NaN, which
/// suppresses) is at most `overlap`.
pub fn nms_temporal(x1: &[f64], x2: &[f64], sim: &[f64], overlap: f64) -> Vec<usize> {
    assert!(x1.len() == sim.len() && x2.len() == sim.len());
    let union: Vec<f64> = x1.iter().zip(x2).map(|(a, b)| b - a).collect();
    let mut order: Vec<usize> = (0..sim.len()).collect();
    // Scores are finite (checked by the callers), so partial_cmp never fails; sort_by is stable.
    order.sort_by(|&a, &b| sim[a].partial_cmp(&sim[b]).unwrap_or(std::cmp::Ordering::Equal));
    let mut pick = Vec::new();
    while let Some(&i) = order.last() {
        pick.push(i);
        let rest = &order[..order.len() - 1];
        let kept = rest
            .iter()
            .copied()
            .filter(|&j| {
                let xx1 = py_max(x1[i], x1[j]);
                let xx2 = py_min(x2[i], x2[j]);
                let inter = py_max(0.0, xx2 - xx1);
                let o = inter / (union[i] + union[j] - inter);
                o <= overlap
            })
            .collect();
        order = kept;
    }
    pick
}

/// Whether one query is a hit at R@k, IoU m under `protocol`.
pub fn query_hit(q: &GroundingQuery, k: usize, m: f64, protocol: GroundingProtocol) -> bool {
    match protocol {
        GroundingProtocol::Tall => {
            let starts: Vec<f64> = q.candidates.iter().map(|c| c[0]).collect();
            let ends: Vec<f64> = q.candidates.iter().map(|c| c[1]).collect();
            let sim: Vec<f64> = q.candidates.iter().map(|c| c[2]).collect();
            let picks = nms_temporal(&starts, &ends, &sim, m - 0.05);
            picks.iter().take(k).any(|&i| hull_iou(q.gt, (starts[i], ends[i])) >= m)
        }
        GroundingProtocol::Mmaction2 => q.candidates.iter().take(k).any(|c| hull_iou(q.gt, (c[0], c[1])) > m),
    }
}

/// `recall[i][j]`: R@`TOP_K[i]` at IoU `IOU_THRESHOLDS[j]` over `queries`, as a fraction
/// (NaN when there are no queries; callers refuse that case first).
pub fn recall_at(queries: &[GroundingQuery], protocol: GroundingProtocol) -> [[f64; 4]; 3] {
    let mut hits = [[0usize; 4]; 3];
    for q in queries {
        for (j, &m) in IOU_THRESHOLDS.iter().enumerate() {
            if protocol == GroundingProtocol::Tall {
                // One NMS per threshold serves every k (the reference reruns it per k: same picks).
                let starts: Vec<f64> = q.candidates.iter().map(|c| c[0]).collect();
                let ends: Vec<f64> = q.candidates.iter().map(|c| c[1]).collect();
                let sim: Vec<f64> = q.candidates.iter().map(|c| c[2]).collect();
                let picks = nms_temporal(&starts, &ends, &sim, m - 0.05);
                let first_hit = picks.iter().position(|&i| hull_iou(q.gt, (starts[i], ends[i])) >= m);
                for (i, &k) in TOP_K.iter().enumerate() {
                    hits[i][j] += usize::from(first_hit.is_some_and(|p| p < k));
                }
            } else {
                for (i, &k) in TOP_K.iter().enumerate() {
                    hits[i][j] += usize::from(query_hit(q, k, m, protocol));
                }
            }
        }
    }
    let n = queries.len() as f64;
    hits.map(|row| row.map(|h| h as f64 / n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use GroundingProtocol::{Mmaction2, Tall};

    fn q(gt: (f64, f64), candidates: &[[f64; 3]]) -> GroundingQuery {
        GroundingQuery { candidates: candidates.to_vec(), gt }
    }

    #[test]
    fn hull_iou_divides_by_the_hull_and_goes_negative_when_disjoint() {
        // [0, 10] vs [5, 15]: inter 5, hull 15 (the plain union is 15 too).
        assert_eq!(hull_iou((0.0, 10.0), (5.0, 15.0)), 5.0 / 15.0);
        // Disjoint [0, 2] and [4, 6]: (2 - 4) / (6 - 0).
        assert_eq!(hull_iou((0.0, 2.0), (4.0, 6.0)), -2.0 / 6.0);
        assert_eq!(hull_iou((1.0, 3.0), (1.0, 3.0)), 1.0);
    }

    #[test]
    fn iou_exactly_at_the_threshold_is_a_hit_for_tall_and_a_miss_for_mmaction2() {
        // gt [0, 10], candidate [0, 5]: IoU 5 / 10 = 0.5 exactly.
        let qs = [q((0.0, 10.0), &[[0.0, 5.0, 1.0]])];
        let tall = recall_at(&qs, Tall);
        let mm = recall_at(&qs, Mmaction2);
        assert_eq!(tall[0], [1.0, 1.0, 1.0, 0.0]);
        assert_eq!(mm[0], [1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn tall_nms_drops_overlapping_candidates_before_taking_the_top_k() {
        // gt [10, 20]. Candidate 0 (best) [0, 8] misses; candidate 1 [0, 9] overlaps it with IoU
        // 8/9 and is suppressed at every threshold; candidate 2 [10, 19] (IoU 0.9) is disjoint
        // from 0 and survives as the second pick.
        let qs = [q((10.0, 20.0), &[[0.0, 8.0, 0.9], [0.0, 9.0, 0.8], [10.0, 19.0, 0.7]])];
        let tall = recall_at(&qs, Tall);
        assert_eq!(tall[0], [0.0; 4]);
        assert_eq!(tall[1], [1.0; 4]);
        // MMAction2 keeps candidate 1 as its second: the hit is the third, inside R@5 too.
        let mm = recall_at(&qs, Mmaction2);
        assert_eq!(mm[0], [0.0; 4]);
        assert_eq!(mm[1], [1.0; 4]);
        assert_eq!(nms_temporal(&[0.0, 0.0, 10.0], &[8.0, 9.0, 19.0], &[0.9, 0.8, 0.7], 0.45), vec![0, 2]);
    }

    #[test]
    fn nms_threshold_is_m_minus_0_05_and_equal_overlap_survives() {
        // Plain IoU of [0, 10] and [4, 12]: 6 / 12 = 0.5. At m = 0.5 the NMS threshold is 0.45:
        // suppressed; at m = 0.7 (0.65) kept. The candidate order is by score.
        let x1 = [0.0, 4.0];
        let x2 = [10.0, 12.0];
        assert_eq!(nms_temporal(&x1, &x2, &[1.0, 0.5], 0.5 - 0.05), vec![0]);
        assert_eq!(nms_temporal(&x1, &x2, &[1.0, 0.5], 0.7 - 0.05), vec![0, 1]);
        // Overlap equal to the threshold is kept (`o <= overlap`).
        assert_eq!(nms_temporal(&x1, &x2, &[1.0, 0.5], 0.5), vec![0, 1]);
    }

    #[test]
    fn tied_scores_keep_the_later_listed_candidate_first_in_tall() {
        // Python's stable sort of [0.5, 0.5] ascending keeps [0, 1]; the last (1) is picked.
        assert_eq!(nms_temporal(&[0.0, 20.0], &[5.0, 30.0], &[0.5, 0.5], 0.45), vec![1, 0]);
        // So with the hit listed first but tied, TALL's R@1 misses it; MMAction2's takes it.
        let qs = [q((0.0, 5.0), &[[0.0, 5.0, 0.5], [20.0, 30.0, 0.5]])];
        assert_eq!(recall_at(&qs, Tall)[0], [0.0; 4]);
        assert_eq!(recall_at(&qs, Tall)[1], [1.0; 4]);
        assert_eq!(recall_at(&qs, Mmaction2)[0], [1.0; 4]);
    }

    #[test]
    fn no_candidates_and_fewer_than_k_count_over_all_queries() {
        // Query 0 has none (a miss everywhere); query 1 has two, the second a hit at IoU 0.75
        // ([0, 6] vs gt [0, 8]).
        let qs = [q((0.0, 8.0), &[]), q((0.0, 8.0), &[[20.0, 30.0, 2.0], [0.0, 6.0, 1.0]])];
        for p in [Tall, Mmaction2] {
            let r = recall_at(&qs, p);
            assert_eq!(r[0], [0.0; 4], "{p:?}");
            assert_eq!(r[1], [0.5; 4], "{p:?}");
            assert_eq!(r[2], [0.5; 4], "{p:?}");
        }
    }

    #[test]
    fn mmaction2_takes_the_listed_order_and_tall_re_ranks_by_score() {
        // The hit is listed second but scores highest.
        let qs = [q((0.0, 4.0), &[[10.0, 14.0, 0.1], [0.0, 4.0, 0.9]])];
        assert_eq!(recall_at(&qs, Tall)[0], [1.0; 4]);
        assert_eq!(recall_at(&qs, Mmaction2)[0], [0.0; 4]);
    }

    #[test]
    fn identical_zero_length_candidates_suppress_each_other() {
        // inter 0, denominator 0: 0/0 is NaN, and NaN <= overlap is false.
        assert_eq!(nms_temporal(&[3.0, 3.0], &[3.0, 3.0], &[1.0, 0.5], 0.45), vec![0]);
    }
}
