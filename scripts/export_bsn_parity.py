#!/usr/bin/env python3
"""MMAction2 BSN fixtures for vidkit's parity test (bins/tests/parity_bsn.rs), in the models tier
of scripts/peers.sh (torch), from mmaction2_bsn_ref.py's restatement (mmcv does not install here).

Writes into OUT_DIR:
  tem.pth pem.pth     {"state_dict": ...} as MMAction2 saves its TEM and PEM (conv1.weight, ...;
                      fc1.weight, ...), random weights (the TEM's last layer scaled so that its
                      curves have peaks)
  input.npy           float32 [B, C, T]
  tem.npy             float32 [B, 3, T]  the TEM's output
  candidates.npy      float32 [N, 7]  video 0's PGM proposals as the PEM reads them
  bsp.npy             float32 [K, 32] their BSP features (K = min(N, top_k))
  pem.npy             float32 [K]     the PEM's scores
  proposals.json      video 0's proposal_list for duration_second DURATION, duration_frame FRAMES
  train.json          targets and losses for video 0 with ground truth GT: tem_labels [3, T],
                      the TEM loss of the batch with every video labelled so, the candidates'
                      match_iou, the PEM loss (MMAction2's and the balanced one) for draws u_m, u_l

Usage: export_bsn_parity.py --out DIR [--tscale 100] [--feat 400] [--batch 2] [--seed 0]
       [--duration 123.4] [--frames 3000] [--top-k 1000]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmaction2_bsn_ref as ref  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--tscale", type=int, default=100)
ap.add_argument("--feat", type=int, default=400)
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--duration", type=float, default=123.4)
ap.add_argument("--frames", type=float, default=3000)
ap.add_argument("--top-k", type=int, default=1000)
a = ap.parse_args()
T = a.tscale
os.makedirs(a.out, exist_ok=True)

torch.manual_seed(a.seed)
tem = ref.TEM(a.feat).eval()
pem = ref.PEM().eval()
with torch.no_grad():
    tem.conv3.weight.mul_(40.0)
torch.save({"meta": {}, "state_dict": tem.state_dict()}, os.path.join(a.out, "tem.pth"))
torch.save({"meta": {}, "state_dict": pem.state_dict()}, os.path.join(a.out, "pem.pth"))

x = torch.randn(a.batch, a.feat, T)
with torch.no_grad():
    out = tem(x)
np.save(os.path.join(a.out, "input.npy"), x.numpy().astype(np.float32))
np.save(os.path.join(a.out, "tem.npy"), out.numpy().astype(np.float32))

table = ref.tem_results(out[0].numpy())
props = ref.candidate_proposals(table)
np.save(os.path.join(a.out, "candidates.npy"), props)
props = props[:a.top_k]
feats = ref.bsp_features(table, props, top_k=a.top_k)
np.save(os.path.join(a.out, "bsp.npy"), feats)
with torch.no_grad():
    scores = pem(torch.from_numpy(feats)).view(-1).numpy()
np.save(os.path.join(a.out, "pem.npy"), scores.astype(np.float32))
result = ref.pem_result(scores, props)
proposals = ref.post_processing(result, a.duration, a.frames)
with open(os.path.join(a.out, "proposals.json"), "w") as f:
    json.dump({"duration": a.duration, "frames": a.frames, "proposals": proposals}, f)

# Training targets and losses, video 0's ground truth for every video of the batch.
gt = [[0.1, 0.35], [0.3, 0.62], [0.8, 0.97]]
labels = ref.tem_labels(gt, T)
lt = torch.from_numpy(np.stack([labels] * a.batch))
total, (la, ls, le) = ref.tem_loss(out, lt)
cands = ref.candidate_proposals(table, gt=([g[0] for g in gt], [g[1] for g in gt]))[:500]
iou = torch.from_numpy(cands[:, 5].copy())
g = torch.Generator().manual_seed(7)
u_m = torch.rand(len(iou), generator=g)
u_l = torch.rand(len(iou), generator=g)
pem_in = torch.from_numpy(ref.bsp_features(table, cands, top_k=500))
with torch.no_grad():
    pem_out = pem(pem_in)
train = {
    "gt": gt,
    "tem_labels": labels.tolist(),
    "tem_loss": float(total),
    "tem_terms": [float(la), float(ls), float(le)],
    "match_iou": cands[:, 5].tolist(),
    "u_m": u_m.tolist(),
    "u_l": u_l.tolist(),
    "pem_output": pem_out.view(-1).tolist(),
    "pem_loss": float(ref.pem_loss(pem_out, iou, u_m, u_l)),
    "pem_loss_balanced": float(ref.pem_loss(pem_out, iou, u_m, u_l, balanced=True)),
}
with open(os.path.join(a.out, "train.json"), "w") as f:
    json.dump(train, f)
print(f"bsn fixtures: {len(props)} candidates, {len(proposals)} proposals", file=sys.stderr)
