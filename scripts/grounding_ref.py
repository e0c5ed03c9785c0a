"""Expected grounding recall for bins/tests/veval_grounding.rs: the two reference functions,
restated as written (numpy float64 as their inputs are), over random queries.

    python scripts/grounding_ref.py --out DIR

Writes DIR/pred.jsonl ({"query_id", "video", "candidates", "gt"} lines; candidates rounded to
halves of a second so that ties and IoUs exactly at a threshold occur) and DIR/expected.json
({"tall": {k: {m: r}}, "mmaction2": ...}).

tall: jiyanggao/TALL main.py and PaddlePaddle/models release/1.8
PaddleCV/video/metrics/tall_metrics/tall_metrics.py (nms_temporal, calculate_IoU,
compute_IoU_recall_top_n_forreg). mmaction2: mmaction/evaluation/metrics/
video_grounding_metric.py (RecallatTopK.compute_metrics, calculate_IoU).
"""
import argparse
import json
import operator
import os

import numpy as np


def nms_temporal(x1, x2, sim, overlap):
    pick = []
    if len(x1) == 0:
        return pick
    union = list(map(operator.sub, x2, x1))
    I = [i[0] for i in sorted(enumerate(sim), key=lambda x: x[1])]
    while len(I) > 0:
        i = I[-1]
        pick.append(i)
        xx1 = [max(x1[i], x1[j]) for j in I[:-1]]
        xx2 = [min(x2[i], x2[j]) for j in I[:-1]]
        inter = [max(0.0, k2 - k1) for k1, k2 in zip(xx1, xx2)]
        o = [inter[u] / (union[i] + union[I[u]] - inter[u]) for u in range(len(I) - 1)]
        I = [I[j] for j in range(len(o)) if o[j] <= overlap]
    return pick


def calculate_iou(i0, i1):
    union = (min(i0[0], i1[0]), max(i0[1], i1[1]))
    inter = (max(i0[0], i1[0]), min(i0[1], i1[1]))
    return 1.0 * (inter[1] - inter[0]) / (union[1] - union[0])


def tall_correct(top_n, iou_thresh, queries):
    correct = 0.0
    for q in queries:
        c = np.array(q["candidates"], dtype=np.float64).reshape(-1, 3)
        starts = [s for s in c[:, 0]]
        ends = [e for e in c[:, 1]]
        sim = [v for v in c[:, 2]]
        picks = nms_temporal(starts, ends, sim, iou_thresh - 0.05)
        if top_n < len(picks):
            picks = picks[0:top_n]
        for index in picks:
            if calculate_iou(tuple(q["gt"]), (c[index, 0], c[index, 1])) >= iou_thresh:
                correct += 1
                break
    return correct


def mmaction2_recall(top_k, threshold, queries):
    correct = 0.0
    for q in queries:
        for prediction in q["candidates"][:top_k]:
            if calculate_iou(q["gt"], prediction) > threshold:
                correct += 1
                break
    return correct / len(queries)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    queries = []
    for i in range(300):
        t0 = float(rng.integers(0, 40)) / 2
        gt = [t0, t0 + float(rng.integers(1, 20)) / 2]
        n = int(rng.integers(0, 15))
        cands = []
        for _ in range(n):
            s = float(rng.integers(0, 50)) / 2
            cands.append([s, s + float(rng.integers(1, 20)) / 2, float(rng.integers(0, 6)) / 5])
        cands.sort(key=lambda c: -c[2])  # best first, stable: ties keep their order
        queries.append({"query_id": i, "video": f"vid{i % 7}", "candidates": cands, "gt": gt})
    thresholds = [0.1, 0.3, 0.5, 0.7]
    expected = {
        "tall": {str(k): {str(m): tall_correct(k, m, queries) / len(queries) for m in thresholds} for k in (1, 5, 10)},
        "mmaction2": {str(k): {str(m): mmaction2_recall(k, m, queries) for m in thresholds} for k in (1, 5, 10)},
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "pred.jsonl"), "w") as f:
        for q in queries:
            f.write(json.dumps(q) + "\n")
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
