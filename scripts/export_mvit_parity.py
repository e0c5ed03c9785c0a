#!/usr/bin/env python3
"""MViT fixtures for vidkit's transformer parity test (bins/tests/parity_transformer.rs); runs in
the models tier of scripts/peers.sh (torch, torchvision, pytorchvideo 0.1.5).

Builds pytorchvideo's MViT-B through its hub builder (`mvit_base_16x4`, the 32x3 model differs
only in its input) with --depth blocks (stages at blocks 1, 3 and 14 as MViT-B, those below
--depth kept) on a --frames x --size input, draws every parameter at random (numpy, --seed:
Linear and conv weights N(0, 1/fan_in), biases N(0, 0.1), LayerNorm gains U(0.5, 1.5), cls
token and position embeddings N(0, 0.5)), runs it in eval mode on a fixed random input and writes
into OUT_DIR:

  pv/model.pyth   {"model_state": state dict}, as PySlowFast's checkpoint saver writes it
  pv/input.npy    float32 [B, T, 3, S, S] (vidkit's layout; pytorchvideo takes [B, 3, T, S, S])
  pv/logits.npy   float32 [B, classes]
  pv/logits_bf16.npy  the same under torch.autocast("cpu", bfloat16) (bins/tests/common/precision.rs)
  tv/model.pth    the same weights as torchvision's `MViT` (mvit_v1_b's class, built with the
                  same block settings) holds them: one joint qkv, its own names
  tv/input.npy, tv/logits.npy   torchvision's model on the same input (its pools' LayerNorm eps
                  is 1e-6 where pytorchvideo's is 1e-5, so its logits differ slightly)
  meta.json       the arguments and the versions

With --resize-frames F --resize-size R, also resized/{input,logits}.npy: pytorchvideo's model
rebuilt for F frames and R pixels with the same weights, its temporal position embedding resized
linearly along time and its spatial one bilinearly over the patch grid (both align_corners=False),
as vidkit's import does.

Usage: export_mvit_parity.py --out DIR [--depth 4] [--frames 4] [--size 64] [--batch 2]
       [--classes 7] [--seed 0] [--arch mvit_base_16x4] [--resize-frames F --resize-size R]
"""
import argparse
import json
import os
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
import pytorchvideo  # noqa: E402
from pytorchvideo.models.hub import vision_transformers as hub  # noqa: E402
from torchvision.models.video import mvit as tv_mvit  # noqa: E402

STAGES = [1, 3, 14]


def build_pv(a, frames, size):
    stages = [s for s in STAGES if s < a.depth]
    builder = getattr(hub, a.arch)
    return builder(pretrained=False, spatial_size=size, temporal_size=frames, depth=a.depth,
                   embed_dim_mul=[[s, 2.0] for s in stages],
                   atten_head_mul=[[s, 2.0] for s in stages],
                   pool_q_stride_size=[[s, 1, 2, 2] for s in stages],
                   head_num_classes=a.classes).eval()


def build_tv(pv, a):
    """torchvision's MViT with pytorchvideo's block plan, read off the built blocks."""
    settings = []
    for blk in pv.blocks:
        at = blk.attn
        conv = lambda p: list(p.kernel_size) if p is not None else []  # noqa: E731
        stride = lambda p: list(p.stride) if p is not None else []  # noqa: E731
        settings.append(tv_mvit.MSBlockConfig(
            num_heads=at.num_heads, input_channels=blk.dim, output_channels=blk.dim_out,
            kernel_q=conv(at.pool_q), kernel_kv=conv(at.pool_k),
            stride_q=stride(at.pool_q), stride_kv=stride(at.pool_k)))
    return tv_mvit.MViT(spatial_size=(a.size, a.size), temporal_size=a.frames, block_setting=settings,
                        residual_pool=False, residual_with_cls_embed=True, rel_pos_embed=False,
                        proj_after_attn=False, num_classes=a.classes).eval()


def tv_state(pv_state):
    """pytorchvideo's names → torchvision's (q, k, v concatenated into qkv)."""
    fixed = {
        "patch_embed.patch_model.weight": "conv_proj.weight",
        "patch_embed.patch_model.bias": "conv_proj.bias",
        "norm_embed.weight": "norm.weight", "norm_embed.bias": "norm.bias",
        "head.proj.weight": "head.1.weight", "head.proj.bias": "head.1.bias",
    }
    pos = {"cls_token": "class_token", "pos_embed_spatial": "spatial_pos",
           "pos_embed_temporal": "temporal_pos", "pos_embed_class": "class_pos"}
    parts = [("attn.proj.", "attn.project.0."), ("mlp.fc1.", "mlp.0."), ("mlp.fc2.", "mlp.3."),
             ("proj.", "project."), ("norm1.", "norm1."), ("norm2.", "norm2.")]
    for w in "qkv":
        parts += [(f"attn.pool_{w}.", f"attn.pool_{w}.pool."), (f"attn.norm_{w}.", f"attn.pool_{w}.norm_act.0.")]
    out = {}
    for k, v in pv_state.items():
        if k in fixed:
            out[fixed[k]] = v
        elif k.startswith("cls_positional_encoding."):
            leaf = k.split(".", 1)[1]
            out["pos_encoding." + pos[leaf]] = v.reshape(-1) if v.shape[1] == 1 else v[0]
        else:
            i, part = k[len("blocks."):].split(".", 1)
            if part.startswith(("attn.q.", "attn.k.", "attn.v.")):
                continue
            for src, dst in parts:
                if part.startswith(src):
                    out[f"blocks.{i}.{dst}{part[len(src):]}"] = v
                    break
            else:
                raise KeyError(k)
    i = 0
    while f"blocks.{i}.attn.q.weight" in pv_state:
        for leaf in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{leaf}"] = torch.cat(
                [pv_state[f"blocks.{i}.attn.{w}.{leaf}"] for w in "qkv"], 0)
        i += 1
    return out


def save(dirname, x, logits):
    os.makedirs(dirname, exist_ok=True)
    np.save(os.path.join(dirname, "input.npy"), x)
    np.save(os.path.join(dirname, "logits.npy"), logits.astype("<f4"))


def run(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x).permute(0, 2, 1, 3, 4).contiguous()).numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", default="mvit_base_16x4")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resize-frames", type=int)
    ap.add_argument("--resize-size", type=int)
    ap.add_argument("--no-torchvision", action="store_true")
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    model = build_pv(a, a.frames, a.size)
    rng = np.random.default_rng(a.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = tuple(p.shape)
            if p.dim() == 1 and "norm" in name and name.endswith(".weight"):
                v = rng.uniform(0.5, 1.5, shape)
            elif name.endswith(".bias"):
                v = rng.normal(0.0, 0.1, shape)
            elif name.startswith("cls_positional_encoding."):
                v = rng.normal(0.0, 0.5, shape)
            else:  # Linear [out, in], Conv3d [out, in / groups, kt, kh, kw]
                v = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
            p.copy_(torch.from_numpy(v.astype("float32")))

    x = rng.standard_normal((a.batch, a.frames, 3, a.size, a.size)).astype("float32")
    logits = run(model, x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    save(os.path.join(a.out, "pv"), x, logits)
    # PyTorch's bf16 CPU mode on the same weights and input: the yardstick for vidkit's bf16.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(torch.from_numpy(x).permute(0, 2, 1, 3, 4).contiguous()).float().numpy()
    np.save(os.path.join(a.out, "pv", "logits_bf16.npy"), bf16.astype("<f4"))
    torch.save({"model_state": state}, os.path.join(a.out, "pv", "model.pyth"))
    if not a.no_torchvision:
        tv = build_tv(model, a)
        tv.load_state_dict(tv_state(state))
        save(os.path.join(a.out, "tv"), x, run(tv, x))
        torch.save(tv.state_dict(), os.path.join(a.out, "tv", "model.pth"))
    if a.resize_frames:
        resized(a, state, rng)
    meta = dict(vars(a), torch=torch.__version__, torchvision=torchvision.__version__,
                pytorchvideo=getattr(pytorchvideo, "__version__", "0.1.5"),
                max_logit=float(np.abs(logits).max()))
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def resized(a, state, rng):
    state = dict(state)
    te = state["cls_positional_encoding.pos_embed_temporal"]  # [1, T', C]
    t1 = a.resize_frames // 2
    state["cls_positional_encoding.pos_embed_temporal"] = F.interpolate(
        te.transpose(1, 2), size=t1, mode="linear", align_corners=False).transpose(1, 2)
    pe = state["cls_positional_encoding.pos_embed_spatial"]  # [1, g*g, C]
    c = pe.shape[2]
    g0, g1 = a.size // 4, a.resize_size // 4
    grid = pe.reshape(1, g0, g0, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(g1, g1), mode="bilinear", align_corners=False)
    state["cls_positional_encoding.pos_embed_spatial"] = grid.permute(0, 2, 3, 1).reshape(1, g1 * g1, c)
    model2 = build_pv(a, a.resize_frames, a.resize_size)
    model2.load_state_dict(state)
    x = rng.standard_normal((a.batch, a.resize_frames, 3, a.resize_size, a.resize_size)).astype("float32")
    save(os.path.join(a.out, "resized"), x, run(model2, x))


if __name__ == "__main__":
    main()
