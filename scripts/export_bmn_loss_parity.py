#!/usr/bin/env python3
"""BMN training fixtures for vidkit's parity test (bins/tests/parity_bmn.rs): PaddleVideo's
targets (paddlevideo/loader/pipelines/anet_pipeline.py: GetMatchMap, GetVideoLabel) and loss
(paddlevideo/modeling/losses/bmn_loss.py: BMNLoss) with its gradients, from the ppvideo 2.3.1
wheel in the paddle tier of scripts/peers.sh.

anet_pipeline.py is loaded from its file under stub `paddlevideo.loader` packages: the real
package imports decord, which the tier does not install. BMNLoss draws two paddle.uniform maps;
they are replaced by fixed draws, written out, so that the Rust side can use the same ones.

Writes into OUT_DIR, for B videos with random segments and random outputs (T = D = TSCALE):
  videos.json          [{"duration", "segments": [[t0, t1], ...]}, ...]
  gt_iou_map.npy gt_start.npy gt_end.npy     float32 [B, D, T], [B, T], [B, T]
  pred_bm.npy pred_start.npy pred_end.npy    float32 [B, 2, D, T], [B, T], [B, T]
  uniform_mid.npy uniform_low.npy            float32 [D, T], in the order the loss draws them
  loss.json            {"total", "tem", "pem_reg", "pem_cls"}
  grad_bm.npy grad_start.npy grad_end.npy    d total / d outputs

Usage: export_bmn_loss_parity.py --out DIR [--tscale 16] [--batch 3] [--seed 0]
"""
import argparse
import importlib.util
import json
import os
import sys
import types
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import paddle  # noqa: E402
import paddlevideo  # noqa: E402
from paddlevideo.modeling.losses import bmn_loss as bmn_loss_module  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--tscale", type=int, default=16)
ap.add_argument("--batch", type=int, default=3)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()

# anet_pipeline.py under stub packages (its only import is `..registry.PIPELINES`).
root = os.path.dirname(paddlevideo.__file__)
loader = types.ModuleType("paddlevideo.loader")
loader.__path__ = [os.path.join(root, "loader")]
registry = types.ModuleType("paddlevideo.loader.registry")


class _Registry:
    def register(self, cls=None, **_):
        return cls if cls is not None else (lambda c: c)


registry.PIPELINES = _Registry()
pipelines = types.ModuleType("paddlevideo.loader.pipelines")
pipelines.__path__ = [os.path.join(root, "loader", "pipelines")]
sys.modules.update({"paddlevideo.loader": loader, "paddlevideo.loader.registry": registry,
                    "paddlevideo.loader.pipelines": pipelines})
spec = importlib.util.spec_from_file_location(
    "paddlevideo.loader.pipelines.anet_pipeline", os.path.join(root, "loader", "pipelines", "anet_pipeline.py"))
anet = importlib.util.module_from_spec(spec)
spec.loader.exec_module(anet)

paddle.set_device("cpu")
rng = np.random.default_rng(a.seed)
T = D = a.tscale
videos, iou, starts, ends = [], [], [], []
for b in range(a.batch):
    duration = float(rng.uniform(20, 120))
    segs = []
    for _ in range(int(rng.integers(1, 4))):
        s = float(rng.uniform(-0.05, 0.9)) * duration
        segs.append([s, s + float(rng.uniform(0.05, 0.5)) * duration])  # may pass the end
    # One segment on the step grid, so that some map positions reach IoU > 0.9.
    k = int(rng.integers(0, T // 2))
    segs.append([k * duration / T, (k + T // 4) * duration / T])
    videos.append({"duration": duration, "segments": segs})
    results = {"video_info": {"duration_second": duration,
                              "annotations": [{"segment": s, "label": "x"} for s in segs]}}
    results = anet.GetMatchMap(tscale=T)(results)
    results = anet.GetVideoLabel(tscale=T, dscale=D)(results)
    iou.append(results["gt_iou_map"])
    starts.append(results["gt_start"])
    ends.append(results["gt_end"])
gt_iou = np.stack(iou).astype(np.float32)
gt_start = np.stack(starts).astype(np.float32)
gt_end = np.stack(ends).astype(np.float32)


def sigmoid(x):
    return (1 / (1 + np.exp(-x))).astype(np.float32)


pred_bm = sigmoid(rng.standard_normal((a.batch, 2, D, T)))
pred_start = sigmoid(rng.standard_normal((a.batch, T)))
pred_end = sigmoid(rng.standard_normal((a.batch, T)))
draws = [rng.uniform(size=(D, T)).astype(np.float32) for _ in range(2)]
queue = list(draws)


def fixed_uniform(shape, min=0.0, max=1.0, **_):  # noqa: A002 (the reference's argument names)
    u = queue.pop(0)
    assert list(shape) == list(u.shape)
    return paddle.to_tensor(u)


bmn_loss_module.paddle.uniform = fixed_uniform
loss_fn = bmn_loss_module.BMNLoss(dscale=D, tscale=T)
tensors = {}
for name, v in [("bm", pred_bm), ("start", pred_start), ("end", pred_end)]:
    t = paddle.to_tensor(v)
    t.stop_gradient = False
    tensors[name] = t
total = loss_fn(tensors["bm"], tensors["start"], tensors["end"], paddle.to_tensor(gt_iou),
                paddle.to_tensor(gt_start), paddle.to_tensor(gt_end))
total.backward()
assert not queue, "the loss drew fewer uniform maps than expected"
# The three terms, recomputed with the same draws for the log comparison.
queue.extend(draws)
mask = loss_fn._get_mask(D, T)
reg = loss_fn.pem_reg_loss_func(tensors["bm"][:, 0], paddle.to_tensor(gt_iou), mask)
cls = loss_fn.pem_cls_loss_func(tensors["bm"][:, 1], paddle.to_tensor(gt_iou), mask)
tem = loss_fn.tem_loss_func(tensors["start"], tensors["end"], paddle.to_tensor(gt_start), paddle.to_tensor(gt_end))

os.makedirs(a.out, exist_ok=True)
save = lambda n, v: np.save(os.path.join(a.out, n + ".npy"), np.asarray(v, dtype=np.float32))  # noqa: E731
for n, v in [("gt_iou_map", gt_iou), ("gt_start", gt_start), ("gt_end", gt_end), ("pred_bm", pred_bm),
             ("pred_start", pred_start), ("pred_end", pred_end), ("uniform_mid", draws[0]),
             ("uniform_low", draws[1]), ("grad_bm", tensors["bm"].grad.numpy()),
             ("grad_start", tensors["start"].grad.numpy()), ("grad_end", tensors["end"].grad.numpy())]:
    save(n, v)
json.dump(videos, open(os.path.join(a.out, "videos.json"), "w"))
scalar = lambda t: float(np.asarray(t.numpy()).reshape(-1)[0])  # noqa: E731
json.dump({"total": scalar(total), "tem": scalar(tem), "pem_reg": scalar(reg), "pem_cls": scalar(cls),
           "paddle": paddle.__version__}, open(os.path.join(a.out, "loss.json"), "w"))
