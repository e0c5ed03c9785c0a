#!/usr/bin/env python3
"""BMN fixtures for vidkit's parity test (bins/tests/parity_bmn.rs); runs in the paddle tier of
scripts/peers.sh (PaddlePaddle's CPU wheel, ppvideo 2.3.1, whose
paddlevideo/modeling/backbones/bmn.py is PaddleVideo's).

Builds PaddleVideo's BMN from paddle.seed(SEED) with its own initialisers (uniform, as
init_params sets them; the 2-D/3-D convolutions Paddle's default), every bias then drawn at
random (Paddle starts some at zero), at the given sizes, runs it in
eval mode on random features [B, 400, T] and writes into OUT_DIR:

  params/<name>.npy   every parameter of the layer, float32, under its state-dict name
  input.npy           float32 [B, 400, T]
  bm.npy start.npy end.npy   the outputs: [B, 2, D, T], [B, T], [B, T]
  mask.npy            the layer's sample_mask, float32 [T, N*D*T] (T <= 64 only)
  model.pdparams      paddle.save of the state dict as PaddleVideo's BMNLocalizer names it
                      (every parameter under `backbone.`), for the importer
  meta.json           the arguments and versions

Usage: export_bmn_parity.py --out DIR [--tscale 32] [--dscale 32] [--num-sample 32]
       [--num-sample-perbin 3] [--batch 2] [--seed 0]
"""
import argparse
import json
import os
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import paddle  # noqa: E402
from paddlevideo.modeling.backbones.bmn import BMN  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--tscale", type=int, default=32)
ap.add_argument("--dscale", type=int, default=32)
ap.add_argument("--num-sample", type=int, default=32)
ap.add_argument("--num-sample-perbin", type=int, default=3)
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()

paddle.set_device("cpu")
paddle.seed(a.seed)
model = BMN(tscale=a.tscale, dscale=a.dscale, prop_boundary_ratio=0.5, num_sample=a.num_sample,
            num_sample_perbin=a.num_sample_perbin)
model.eval()
# Paddle starts Conv2D/Conv3D biases at zero: give every bias small random values so that each
# one is checked.
brng = np.random.default_rng(a.seed + 1)
for name, p in model.named_parameters():
    if name.endswith("bias"):
        p.set_value((0.1 * brng.standard_normal(p.shape)).astype(np.float32))
os.makedirs(os.path.join(a.out, "params"), exist_ok=True)
for name, p in model.state_dict().items():
    np.save(os.path.join(a.out, "params", name + ".npy"), p.numpy().astype(np.float32))
rng = np.random.default_rng(a.seed)
x = rng.standard_normal((a.batch, 400, a.tscale)).astype(np.float32)
with paddle.no_grad():
    bm, start, end = model(paddle.to_tensor(x))
np.save(os.path.join(a.out, "input.npy"), x)
np.save(os.path.join(a.out, "bm.npy"), bm.numpy())
np.save(os.path.join(a.out, "start.npy"), start.numpy())
np.save(os.path.join(a.out, "end.npy"), end.numpy())
if a.tscale <= 64:  # 128 MB at T = 100: compared at the reduced size only
    np.save(os.path.join(a.out, "mask.npy"), model.sample_mask.numpy())
paddle.save({"backbone." + k: v for k, v in model.state_dict().items()},
            os.path.join(a.out, "model.pdparams"))
json.dump({"args": vars(a), "paddle": paddle.__version__, "numpy": np.__version__},
          open(os.path.join(a.out, "meta.json"), "w"))
