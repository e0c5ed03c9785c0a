#!/usr/bin/env python3
"""ColorJitter fixtures for vidkit's parity test (bins/tests/color_parity.rs): torchvision's
functional adjust_brightness / adjust_contrast / adjust_saturation / adjust_hue applied, in a
given order with given factors (what transforms.ColorJitter draws), to every frame of a uint8
clip, as torch tensors [3, H, W]. Models tier of scripts/peers.sh.

With --backend pil the frames go in as PIL images instead: PaddleVideo's ColorJitter
(paddle.vision.transforms on PIL images) adjusts with Pillow — ImageEnhance.Brightness /
Contrast / Color and an 8-bit HSV hue shift — the same calls as torchvision's PIL path, which
this runs (no Paddle needed).

Writes into OUT_DIR: clip.npy (uint8 [T, H, W, 3]: noise, smooth gradients and grey pixels),
draws.json ([{"order": [..4], "factors": [b, c, s, h or null]}]), out.npy (uint8 [K, T, H, W, 3]).

Usage: colorjitter_ref.py --out DIR [--draws 16] [--seed 0] [--backend tensor|pil]
"""
import argparse
import json
import os

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--draws", type=int, default=16)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--backend", choices=["tensor", "pil"], default="tensor")
a = ap.parse_args()
rng = np.random.default_rng(a.seed)
T, H, W = 3, 24, 32
clip = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
yy, xx = np.mgrid[0:H, 0:W]
clip[1] = np.stack([xx * 8, yy * 10, (xx + yy) * 4], axis=-1).clip(0, 255).astype(np.uint8)
clip[2, :, : W // 2] = clip[2, :, : W // 2, :1]  # grey: r = g = b
if a.backend == "pil":
    clip[2, : H // 2, W // 2 :] = [255, 0, 0]  # saturated primaries
    clip[2, H // 2 :, W // 2 :] = [0, 255, 255]
draws, outs = [], []
for k in range(a.draws):
    order = [int(i) for i in rng.permutation(4)]
    factors = [float(rng.uniform(0.3, 1.7)), float(rng.uniform(0.3, 1.7)), float(rng.uniform(0.0, 2.0)),
               float(rng.uniform(-0.5, 0.5))]
    if k % 4 == 3:
        factors[int(rng.integers(0, 4))] = None
    draws.append({"order": order, "factors": factors})
    frames = []
    for t in range(T):
        if a.backend == "pil":
            img = Image.fromarray(clip[t])
        else:
            img = torch.from_numpy(clip[t]).permute(2, 0, 1).contiguous()
        for op in order:
            f = factors[op]
            if f is None:
                continue
            img = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue][op](img, f)
        frames.append(np.asarray(img) if a.backend == "pil" else img.permute(1, 2, 0).numpy())
    outs.append(np.stack(frames))
os.makedirs(a.out, exist_ok=True)
np.save(os.path.join(a.out, "clip.npy"), clip)
np.save(os.path.join(a.out, "out.npy"), np.stack(outs))
versions = {"torchvision": torchvision.__version__, "pillow": PIL.__version__}
json.dump({"draws": draws, **versions}, open(os.path.join(a.out, "draws.json"), "w"))
