#!/usr/bin/env python3
"""RandAugment / AugMix fixtures for vidkit's parity test (bins/tests/augment_parity.rs):
pytorchvideo 0.1.5's ops (`transforms/augmentations.py`) on a uint8 video tensor (T, C, H, W),
each at several arguments, and its RandAugment and AugMix as wholes with their random draws
recorded (the ops each AugmentTransform applied with their levels and arguments; AugMix's
Dirichlet weights, Beta weight and chains), so the Rust side can apply the same draws.
Models tier of scripts/peers.sh.

pytorchvideo 0.1.5 imports `torchvision.transforms.functional_tensor`, which torchvision 0.17
renamed `_functional_tensor`: the old name is aliased to it before the import.

Writes into OUT_DIR: clip.npy (uint8 [T, H, W, 3]: noise, gradients, grey and flat and
low-contrast areas), ops.json ([{"op", "arg", "fill"}]), ops.npy (uint8 [N, T, H, W, 3]),
randaug.json ([{"config", "ops": [{"op", "level", "arg"}]}]), randaug.npy, augmix.json
([{"config", "weights", "m", "chains": [[{"op", "level", "arg"}]]}]), augmix.npy; each float
of a draw also as its IEEE-754 bits (`level_bits`, `arg_bits`, `weights_bits`, `m_bits`).

Usage: augment_ref.py --out DIR [--draws 24] [--seed 0]
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
import torchvision
import torchvision.transforms._functional_tensor as _ft

sys.modules.setdefault("torchvision.transforms.functional_tensor", _ft)
import pytorchvideo  # noqa: E402
import pytorchvideo.transforms.augmentations as A  # noqa: E402
from pytorchvideo.transforms.augmix import AugMix  # noqa: E402
from pytorchvideo.transforms.rand_augment import RandAugment  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--draws", type=int, default=24)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
rng = np.random.default_rng(a.seed)
T, H, W = 3, 23, 30
clip = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
yy, xx = np.mgrid[0:H, 0:W]
clip[1] = np.stack([xx * 8, yy * 10, (xx + yy) * 4], axis=-1).clip(0, 255).astype(np.uint8)
clip[2, :, : W // 2] = clip[2, :, : W // 2, :1]  # grey: r = g = b
clip[2, :, W // 2 :, 1] = 77  # a flat channel half
clip[2, :, W // 2 :, 2] = 100 + (xx[:, W // 2 :] % 5)  # low contrast
video = torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous()  # (T, C, H, W)


def to_thwc(v):
    return v.permute(0, 2, 3, 1).contiguous().numpy()


DEFAULT_FILL = (0.5, 0.5, 0.5)
OTHER_FILL = (128.0, 64.0, 200.0)
cases = []
for name, args in [
    ("AutoContrast", [None]),
    ("Equalize", [None]),
    ("Invert", [None]),
    ("AdjustBrightness", [0.1, 0.55, 1.37, 1.9]),
    ("AdjustContrast", [0.1, 0.73, 1.46, 1.9]),
    ("AdjustSaturation", [0.1, 0.64, 1.28, 1.9]),
    ("AdjustSharpness", [0.1, 0.5, 0.118, 1.52, 1.9]),
    ("Posterize", [0, 1, 2, 3, 4]),
    ("Solarize", [0.0, 0.27, 0.5, 0.81, 1.0]),
    ("Rotate", [-30.0, -12.7, 3.3, 14.5, 27.0]),
    ("ShearX", [-0.3, -0.11, 0.07, 0.24]),
    ("ShearY", [-0.27, -0.05, 0.13, 0.3]),
    ("TranslateX", [-0.45, -0.2, 0.1, 1.0 / 3.0]),
    ("TranslateY", [-1.0 / 3.0, -0.05, 0.17, 0.45]),
]:
    for arg in args:
        fills = [DEFAULT_FILL, OTHER_FILL] if name in ("Rotate", "ShearX", "TranslateY") else [DEFAULT_FILL]
        for fill in fills:
            cases.append({"op": name, "arg": arg, "fill": list(fill)})
outs = []
for c in cases:
    fn = A._NAME_TO_TRANSFORM_FUNC[c["op"]]
    args = () if c["arg"] is None else (c["arg"],)
    outs.append(to_thwc(fn(video.clone(), *args, fill=tuple(c["fill"]))))


def bits(x):
    """A double's IEEE bits, so the Rust side reads it exactly (JSON float parsers may not)."""
    return None if x is None else struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def record(transforms, sink):
    """Wraps each AugmentTransform so that what it draws and applies lands in sink()."""
    for t in transforms:
        get_magnitude, transform_fn = t._get_magnitude, t.transform_fn

        def wrapped_magnitude(get_magnitude=get_magnitude, t=t):
            level = get_magnitude()
            t._last_level = float(level)
            return level

        def wrapped_fn(video, *args, transform_fn=transform_fn, t=t, **kw):
            level, arg = getattr(t, "_last_level", None), float(args[0]) if args else None
            sink().append({"op": t.transform_name, "level": level, "arg": arg,
                           "level_bits": bits(level), "arg_bits": bits(arg)})
            t._last_level = None
            return transform_fn(video, *args, **kw)

        t._get_magnitude, t.transform_fn = wrapped_magnitude, wrapped_fn


ra_configs = [
    dict(),
    dict(magnitude=7, num_layers=4),
    dict(magnitude=10, num_layers=3, prob=0.9),
    dict(magnitude=5, num_layers=2, prob=1.0, sampling_type="uniform"),
    dict(magnitude=9, num_layers=14, prob=1.0, transform_hparas={"fill": OTHER_FILL}),
    dict(magnitude=6, num_layers=3, prob=0.8, sampling_type="gaussian", sampling_hparas={"sampling_std": 2.0}),
]
ra_meta, ra_outs = [], []
for k in range(a.draws):
    cfg = ra_configs[k % len(ra_configs)]
    torch.manual_seed(1000 + k)
    ra = RandAugment(**cfg)
    ops = []
    record(ra.randaug_fn.transforms_list, lambda: ops)
    ra_outs.append(to_thwc(ra(video.clone())))
    ra_meta.append({"config": cfg, "ops": ops})

am_configs = [
    dict(),
    dict(magnitude=9, alpha=0.5, width=4),
    dict(magnitude=5, alpha=2.0, width=2, depth=3),
    dict(magnitude=10, width=3, depth=1, transform_hparas={"fill": OTHER_FILL}),
]
am_meta, am_outs = [], []
for k in range(a.draws):
    cfg = am_configs[k % len(am_configs)]
    torch.manual_seed(2000 + k)
    am = AugMix(**cfg)
    chains, drawn = [], {}
    record(am.augmix_fn.transforms_list, lambda: chains[-1])
    sampler = am.augmix_fn

    def chain(v, sampler=sampler):
        chains.append([])
        return sampler(v)

    am.augmix_fn = chain
    dirichlet_sample, beta_sample = am.dirichlet.sample, am.beta.sample

    def wrapped_dirichlet(*args, **kw):
        drawn["weights"] = dirichlet_sample(*args, **kw)
        return drawn["weights"]

    def wrapped_beta(*args, **kw):
        drawn["m"] = beta_sample(*args, **kw)
        return drawn["m"]

    am.dirichlet.sample, am.beta.sample = wrapped_dirichlet, wrapped_beta
    am_outs.append(to_thwc(am(video.clone())))
    am_meta.append({
        "config": cfg,
        # float32 values, written exactly (as doubles)
        "weights": [float(w) for w in drawn["weights"]],
        "m": float(drawn["m"]),
        "weights_bits": [bits(w) for w in drawn["weights"]],
        "m_bits": bits(drawn["m"]),
        "chains": chains,
    })

os.makedirs(a.out, exist_ok=True)
np.save(os.path.join(a.out, "clip.npy"), clip)
np.save(os.path.join(a.out, "ops.npy"), np.stack(outs))
np.save(os.path.join(a.out, "randaug.npy"), np.stack(ra_outs))
np.save(os.path.join(a.out, "augmix.npy"), np.stack(am_outs))
versions = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "pytorchvideo": getattr(pytorchvideo, "__version__", "0.1.5")}
for name, obj in [("ops", cases), ("randaug", ra_meta), ("augmix", am_meta)]:
    json.dump({"cases": obj, **versions}, open(os.path.join(a.out, name + ".json"), "w"))
