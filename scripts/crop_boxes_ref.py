#!/usr/bin/env python3
"""The three test crops' boxes as the references compute them, for bins/tests/crop_parity.rs.

  --impl ppvideo       PaddleVideo's UniformCrop (loader/pipelines/augmentations.py, cv2
                       backend: a list of [H, W, C] arrays), in the paddle tier of scripts/peers.sh
  --impl pytorchvideo  pytorchvideo 0.1.5's transforms.functional.uniform_crop (PySlowFast's,
                       TimeSformer's) for spatial_idx 0, 1, 2, in the models tier; the module file
                       is loaded on its own (pytorchvideo.transforms does not import with this
                       torchvision)

Each image holds its own coordinates (channel 0 the row, channel 1 the column), so a crop's
top-left pixel and shape give its box. Writes OUT/boxes.json: [{"w", "h", "crop", "boxes":
[[x, y, w, h], ...]}] in the reference's order, for image sizes with even and odd margins
(ppvideo: only those with one side equal to the crop, as it requires).

Usage: crop_boxes_ref.py --impl ppvideo|pytorchvideo --out DIR
"""
import argparse
import importlib.util
import json
import os

import numpy as np

SIZES = [(340, 256, 256), (341, 256, 256), (257, 256, 256), (256, 341, 256), (256, 257, 256),
         (224, 224, 224), (300, 224, 224), (225, 224, 224), (320, 240, 224), (240, 321, 224)]


def coords(w, h):
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([yy, xx, np.zeros_like(yy)], axis=-1).astype(np.int32)  # [H, W, 3]


def box(crop_hw3):
    y0, x0 = int(crop_hw3[0, 0, 0]), int(crop_hw3[0, 0, 1])
    return [x0, y0, int(crop_hw3.shape[1]), int(crop_hw3.shape[0])]


def ppvideo_boxes(w, h, c):
    import sys
    import types
    # The pipelines package imports its video decoders too; decord is not in the paddle tier and
    # UniformCrop does not use it.
    sys.modules.setdefault("decord", types.ModuleType("decord"))
    from paddlevideo.loader.pipelines.augmentations import UniformCrop
    if c not in (w, h):
        return None
    out = UniformCrop(c)({"imgs": [coords(w, h)]})["imgs"]
    return [box(im) for im in out]


def pytorchvideo_boxes(w, h, c):
    import torch
    path = os.path.join(os.path.dirname(importlib.util.find_spec("pytorchvideo").origin), "transforms",
                        "functional.py")
    spec = importlib.util.spec_from_file_location("ptv_functional", path)
    f = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(f)
    img = torch.from_numpy(coords(w, h)).permute(2, 0, 1).unsqueeze(1)  # [C, T=1, H, W]
    return [box(f.uniform_crop(img, c, i)[:, 0].permute(1, 2, 0).numpy()) for i in range(3)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", required=True, choices=["ppvideo", "pytorchvideo"])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    fn = ppvideo_boxes if a.impl == "ppvideo" else pytorchvideo_boxes
    rows = []
    for w, h, c in SIZES:
        b = fn(w, h, c)
        if b is not None:
            rows.append({"w": w, "h": h, "crop": c, "boxes": b})
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "boxes.json"), "w") as fh:
        json.dump(rows, fh)


if __name__ == "__main__":
    main()
