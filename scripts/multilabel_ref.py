#!/usr/bin/env python3
"""Multi-label metrics as their reference implementations compute them, for cross-checking
`veval --multilabel` (bins/tests/veval_multilabel.rs).

    python scripts/multilabel_ref.py PRED.jsonl [--top-k K]

PRED.jsonl: one JSON object per video with "scores" (all classes) and "labels" (positive class
ids; else "label", an int or a list). Prints one JSON object: gap, hit1, perr, map, videos,
classes. Needs numpy only.

Restated step by step (same operations, same order) from:
- google/youtube-8m eval_util.py: calculate_hit_at_one, calculate_precision_at_equal_recall_rate,
  calculate_gap, top_k_by_class, top_k_triplets, flatten;
- google/youtube-8m average_precision_calculator.py: AveragePrecisionCalculator.accumulate,
  peek_ap_at_n, ap_at_n, _shuffle (top_n=None, as calculate_gap builds it);
- open-mmlab/mmaction2 mmaction/evaluation/functional/accuracy.py: mean_average_precision,
  binary_precision_recall_curve.
Scores are cast to float32, as model outputs are and as veval reads them.
"""
import argparse
import heapq
import json
import random
import sys

import numpy


# --- youtube-8m eval_util.py ------------------------------------------------------------------

def hit_at_one(predictions, actuals):
    top_prediction = numpy.argmax(predictions, 1)
    hits = actuals[numpy.arange(actuals.shape[0]), top_prediction]
    return numpy.average(hits)


def precision_at_equal_recall_rate(predictions, actuals):
    aggregated_precision = 0.0
    num_videos = actuals.shape[0]
    for row in numpy.arange(num_videos):
        num_labels = int(numpy.sum(actuals[row]))
        top_indices = numpy.argpartition(predictions[row], -num_labels)[-num_labels:]
        item_precision = 0.0
        for label_index in top_indices:
            if predictions[row][label_index] > 0:
                item_precision += actuals[row][label_index]
        item_precision /= top_indices.size
        aggregated_precision += item_precision
    return aggregated_precision / num_videos


def top_k_by_class(predictions, labels, k):
    if k <= 0:
        raise ValueError("k must be a positive integer.")
    k = min(k, predictions.shape[1])
    num_classes = predictions.shape[1]
    triplets = []
    for video in range(predictions.shape[0]):
        indices = numpy.argpartition(predictions[video], -k)[-k:]
        triplets.extend((i, predictions[video][i], labels[video][i]) for i in indices)
    out_predictions = [[] for _ in range(num_classes)]
    out_labels = [[] for _ in range(num_classes)]
    for cls, pred, label in triplets:
        out_predictions[cls].append(pred)
        out_labels[cls].append(label)
    out_true_positives = [numpy.sum(labels[:, i]) for i in range(num_classes)]
    return out_predictions, out_labels, out_true_positives


def gap(predictions, actuals, top_k):
    sparse_predictions, sparse_labels, num_positives = top_k_by_class(predictions, actuals, top_k)
    flat_predictions = [p for per_class in sparse_predictions for p in per_class]
    flat_labels = [a for per_class in sparse_labels for a in per_class]
    return pooled_ap(flat_predictions, flat_labels, sum(num_positives))


# --- youtube-8m average_precision_calculator.py (top_n=None) ----------------------------------

def pooled_ap(predictions, actuals, num_positives):
    # accumulate(): every pair goes onto the heap (no top_n), positives counted as given.
    heap = []
    for i in range(numpy.size(predictions)):
        heapq.heappush(heap, (predictions[i], actuals[i]))
    # peek_ap_at_n()
    if len(heap) <= 0:
        return 0
    predlists = numpy.array(list(zip(*heap)))
    return ap_at_n(predlists[0], predlists[1], num_positives)


def ap_at_n(predictions, actuals, total_num_positives):
    # ap_at_n(n=None): _shuffle, then a stable descending sort by score.
    random.seed(0)
    shuffle = random.sample(range(len(predictions)), len(predictions))
    predictions, actuals = predictions[shuffle], actuals[shuffle]
    sortidx = sorted(range(len(predictions)), key=lambda k: predictions[k], reverse=True)
    numpos = total_num_positives
    if numpos == 0:
        return 0
    delta_recall = 1.0 / numpos
    poscount = 0.0
    ap = 0.0
    for i in range(len(sortidx)):
        if actuals[sortidx[i]] > 0:
            poscount += 1
            ap += poscount / (i + 1) * delta_recall
    return ap


# --- mmaction2 mmaction/evaluation/functional/accuracy.py -------------------------------------

def binary_precision_recall_curve(y_score, y_true):
    y_true = y_true == 1
    desc_score_indices = numpy.argsort(y_score, kind="mergesort")[::-1]
    y_score = y_score[desc_score_indices]
    y_true = y_true[desc_score_indices]
    distinct_value_inds = numpy.where(numpy.diff(y_score))[0]
    threshold_inds = numpy.r_[distinct_value_inds, y_true.size - 1]
    tps = numpy.cumsum(y_true)[threshold_inds]
    fps = 1 + threshold_inds - tps
    precision = tps / (tps + fps)
    precision[numpy.isnan(precision)] = 0
    with numpy.errstate(invalid="ignore", divide="ignore"):  # 0/0 for a class without positives
        recall = tps / tps[-1]
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    return numpy.r_[precision[sl], 1], numpy.r_[recall[sl], 0]


def mean_average_precision(scores, labels):
    results = []
    for score, label in zip(numpy.stack(scores).T, numpy.stack(labels).T):
        precision, recall = binary_precision_recall_curve(score, label)
        results.append(-numpy.sum(numpy.diff(recall) * numpy.array(precision)[:-1]))
    results = [x for x in results if not numpy.isnan(x)]
    if results == []:
        return numpy.nan
    return numpy.mean(results)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pred")
    ap.add_argument("--top-k", type=int, default=20)
    args = ap.parse_args()
    records = [json.loads(line) for line in open(args.pred) if line.strip()]
    predictions = numpy.array([r["scores"] for r in records], dtype=numpy.float32)
    actuals = numpy.zeros(predictions.shape, dtype=numpy.int64)
    for row, r in enumerate(records):
        truth = r["labels"] if "labels" in r else r["label"]
        actuals[row, truth if isinstance(truth, list) else [truth]] = 1
    mAP = mean_average_precision(list(predictions), list(actuals))
    json.dump(
        {
            "gap": float(gap(predictions, actuals, args.top_k)),
            "hit1": float(hit_at_one(predictions, actuals)),
            "perr": float(precision_at_equal_recall_rate(predictions, actuals)),
            "map": None if numpy.isnan(mAP) else float(mAP),
            "videos": predictions.shape[0],
            "classes": predictions.shape[1],
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
