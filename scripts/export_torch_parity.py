#!/usr/bin/env python3
"""Reference TSN/TSM logits for vidkit's model parity test (bins/tests/parity_torch.rs).

Builds torchvision's ResNet-{18,34,50,101} with random weights (seeded; BatchNorm affine
parameters and running statistics randomised too, so BN is not the identity), wraps it as TSN or
TSM the way mmaction2 does, runs it in eval mode on a fixed random input [B, T, 3, H, W] and
writes into OUT_DIR:

  model.pth    the weights, in one of three layouts (--layout):
                 plain      torchvision's own ResNet state dict: conv1.weight, bn1.*,
                            layer1.0.conv1.weight, ..., fc.weight  (the classifier is the ResNet's fc)
                 wrapped    torchvision names under backbone., classifier cls_head.fc_cls.*
                            (mmaction2's TSN with a torchvision backbone), as a plain state dict
                 mmaction2  mmaction2's ResNet/ResNetTSM names (ConvModule: conv1.conv.weight,
                            conv1.bn.*, layer1.0.conv1.conv.weight, downsample.conv/bn; a shifted
                            block's conv as conv1.conv.net.weight) under backbone., the head as
                            cls_head.fc_cls.*, nested as mmaction2 saves it: {meta, state_dict}
  input.npy    float32 [B, T, 3, H, W], already normalised
  logits.npy   float32 [B, num_classes]
  logits_bf16.npy  float32, the same under torch.autocast("cpu", bfloat16): the yardstick of
               vidkit's --precision bf16 (bins/tests/common/precision.rs)
  meta.json    arch, frames, num_classes, size, seed, layout, torch versions

TSN (mmaction2 TSNHead): per-frame backbone, global average pool, average over the T segments,
dropout (identity in eval), fc. TSM (mmaction2 ResNetTSM, shift_place='blockres', shift_div=8,
TSMHead): the same, with TemporalShift.shift applied to the input of conv1 of each residual block
(the residual branch only; the identity path sees the unshifted input). With 23 or more blocks in
layer3 (ResNet-101), every stage shifts only its even-numbered blocks (mmaction2's n_round = 2).
TSMHead applies fc per segment before averaging; in eval mode that equals TSNHead's order since
both are linear.

No mmaction2 install: its semantics are restated here from its source
(mmaction/models/backbones/resnet_tsm.py, mmaction/models/heads/tsn_head.py).

Usage: export_torch_parity.py --arch tsm_r50 --seed 0 --out DIR [--frames 8] [--size 64x80]
       [--batch 2] [--classes 17] [--layout wrapped]
"""
import argparse
import collections
import json
import os

import numpy as np
import torch
import torchvision


def temporal_shift(x, segments, shift_div):
    """mmaction2 TemporalShift.shift: channels [0, fold) take frame t+1, [fold, 2 fold) take
    frame t-1, the rest stay; frames shifted in from outside the clip are zeros."""
    nt, c, h, w = x.shape
    x = x.view(nt // segments, segments, c, h * w)
    fold = c // shift_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


def shifted_blocks(resnet):
    """(stage, block index) of every block whose residual branch shifts under mmaction2's
    ResNetTSM: all of them, or the even-numbered ones when layer3 has >= 23 blocks."""
    every = 2 if len(resnet.layer3) >= 23 else 1
    for s in range(1, 5):
        for i, _ in enumerate(getattr(resnet, f"layer{s}")):
            if i % every == 0:
                yield s, i


class Recognizer(torch.nn.Module):
    """TSN/TSM: torchvision ResNet (its fc removed) as `backbone`, `cls_head.fc_cls` linear."""

    def __init__(self, resnet, num_classes, frames, tsm, shift_div=8):
        super().__init__()
        channels = resnet.fc.in_features
        resnet.fc = torch.nn.Identity()
        self.backbone = resnet
        self.cls_head = torch.nn.Module()
        self.cls_head.fc_cls = torch.nn.Linear(channels, num_classes)
        self.frames = frames
        if tsm:
            # A pre-hook on conv1 shifts exactly the residual branch's input (blockres) and keeps
            # torchvision's parameter names (mmaction2 wraps the conv instead: conv1.conv.net).
            for s, i in shifted_blocks(resnet):
                conv1 = getattr(resnet, f"layer{s}")[i].conv1
                conv1.register_forward_pre_hook(
                    lambda _m, inp: (temporal_shift(inp[0], frames, shift_div),)
                )

    def forward(self, x):
        b, t, c, h, w = x.shape
        feats = self.backbone(x.reshape(b * t, c, h, w))  # avgpool + flatten, fc is Identity
        return self.cls_head.fc_cls(feats.view(b, t, -1).mean(1))


def randomise(resnet, gen, h, w):
    """Random BatchNorm affine parameters and running statistics, so that no BN is the identity.
    The statistics are first measured on random images (as training would leave them), then
    perturbed, so the net neither explodes nor collapses to a constant and its logits depend on
    the input. The last BN of each residual branch gets a small gain (trained ResNets have them;
    torchvision's zero_init_residual is the limit): with gains near 1 a random ResNet-101 is
    chaotic and amplifies float32 rounding to ~5e-5 of its logits (measured against float64),
    too close to the parity limit; with gains in [0.2, 0.6] that is ~5e-6. Convs and fc keep
    torchvision's (seeded) init."""
    bns = [m for m in resnet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    last = set()
    for block in resnet.modules():
        if isinstance(block, torchvision.models.resnet.BasicBlock):
            last.add(block.bn2)
        elif isinstance(block, torchvision.models.resnet.Bottleneck):
            last.add(block.bn3)
    with torch.no_grad():
        for m in bns:
            c = m.num_features
            lo, hi = (0.2, 0.6) if m in last else (0.5, 1.5)
            m.weight.copy_(torch.empty(c).uniform_(lo, hi, generator=gen))
            m.bias.copy_(torch.empty(c).normal_(0.0, 0.2, generator=gen))
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        resnet.train()
        for _ in range(2):
            resnet(torch.randn(8, 3, h, w, generator=gen))
        for m in bns:
            c = m.num_features
            m.running_var.mul_(torch.empty(c).uniform_(0.7, 1.4, generator=gen))
            m.running_mean.add_(torch.empty(c).normal_(0.0, 0.1, generator=gen) * m.running_var.sqrt())
            m.momentum = 0.1
    resnet.eval()


def mmaction2_names(state, shifted):
    """torchvision names under backbone. → mmaction2 ResNet(TSM) names (ConvModule)."""
    out = collections.OrderedDict()
    for k, v in state.items():
        if not k.startswith("backbone."):
            out[k] = v
            continue
        parts = k[len("backbone.") :].split(".")
        if parts[0] == "conv1":  # stem
            parts = ["conv1", "conv"] + parts[1:]
        elif parts[0] == "bn1":
            parts = ["conv1", "bn"] + parts[1:]
        elif parts[0].startswith("layer"):
            stage, block, name, rest = int(parts[0][5:]), int(parts[1]), parts[2], parts[3:]
            if name.startswith("conv"):
                net = ["net"] if name == "conv1" and (stage, block) in shifted else []
                name_parts = [name, "conv"] + net
            elif name.startswith("bn"):
                name_parts = ["conv" + name[2:], "bn"]
            elif name == "downsample":
                name_parts = ["downsample", {"0": "conv", "1": "bn"}[rest[0]]]
                rest = rest[1:]
            else:
                raise ValueError(k)
            parts = parts[:2] + name_parts + rest
        out["backbone." + ".".join(parts)] = v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True, help="tsn_r18 ... tsm_r101")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="64x80", help="HxW of the input")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=17)
    ap.add_argument("--layout", choices=["plain", "wrapped", "mmaction2"], default="wrapped")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    family, depth = a.arch.split("_r")
    if family not in ("tsn", "tsm") or depth not in ("18", "34", "50", "101"):
        ap.error(f"unknown arch {a.arch}")
    h, w = (int(v) for v in a.size.split("x"))
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed + 1)
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=a.classes)
    randomise(resnet, gen, h, w)
    fc = resnet.fc
    model = Recognizer(resnet, a.classes, a.frames, family == "tsm")
    with torch.no_grad():
        model.cls_head.fc_cls.weight.copy_(fc.weight)
        model.cls_head.fc_cls.bias.copy_(fc.bias)
    model.eval()

    x = torch.randn(a.batch, a.frames, 3, h, w, generator=gen)
    with torch.no_grad():
        logits = model(x)
        # PyTorch's bf16 CPU mode on the same weights and input: its drift from float32 is the
        # yardstick for vidkit's --precision bf16 (bins/tests/common: bf16_drift).
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits_bf16 = model(x).float()

    os.makedirs(a.out, exist_ok=True)
    if a.layout == "plain":
        # The ResNet as torchvision saves it, its fc the classifier.
        state = collections.OrderedDict(
            (k[len("backbone.") :], v) for k, v in model.state_dict().items() if k.startswith("backbone.")
        )
        state["fc.weight"] = model.cls_head.fc_cls.weight.detach().clone()
        state["fc.bias"] = model.cls_head.fc_cls.bias.detach().clone()
        torch.save(state, os.path.join(a.out, "model.pth"))
    elif a.layout == "wrapped":
        torch.save(model.state_dict(), os.path.join(a.out, "model.pth"))
    else:
        shifted = set(shifted_blocks(resnet)) if family == "tsm" else set()
        ckpt = {
            "meta": {"epoch": 50, "iter": 1000, "mmaction_version": "1.2.0", "seed": a.seed},
            "state_dict": mmaction2_names(model.state_dict(), shifted),
        }
        torch.save(ckpt, os.path.join(a.out, "model.pth"))
    np.save(os.path.join(a.out, "input.npy"), x.numpy().astype("<f4"))
    np.save(os.path.join(a.out, "logits.npy"), logits.numpy().astype("<f4"))
    np.save(os.path.join(a.out, "logits_bf16.npy"), logits_bf16.numpy().astype("<f4"))
    meta = {
        "arch": a.arch,
        "frames": a.frames,
        "num_classes": a.classes,
        "size": [h, w],
        "seed": a.seed,
        "layout": a.layout,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "max_abs_logit": float(logits.abs().max()),
    }
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main()
