#!/usr/bin/env python3
"""StNet fixtures for vidkit's parity test (bins/tests/parity_stnet.rs), in the models tier of
scripts/peers.sh (torch), from stnet_ref.py's restatement of the 2019 zoo's fluid code.

Writes into OUT_DIR:
  stnet.pdparams  the parameters under fluid's names, pickled as fluid.save does (a dict of
                  numpy arrays): random weights, batch-norm statistics and biases
  input.npy       float32 [B, N*T, 3, H, W]  normalised clips in vidkit's layout (the reference
                  takes them as [B, N, T*3, H, W], the same memory)
  logits.npy      float32 [B, classes]  the fc's output (before the reference's softmax)
  input25.npy logits25.npy  the same model on 25-segment clips (the zoo's TEST protocol)

Usage: export_stnet_parity.py --out DIR [--width 16] [--size 64] [--classes 10] [--batch 2]
       [--seg-num 7] [--seglen 5] [--seed 0]
"""
import argparse
import os
import pickle
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stnet_ref as ref  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--width", type=int, default=16)
ap.add_argument("--size", type=int, default=64)
ap.add_argument("--classes", type=int, default=10)
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--seg-num", type=int, default=7)
ap.add_argument("--seglen", type=int, default=5)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
torch.manual_seed(a.seed)
torch.set_num_threads(2)

model = ref.StNet(50, a.seg_num, a.seglen, a.classes, a.width).eval()
ref.randomize(model, a.seed)
with open(os.path.join(a.out, "stnet.pdparams"), "wb") as f:
    pickle.dump(model.fluid_state(), f, protocol=2)

for suffix, seg_num in [("", a.seg_num), ("25", 25)]:
    x = torch.randn(a.batch, seg_num * a.seglen, 3, a.size, a.size)
    with torch.no_grad():
        logits, _ = model(x.reshape(a.batch, seg_num, a.seglen * 3, a.size, a.size))
    np.save(os.path.join(a.out, f"input{suffix}.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(a.out, f"logits{suffix}.npy"), logits.numpy().astype(np.float32))
print("stnet fixtures:", a.out)
