#!/usr/bin/env python3
"""StNet fixtures for vidkit's parity test (bins/tests/parity_stnet.rs), in the models tier of
scripts/peers.sh (torch), from stnet_ref.py's restatement of the 2019 zoo's fluid code.

Writes into OUT_DIR:
  stnet.pdparams  the parameters under fluid's names, pickled as fluid.save does (a dict of
                  numpy arrays): random weights, batch-norm statistics and biases
  input.npy       float32 [B, N*T, 3, H, W]  normalised clips in vidkit's layout (the reference
                  takes them as [B, N, T*3, H, W], the same memory)
  logits.npy      float32 [B, classes]  the fc's output (before the reference's softmax)
  logits_bf16.npy the same under torch.autocast("cpu", bfloat16) (bins/tests/common/precision.rs)
  input25.npy logits25.npy  the same model on 25-segment clips (the zoo's TEST protocol)
  train_r.npy     float32 [B, classes]  R of the training check: L = sum(logits * R) of input.npy
                  in training mode (batch statistics)
  train_logits.npy, grad_<fluid name>.npy  its logits and dL/dparameter of twelve parameters,
                  computed in float64
  grad_f32_errors.json  torch float32's relative error against them, per parameter

Usage: export_stnet_parity.py --out DIR [--width 16] [--size 64] [--classes 10] [--batch 2]
       [--seg-num 7] [--seglen 5] [--seed 0]
"""
import argparse
import copy
import json
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
    if not suffix:
        # PyTorch's bf16 CPU mode on the same weights and input: the yardstick for vidkit's bf16.
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits_bf16, _ = model(x.reshape(a.batch, seg_num, a.seglen * 3, a.size, a.size))
        np.save(os.path.join(a.out, "logits_bf16.npy"), logits_bf16.float().numpy().astype(np.float32))
# Training mode: batch statistics in every batch norm, and the gradients of L = sum(logits * R),
# in float64 (the reference values) and in float32 (how far torch's own float32 is from them: a
# deep random ResNet in train mode is ill-conditioned, see parity_zoo.rs).
x = torch.from_numpy(np.load(os.path.join(a.out, "input.npy")))
clip = x.reshape(a.batch, a.seg_num, a.seglen * 3, a.size, a.size)
model64 = copy.deepcopy(model).double().train()
model.train()
logits, _ = model(clip)
r = torch.randn(logits.shape)
(logits * r).sum().backward()
logits64, _ = model64(clip.double())
(logits64 * r.double()).sum().backward()
np.save(os.path.join(a.out, "train_r.npy"), r.numpy().astype(np.float32))
np.save(os.path.join(a.out, "train_logits.npy"), logits64.detach().numpy().astype(np.float32))


def params(m):
    return {
        "conv1_weights": m.conv1.conv.weight,
        "res3a_branch2b_weights": m.blocks[3].b.conv.weight,
        "bn4a_branch1_scale": m.blocks[7].short.bn.weight,
        "conv3d_0.w_0": m.temporal[0].conv.weight,
        "conv3d_1.b_0": m.temporal[1].conv.bias,
        "res5a_branch2a_weights": m.blocks[-3].a.conv.weight,
        "res5c_branch2c_weights": m.blocks[-1].c.conv.weight,
        "bn5c_branch2c_scale": m.blocks[-1].c.bn.weight,
        "xception_att_conv.w_0": m.xception.att_conv.weight,
        "xception_bndw.b_0": m.xception.bndw.bias,
        "xception_dw.w_0": m.xception.dw.weight,
        "fc_0.w_0": m.fc.weight,
    }


f32_errors = {}
for (name, p32), p64 in zip(params(model).items(), params(model64).values()):
    # The fc's gradient in PyTorch's [out, in] layout (vidkit's), not fluid's [in, out].
    g64 = p64.grad.numpy()
    np.save(os.path.join(a.out, f"grad_{name}.npy"), g64.astype(np.float32))
    f32_errors[name] = float(np.abs(p32.grad.numpy() - g64).max() / np.abs(g64).max())
with open(os.path.join(a.out, "grad_f32_errors.json"), "w") as f:
    json.dump(f32_errors, f)
print("stnet fixtures:", a.out)
