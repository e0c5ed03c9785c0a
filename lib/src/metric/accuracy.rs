//! Single-label classification metrics, exactly as mmaction2
//! `mmaction/evaluation/functional/accuracy.py` (`top_k_accuracy`, `mean_class_accuracy`,
//! `confusion_matrix`), including its edge cases:
//! - `top_k_accuracy` with `k` at least the number of classes counts every in-range label as a hit
//!   (numpy `argsort(scores)[:, -k:]` keeps all columns); so does `k == 0`, because `[:, -0:]` is
//!   the whole row. A label outside the score vector is never a hit.
//! - `mean_class_accuracy` averages over the classes in the union of the true labels and the
//!   argmax predictions: a class that is only ever predicted counts, with accuracy 0.0.
//! - No samples: the ratios are 0/0 and come back NaN, as numpy's.
//!
//! Ties: classes with equal scores rank by lower class index first (see
//! [`crate::stream::prediction::cmp_rank`]). numpy's `argmax` also takes the first maximum, so
//! argmax-based results match the reference exactly; its `argsort` leaves the order of ties
//! unspecified (for short rows it is in practice stable, and the reversed slice then puts the
//! *higher* index first, so mmaction2's top-1 can disagree with its own argmax). A reference top-k
//! count can differ from ours only when a tie straddles the k-th place; ours keeps top-1 equal to
//! the argmax used by `mean_class_accuracy` and the confusion matrix.

use crate::stream::prediction::{cmp_rank, top_classes};
use std::cmp::Ordering;

/// Whether `label` is among the `k` best classes of `row` (ties: lower index first).
fn in_top_k(row: &[f32], label: usize, k: usize) -> bool {
    if label >= row.len() {
        return false;
    }
    // mmaction2: `argsort(scores)[:, -k:]`; with k == 0 the slice `-0:` keeps every class.
    if k == 0 || k >= row.len() {
        return true;
    }
    let ahead =
        row.iter().enumerate().filter(|&(j, &s)| cmp_rank(j, s, label, row[label]) == Ordering::Less).count();
    ahead < k
}

/// Fraction of samples whose label is among the `k` highest-scored classes.
///
/// mmaction2 `top_k_accuracy(scores, labels, topk=(k,))`. Panics when `scores` and `labels`
/// differ in length.
pub fn top_k_accuracy(scores: &[Vec<f32>], labels: &[usize], k: usize) -> f64 {
    assert_eq!(
        scores.len(),
        labels.len(),
        "top_k_accuracy: {} score rows, {} labels",
        scores.len(),
        labels.len()
    );
    let hits = scores.iter().zip(labels).filter(|&(row, &l)| in_top_k(row, l, k)).count();
    hits as f64 / labels.len() as f64
}

/// The argmax class of each score row (the first maximum, as numpy). Panics on an empty row, where
/// numpy's `argmax` raises.
pub fn argmax_classes(scores: &[Vec<f32>]) -> Vec<usize> {
    scores
        .iter()
        .map(|row| {
            assert!(!row.is_empty(), "argmax of an empty score row");
            top_classes(row, 1)[0]
        })
        .collect()
}

/// The confusion matrix of predicted against true classes: the sorted class ids present in either
/// (`np.unique(concatenate((pred, real)))`), and counts with rows = true, columns = predicted,
/// both indexed by position in that id list. mmaction2 `confusion_matrix(y_pred, y_real)` with
/// `normalize=None`. Panics when the two differ in length.
pub fn confusion_matrix(pred: &[usize], real: &[usize]) -> (Vec<usize>, Vec<Vec<usize>>) {
    assert_eq!(pred.len(), real.len(), "confusion_matrix: {} predictions, {} labels", pred.len(), real.len());
    let mut classes: Vec<usize> = pred.iter().chain(real).copied().collect();
    classes.sort_unstable();
    classes.dedup();
    let pos = |c: usize| classes.binary_search(&c).expect("class is in the union");
    let mut matrix = vec![vec![0usize; classes.len()]; classes.len()];
    for (&p, &r) in pred.iter().zip(real) {
        matrix[pos(r)][pos(p)] += 1;
    }
    (classes, matrix)
}

/// Mean over classes of per-class top-1 accuracy (hits / samples of that true class), over the
/// union of true and predicted classes; a class with no true samples contributes 0.0.
///
/// mmaction2 `mean_class_accuracy(scores, labels)`.
pub fn mean_class_accuracy(scores: &[Vec<f32>], labels: &[usize]) -> f64 {
    assert_eq!(
        scores.len(),
        labels.len(),
        "mean_class_accuracy: {} score rows, {} labels",
        scores.len(),
        labels.len()
    );
    let pred = argmax_classes(scores);
    let (_, matrix) = confusion_matrix(&pred, labels);
    if matrix.is_empty() {
        return f64::NAN; // np.mean([])
    }
    let per_class = matrix.iter().enumerate().map(|(i, row)| {
        let count: usize = row.iter().sum();
        if count == 0 {
            0.0
        } else {
            row[i] as f64 / count as f64
        }
    });
    per_class.sum::<f64>() / matrix.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five samples over three classes with ties; expected values worked by hand below.
    fn tied() -> (Vec<Vec<f32>>, Vec<usize>) {
        let scores = vec![
            vec![0.1, 0.5, 0.4], // label 2: rank 1,2,0 -> top1 miss, top2 hit
            vec![0.3, 0.3, 0.3], // label 1: all tied, rank 0,1,2 -> top1 miss, top2 hit
            vec![0.6, 0.2, 0.6], // label 2: tie 0/2, rank 0,2,1 -> top1 miss, top2 hit
            vec![0.2, 0.7, 0.1], // label 1: top1 hit
            vec![0.5, 0.3, 0.2], // label 2: rank 0,1,2 -> top2 miss, top3 hit
        ];
        (scores, vec![2, 1, 2, 1, 2])
    }

    #[test]
    fn top_k_with_ties_ranks_lower_class_first() {
        let (s, l) = tied();
        assert_eq!(top_k_accuracy(&s, &l, 1), 1.0 / 5.0);
        assert_eq!(top_k_accuracy(&s, &l, 2), 4.0 / 5.0);
        assert_eq!(top_k_accuracy(&s, &l, 3), 1.0);
    }

    #[test]
    fn top_k_larger_than_classes_and_zero_hit_everything_in_range() {
        let (s, l) = tied();
        assert_eq!(top_k_accuracy(&s, &l, 5), 1.0);
        assert_eq!(top_k_accuracy(&s, &l, 100), 1.0);
        // numpy `[:, -0:]` is the whole row.
        assert_eq!(top_k_accuracy(&s, &l, 0), 1.0);
        // A label beyond the score vector never matches an argsort index.
        assert_eq!(top_k_accuracy(&[vec![0.2, 0.8], vec![0.5, 0.5]], &[7, 0], 10), 0.5);
    }

    #[test]
    fn top_k_treats_nan_as_largest_and_empty_as_nan() {
        // numpy sorts NaN last, i.e. at the top of argsort's descending view.
        assert_eq!(top_k_accuracy(&[vec![0.9, f32::NAN, 0.1]], &[1], 1), 1.0);
        assert_eq!(top_k_accuracy(&[vec![0.9, f32::NAN, 0.1]], &[0], 1), 0.0);
        assert!(top_k_accuracy(&[], &[], 1).is_nan());
    }

    #[test]
    fn mean_class_counts_classes_only_predicted_as_zero() {
        // argmax: 1, 0 (tie -> first), 0 (tie -> first), 1, 0; labels 2, 1, 2, 1, 2.
        // Union {0, 1, 2}: class 0 has no true samples -> 0.0; class 1: 1 of 2; class 2: 0 of 3.
        let (s, l) = tied();
        assert_eq!(argmax_classes(&s), vec![1, 0, 0, 1, 0]);
        assert!((mean_class_accuracy(&s, &l) - (0.0 + 0.5 + 0.0) / 3.0).abs() < 1e-12);

        // Labels {0, 3}, predictions {0, 4, 3}: classes 1 and 2 are in neither and do not count;
        // class 4 is only predicted. (1/1 + 1/2 + 0) / 3 = 0.5, not (1 + 0.5) / 2.
        let s =
            vec![vec![0.9, 0.0, 0.0, 0.0, 0.1], vec![0.0, 0.0, 0.0, 0.2, 0.8], vec![0.0, 0.0, 0.0, 0.9, 0.1]];
        assert_eq!(mean_class_accuracy(&s, &[0, 3, 3]), 0.5);
        assert!(mean_class_accuracy(&[], &[]).is_nan());
        // All right: 1.0.
        assert_eq!(mean_class_accuracy(&s, &[0, 4, 3]), 1.0);
    }

    #[test]
    fn confusion_rows_are_true_columns_predicted_over_the_union() {
        let (s, l) = tied();
        let (classes, m) = confusion_matrix(&argmax_classes(&s), &l);
        assert_eq!(classes, vec![0, 1, 2]);
        assert_eq!(m, vec![vec![0, 0, 0], vec![1, 1, 0], vec![2, 1, 0]]);

        // Sparse ids: only 3, 7 and 9 appear; 9 is only predicted, 3 only true.
        let (classes, m) = confusion_matrix(&[7, 9, 7, 9], &[3, 7, 7, 3]);
        assert_eq!(classes, vec![3, 7, 9]);
        assert_eq!(m, vec![vec![0, 1, 1], vec![0, 1, 1], vec![0, 0, 0]]);
        assert_eq!(confusion_matrix(&[], &[]), (vec![], vec![]));
    }
}
