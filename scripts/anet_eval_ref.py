"""Reference numbers for `veval --proposals/--detection` (lib/src/metric/localization.rs):
ActivityNet's Evaluation/eval_proposal.py (average_recall_vs_avg_nr_proposals, the area under
AR@AN) and eval_detection.py (compute_average_precision_detection, utils.interpolated_prec_rec),
restated with numpy only, step for step: the originals are Python 2 and read pandas frames.

    python anet_eval_ref.py proposals|detection GT.json PRED.json OUT.json [MAX_AN]

GT.json: ActivityNet ground truth (validation subset); PRED.json: an ActivityNet result file.
"""
import json
import sys

import numpy as np


def segment_iou(target, candidates):
    tt1 = np.maximum(target[0], candidates[:, 0])
    tt2 = np.minimum(target[1], candidates[:, 1])
    inter = (tt2 - tt1).clip(0)
    union = (candidates[:, 1] - candidates[:, 0]) + (target[1] - target[0]) - inter
    return inter.astype(float) / union


def wrapper_segment_iou(targets, candidates):
    n, m = candidates.shape[0], targets.shape[0]
    tiou = np.empty((n, m))
    for i in range(m):
        tiou[:, i] = segment_iou(targets[i, :], candidates)
    return tiou


def interpolated_prec_rec(prec, rec):
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def load(gt_path, pred_path):
    gt = json.load(open(gt_path))
    classes, gt_rows = {}, []
    for vid, v in gt["database"].items():
        if v["subset"] != "validation":
            continue
        for a in v["annotations"]:
            classes.setdefault(a["label"], len(classes))
            gt_rows.append((vid, float(a["segment"][0]), float(a["segment"][1]), classes[a["label"]]))
    pred_rows = []
    for vid, lst in json.load(open(pred_path))["results"].items():
        for r in lst:
            pred_rows.append((vid, float(r["segment"][0]), float(r["segment"][1]),
                              classes.get(r.get("label"), -1), r["score"]))
    return classes, gt_rows, pred_rows


def proposals(gt_rows, pred_rows, max_avg, tiou_thresholds):
    video_lst = list(dict.fromkeys(r[0] for r in gt_rows))
    ratio = max_avg * float(len(video_lst)) / len(pred_rows)
    score_lst, total_nr = [], 0
    for vid in video_lst:
        g = np.array([[r[1], r[2]] for r in gt_rows if r[0] == vid])
        p = [r for r in pred_rows if r[0] == vid]
        if not p:
            score_lst.append(np.zeros((g.shape[0], 1)))
            continue
        props = np.array([[r[1], r[2]] for r in p])
        sort_idx = np.array([r[4] for r in p]).argsort()[::-1]
        props = props[sort_idx, :]
        nr = np.minimum(int(props.shape[0] * ratio), props.shape[0])
        total_nr += nr
        score_lst.append(wrapper_segment_iou(props[:nr, :], g))
    pcn_lst = np.arange(1, 101) / 100.0 * (max_avg * float(len(video_lst)) / total_nr)
    matches = np.empty((len(video_lst), pcn_lst.shape[0]))
    positives = np.empty(len(video_lst))
    recall = np.empty((tiou_thresholds.shape[0], pcn_lst.shape[0]))
    for ridx, tiou in enumerate(tiou_thresholds):
        for i, score in enumerate(score_lst):
            positives[i] = score.shape[0]
            tp = score >= tiou
            pcn_props = np.minimum((score.shape[1] * pcn_lst).astype(int), score.shape[1])
            for j, nr in enumerate(pcn_props):
                matches[i, j] = np.count_nonzero((tp[:, :nr]).sum(axis=1))
        recall[ridx, :] = matches.sum(axis=0) / positives.sum()
    avg_recall = recall.mean(axis=0)
    ppv = pcn_lst * (float(total_nr) / len(video_lst))
    area = np.trapezoid(avg_recall, ppv) if hasattr(np, "trapezoid") else np.trapz(avg_recall, ppv)
    return {"auc": float(area) / ppv[-1], "ar_an": avg_recall.tolist(), "an": ppv.tolist()}


def detection_ap(gt_rows, pred_rows, tiou_thresholds):
    npos = float(len(gt_rows))
    lock_gt = np.ones((len(tiou_thresholds), len(gt_rows))) * -1
    order = np.array([r[4] for r in pred_rows]).argsort()[::-1]
    pred_rows = [pred_rows[i] for i in order]
    tp = np.zeros((len(tiou_thresholds), len(pred_rows)))
    fp = np.zeros((len(tiou_thresholds), len(pred_rows)))
    for idx, p in enumerate(pred_rows):
        this_gt = [(k, r) for k, r in enumerate(gt_rows) if r[0] == p[0]]
        if not this_gt:
            fp[:, idx] = 1
            continue
        tiou_arr = segment_iou(np.array([p[1], p[2]]), np.array([[r[1], r[2]] for _, r in this_gt]))
        tiou_sorted_idx = tiou_arr.argsort()[::-1]
        for tidx, thr in enumerate(tiou_thresholds):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, this_gt[jdx][0]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, this_gt[jdx][0]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1
    tp_c = np.cumsum(tp, axis=1).astype(float)
    fp_c = np.cumsum(fp, axis=1).astype(float)
    rec = tp_c / npos
    prec = tp_c / (tp_c + fp_c)
    return [interpolated_prec_rec(prec[t, :], rec[t, :]) for t in range(len(tiou_thresholds))]


if __name__ == "__main__":
    mode, gt_path, pred_path, out = sys.argv[1:5]
    classes, gt_rows, pred_rows = load(gt_path, pred_path)
    thresholds = np.linspace(0.5, 0.95, 10)
    if mode == "proposals":
        result = proposals(gt_rows, pred_rows, float(sys.argv[5]), thresholds)
    else:
        ap = np.zeros((len(thresholds), len(classes)))
        for c in classes.values():
            g = [r for r in gt_rows if r[3] == c]
            p = [r for r in pred_rows if r[3] == c]
            if p:
                ap[:, c] = detection_ap(g, p, thresholds)
        result = {"map_at_tiou": ap.mean(axis=1).tolist(), "map": float(ap.mean(axis=1).mean()),
                  "ap": ap.tolist(), "classes": list(classes)}
    json.dump(result, open(out, "w"))
