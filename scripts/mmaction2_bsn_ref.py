"""A PyTorch/numpy restatement of MMAction2's BSN for vidkit's parity test (mmcv, which MMAction2
needs, does not install here): the TEM and PEM modules (mmaction/models/localizers/bsn.py), the
PGM (localizers/utils/bsn_utils.py: generate_candidate_proposals, generate_bsp_feature), the
post-processing (localizers/utils/proposal_utils.py: soft_nms, post_processing) and the training
targets and losses (TEM.generate_labels, binary_logistic_regression_loss, PEM.loss). Written from
the reference's semantics, keeping its dtypes: the TEM results and PGM proposals pass through CSV
files read back as float32, the BSP features through .npy read back as float32, as the reference's
tools do. Used by export_bsn_parity.py (models tier of scripts/peers.sh).
"""
import io

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class TEM(nn.Module):
    def __init__(self, feat_dim=400, hidden=512, ratios=(1.0, 1.0, 0.01)):
        super().__init__()
        self.conv1 = nn.Conv1d(feat_dim, hidden, 3, padding=1)
        self.conv2 = nn.Conv1d(hidden, hidden, 3, padding=1)
        self.conv3 = nn.Conv1d(hidden, 3, 1)
        self.ratios = ratios

    def forward(self, x):
        r1, r2, r3 = self.ratios
        x = F.relu(r1 * self.conv1(x))
        x = F.relu(r2 * self.conv2(x))
        return torch.sigmoid(r3 * self.conv3(x))


class PEM(nn.Module):
    def __init__(self, feat_dim=32, hidden=256, ratios=(0.1, 0.1)):
        super().__init__()
        self.fc1 = nn.Linear(feat_dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        self.ratios = ratios

    def forward(self, x):
        x = F.relu(self.ratios[0] * self.fc1(x))
        return torch.sigmoid(self.ratios[1] * self.fc2(x))


def _csv_roundtrip(array, header):
    """np.savetxt then np.loadtxt(dtype=float32, skiprows=1), as the reference's files."""
    buf = io.StringIO()
    np.savetxt(buf, array, header=header, delimiter=",", comments="")
    buf.seek(0)
    return np.loadtxt(buf, dtype=np.float32, delimiter=",", skiprows=1, ndmin=2)


def tem_results(tem_output):
    """TEM.predict for one video ([3, T] float32) as written to and read from its CSV:
    action, start, end, tmin, tmax (float32)."""
    T = tem_output.shape[1]
    gap = 1.0 / T
    tmins = [gap * (i + 0.0) for i in range(T)]
    tmaxs = [gap * (i + 1.0) for i in range(T)]
    table = np.stack((tem_output[0], tem_output[1], tem_output[2], tmins, tmaxs), axis=1)
    return _csv_roundtrip(table, "action,start,end,tmin,tmax")


def candidate_proposals(tem, peak_threshold=0.5, gt=None):
    """generate_candidate_proposals for one video's TEM results (float32 table); `gt` the
    normalised ground-truth boundaries (tmins, tmaxs) for the iou/ioa columns, else zeros.
    Returns the proposals as the PEM reads them back (float32)."""
    start, end = tem[:, 1], tem[:, 2]
    T = len(start)
    gap = 1.0 / T
    top_s, top_e = max(start), max(end)
    sb = np.zeros(T)
    eb = np.zeros(T)
    sb[[0, -1]] = 1
    eb[[0, -1]] = 1
    for i in range(1, T - 1):
        if (start[i] > start[i + 1] and start[i] > start[i - 1]) or start[i] > peak_threshold * top_s:
            sb[i] = 1
        if (end[i] > end[i + 1] and end[i] > end[i - 1]) or end[i] > peak_threshold * top_e:
            eb[i] = 1
    starts = [(gap / 2 + gap * i, start[i]) for i in range(T) if sb[i] == 1]
    ends = [(gap / 2 + gap * i, end[i]) for i in range(T) if eb[i] == 1]
    rows = []
    for tmax, es in ends:
        for tmin, ss in starts:
            if tmin >= tmax:
                break
            rows.append([tmin, tmax, ss, es])
    rows = np.stack(rows)
    score = (rows[:, 2] * rows[:, 3]).reshape(-1, 1)
    rows = np.concatenate((rows, score), axis=1)
    rows = rows[rows[:, -1].argsort(kind="stable")[::-1]]
    if gt is not None:
        ious = [max(_iou(r[0], r[1], np.array(gt[0]), np.array(gt[1]))) for r in rows]
        ioas = [max(_iop(r[0], r[1], np.array(gt[0]), np.array(gt[1]))) for r in rows]
    else:
        ious = ioas = [0.0] * len(rows)
    rows = np.concatenate((rows, np.array(ious).reshape(-1, 1), np.array(ioas).reshape(-1, 1)), axis=1)
    return _csv_roundtrip(rows, "tmin,tmax,tmin_score,tmax_score,score,match_iou,match_ioa")


def _iou(a0, a1, b0, b1):
    inter = np.maximum(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0)
    return np.divide(inter, (a1 - a0) - inter + b1 - b0)


def _iop(a0, a1, b0, b1):
    inter = np.maximum(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0)
    return np.divide(inter, np.array(a1 - a0))


def bsp_features(tem, proposals, top_k=1000, ratio=0.2, n_start=8, n_end=8, n_action=16, n_interp=3):
    """generate_bsp_feature for one video (float32 TEM table and proposals), as the PEM reads
    it back from .npy (float32)."""
    action = tem[:, 0]
    seg_tmins, seg_tmaxs = tem[:, 3], tem[:, 4]
    T = len(tem)
    gap = seg_tmaxs[0] - seg_tmins[0]
    extend = int(T / 4 + 10)
    zeros = np.zeros([extend])
    action = np.concatenate((zeros, action, zeros))
    points = [-gap / 2 - (extend - 1 - i) * gap for i in range(extend)]
    points += [gap / 2 + i * gap for i in range(T)]
    points += [gap / 2 + seg_tmaxs[-1] + i * gap for i in range(extend)]

    def region(lo, hi, n):
        step = (hi - lo) / (n - 1)
        sub = step / n_interp
        xs = [lo - step / 2 + sub * i for i in range(n * n_interp + 1)]
        ys = np.interp(xs, points, action)
        return [np.mean(ys[i * n_interp:(i + 1) * n_interp + 1]) for i in range(n)]

    feats = []
    for p in proposals[:top_k]:
        tmin, tmax = p[0], p[1]
        tlen = tmax - tmin
        s = region(tmin - tlen * ratio, tmin + tlen * ratio, n_start)
        e = region(tmax - tlen * ratio, tmax + tlen * ratio, n_end)
        a = region(tmin, tmax, n_action)
        feats.append(np.concatenate([a, s, e]))
    return np.array(feats).astype(np.float32)


def soft_nms(proposals, alpha, low, high, top_k):
    proposals = proposals[proposals[:, -1].argsort(kind="stable")[::-1]]
    ts, te, sc = list(proposals[:, 0]), list(proposals[:, 1]), list(proposals[:, -1])
    rs, re_, rsc = [], [], []
    while len(sc) > 0 and len(rsc) <= top_k:
        m = int(np.argmax(sc))
        width = te[m] - ts[m]
        ious = _iou(ts[m], te[m], np.array(ts), np.array(te))
        decay = np.exp(-np.square(ious) / alpha)
        for i in range(len(sc)):
            if i != m and ious[i] > low + (high - low) * width:
                sc[i] = sc[i] * decay[i]
        rs.append(ts.pop(m))
        re_.append(te.pop(m))
        rsc.append(sc.pop(m))
    return np.stack([np.array(rs), np.array(re_), np.array(rsc)], axis=1)


def post_processing(result, duration_second, duration_frame, alpha=0.75, low=0.65, high=0.9, top_k=100,
                    interval=16):
    if len(result) > 1:
        result = soft_nms(result, alpha, low, high, top_k)
    result = result[result[:, -1].argsort(kind="stable")[::-1]]
    duration = float(duration_frame // interval * interval) / duration_frame * duration_second
    return [{"score": float(r[-1]), "segment": [float(max(0, r[0]) * duration), float(min(1, r[1]) * duration)]}
            for r in result[:min(top_k, len(result))]]


def pem_result(pem_output, proposals):
    """PEM.predict's table: tmin, tmax, tmin_score, tmax_score, pem, pem·tmin_score·tmax_score."""
    p = pem_output.reshape(-1, 1)
    tmin, tmax, ts, te = (proposals[:, i].reshape(-1, 1) for i in range(4))
    score = np.array(p * ts * te).reshape(-1, 1)
    return np.concatenate((tmin, tmax, ts, te, p, score), axis=1)


# --- training targets and losses -------------------------------------------------------------

def tem_labels(gt_bbox, T, boundary_ratio=0.1):
    """TEM.generate_labels for one video: gt_bbox [[start, end], ...] normalised."""
    gt = np.array(gt_bbox)
    tmins, tmaxs = gt[:, 0], gt[:, 1]
    lens = tmaxs - tmins
    pad = np.maximum(1.0 / T, boundary_ratio * lens)
    sb = np.stack((tmins - pad / 2, tmins + pad / 2), axis=1)
    eb = np.stack((tmaxs - pad / 2, tmaxs + pad / 2), axis=1)
    gap = 1.0 / T
    action, start, end = [], [], []
    for i in range(T):
        a0, a1 = gap * i, gap * (i + 1)
        action.append(np.max(_iop(a0, a1, tmins, tmaxs)))
        start.append(np.max(_iop(a0, a1, sb[:, 0], sb[:, 1])))
        end.append(np.max(_iop(a0, a1, eb[:, 0], eb[:, 1])))
    return np.array([action, start, end], dtype=np.float32)


def blr_loss(score, label, threshold=0.5, ratio_range=(1.05, 21), eps=1e-5):
    label = label.reshape(-1)
    score = score.contiguous().reshape(-1)
    pmask = (label > threshold).float()
    num_positive = max(torch.sum(pmask), 1)
    ratio = len(label) / num_positive
    ratio = min(max(ratio, ratio_range[0]), ratio_range[1])
    c0 = 0.5 * ratio / (ratio - 1)
    c1 = 0.5 * ratio
    loss = c1 * pmask * torch.log(score + eps) + c0 * (1.0 - pmask) * torch.log(1.0 - score + eps)
    return -torch.mean(loss)


def tem_loss(tem_output, labels, threshold=0.5, loss_weight=2):
    """TEM.loss: labels [B, 3, T]."""
    la = blr_loss(tem_output[:, 0, :], labels[:, 0, :], threshold)
    ls = blr_loss(tem_output[:, 1, :], labels[:, 1, :], threshold)
    le = blr_loss(tem_output[:, 2, :], labels[:, 2, :], threshold)
    return la * loss_weight + ls + le, (la, ls, le)


def pem_loss(pem_output, ref_iou, u_m, u_l, ratio_m=1.0, ratio_l=2.0, high=0.6, low=0.2, balanced=False):
    """PEM.loss with the two torch.rand draws given (u_m, u_l). MMAction2 takes
    F.smooth_l1_loss's default mean before weighting, so its weights cancel and the loss is the
    plain mean; `balanced` applies them per proposal, as BSN's paper means."""
    out = pem_output.view(-1)
    h = (ref_iou > high).float()
    m = ((ref_iou <= high) & (ref_iou > low)).float()
    lo = (ref_iou <= low).float()
    r_m = torch.clamp(ratio_m * torch.sum(h) / torch.sum(m), max=1.0)
    sm = ((u_m * m) > (1.0 - r_m)).float()
    r_l = torch.clamp(ratio_l * torch.sum(h) / torch.sum(lo), max=1.0)
    sl = ((u_l * lo) > (1.0 - r_l)).float()
    w = h + sm + sl
    loss = F.smooth_l1_loss(out, ref_iou, reduction="none" if balanced else "mean")
    return torch.sum(loss * w) / torch.sum(w)
