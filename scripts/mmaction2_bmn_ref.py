"""A PyTorch restatement of MMAction2's BMN (mmaction/models/localizers/bmn.py: module names,
the boundary-matching layer through the saved `sample_mask`, `forward_test`'s candidates) and
its post-processing (localizers/utils/proposal_utils.py: `soft_nms`, `post_processing`),
written for vidkit's parity test and benchmark from the reference's semantics: mmcv, which
MMAction2 needs, does not install here. Used by export_bmn_mmaction2_parity.py and
bench_bmn_mmaction2.py (models tier of scripts/peers.sh).
"""
import math

import numpy as np
import torch
import torch.nn as nn

P, RATIO = 3, 0.5
H1, H2, H3, FEAT = 256, 128, 512, 400


def sample_mask(T, N):
    """[T, N, D, T] → [T, N·D·T]: for proposal (start s, duration d), N samples of P points each
    over [s - (d+1)·ratio, s + d + (d+1)·ratio], linear interpolation, points averaged."""
    m = np.zeros((T, N, T, T))
    for s in range(T):
        for d in range(T - s):
            width = d + 1.0
            lo, hi = s - width * RATIO, s + d + width * RATIO
            step = (hi - lo) / (N * P - 1.0)
            for k in range(N):
                for i in range(k * P, (k + 1) * P):
                    x = lo + step * i
                    frac, whole = math.modf(x)
                    if 0 <= int(whole) <= T - 1:
                        m[int(whole), k, d, s] += (1 - frac) / P
                    if 0 <= int(math.ceil(x)) <= T - 1:
                        m[int(math.ceil(x)), k, d, s] += frac / P
    return torch.tensor(m.astype(np.float32)).view(T, -1)


class BMN(nn.Module):
    def __init__(self, T, N):
        super().__init__()
        self.T, self.N = T, N
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.x_1d_b = nn.Sequential(nn.Conv1d(FEAT, H1, 3, padding=1, groups=4), relu(),
                                    nn.Conv1d(H1, H1, 3, padding=1, groups=4), relu())
        self.x_1d_s = nn.Sequential(nn.Conv1d(H1, H1, 3, padding=1, groups=4), relu(), nn.Conv1d(H1, 1, 1), nn.Sigmoid())
        self.x_1d_e = nn.Sequential(nn.Conv1d(H1, H1, 3, padding=1, groups=4), relu(), nn.Conv1d(H1, 1, 1), nn.Sigmoid())
        self.x_1d_p = nn.Sequential(nn.Conv1d(H1, H1, 3, padding=1), relu())
        self.x_3d_p = nn.Sequential(nn.Conv3d(H1, H3, (N, 1, 1)), relu())
        self.x_2d_p = nn.Sequential(nn.Conv2d(H3, H2, 1), relu(), nn.Conv2d(H2, H2, 3, padding=1), relu(),
                                    nn.Conv2d(H2, H2, 3, padding=1), relu(), nn.Conv2d(H2, 2, 1), nn.Sigmoid())
        self.sample_mask = nn.Parameter(sample_mask(T, N), requires_grad=False)

    def forward(self, x):
        base = self.x_1d_b(x)
        start = self.x_1d_s(base).squeeze(1)
        end = self.x_1d_e(base).squeeze(1)
        p = self.x_1d_p(base)
        p = torch.matmul(p, self.sample_mask).reshape(p.size(0), p.size(1), self.N, self.T, self.T)
        p = self.x_3d_p(p).squeeze(2)
        return self.x_2d_p(p), start, end


def candidates(conf, start, end):
    T = len(start)
    """forward_test: boundary bins (inside only; first start, last end), end = start + d + 1."""
    def bins(s, first):
        b = np.zeros(T)
        b[0 if first else -1] = 1
        top = s.max()
        for i in range(1, T - 1):
            if (s[i] > s[i + 1] and s[i] > s[i - 1]) or s[i] > 0.5 * top:
                b[i] = 1
        return b
    sb, eb = bins(start, True), bins(end, False)
    rows = []
    for d in range(T):
        for s in range(T):
            e = s + d + 1
            if e < T and sb[s] == 1 and eb[e] == 1:
                rows.append([s / T, e / T, start[s] * end[e] * conf[1, d, s] * conf[0, d, s]])
    return np.array(rows, dtype=np.float64)


def soft_nms(props, alpha, low, high, top_k):
    props = props[props[:, -1].argsort(kind="stable")[::-1]]
    ts, te, sc = list(props[:, 0]), list(props[:, 1]), list(props[:, -1])
    out = []
    while sc and len(out) <= top_k:
        m = int(np.argmax(sc))
        width = te[m] - ts[m]
        for i in range(len(sc)):
            if i != m:
                inter = max(min(te[m], te[i]) - max(ts[m], ts[i]), 0.0)
                iou = inter / ((te[i] - ts[i]) - inter + te[m] - ts[m])
                if iou > low + (high - low) * width:
                    sc[i] *= np.exp(-iou * iou / alpha)
        out.append([ts.pop(m), te.pop(m), sc.pop(m)])
    return np.array(out)




def proposals(conf, start, end, duration_second, duration_frame, interval=16, top=100):
    """forward_test + post_processing for one video's outputs (numpy)."""
    props = candidates(conf, start, end)
    if len(props) > 1:
        props = soft_nms(props, 0.4, 0.5, 0.9, 100)
    props = props[props[:, -1].argsort(kind="stable")[::-1]]
    duration = float(duration_frame // interval * interval) / duration_frame * duration_second
    return [{"score": float(r[-1]), "segment": [max(0, r[0]) * duration, min(1, r[1]) * duration]}
            for r in props[:top]]


# --- training: generate_labels and BMNLoss (mmaction/models/losses/bmn_loss.py) ---------------

def generate_labels(gt_bbox, T):
    """BMN.generate_labels for one video: gt_bbox [[start, end], ...] normalised; (iou_map
    [T (duration), T (start)], start [T], end [T])."""
    gap = 1.0 / T
    match = np.array([[[gap * i, gap * i + gap * j] for j in range(1, T + 1)] for i in range(T)])
    match = np.transpose(match, [1, 0, 2]).reshape(-1, 2)
    ious = []
    for s, e in gt_bbox:
        inter = np.maximum(np.minimum(match[:, 1], e) - np.maximum(match[:, 0], s), 0.0)
        ious.append((inter / (match[:, 1] - match[:, 0] - inter + e - s)).reshape(T, T))
    iou_map = np.max(np.array(ious).astype(np.float32), axis=0)
    gt = np.array(gt_bbox)
    pad = 3 * (1.0 / T)
    sb = np.stack((gt[:, 0] - pad / 2, gt[:, 0] + pad / 2), axis=1)
    eb = np.stack((gt[:, 1] - pad / 2, gt[:, 1] + pad / 2), axis=1)

    def iop(a0, a1, b):
        inter = np.maximum(np.minimum(a1, b[:, 1]) - np.maximum(a0, b[:, 0]), 0.0)
        return np.max(inter / (a1 - a0))
    start = [iop(gap * i, gap * (i + 1), sb) for i in range(T)]
    end = [iop(gap * i, gap * (i + 1), eb) for i in range(T)]
    return iou_map, np.array(start, dtype=np.float32), np.array(end, dtype=np.float32)


def _blr(score, label, threshold=0.5, ratio_range=(1.05, 21), eps=1e-5):
    label = label.reshape(-1)
    score = score.contiguous().reshape(-1)
    pmask = (label > threshold).float()
    num_positive = max(torch.sum(pmask), 1)
    ratio = min(max(len(label) / num_positive, ratio_range[0]), ratio_range[1])
    c0, c1 = 0.5 * ratio / (ratio - 1), 0.5 * ratio
    loss = c1 * pmask * torch.log(score + eps) + c0 * (1.0 - pmask) * torch.log(1.0 - score + eps)
    return -torch.mean(loss)


def bmn_loss(pred_bm, pred_start, pred_end, gt_iou_map, gt_start, gt_end, u_mid, u_low):
    """BMNLoss.forward with the regression's two torch.rand_like draws given."""
    T = gt_iou_map.shape[-1]
    bm_mask = torch.tensor([[1.0] * (T - d) + [0.0] * d for d in range(T)])
    reg, cls = pred_bm[:, 0].contiguous(), pred_bm[:, 1].contiguous()
    g = gt_iou_map * bm_mask
    h = (g > 0.7).float()
    m = ((g <= 0.7) & (g > 0.3)).float()
    lo = ((g <= 0.3) & (g > 0.0)).float() * bm_mask
    r_m = torch.sum(h) / torch.sum(m)
    sm = ((m * u_mid) > (1.0 - r_m)).float()
    r_l = torch.sum(h) / torch.sum(lo)
    sl = ((lo * u_low) > (1.0 - r_l)).float()
    w = h + sm + sl
    reg_loss = torch.nn.functional.mse_loss(reg * w, g * w)
    reg_loss = 0.5 * torch.sum(reg_loss * torch.ones_like(w)) / torch.sum(w)
    pmask = (g > 0.9).float()
    nmask = (g <= 0.9).float() * bm_mask
    num_positive = max(torch.sum(pmask), 1)
    entries = num_positive + torch.sum(nmask)
    ratio = torch.clamp(entries / num_positive, 1.05, 21)
    c0, c1 = 0.5 * ratio / (ratio - 1), 0.5 * ratio
    cls_loss = -torch.sum(c1 * torch.log(cls + 1e-5) * pmask + c0 * torch.log(1.0 - cls + 1e-5) * nmask) / entries
    tem = _blr(pred_start, gt_start) + _blr(pred_end, gt_end)
    return float(tem + 10.0 * reg_loss + cls_loss), float(tem), float(reg_loss), float(cls_loss)
