"""A PyTorch/numpy restatement of the 2019 PaddlePaddle video zoo's C-TCN for vidkit's parity
test (fluid, in which it is written, does not run on Paddle 3): PaddlePaddle/models release/1.8
PaddleCV/video/models/ctcn/fpn_ctcn.py (the network, with fluid's semantics: (k, 1) kernels,
batch norm eps 1e-5, image_resize BILINEAR with align_corners=True, dropout's default
downgrade_in_infer scaling by 0.5 at inference, the heads' parameters shared across levels),
ctcn_utils.py (BoxCoder's anchors and decode, box_nms, soft_nms), the reader's test-time
nearest resize (cv2.INTER_NEAREST: row i reads floor(i * T / size)) and detection_metrics.py's
segments. The parameters are also written under the names fluid gives them (conv2d_N.w_0,
batch_norm_N.w_0/b_0/w_1/w_2, loc_pred_conv1_weights, ...), numbered in the order fpn_ctcn.py
creates its layers. Used by export_ctcn_parity.py (models tier of scripts/peers.sh).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

STEPS = (4, 8, 16, 32, 64, 128, 256, 512)


class ConvBn(nn.Module):
    def __init__(self, cin, cout, k, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, (k, 1), (stride, 1), (k // 2, 0), bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x, act=True):
        y = self.bn(self.conv(x))
        return F.relu(y) if act else y


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv0 = ConvBn(cin, planes, 1)
        self.conv1 = ConvBn(planes, planes, 3, stride)
        self.conv2 = ConvBn(planes, planes * 4, 1)
        self.shortcut = None if (cin == planes * 4 and stride == 1) else ConvBn(cin, planes * 4, 1, stride)

    def forward(self, x):
        y = self.conv2(self.conv1(self.conv0(x)), act=False)
        s = x if self.shortcut is None else self.shortcut(x, act=False)
        return F.relu(s + y)


def conv(cin, cout, k, stride=1):
    return nn.Conv2d(cin, cout, (k, 1), (stride, 1), (k // 2, 0))


class CTCN(nn.Module):
    def __init__(self, concept_size=402, num_classes=201, num_anchors=7):
        super().__init__()
        self.A, self.K = num_anchors, num_classes
        self.stem1 = ConvBn(1, 32, 7, 2)
        self.stem2 = ConvBn(32, 64, 7, 2)
        blocks, cin = [], 64
        for s, (planes, n) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)]):
            stage = []
            for j in range(n):
                stage.append(Bottleneck(cin, planes, 2 if (j == 0 and s > 0) else 1))
                cin = planes * 4
            blocks.append(nn.ModuleList(stage))
        self.stages = nn.ModuleList(blocks)
        self.p6, self.p7, self.p8, self.p9 = conv(2048, 512, 3, 2), conv(512, 512, 3, 2), conv(512, 512, 3, 2), conv(512, 512, 3, 2)
        self.lat5, self.lat4, self.lat3, self.lat2 = conv(2048, 512, 1), conv(1024, 512, 1), conv(512, 512, 1), conv(256, 512, 1)
        self.smooth4, self.smooth3, self.smooth2 = conv(512, 512, 3), conv(512, 512, 3), conv(512, 512, 3)
        self.loc1 = conv(512, 256, 3)
        self.loc2 = nn.Conv2d(256, num_anchors * 2, (1, concept_size))
        self.cls1 = conv(512, 512, 3)
        self.cls2 = nn.Conv2d(512, num_anchors * num_classes, (1, concept_size))

    def fluid_layers(self):
        """(conv+bn layers, conv-with-bias layers) in the order fpn_ctcn.py creates them."""
        bn = [self.stem1, self.stem2]
        for stage in self.stages:
            for b in stage:
                bn += [b.conv0, b.conv1, b.conv2] + ([b.shortcut] if b.shortcut is not None else [])
        plain = [self.p6, self.p7, self.p8, self.p9, self.lat5, self.lat4, self.lat3, self.lat2,
                 self.smooth4, self.smooth3, self.smooth2]
        return bn, plain

    @staticmethod
    def up_add(x, y):
        return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=True) + y

    def forward(self, x):
        """x [N, 1, T, W]; loc [N, A_total, 2], cls logits [N, A_total, K]."""
        x = self.stem2(self.stem1(x))
        c = []
        for stage in self.stages:
            for b in stage:
                x = b(x)
            c.append(x)
        p6 = self.p6(c[3])
        p7 = self.p7(F.relu(p6))
        p8 = self.p8(F.relu(p7))
        p9 = self.p9(F.relu(p8))
        p5 = self.lat5(c[3])
        p4 = self.up_add(p5, self.lat4(c[2]))
        p3 = self.up_add(p4, self.lat3(c[1]))
        p2 = self.up_add(p3, self.lat2(c[0]))
        p4, p3, p2 = self.smooth4(p4), self.smooth3(p3), self.smooth2(p2)
        locs, clss = [], []
        for lvl in (p2, p3, p4, p5, p6, p7, p8, p9):
            d = lvl * 0.5  # dropout, downgrade_in_infer, at inference
            lp = 10.0 * torch.sigmoid(self.loc2(self.loc1(d))) - 5.0
            lp = lp.permute(0, 2, 3, 1)
            locs.append(lp.reshape(lp.shape[0], -1, 2))
            cp = self.cls2(self.cls1(d)).permute(0, 2, 3, 1)
            clss.append(cp.reshape(cp.shape[0], -1, self.K))
        return torch.cat(locs, 1), torch.cat(clss, 1)

    def fluid_state(self):
        """The parameters under fluid's names (numpy float32)."""
        out = {}
        bn, plain = self.fluid_layers()
        for i, l in enumerate(bn):
            out[f"conv2d_{i}.w_0"] = l.conv.weight
            out[f"batch_norm_{i}.w_0"] = l.bn.weight
            out[f"batch_norm_{i}.b_0"] = l.bn.bias
            out[f"batch_norm_{i}.w_1"] = l.bn.running_mean
            out[f"batch_norm_{i}.w_2"] = l.bn.running_var
        # conv2d numbering runs on through the pyramid: the bn'd ones come first in creation.
        for j, l in enumerate(plain):
            out[f"conv2d_{len(bn) + j}.w_0"] = l.weight
            out[f"conv2d_{len(bn) + j}.b_0"] = l.bias
        for name, l in [("loc_pred_conv1", self.loc1), ("loc_pred_conv2", self.loc2),
                        ("cls_pred_conv1", self.cls1), ("cls_pred_conv2", self.cls2)]:
            out[f"{name}_weights"] = l.weight
            out[f"{name}_bias"] = l.bias
        return {k: v.detach().numpy().astype(np.float32) for k, v in out.items()}


def level_lengths(img_size):
    l = -(-(-(-img_size // 2)) // 2)
    out = []
    for _ in range(8):
        out.append(l)
        l = -(-l // 2)
    return out


def default_boxes(img_size, anchor_num=3):
    boxes = []
    lengths = level_lengths(img_size)
    for i, fm in enumerate(lengths):
        base = STEPS[i]
        for h in range(fm):
            cy = (h + 0.5) * base
            boxes.append((cy, base))
            for p in range(anchor_num):
                s = (base * 4.5 / 15.0) * (1.0 + p) / anchor_num
                boxes.append((cy, base - s))
                if i == len(lengths) - 1:
                    boxes.append((cy, base - s - (base * 4.5 / 15.0) / (2 * anchor_num)))
                else:
                    boxes.append((cy, base + s))
    return np.array(boxes)


def box_nms(b, scores, threshold):
    y1, y2 = b[:, 0], b[:, 1]
    areas = y2 - y1
    order = np.argsort(-scores, axis=0, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        yy1 = np.clip(y1[order[1:]], y1[i], None)
        yy2 = np.clip(y2[order[1:]], None, y2[i])
        inter = np.clip(yy2 - yy1, 0, None)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        ids = (ovr <= threshold).nonzero()[0]
        if ids.size == 0:
            break
        order = order[ids + 1]
    return np.array(keep, dtype="int64")


def soft_nms(props, sigma, threshold):
    N = props.shape[0]
    i = 0
    while i < N:
        m = i
        for pos in range(i + 1, N):
            if props[m, 2] < props[pos, 2]:
                m = pos
        props[[i, m]] = props[[m, i]]
        tx, ty = props[i, 0], props[i, 1]
        pos = i + 1
        while pos < N:
            x, y, s = props[pos]
            inter = max(0.0, min(y, ty) - max(x, tx))
            overlap = inter / (y - x + ty - tx - inter)
            props[pos, 2] = np.exp(-(overlap ** 2) / sigma) * s
            if props[pos, 2] < threshold:
                props[pos] = props[N - 1]
                N -= 1
            else:
                pos += 1
        i += 1
    return props[:N]


def decode(loc, probs, img_size, score_thresh=0.001, nms_thresh=0.8, sigma=0.9, soft=0.004):
    db = default_boxes(img_size)
    y = loc[:, 0, None] * 0.1 * db[:, 1, None] + db[:, 0, None]
    h = (loc[:, 1, None] * 0.2 + 1.0) * db[:, 1, None]
    box_preds = np.concatenate((y - h / 2.0, y + h / 2.0), axis=1)
    out = []
    for i in range(probs.shape[1] - 1):
        score = probs[:, i + 1]
        mask = score > score_thresh
        if not mask.any():
            continue
        box, sc = box_preds[mask], score[mask]
        keep = box_nms(box, sc, nms_thresh)
        res = soft_nms(np.concatenate((box[keep], sc[keep][:, None]), axis=1), sigma, soft)
        out += [(float(r[0]), float(r[1]), float(r[2]), i) for r in res]
    if not out:
        out = [(0.0, 1.0, 1.0, 1)]
    return out


def resize_nearest(feats, size):
    t = feats.shape[0]
    if t == size:
        return feats
    idx = np.minimum(np.floor(np.arange(size) * (1.0 / (size / t))).astype(int), t - 1)
    return feats[idx]


def segments(dets, duration, img_size=512):
    return [{"score": s, "label": k,
             "segment": [max(0, duration * a / img_size), min(duration, duration * b / img_size)]}
            for a, b, s, k in dets]


def encode(boxes, labels, img_size):
    """BoxCoder.encode: boxes [M, 2] in input steps, labels [M] (>= 1)."""
    labels = np.array(labels)
    db = default_boxes(img_size)
    dyy = np.concatenate((db[:, 0, None] - db[:, 1, None] / 2, db[:, 0, None] + db[:, 1, None] / 2), axis=1)
    b = np.array(boxes, dtype=np.float64)
    left = np.maximum(dyy[:, None, 0], b[:, 0])
    right = np.minimum(dyy[:, None, 1], b[:, 1])
    inter = (right - left).clip(min=0)
    a1 = np.abs(dyy[:, 0] - dyy[:, 1])
    a2 = np.abs(b[:, 0] - b[:, 1])
    ious = inter / (a1[:, None] + a2 - inter)
    index = np.full(len(dyy), -1, dtype="int64")
    masked = ious.copy()
    while True:
        v = masked.max(0)
        i = np.argmax(masked, 0)
        j = np.argmax(v, 0)
        i, j = i[j], j
        if masked[i, j] < 1e-6:
            break
        index[i] = j
        masked[i, :] = 0
        masked[:, j] = 0
    mask = (index < 0) & (ious.max(1) >= 0.5)
    if mask.any() and np.squeeze(mask.nonzero()).size > 1:
        index[mask] = np.argmax(ious[np.squeeze(mask.nonzero())], 1)
    bb = b[np.clip(index, 0, None)]
    bc, bw = (bb[:, 0] + bb[:, 1]) / 2, bb[:, 1] - bb[:, 0]
    dc, dw = (dyy[:, 0] + dyy[:, 1]) / 2, dyy[:, 1] - dyy[:, 0]
    loc = np.stack(((bc - dc) / dw / 0.1, (bw / dw - 1.0) / 0.2), axis=1)
    cls = labels[index.clip(0, None)]
    cls[index < 0] = 0
    return loc.astype(np.float32), cls.astype(np.int64)


def loss(loc_preds, cls_preds, loc_t, cls_t, alpha=2.0):
    """FPNCTCN.loss: smooth_l1 on positives (summed), softmax CE on positives and the hardest
    3 negatives per positive of each sample (argsort of -loss over negatives), / positives."""
    pos = (cls_t > 0).float()
    num_pos = pos.sum()
    d = (loc_preds - loc_t) * pos[..., None]
    ad = d.abs()
    sl1 = torch.where(ad < 1, 0.5 * d * d, ad - 0.5).sum()
    ce = F.cross_entropy(cls_preds.reshape(-1, cls_preds.shape[-1]), cls_t.reshape(-1), reduction="none")
    ce = ce.reshape(cls_t.shape)
    neg_key = ce * (pos - 1)
    idx = torch.argsort(neg_key, dim=1, stable=True)
    rank = torch.argsort(idx, dim=1, stable=True)
    neg = rank < (3 * pos.sum(1, keepdim=True))
    sel = ((pos > 0) | neg).float()
    cls_loss = (ce * sel).sum()
    return float((alpha * sl1 + cls_loss) / num_pos), float(alpha * sl1 / num_pos), float(cls_loss / num_pos)
