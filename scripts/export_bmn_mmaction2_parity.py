#!/usr/bin/env python3
"""MMAction2 BMN fixtures for vidkit's parity test (bins/tests/parity_bmn.rs), in the models tier
of scripts/peers.sh (torch), from mmaction2_bmn_ref.py's PyTorch restatement of MMAction2's BMN
(mmcv does not install here).

Writes into OUT_DIR:
  bmn.pth             {"state_dict": ...} as MMAction2 saves it (x_1d_b.0.weight, ..., sample_mask)
  input.npy           float32 [B, 400, T]
  confidence.npy start.npy end.npy   [B, 2, T, T], [B, T], [B, T]
  proposals.json      video 0's proposal_list for duration_second DURATION, duration_frame FRAMES
  train.json          generate_labels of two ground truths and BMNLoss (total, tem, pem_reg, pem_cls) on the
                      batch's outputs for fixed draws u_mid, u_low

Usage: export_bmn_mmaction2_parity.py --out DIR [--tscale 32] [--num-samples 32] [--batch 2]
       [--seed 0] [--duration 123.4] [--frames 3000]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mmaction2_bmn_ref import BMN, FEAT, bmn_loss, generate_labels, proposals  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--tscale", type=int, default=32)
ap.add_argument("--num-samples", type=int, default=32)
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--duration", type=float, default=123.4)
ap.add_argument("--frames", type=float, default=3000)
a = ap.parse_args()
T = a.tscale

torch.manual_seed(a.seed)
model = BMN(T, a.num_samples).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.copy_(0.1 * torch.randn_like(p))
rng = np.random.default_rng(a.seed)
x = rng.standard_normal((a.batch, FEAT, T)).astype(np.float32)
with torch.no_grad():
    conf, start, end = model(torch.from_numpy(x))
conf, start, end = conf.numpy(), start.numpy(), end.numpy()
os.makedirs(a.out, exist_ok=True)
torch.save({"meta": {"note": "restated MMAction2 BMN, random weights"}, "state_dict": model.state_dict()},
           os.path.join(a.out, "bmn.pth"))
np.save(os.path.join(a.out, "input.npy"), x)
for n, v in [("confidence", conf), ("start", start), ("end", end)]:
    np.save(os.path.join(a.out, n + ".npy"), v.astype(np.float32))
json.dump({"proposals": proposals(conf[0], start[0], end[0], a.duration, a.frames), "duration": a.duration,
           "frames": a.frames, "torch": torch.__version__}, open(os.path.join(a.out, "proposals.json"), "w"))

# Training: targets of two ground truths (normalised) and BMNLoss on the batch's outputs with
# fixed draws for its torch.rand_like.
gts = [[[0.1, 0.4], [0.55, 0.6]], [[0.3, 0.95]]][: a.batch]
labels = [generate_labels(g, T) for g in gts]
g_rng = torch.Generator().manual_seed(3)
u_mid, u_low = torch.rand(T, T, generator=g_rng), torch.rand(T, T, generator=g_rng)
loss = bmn_loss(torch.from_numpy(conf), torch.from_numpy(start), torch.from_numpy(end),
                torch.from_numpy(np.stack([l[0] for l in labels])), torch.from_numpy(np.stack([l[1] for l in labels])),
                torch.from_numpy(np.stack([l[2] for l in labels])), u_mid, u_low)
json.dump({"gt": gts, "iou_map": [l[0].tolist() for l in labels], "start": [l[1].tolist() for l in labels],
           "end": [l[2].tolist() for l in labels], "u_mid": u_mid.tolist(), "u_low": u_low.tolist(),
           "loss": loss}, open(os.path.join(a.out, "train.json"), "w"))
