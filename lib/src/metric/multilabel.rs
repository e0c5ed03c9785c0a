//! Multi-label classification metrics, each exactly as its reference:
//! - [`gap`], [`hit_at_one`], [`precision_at_equal_recall_rate`]: google/youtube-8m
//!   `eval_util.py` (`calculate_gap`, `calculate_hit_at_one`,
//!   `calculate_precision_at_equal_recall_rate`) with `average_precision_calculator.py`
//!   (`AveragePrecisionCalculator.accumulate`, `peek_ap_at_n`, `ap_at_n`, `_shuffle`);
//!   PaddleVideo carries identical copies in `paddlevideo/metrics/youtube8m/`.
//! - [`mean_average_precision`]: mmaction2 `mmaction/evaluation/functional/accuracy.py`
//!   (`mean_average_precision`, `binary_precision_recall_curve`).
//!
//! Ground truth is, per video, the list of its positive classes (the reference's many-hot row;
//! a class listed twice is one positive). Every function panics when `scores` and `labels` differ
//! in length or a label is outside its score row; callers check user input first.
//!
//! Edge cases, as the references have them:
//! - A video without positives counts in the denominators of hit@1 and PERR (it scores 0 in
//!   both: PERR's `argpartition(row, -0)[-0:]` takes every class and none is positive).
//! - PERR counts a positive among the top `n` only when its score is `> 0`.
//! - GAP keeps the `min(k, classes)` best classes of each video, but divides by *all* positives
//!   (`sum(num_positives)` over the whole label matrix), so positives outside the top k lower it.
//!   With no positives at all, or no videos, it is 0.
//! - mAP skips classes without positives (their AP is `0/0 = NaN`, filtered out); NaN when no
//!   class has any.
//!
//! Ties:
//! - hit@1 takes numpy's `argmax`, the first maximum: we do the same.
//! - GAP and PERR choose the top k (or n) classes of a video with numpy `argpartition`, which
//!   leaves unspecified which of equal scores straddling the k-th place get in (introselect, and
//!   SIMD variants on some CPUs). We take the lower class index first, as everywhere in vidkit
//!   ([`crate::stream::prediction::cmp_rank`]); only such boundary ties can differ.
//! - GAP's global ranking does *not* use a numpy sort: `ap_at_n` shuffles the pooled entries with
//!   `random.seed(0); random.sample(...)` and then sorts with Python's stable `sorted(...,
//!   reverse=True)`, so equal scores keep the shuffled order. That order is deterministic: the
//!   entries are pooled class by class, each class in video order (`flatten(top_k_by_class)`),
//!   pushed onto a `heapq` of `(score, label)` tuples, read back in heap-array order, and
//!   permuted by CPython's seeded generator. We replay each step ([`PythonRandom`] for the
//!   generator), so GAP matches the reference on ties too, not just on distinct scores.
//! - mAP groups equal scores into one threshold (`np.diff(y_score)` nonzero), so their order
//!   does not matter.
//!
//! Scores must not be NaN (the references' orderings of NaN are arbitrary); `veval` rejects them.

use super::python_random::PythonRandom;
use crate::stream::prediction::top_classes;
use std::cmp::Ordering;

/// Each video's positive classes, sorted and without repeats (a many-hot row, sparsely).
fn positive_sets(scores: &[Vec<f32>], labels: &[Vec<usize>], what: &str) -> Vec<Vec<usize>> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "{what}: {} score rows, {} label lists",
        scores.len(),
        labels.len()
    );
    scores
        .iter()
        .zip(labels)
        .map(|(row, ls)| {
            let mut set = ls.clone();
            set.sort_unstable();
            set.dedup();
            if let Some(&last) = set.last() {
                assert!(last < row.len(), "{what}: label {last} is outside a row of {} scores", row.len());
            }
            set
        })
        .collect()
}

/// youtube-8m `calculate_hit_at_one`: the fraction of videos whose highest-scored class (the
/// first maximum) is a positive. NaN without videos.
pub fn hit_at_one(scores: &[Vec<f32>], labels: &[Vec<usize>]) -> f64 {
    let sets = positive_sets(scores, labels, "hit_at_one");
    let hits = scores
        .iter()
        .zip(&sets)
        .filter(|(row, set)| {
            assert!(!row.is_empty(), "hit_at_one: argmax of an empty score row");
            set.binary_search(&top_classes(row, 1)[0]).is_ok()
        })
        .count();
    hits as f64 / scores.len() as f64
}

/// youtube-8m `calculate_precision_at_equal_recall_rate`: per video with `n` positives, the
/// fraction of its `n` best classes that are positive *and* scored above 0; averaged over all
/// videos (0 for a video without positives). NaN without videos.
pub fn precision_at_equal_recall_rate(scores: &[Vec<f32>], labels: &[Vec<usize>]) -> f64 {
    let sets = positive_sets(scores, labels, "precision_at_equal_recall_rate");
    let total: f64 = scores
        .iter()
        .zip(&sets)
        .map(|(row, set)| {
            if set.is_empty() {
                return 0.0;
            }
            let hits = top_classes(row, set.len())
                .into_iter()
                .filter(|&c| row[c] > 0.0 && set.binary_search(&c).is_ok())
                .count();
            hits as f64 / set.len() as f64
        })
        .sum();
    total / scores.len() as f64
}

/// One pooled (score, actual) pair of the GAP calculator; `actual` is the 0/1 label.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Scored {
    score: f64,
    positive: bool,
}

impl Scored {
    /// Python's `(score, actual) < (score, actual)` on tuples: by score, then by label.
    fn lt(self, other: Scored) -> bool {
        self.score < other.score || (self.score == other.score && !self.positive && other.positive)
    }
}

/// CPython `heapq.heappush` (`_siftdown` from the root): the new item climbs while smaller than
/// its parent.
fn heap_push(heap: &mut Vec<Scored>, item: Scored) {
    heap.push(item);
    let mut pos = heap.len() - 1;
    while pos > 0 {
        let parent = (pos - 1) >> 1;
        if !item.lt(heap[parent]) {
            break;
        }
        heap[pos] = heap[parent];
        pos = parent;
    }
    heap[pos] = item;
}

/// youtube-8m `AveragePrecisionCalculator`: `accumulate(entries, num_positives)` on a calculator
/// without `top_n`, then `peek_ap_at_n()`: non-interpolated AP of the whole pooled list, with
/// `total_positives` as the recall denominator.
fn pooled_average_precision(entries: impl IntoIterator<Item = Scored>, total_positives: usize) -> f64 {
    let mut heap = Vec::new();
    for e in entries {
        heap_push(&mut heap, e);
    }
    if heap.is_empty() || total_positives == 0 {
        return 0.0;
    }
    // `_shuffle`: predictions[suffidx] with suffidx = random.sample(range(n), n) after seed(0).
    let perm = PythonRandom::seed(0).sample_permutation(heap.len());
    let mut ranked: Vec<Scored> = perm.into_iter().map(|i| heap[i]).collect();
    // `sorted(..., reverse=True)` is stable: equal scores keep the shuffled order.
    ranked.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal));
    let delta_recall = 1.0 / total_positives as f64;
    let mut poscount = 0.0;
    let mut ap = 0.0;
    for (i, e) in ranked.iter().enumerate() {
        if e.positive {
            poscount += 1.0;
            ap += poscount / (i + 1) as f64 * delta_recall;
        }
    }
    ap
}

/// Global average precision over the `top_k` best classes of every video (GAP@k), youtube-8m
/// `calculate_gap(predictions, actuals, top_k)`. Panics when `top_k` is 0 (the reference raises
/// `ValueError`).
pub fn gap(scores: &[Vec<f32>], labels: &[Vec<usize>], top_k: usize) -> f64 {
    assert!(top_k > 0, "gap: top_k must be a positive integer");
    let sets = positive_sets(scores, labels, "gap");
    let total_positives = sets.iter().map(Vec::len).sum();
    // `top_k_by_class` then `flatten`: class by class, each class in video order.
    let mut pooled: Vec<(usize, usize, Scored)> = Vec::new();
    for (video, (row, set)) in scores.iter().zip(&sets).enumerate() {
        for class in top_classes(row, top_k) {
            let positive = set.binary_search(&class).is_ok();
            pooled.push((class, video, Scored { score: f64::from(row[class]), positive }));
        }
    }
    pooled.sort_unstable_by_key(|&(class, video, _)| (class, video));
    pooled_average_precision(pooled.into_iter().map(|(_, _, e)| e), total_positives)
}

/// mmaction2 `binary_precision_recall_curve` + `-sum(diff(recall) * precision[:-1])`: AP of one
/// class over all videos, summing precision × recall gain at each distinct score threshold from
/// the top until every positive is recalled. `None` (the reference's NaN) without positives.
fn class_average_precision(mut column: Vec<(f32, bool)>) -> Option<f64> {
    let positives = column.iter().filter(|&&(_, p)| p).count();
    if positives == 0 {
        return None;
    }
    // Descending; the order within equal scores cannot change the result (one threshold).
    column.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal));
    let (mut tps, mut last_recall, mut ap) = (0usize, 0.0, 0.0);
    for i in 0..column.len() {
        tps += usize::from(column[i].1);
        // A threshold ends where `np.diff(y_score)` is nonzero (float32 difference, as numpy's),
        // or at the last entry.
        let at_threshold = i + 1 == column.len() || column[i + 1].0 - column[i].0 != 0.0;
        if at_threshold {
            let precision = tps as f64 / (i + 1) as f64;
            let recall = tps as f64 / positives as f64;
            ap += (recall - last_recall) * precision;
            last_recall = recall;
            if tps == positives {
                break; // "stop when full recall attained"
            }
        }
    }
    Some(ap)
}

/// Mean over classes of per-class average precision, mmaction2
/// `mean_average_precision(scores, labels)`; classes without positives are skipped. Returns the
/// mean and how many classes it averages (NaN and 0 when no class has positives).
pub fn mean_average_precision(scores: &[Vec<f32>], labels: &[Vec<usize>]) -> (f64, usize) {
    let sets = positive_sets(scores, labels, "mean_average_precision");
    let classes = scores.first().map_or(0, Vec::len);
    let aps: Vec<f64> = (0..classes)
        .filter_map(|c| {
            let column =
                scores.iter().zip(&sets).map(|(row, set)| (row[c], set.binary_search(&c).is_ok())).collect();
            class_average_precision(column)
        })
        .collect();
    if aps.is_empty() {
        return (f64::NAN, 0);
    }
    (aps.iter().sum::<f64>() / aps.len() as f64, aps.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Three videos, four classes, no ties. v2 has no positives; class 2 has none either.
    ///
    /// | video | scores (c0 c1 c2 c3)   | positives | argmax |
    /// |-------|------------------------|-----------|--------|
    /// | v0    | .90 .10 .60 .30        | 0, 3      | 0 (+)  |
    /// | v1    | .20 .80 .40 .70        | 1         | 1 (+)  |
    /// | v2    | .50 .05 .35 .45        | -         | 0 (-)  |
    fn case() -> (Vec<Vec<f32>>, Vec<Vec<usize>>) {
        let scores =
            vec![vec![0.90, 0.10, 0.60, 0.30], vec![0.20, 0.80, 0.40, 0.70], vec![0.50, 0.05, 0.35, 0.45]];
        (scores, vec![vec![0, 3], vec![1], vec![]])
    }

    #[test]
    fn gap_divides_by_all_positives_and_caps_k_at_the_classes() {
        let (s, l) = case();
        // k = 2 keeps v0: c0 .9+, c2 .6-; v1: c1 .8+, c3 .7-; v2: c0 .5-, c3 .45-.
        // Ranked: .9+ .8+ .7- .6- .5- .45-; 3 positives in all (v0's c3 is never retrieved):
        // AP = (1/1 + 2/2) / 3 = 2/3.
        assert!(close(gap(&s, &l, 2), 2.0 / 3.0));
        // k = 4 keeps everything: .9+ .8+ .7- .6- .5- .45- .4- .35- .3+ ...: the third positive
        // is at rank 9. AP = (1 + 1 + 3/9) / 3 = 7/9; k = 20 > 4 classes is the same as k = 4.
        assert!(close(gap(&s, &l, 4), 7.0 / 9.0));
        assert!(close(gap(&s, &l, 20), 7.0 / 9.0));
        // k = 1: .9+ .8+ .5-: (1 + 1) / 3.
        assert!(close(gap(&s, &l, 1), 2.0 / 3.0));
    }

    #[test]
    fn gap_orders_ties_as_the_reference_heap_and_seeded_shuffle() {
        // One class, four videos all scored .5, positives v0 and v1, k = 1. Pooled in video
        // order, labels 1 1 0 0. heappush on (score, label) tuples:
        //   [1] -> [1 1] -> 0 climbs over the root: [0 1 1] -> 0 climbs over slot 1 (1) but not
        //   the root (0): [0 0 1 1].
        // random.seed(0); random.sample(range(4), 4) == [3, 1, 0, 2] (CPython 3.11), so the
        // shuffled labels are heap[3] heap[1] heap[0] heap[2] = 1 0 0 1, and the stable sort
        // keeps them. AP = (1/1 + 2/4) / 2 = 0.75 (input order would give 1.0).
        let s = vec![vec![0.5f32]; 4];
        let l = vec![vec![0], vec![0], vec![], vec![]];
        assert!(close(gap(&s, &l, 1), 0.75));
        // Two videos tied, only the second positive: heap [0 1], sample(range(2), 2) == [1, 0]
        // puts the positive first: AP = 1.
        assert!(close(gap(&s[..2], &[vec![], vec![0]], 1), 1.0));
    }

    #[test]
    fn gap_boundary_ties_take_the_lower_class_and_degenerate_cases_are_zero() {
        // Classes 0 and 1 tie for the single place; class 0 (negative) gets it: AP 0 of 1 positive.
        assert_eq!(gap(&[vec![0.5, 0.5, 0.1]], &[vec![1]], 1), 0.0);
        assert!(close(gap(&[vec![0.5, 0.5, 0.1]], &[vec![0]], 1), 1.0));
        assert_eq!(gap(&[vec![0.5, 0.2]], &[vec![]], 1), 0.0); // no positives
        assert_eq!(gap(&[], &[], 20), 0.0); // no videos: empty heap
    }

    #[test]
    fn hit_at_one_takes_the_first_maximum_and_counts_videos_without_positives() {
        let (s, l) = case();
        assert!(close(hit_at_one(&s, &l), 2.0 / 3.0)); // v0 and v1 hit, v2 cannot
        assert_eq!(hit_at_one(&[vec![0.5, 0.5]], &[vec![1]]), 0.0);
        assert_eq!(hit_at_one(&[vec![0.5, 0.5]], &[vec![0, 0]]), 1.0);
        assert!(hit_at_one(&[], &[]).is_nan());
    }

    #[test]
    fn perr_takes_as_many_classes_as_positives_and_needs_positive_scores() {
        let (s, l) = case();
        // v0: 2 positives, top 2 = c0 (+), c2 (-): 1/2. v1: top 1 = c1 (+): 1. v2: none: 0.
        assert!(close(precision_at_equal_recall_rate(&s, &l), (0.5 + 1.0 + 0.0) / 3.0));
        // The positive is ranked first but scored -0.2: `predictions[...] > 0` fails.
        assert_eq!(precision_at_equal_recall_rate(&[vec![-0.2, -0.5]], &[vec![0]]), 0.0);
        assert_eq!(precision_at_equal_recall_rate(&[vec![0.0, -0.5]], &[vec![0]]), 0.0);
        // Boundary tie: c0 and c1 tie for the one place; c0 wins, so the positive c1 misses.
        assert_eq!(precision_at_equal_recall_rate(&[vec![0.5, 0.5, 0.1]], &[vec![1]]), 0.0);
    }

    #[test]
    fn map_skips_classes_without_positives_and_groups_ties() {
        let (s, l) = case();
        // c0: .9+ .5- .2-: AP 1. c1: .8+ first: 1. c2: no positives, skipped.
        // c3: .7- .45- .3+: one threshold step at rank 3, precision 1/3, recall 1: AP 1/3.
        let (map, n) = mean_average_precision(&s, &l);
        assert!(close(map, (1.0 + 1.0 + 1.0 / 3.0) / 3.0) && n == 3, "{map} {n}");
        // Tied scores are one threshold: .5+ .5- .2+ -> at .5: tps 1 of 2 ranked, recall 1/2;
        // at .2: tps 2 of 3, recall 1. AP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12, whatever the order.
        let col = vec![vec![0.5f32], vec![0.5], vec![0.2]];
        assert!(close(mean_average_precision(&col, &[vec![0], vec![], vec![0]]).0, 7.0 / 12.0));
        assert!(close(mean_average_precision(&col, &[vec![], vec![0], vec![0]]).0, 7.0 / 12.0));
        let (none, n) = mean_average_precision(&col, &[vec![], vec![], vec![]]);
        assert!(none.is_nan() && n == 0);
    }

    #[test]
    #[should_panic(expected = "label 4 is outside a row of 4 scores")]
    fn labels_outside_the_row_panic() {
        gap(&[vec![0.1, 0.2, 0.3, 0.4]], &[vec![4]], 20);
    }
}
