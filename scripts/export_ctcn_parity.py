#!/usr/bin/env python3
"""C-TCN fixtures for vidkit's parity test (bins/tests/parity_ctcn.rs), in the models tier of
scripts/peers.sh (torch), from ctcn_ref.py's restatement of the 2019 zoo's fluid code.

Writes into OUT_DIR:
  ctcn.pdparams     the parameters under fluid's names, pickled as fluid.save does (a dict of
                    numpy arrays), random weights and batch-norm statistics
  input.npy         float32 [N, T, W]  features already at img_size steps
  loc.npy cls.npy   float32 [N, A, 2], [N, A, K]  offsets and class logits
  video.npy         float32 [T0, W]  one video of another length
  train.json        BoxCoder.encode targets for two videos' boxes and FPNCTCN.loss on the
                    batch's outputs with them
  detections.json   its decoded detections (ctcn_ref.decode after the nearest resize, softmax),
                    as segments of a DURATION-second video

Usage: export_ctcn_parity.py --out DIR [--img 64] [--concepts 12] [--classes 5] [--batch 2]
       [--t0 50] [--duration 87.5] [--seed 0] [--forward-only]
"""
import argparse
import json
import os
import pickle
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctcn_ref as ref  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--img", type=int, default=64)
ap.add_argument("--concepts", type=int, default=12)
ap.add_argument("--classes", type=int, default=5)
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--t0", type=int, default=50)
ap.add_argument("--duration", type=float, default=87.5)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--forward-only", action="store_true", help="only the forward outputs (full size: the "
                "reference's per-class soft-NMS in Python would take hours)")
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)

torch.manual_seed(a.seed)
model = ref.CTCN(a.concepts, a.classes).eval()
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
            m.bias.uniform_(-0.1, 0.1)
with open(os.path.join(a.out, "ctcn.pdparams"), "wb") as f:
    pickle.dump(model.fluid_state(), f, protocol=2)

x = torch.randn(a.batch, a.img, a.concepts)
with torch.no_grad():
    loc, cls = model(x.unsqueeze(1))
np.save(os.path.join(a.out, "input.npy"), x.numpy())
np.save(os.path.join(a.out, "loc.npy"), loc.numpy())
np.save(os.path.join(a.out, "cls.npy"), cls.numpy())

if a.forward_only:
    print(f"ctcn fixtures: {loc.shape[1]} anchors, forward only", file=sys.stderr)
    sys.exit(0)
video = np.random.default_rng(a.seed).standard_normal((a.t0, a.concepts)).astype(np.float32)
np.save(os.path.join(a.out, "video.npy"), video)
feats = ref.resize_nearest(video, a.img)
with torch.no_grad():
    vloc, vcls = model(torch.from_numpy(feats)[None, None])
probs = torch.softmax(vcls, -1)[0].numpy()
dets = ref.decode(vloc[0].numpy(), probs, a.img)
with open(os.path.join(a.out, "detections.json"), "w") as f:
    json.dump({"duration": a.duration, "detections": ref.segments(dets, a.duration, a.img)}, f)
# Training targets and the loss on the batch's outputs: boxes in input steps, classes >= 1.
boxes = [[[5.0, 20.0], [30.0, 33.0]], [[10.0, 50.0]]]
labels = [[1, 3], [2]]
targets = [ref.encode(b, l, a.img) for b, l in zip(boxes, labels)]
loc_t = torch.from_numpy(np.stack([t[0] for t in targets]))
cls_t = torch.from_numpy(np.stack([t[1] for t in targets]))
total, lterm, cterm = ref.loss(loc, cls, loc_t, cls_t)
with open(os.path.join(a.out, "train.json"), "w") as f:
    json.dump({"boxes": boxes, "labels": labels, "loc_targets": loc_t.numpy().tolist(),
               "cls_targets": cls_t.numpy().tolist(), "loss": total, "loc": lterm, "cls": cterm}, f)
print(f"ctcn fixtures: {loc.shape[1]} anchors, {len(dets)} detections", file=sys.stderr)
