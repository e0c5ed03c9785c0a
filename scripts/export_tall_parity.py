#!/usr/bin/env python3
"""TALL fixtures for vidkit's parity test (bins/tests/parity_tall.rs), in the models tier of
scripts/peers.sh (torch), from tall_ref.py's restatement of the 2019 zoo's fluid code.

Writes into OUT_DIR:
  tall.pdparams   the four parameters under fluid's names, pickled as fluid.save does
  visual.npy      float32 [B, Dv]   clip features (context, clip, context)
  sentences.npy   float32 [B, E]
  offsets.npy     float32 [B, 2]    offset targets, frames
  out.npy         float32 [3, B, B] TALLNET.net's sim_score_mat
  loss.json       {"loss", "align", "reg"}: TALLNET.loss on them
  grad_<name>.npy the loss's gradient for each parameter (fluid layout)

Usage: export_tall_parity.py --out DIR [--batch 5] [--visual 30] [--sentence 20] [--semantic 16]
       [--hidden 12] [--seed 0]
"""
import argparse
import json
import os
import pickle
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tall_ref as ref  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--batch", type=int, default=5)
ap.add_argument("--visual", type=int, default=30)
ap.add_argument("--sentence", type=int, default=20)
ap.add_argument("--semantic", type=int, default=16)
ap.add_argument("--hidden", type=int, default=12)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
torch.manual_seed(a.seed)
model = ref.TallNet(a.visual, a.sentence, a.semantic, a.hidden)
with open(os.path.join(a.out, "tall.pdparams"), "wb") as f:
    pickle.dump(model.fluid_state(), f, protocol=2)
visual = torch.rand(a.batch, a.visual) * 3.0
sentences = torch.randn(a.batch, a.sentence)
offsets = torch.randn(a.batch, 2) * 20.0
out = model(visual, sentences)
loss, align, reg = ref.loss(out, offsets)
loss.backward()
for name, t in [("visual", visual), ("sentences", sentences), ("offsets", offsets), ("out", out.detach())]:
    np.save(os.path.join(a.out, f"{name}.npy"), t.numpy().astype(np.float32))
for name, p in model.named_parameters():
    np.save(os.path.join(a.out, f"grad_{name}.npy"), p.grad.numpy().astype(np.float32))
with open(os.path.join(a.out, "loss.json"), "w") as f:
    json.dump({"loss": loss.item(), "align": align.item(), "reg": reg.item()}, f)
print(f"tall fixtures: B {a.batch}, loss {loss.item():.6f}", file=sys.stderr)
